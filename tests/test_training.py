"""Training runs: the run folder, determinism, resume after a kill, refusals with clear errors."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import write_run_config

from msd_triplet.config import load_config
from msd_triplet.errors import DataError, MsdTripletError


def _config(root: Path, runs: Path, **kwargs):
    return load_config(write_run_config(root, runs, **kwargs))


def _weights(run: Path, epoch: int) -> list[np.ndarray]:
    import h5py

    arrays = []
    with h5py.File(run / "checkpoints" / f"epoch-{epoch:03d}.weights.h5", "r") as handle:
        handle.visititems(lambda name, obj: arrays.append(obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


def test_fit_writes_a_complete_run_folder(prepared_root, tmp_path):
    from msd_triplet.training import fit, load_run_model

    config = _config(prepared_root, tmp_path, epochs=2)
    result = fit(config, verbose=0, say=lambda _: None)
    run = tmp_path / config.name
    assert result.run_dir == run and result.epochs == 2 and not result.stopped_early
    for name in (
        "config.yaml",
        "run.json",
        "lsi.npz",
        "state.json",
        "log.csv",
        "checkpoints/last.keras",
        "checkpoints/best.keras",
        "checkpoints/epoch-001.weights.h5",
        "checkpoints/epoch-002.weights.h5",
    ):
        assert (run / name).is_file(), name
    assert (run / "tensorboard").is_dir()
    assert load_config(run / "config.yaml") == config
    assert [row["epoch"] for row in result.history] == [1, 2]
    row = result.history[-1]
    for key in ("loss", "valid_anchors", "active_triplets", "positive_distance", "val_precision", "val_p@3_genre"):
        assert key in row and np.isfinite(row[key]), key
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 2 and state["finished"] and state["best_epoch"] in (1, 2)
    assert json.loads((run / "run.json").read_text())["lsi"]["k"] == 6
    model = load_run_model(run)
    assert model.output_shape == (None, 8)

    with pytest.raises(MsdTripletError, match="--resume"):
        fit(config, verbose=0, say=lambda _: None)
    said = []
    assert fit(config, resume=True, verbose=0, say=said.append).epochs == 2 and "all 2 epochs are done" in said[0]
    other = dataclasses.replace(config, loss=dataclasses.replace(config.loss, margin=0.5))
    with pytest.raises(MsdTripletError, match="loss.margin"):
        fit(other, resume=True, verbose=0, say=lambda _: None)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_same_seed_gives_bitwise_identical_weights(prepared_root, tmp_path, precision):
    from msd_triplet.training import fit

    runs = [
        fit(
            _config(prepared_root, tmp_path / name, seed=seed, epochs=1, precision=precision),
            verbose=0,
            say=lambda _: None,
        )
        for name, seed in (("a", 0), ("b", 0), ("c", 1))
    ]
    a, b, c = (_weights(r.run_dir, 1) for r in runs)
    assert len(a) > 10 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert json.loads((runs[0].run_dir / "run.json").read_text())["compute"]["precision"] == precision


RESUME_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import keras
    from msd_triplet.config import load_config
    from msd_triplet.training import fit

    class KillInEpochThree(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    fit(load_config(sys.argv[1]), verbose=0, callbacks=[KillInEpochThree()])
""")


@pytest.mark.slow
def test_resume_after_kill_loses_only_the_running_epoch(prepared_root, tmp_path):
    from msd_triplet.training import fit

    config_path = write_run_config(prepared_root, tmp_path / "killed", epochs=4, name="killed.yaml")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(config_path)],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    config = load_config(config_path)
    run = tmp_path / "killed" / config.name
    assert json.loads((run / "state.json").read_text())["epoch"] == 2

    result = fit(config, resume=True, verbose=0, say=lambda _: None)
    assert result.epochs == 4 and [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert all((run / "checkpoints" / f"epoch-{e:03d}.weights.h5").is_file() for e in range(1, 5))
    # the same batches and optimizer state: a run never killed ends with the same weights
    straight = fit(_config(prepared_root, tmp_path / "straight", epochs=4), verbose=0, say=lambda _: None)
    assert all(np.allclose(x, y, rtol=0, atol=1e-6) for x, y in zip(_weights(run, 4), _weights(straight.run_dir, 4)))


def test_missing_features_and_small_split_are_clear_errors(prepared_root, tmp_path):
    from msd_triplet.training import fit

    config = _config(prepared_root, tmp_path, epochs=1)
    features = dataclasses.replace(config.features, n_mels=40)
    with pytest.raises(DataError, match="no feature cache.*msd-triplet prepare"):
        fit(dataclasses.replace(config, features=features), verbose=0, say=lambda _: None)
    big = dataclasses.replace(config, training=dataclasses.replace(config.training, batch_size=500))
    with pytest.raises(DataError, match="fewer than training.batch_size 500"):
        fit(big, verbose=0, say=lambda _: None)


def test_evaluate_run_writes_metrics_with_intervals_beside_an_untrained_model(tiny_run, tmp_path):
    from msd_triplet import evaluation, runs
    from msd_triplet.training import compile_model, load_run_model
    from msd_triplet.uncertainty import BootstrapSettings, paired_bootstrap_interval

    run = tiny_run
    config = load_config(run / "config.yaml")
    report = runs.evaluate_run(run, say=lambda _: None)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["split"] == "test" and saved["k"] == 3 and saved["model"] == "trained"
    assert saved["bootstrap"] == {"resamples": 1000, "level": 0.95, "unit": "query", "seed": config.seed}
    facets = ["genre", "style", "mood", "theme", "artist", "album"]
    assert list(saved["facets"]) == list(saved["untrained"]) == list(saved["difference"]) == facets
    for facet in facets:
        for figures in (saved["facets"][facet], saved["untrained"][facet]):
            assert set(figures) == {"precision", "ci_low", "ci_high", "chance", "queries", "k"}
            assert figures["ci_low"] <= figures["precision"] <= figures["ci_high"]
        assert saved["untrained"][facet]["chance"] == saved["facets"][facet]["chance"]
    # per_query.npz: the test tracks in order, both models; the paired interval is that of these arrays
    embeddings, positions, prepared = runs.split_embeddings(load_run_model(run), config, "test")
    per_query = runs.PerQuery.load(run / "per_query.npz")
    assert per_query.track_ids.tolist() == prepared.tracks["track_id"].iloc[positions].tolist()
    assert per_query.album_ids.tolist() == prepared.tracks["album_id"].iloc[positions].tolist()
    assert list(per_query.models) == ["trained", "untrained"] and per_query.k == 3
    for facet in facets:
        trained, untrained = per_query.models["trained"][facet], per_query.models["untrained"][facet]
        assert np.nanmean(trained) == pytest.approx(saved["facets"][facet]["precision"], abs=1e-12)
        difference = saved["difference"][facet]
        assert difference["difference"] == pytest.approx(
            saved["facets"][facet]["precision"] - saved["untrained"][facet]["precision"], abs=1e-12
        )
        assert [difference["ci_low"], difference["ci_high"]] == list(
            paired_bootstrap_interval(trained, untrained, seed=config.seed)
        )
    # the figures are those of the model's own embeddings of the test tracks, and of a fresh model
    settings = BootstrapSettings.from_config(config)
    facet_map = evaluation.facets_from_prepared(prepared, positions)
    assert report.results == evaluation.evaluate_embeddings(embeddings, facet_map, k=3, bootstrap=settings)
    fresh, _, _ = runs.split_embeddings(compile_model(config), config, "test")
    assert report.untrained == evaluation.evaluate_embeddings(fresh, facet_map, k=3, bootstrap=settings)
    assert report.tracks == len(positions)
    text = (run / "metrics.md").read_text()
    assert "95 % percentile bootstrap intervals (1,000 resamples of queries, seed 0)" in text
    assert "| facet | P@3 [95 % CI] | untrained [95 % CI] | trained − untrained [paired 95 % CI] |" in text
    with pytest.raises(DataError, match="not a run folder"):
        runs.evaluate_run(tmp_path / "nothing", say=lambda _: None)


def test_album_bootstrap_and_the_untrained_model_alone(tiny_run, tmp_path):
    import shutil

    from msd_triplet import runs
    from msd_triplet.config import save_config, with_overrides
    from msd_triplet.uncertainty import bootstrap_interval, cluster_labels

    run = tmp_path / "run"
    shutil.copytree(
        tiny_run, run, ignore=shutil.ignore_patterns("tensorboard", "savedmodel*", "metrics.*", "per_query.npz")
    )
    config = with_overrides(
        load_config(run / "config.yaml"), {"evaluation.bootstrap_unit": "album", "evaluation.bootstrap_resamples": 200}
    )
    save_config(config, run / "config.yaml")
    report = runs.evaluate_run(run, untrained=False, say=lambda _: None)
    assert report.untrained is None and report.difference is None and "untrained" not in report.table
    per_query = runs.PerQuery.load(run / "per_query.npz")
    assert list(per_query.models) == ["trained"]
    albums = cluster_labels(per_query.album_ids)
    assert len(set(albums.tolist())) < len(albums)  # the test split has albums of several tracks
    for facet, values in per_query.models["trained"].items():
        assert (report.results[facet]["ci_low"], report.results[facet]["ci_high"]) == bootstrap_interval(
            values, n_resamples=200, seed=config.seed, clusters=albums
        )
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["bootstrap"]["unit"] == "album" and saved["difference"] is None
    # the untrained model depends on the seed and the architecture only: another LSI size, same figures
    other = with_overrides(config, {"lsi.k": 2})
    alone = runs.evaluate_untrained(other, tmp_path / "untrained", say=lambda _: None)
    assert json.loads((tmp_path / "untrained" / "metrics.json").read_text())["model"] == "untrained"
    stored = runs.PerQuery.load(tmp_path / "untrained" / "per_query.npz")
    assert list(stored.models) == ["untrained"]
    with_baseline = runs.evaluate_run(run, say=lambda _: None)
    assert alone.results == with_baseline.untrained
    for facet, values in stored.models["untrained"].items():
        np.testing.assert_array_equal(values, with_baseline.per_query.models["untrained"][facet])


def test_predict_full_batches_pads_the_short_batch_and_traces_once():
    import keras

    from msd_triplet.training import predict_full_batches

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, kernel_initializer=keras.initializers.GlorotUniform(0))(inputs))
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    expected = x @ np.asarray(model.layers[-1].kernel) + np.asarray(model.layers[-1].bias)
    short = predict_full_batches(model, x, batch_size=8)
    full = predict_full_batches(model, np.concatenate([x, x, x])[:8], batch_size=8)[:5]
    assert short.shape == (5, 2)
    np.testing.assert_allclose(short, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full, expected, rtol=1e-5, atol=1e-6)
    predict_full_batches(model, x[:3], batch_size=8)
    # every call fed 8 rows: the predict function was traced once (unpadded, 10 then 5 rows trace twice)
    assert model.predict_function.experimental_get_tracing_count() == 1
    model.predict_on_batch(x[:4])
    assert model.predict_function.experimental_get_tracing_count() == 2


def test_training_phases_put_the_batch_all_warm_up_first():
    from msd_triplet.config import Config, TrainingConfig
    from msd_triplet.training import training_phases

    def phases(warmup, epochs, initial):
        config = Config(training=TrainingConfig(warmup_epochs=warmup, epochs=epochs))
        return training_phases(config, initial)

    assert phases(0, 5, 0) == [(0, 5, "batch_hard")]
    assert phases(2, 5, 0) == [(0, 2, "batch_all"), (2, 5, "batch_hard")]
    assert phases(2, 5, 1) == [(1, 2, "batch_all"), (2, 5, "batch_hard")]
    assert phases(2, 5, 3) == [(3, 5, "batch_hard")]
    assert phases(9, 5, 0) == [(0, 5, "batch_all")]


def _with(config, **training):
    return dataclasses.replace(config, training=dataclasses.replace(config.training, **training))


def test_warm_up_trains_batch_all_then_switches_and_resumes_across_the_switch(prepared_root, tmp_path):
    import keras

    from msd_triplet.training import fit

    quiet = dict(verbose=0, say=lambda _: None)
    warm = _with(_config(prepared_root, tmp_path / "warm", epochs=2), warmup_epochs=1)
    result = fit(warm, **quiet)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert keras.models.load_model(result.run_dir / "checkpoints" / "last.keras").loss.mining == "batch_hard"
    # epoch 1 is exactly a batch_all epoch
    base = _config(prepared_root, tmp_path / "all", epochs=1)
    batch_all = fit(dataclasses.replace(base, loss=dataclasses.replace(base.loss, mining="batch_all")), **quiet)
    assert all(np.array_equal(x, y) for x, y in zip(_weights(result.run_dir, 1), _weights(batch_all.run_dir, 1)))
    assert not all(np.array_equal(x, y) for x, y in zip(_weights(result.run_dir, 2), _weights(result.run_dir, 1)))
    # stopped after the warm-up and resumed: the switch happens on resume, with the same result
    split = _with(_config(prepared_root, tmp_path / "split", epochs=1), warmup_epochs=1)
    fit(split, **quiet)
    resumed = fit(_with(split, epochs=2), resume=True, **quiet)
    assert all(
        np.allclose(x, y, rtol=0, atol=1e-6) for x, y in zip(_weights(resumed.run_dir, 2), _weights(result.run_dir, 2))
    )


def test_related_batches_change_the_batches_and_stay_deterministic(prepared_root, tmp_path):
    from msd_triplet.training import fit

    quiet = dict(verbose=0, say=lambda _: None)
    related = [
        fit(
            _with(_config(prepared_root, tmp_path / name, epochs=1), batch_composition="related", group_size=2), **quiet
        )
        for name in ("a", "b")
    ]
    shuffled = fit(_config(prepared_root, tmp_path / "c", epochs=1), **quiet)
    a, b, c = (_weights(r.run_dir, 1) for r in (*related, shuffled))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
