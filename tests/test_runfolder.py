"""RunFolder: the names of a run's files, the best → last fallback, the per-split evaluation names."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from msd_triplet.runfolder import RunFolder, split_file


def test_every_file_of_a_run_has_its_name(tmp_path):
    run = RunFolder(str(tmp_path / "demo"))
    root = tmp_path / "demo"
    assert run.path == root and isinstance(run.path, Path)
    assert {
        name: getattr(run, name)
        for name in ("config", "state", "run_info", "log", "lsi", "tensorboard", "checkpoints", "savedmodel")
    } == {
        "config": root / "config.yaml",
        "state": root / "state.json",
        "run_info": root / "run.json",
        "log": root / "log.csv",
        "lsi": root / "lsi.npz",
        "tensorboard": root / "tensorboard",
        "checkpoints": root / "checkpoints",
        "savedmodel": root / "savedmodel",
    }
    assert run.checkpoint("best") == root / "checkpoints" / "best.keras"
    assert run.checkpoint("last") == root / "checkpoints" / "last.keras"
    assert run.epoch_weights(7) == root / "checkpoints" / "epoch-007.weights.h5"
    assert run.epoch_weights(1234) == root / "checkpoints" / "epoch-1234.weights.h5"
    assert run.index("test", "best") == root / "index-test-best.npz"
    assert run.index("all", "last") == root / "index-all-last.npz"
    assert run.map("validation", "best") == root / "map-validation-best.npz"


def test_evaluation_files_carry_the_split_unless_test(tmp_path):
    run = RunFolder(tmp_path)
    assert (run.metrics(), run.metrics_md(), run.per_query()) == (
        tmp_path / "metrics.json",
        tmp_path / "metrics.md",
        tmp_path / "per_query.npz",
    )
    assert (run.metrics("test"), run.metrics_md("test"), run.per_query("test")) == (
        tmp_path / "metrics.json",
        tmp_path / "metrics.md",
        tmp_path / "per_query.npz",
    )
    assert (run.metrics("validation"), run.metrics_md("validation"), run.per_query("validation")) == (
        tmp_path / "metrics-validation.json",
        tmp_path / "metrics-validation.md",
        tmp_path / "per_query-validation.npz",
    )
    assert run.per_query("all") == tmp_path / "per_query-all.npz"
    assert split_file("metrics.json", "train") == "metrics-train.json"


def test_runs_split_file_is_the_same_rule():
    from msd_triplet import runs

    assert runs.split_file is split_file
    assert runs.split_file(runs.METRICS_FILE, "validation") == "metrics-validation.json"


def test_loaded_checkpoint_falls_back_from_best_to_last(tmp_path):
    run = RunFolder(tmp_path)
    # nothing there: best names last (that it is missing is the loader's error), last names last
    assert run.loaded_checkpoint() == run.checkpoint("last")
    assert run.loaded_checkpoint("last") == run.checkpoint("last")
    run.checkpoints.mkdir()
    run.checkpoint("last").write_bytes(b"")
    assert run.loaded_checkpoint("best") == run.checkpoint("last")
    run.checkpoint("best").write_bytes(b"")
    assert run.loaded_checkpoint("best") == run.checkpoint("best")
    assert run.loaded_checkpoint("last") == run.checkpoint("last")
    run.checkpoint("last").unlink()
    # last never falls back to best
    assert run.loaded_checkpoint("last") == run.checkpoint("last")


def test_is_run_means_config_yaml_is_a_file(tmp_path):
    run = RunFolder(tmp_path)
    assert not run.is_run()
    run.config.mkdir()
    assert not run.is_run()
    run.config.rmdir()
    run.config.write_text("name: x\n")
    assert run.is_run()


def test_run_folder_is_frozen_and_compares_by_path(tmp_path):
    run = RunFolder(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.path = tmp_path / "other"
    assert run == RunFolder(str(tmp_path)) and hash(run) == hash(RunFolder(tmp_path))
