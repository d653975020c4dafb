"""The command line: thin, one-line errors (exit code 1, 2 for usage errors), never a traceback."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from msd_triplet import __version__
from msd_triplet.cli import main

pytestmark = pytest.mark.usefixtures("keep_log_level")  # conftest: commands set TF_CPP_MIN_LOG_LEVEL


def _no_traceback(result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def _fails_with(result, text: str) -> None:
    """A one-line error: exit code 1, no traceback, ``text`` in the message."""
    assert result.exit_code == 1, result.output
    _no_traceback(result)
    assert text in result.output


def test_version(runner):
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_missing_config_is_one_line_error(runner, tmp_path):
    result = runner.invoke(main, ["prepare", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    _no_traceback(result)
    assert result.output.strip().splitlines() == [f"error: {tmp_path / 'nope.yaml'}: config file not found"]


def test_bad_config_key_names_key(runner, tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("training:\n  bach_size: 3\n")
    result = runner.invoke(main, ["prepare", "--config", str(cfg)])
    _fails_with(result, "unknown key 'training.bach_size'")


def test_missing_data_is_one_line_error(runner, tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text(f"data:\n  root: {tmp_path / 'nodata'}\n")
    result = runner.invoke(main, ["prepare", "--config", str(cfg)])
    assert result.exit_code == 1
    _no_traceback(result)
    assert result.output.startswith("error: ") and "msd_amglabels_all.h5" in result.output


def test_bad_shard_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(main, ["prepare", "--config", str(tmp_path / "x.yaml"), "--shard", "2/2"])
    assert result.exit_code == 2 and "need 0 <= i < n" in result.output


def test_make_demo_data_rejects_tiny_sizes(runner, tmp_path):
    result = runner.invoke(main, ["make-demo-data", "--out", str(tmp_path / "d"), "--tracks", "5"])
    _fails_with(result, "--tracks must be >= 60")


def test_make_demo_data_rejects_a_negative_nuisance(runner, tmp_path):
    result = runner.invoke(main, ["make-demo-data", "--out", str(tmp_path / "d"), "--album-strength", "-0.5"])
    _fails_with(result, "album_strength must be >= 0, got -0.5")


@pytest.mark.slow
def test_make_demo_data_then_prepare(runner, tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(
        main,
        [
            "make-demo-data",
            "--out",
            str(out),
            "--tracks",
            "120",
            "--seed",
            "5",
            "--album-strength",
            "0.5",
            "--coupling",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"to {out}" in result.output
    world = json.loads((out / "demo_info.json").read_text())["world"]
    assert world["album_strength"] == 0.5 and world["coupling"] == 0 and world["artist_strength"] == 1.0
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(f"data:\n  root: {out}\n  split_proportions: [0.7, 0.1, 0.2]\nlsi:\n  k: 10\n")
    result = runner.invoke(main, ["prepare", "--config", str(cfg), "--shard", "1/2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "shard 1/2:" in result.output and "run prepare without --shard" in result.output
    assert not (out / "prepared" / "tracks.csv").exists()
    result = runner.invoke(main, ["prepare", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "after filtering" in result.output and "labelled tracks" in result.output
    assert "features: " in result.output and "decoded now" in result.output
    tracks = pd.read_csv(out / "prepared" / "tracks.csv")
    assert set(tracks["split"]) == {"train", "validation", "test"}
    assert tracks.groupby("artist_id")["split"].nunique().max() == 1
    skipped = pd.read_csv(out / "prepared" / "skipped.csv")
    reasons = " ".join(skipped["reason"])
    assert "malformed track id" in reasons and "audio empty: " in reasons
    assert list((out / "prepared" / "features").glob("*/shard-00001-of-00002/features.npy"))
    # a changed seed without --resplit keeps the saved splits safe
    cfg.write_text(cfg.read_text() + "seed: 9\n")
    result = runner.invoke(main, ["prepare", "--config", str(cfg)])
    assert result.exit_code == 1 and "--resplit" in result.output
    _no_traceback(result)
    result = runner.invoke(main, ["prepare", "--config", str(cfg), "--resplit"])
    assert result.exit_code == 0, result.output


def test_topics_command(runner, tiny_dataset, tmp_path):
    from msd_triplet.prepare import prepare_dataset

    prepare_dataset(tiny_dataset.config, extract=False)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"data:\n  root: {tiny_dataset.root}\n  audio: audio/{{track_id}}.mp3\n")
    result = runner.invoke(main, ["topics", "--config", str(cfg)])
    assert result.exit_code == 1 and "lsi.k: 340 topics for a" in result.output and "allowed 1..17" in result.output
    _no_traceback(result)
    out = tmp_path / "hist.png"
    result = runner.invoke(
        main,
        [
            "topics",
            "--config",
            str(cfg),
            "--combination",
            "moods-genres",
            "--k",
            "4",
            "--topics",
            "0,3",
            "--top",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "LSI of genres-moods: 4 topics" in result.output and "topic 3 (σ = " in result.output
    assert "topic 1 (" not in result.output and "[moods] " in result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tiny_dataset.root / "prepared" / "lsi" / "genres-moods-binary-k4.npz").is_file()
    default = runner.invoke(main, ["topics", "--config", str(cfg), "--combination", "moods-genres", "--k", "4"])
    assert default.exit_code == 0, default.output
    written = tiny_dataset.root / "prepared" / "lsi" / "genres-moods-binary-k4-similarity.png"
    assert written.is_file() and default.output.strip().endswith(f"and {written}")
    helptext = " ".join(runner.invoke(main, ["topics", "--help"]).output.split())
    assert "<prepared>/lsi/<sets>-<weighting>-k<k>-similarity.png" in helptext
    assert "pairs from different albums only" in result.output
    result = runner.invoke(main, ["topics", "--config", str(cfg), "--k", "4", "--topics", "9"])
    assert result.exit_code == 2 and "topics 0..3" in result.output


def test_fit_dry_run_prints_parameters_and_step(runner, tmp_path):
    from msd_triplet import audio
    from msd_triplet.config import load_config
    from msd_triplet.model import build_dpnn

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model:\n  widths: [2, 2, 4, 4]\n  embedding_dim: 8\ntraining:\n  batch_size: 6\n")
    result = runner.invoke(main, ["fit", "--config", str(cfg), "--dry-run"])
    _no_traceback(result)
    assert result.exit_code == 0, result.output
    config = load_config(cfg)
    expected = build_dpnn(config.model, audio.feature_shape(config.features)).count_params()
    assert f"{expected:,} parameters" in result.output
    assert "batch 6:" in result.output and "valid_anchors" in result.output


def test_fit_without_prepared_data_names_the_command(runner, tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text(f"data:\n  root: {tmp_path}\n")
    result = runner.invoke(main, ["fit", "--config", str(cfg)])
    _fails_with(result, "msd-triplet prepare")


def test_evaluate_prints_intervals_and_the_paired_difference(runner, tiny_run, tmp_path):
    result = runner.invoke(main, ["evaluate", str(tiny_run)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "95 % percentile bootstrap intervals (1,000 resamples of queries, seed 0)" in lines[0]
    assert lines[1] == (
        "| facet | P@3 [95 % CI] | untrained [95 % CI] | trained − untrained [paired 95 % CI] | chance | queries |"
    )
    genre = next(line for line in lines if line.startswith("| genre |"))
    assert genre.count("[") == 3 and ("[+" in genre or "[-" in genre)
    assert f"and {tiny_run / 'per_query.npz'}" in lines[-1]
    alone = runner.invoke(main, ["evaluate", str(tiny_run), "--no-untrained"])
    assert alone.exit_code == 0, alone.output
    assert "| facet | P@3 [95 % CI] | chance | queries |" in alone.output and "untrained [" not in alone.output
    _fails_with(runner.invoke(main, ["evaluate", str(tmp_path)]), "not a run folder")


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(runner, tmp_path):
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(f"""\
seed: 3
data:
  root: {tmp_path / "demo"}
  split_proportions: [0.6, 0.2, 0.2]
lsi:
  k: 8
model:
  widths: [2, 2, 4, 4]
  embedding_dim: 8
loss:
  mining: batch_all
training:
  batch_size: 16
  epochs: 2
  runs: {tmp_path / "runs"}
evaluation:
  k: 5
""")
    result = runner.invoke(main, ["demo", "--config", str(cfg), "--tracks", "120", "--workers", "2"])
    _no_traceback(result)
    assert result.exit_code == 0, result.output
    for stage in (
        "[1/5] writing",
        "[2/5] prepare",
        "[3/5] fit",
        "[4/5] evaluate",
        "[5/5] export",
        "| genre |",
        "untrained [95 % CI]",
        "trained − untrained [paired 95 % CI]",
        "percentile bootstrap intervals",
    ):
        assert stage in result.output, stage
    run = tmp_path / "runs" / "experiment"
    assert (run / "metrics.json").is_file() and (run / "checkpoints" / "epoch-002.weights.h5").is_file()
    assert (run / "per_query.npz").is_file()
    assert (run / "savedmodel" / "saved_model.pb").is_file()
    again = runner.invoke(main, ["demo", "--config", str(cfg)])
    assert again.exit_code == 0, again.output
    assert "[1/5] data set found" in again.output and "all 2 epochs are done" in again.output
