"""Export: a SavedModel served by plain TensorFlow in a fresh process, `.keras` round trips, embedding models."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import write_run_config

from msd_triplet.config import load_config
from msd_triplet.errors import DataError, MsdTripletError

DIM = 8


@pytest.fixture(scope="module")
def trained_run(tiny_run) -> Path:
    return tiny_run


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> Path:
    """The run exported under umask 022 (test_export_gets_the_modes_of_a_plain_mkdir checks the modes)."""
    from msd_triplet.export import export_savedmodel

    previous = os.umask(0o022)
    try:
        return export_savedmodel(trained_run, tmp_path_factory.mktemp("exported") / "model")
    finally:
        os.umask(previous)


def _test_tracks(run: Path, n: int = 3):
    """(cache, rows, audio paths) of ``n`` test tracks of the run."""
    from msd_triplet.featurecache import FeatureCache, cache_dir
    from msd_triplet.prepare import load_prepared
    from msd_triplet.runs import run_config

    config = run_config(run)
    tracks = load_prepared(config).tracks
    ids = tracks.loc[tracks["split"] == "test", "track_id"].to_numpy()[:n]
    cache = FeatureCache(cache_dir(config))
    rows = cache.rows(ids)
    return cache, rows, [Path(config.data.root) / "audio" / f"{t}.wav" for t in ids]


# Runs with the venv's python in isolated mode (-I: no PYTHONPATH, no user site, no cwd on
# sys.path) from a temp folder. That is not enough to hide msd_triplet: its editable install
# is a finder that a .pth file in site-packages installs, and site-packages must stay (it holds
# TensorFlow). A None entry in sys.modules makes every import of msd_triplet raise ImportError,
# whichever finder would have found it, so nothing below can use our Python code.
SERVE = textwrap.dedent("""
    import json, sys
    sys.modules["msd_triplet"] = None
    try:
        import msd_triplet
    except ImportError:
        pass
    else:
        raise SystemExit("msd_triplet is importable")

    import numpy as np
    import tensorflow as tf

    folder, work = sys.argv[1], sys.argv[2]
    model = tf.saved_model.load(folder)
    shapes = {}
    for name, fn in model.signatures.items():
        key, = fn.structured_input_signature[1]
        x = np.load(f"{work}/{key}.npy")
        np.save(f"{work}/out_{name}.npy", fn(**{key: tf.constant(x)})["embedding"].numpy())
        shapes[name] = {"inputs": {k: [s.shape.as_list(), s.dtype.name]
                                   for k, s in fn.structured_input_signature[1].items()},
                        "outputs": {k: [s.shape.as_list(), s.dtype.name] for k, s in fn.structured_outputs.items()}}
    # the endpoints are methods too
    np.save(f"{work}/out_method.npy", model.waveform(tf.constant(np.load(f"{work}/waveform.npy")))["embedding"].numpy())
    json.dump(shapes, open(f"{work}/signatures.json", "w"))
""")


def _serve_in_fresh_process(run: Path, exported: Path, work: Path):
    """Three test tracks of ``run`` served by :data:`SERVE` from ``exported`` in a fresh interpreter.

    Returns (cache, rows, log-mel [3, 80, 130, 1], waveforms [3, samples], the signatures);
    the outputs are ``work/out_<signature>.npy`` and ``work/out_method.npy``.
    """
    from msd_triplet.audio import SegmentSpec, read_segment
    from msd_triplet.runs import run_config

    cache, rows, paths = _test_tracks(run)
    log_mel = cache.read(rows)[..., None]
    waveform = np.stack([read_segment(p, SegmentSpec.from_config(run_config(run).features)) for p in paths])
    np.save(work / "log_mel.npy", log_mel)
    np.save(work / "waveform.npy", waveform)
    done = subprocess.run(
        [sys.executable, "-I", "-c", SERVE, str(exported), str(work)],
        cwd=work,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return cache, rows, log_mel, waveform, json.loads((work / "signatures.json").read_text())


@pytest.mark.slow
def test_saved_model_serves_both_signatures_in_plain_tensorflow(trained_run, exported, tmp_path):
    from msd_triplet.layers import LogMel
    from msd_triplet.runs import run_config
    from msd_triplet.training import embed_rows, load_run_model

    config = run_config(trained_run)
    cache, rows, log_mel, waveform, signatures = _serve_in_fresh_process(trained_run, exported, tmp_path)
    assert log_mel.shape == (3, 80, 130, 1) and waveform.shape == (3, 132_300)
    embedding = {"embedding": [[None, DIM], "float32"]}
    by_log_mel = {"inputs": {"log_mel": [[None, 80, 130, 1], "float32"]}, "outputs": embedding}
    assert signatures == {
        "serving_default": by_log_mel,
        "log_mel": by_log_mel,
        "waveform": {"inputs": {"waveform": [[None, 132_300], "float32"]}, "outputs": embedding},
    }
    model = load_run_model(trained_run)
    # the evaluation's embeddings of these tracks, from the feature cache
    expected = embed_rows(model, cache, rows)
    for name in ("serving_default", "log_mel"):
        np.testing.assert_allclose(np.load(tmp_path / f"out_{name}.npy"), expected, rtol=0, atol=1e-5)
    from_waveform = np.asarray(model(LogMel.from_features(config.features)(waveform), training=False))
    for name in ("waveform", "method"):
        served = np.load(tmp_path / f"out_{name}.npy")
        np.testing.assert_allclose(served, from_waveform, rtol=0, atol=1e-4)
        np.testing.assert_allclose(served, expected, rtol=0, atol=1e-4)
    assert not np.allclose(expected[0], expected[1], atol=1e-3)  # distinct tracks, distinct embeddings


@pytest.mark.slow
def test_bfloat16_model_reloads_and_serves_float32_within_its_bound(prepared_root, tmp_path):
    """A run trained in mixed_bfloat16: its ``.keras`` reloads with the policy, exports, and a fresh
    TensorFlow serves float32 → float32 embeddings within 1e-2 of the Keras model.

    The bound: the conv stacks round every activation to bfloat16 (8-bit mantissa, relative
    step 2**-8 = 0.4 %); the float32 log-mel of the SavedModel's graph and of eager Keras differ
    in the last bits, which flips some of those roundings, and the flips add up over the
    stacks. Unit-norm embeddings then differ by up to ~3e-3 per entry here; 1e-2 leaves room.
    For the same log-mel input both compute the same graph and agree to 1e-5.
    """
    import keras

    from msd_triplet.config import load_config
    from msd_triplet.export import export_savedmodel
    from msd_triplet.layers import LogMel
    from msd_triplet.training import embed_rows, fit, load_run_model, model_compute

    config = load_config(
        write_run_config(prepared_root, tmp_path / "runs", epochs=1, name="bf16.yaml", precision="mixed_bfloat16")
    )
    run = fit(config, verbose=0, say=lambda _: None).run_dir
    assert json.loads((run / "run.json").read_text())["compute"]["precision"] == "mixed_bfloat16"
    model = load_run_model(run)
    assert model_compute(model)["precision"] == "mixed_bfloat16"
    assert model.get_layer("embedding").dtype_policy.name == "float32"
    assert all(w.dtype == "float32" for w in model.weights)  # mixed: variables stay float32
    exported = export_savedmodel(run, tmp_path / "model")

    cache, rows, log_mel, waveform, signatures = _serve_in_fresh_process(run, exported, tmp_path)
    for name in ("serving_default", "log_mel", "waveform"):
        assert signatures[name]["outputs"] == {"embedding": [[None, DIM], "float32"]}, name
        assert all(dtype == "float32" for _, dtype in signatures[name]["inputs"].values()), name

    expected = embed_rows(model, cache, rows)
    assert expected.dtype == np.float32
    for name in ("serving_default", "log_mel"):
        np.testing.assert_allclose(np.load(tmp_path / f"out_{name}.npy"), expected, rtol=0, atol=1e-5)
    from_waveform = np.asarray(model(LogMel.from_features(config.features)(waveform), training=False))
    for name in ("waveform", "method"):
        served = np.load(tmp_path / f"out_{name}.npy")
        print(f"bfloat16 waveform signature vs Keras: max |diff| {np.abs(served - from_waveform).max():.2e}")
        np.testing.assert_allclose(served, from_waveform, rtol=0, atol=1e-2)
        np.testing.assert_allclose(served, expected, rtol=0, atol=1e-2)
    reloaded = keras.models.load_model(run / "checkpoints" / "best.keras")
    assert np.asarray(reloaded.predict_on_batch(log_mel)).dtype == np.float32


def test_export_folder_holds_readme_config_and_nothing_else(trained_run, exported):
    from msd_triplet.runs import run_config

    config = run_config(trained_run)
    assert sorted(p.name for p in exported.iterdir()) == [
        "README.txt",
        "assets",
        "fingerprint.pb",
        "msd_triplet_config.yaml",
        "saved_model.pb",
        "variables",
    ]
    assert [p.name for p in exported.parent.iterdir()] == ["model"]  # no temporary folder left beside it
    assert load_config(exported / "msd_triplet_config.yaml") == config
    readme = (exported / "README.txt").read_text()
    for text in (
        "serving_default = log_mel",
        "log_mel    float32 [batch, 80, 130, 1]",
        "waveform   float32 [batch, 132300]",
        f"embedding  float32 [batch, {DIM}]",
        "L2-normalised",
        str(trained_run.resolve()),
        f'config "{config.name}"',
        "checkpoints/best.keras",
        "22050 Hz",
        "6 s from offset 3 s",
        "n_fft 2048, hop 1024",
        "80 bands, fmin 16 Hz, fmax 11000 Hz",
        "(mel power + 1e-06)",
    ):
        assert text in readme, text
    # the four lines that load it in plain TensorFlow work as printed
    lines = readme.split("Load it in plain TensorFlow:\n", 1)[1].splitlines()[:4]
    namespace: dict = {}
    exec("\n".join(line.strip() for line in lines), namespace)
    assert namespace["embedding"].shape == (1, DIM)
    np.testing.assert_allclose(np.linalg.norm(namespace["embedding"], axis=1), 1.0, atol=1e-5)


def test_export_gets_the_modes_of_a_plain_mkdir(exported):
    # exported under umask 022: what mkdir/open give there, not tempfile.mkdtemp's private 0700
    found = {str(p.relative_to(exported)): stat.S_IMODE(p.stat().st_mode) for p in [exported, *exported.rglob("*")]}
    assert {".", "variables", "saved_model.pb", "README.txt", "msd_triplet_config.yaml"} <= set(found)
    assert found == {name: 0o755 if (exported / name).is_dir() else 0o644 for name in found}


def test_export_refuses_to_overwrite_and_names_what_is_wrong(trained_run, exported, tmp_path):
    from msd_triplet.export import export_savedmodel

    with pytest.raises(MsdTripletError, match="exists and is not empty.*overwrite=True"):
        export_savedmodel(trained_run, exported)
    with pytest.raises(MsdTripletError, match="holds the run"):
        export_savedmodel(trained_run, trained_run, overwrite=True)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(MsdTripletError, match="does not hold an msd-triplet export"):
        export_savedmodel(trained_run, other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(MsdTripletError, match="is a file"):
        export_savedmodel(trained_run, tmp_path / "file")
    with pytest.raises(DataError, match="not a run folder"):
        export_savedmodel(tmp_path / "nothing", tmp_path / "out")
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(trained_run / "config.yaml", untrained)
    with pytest.raises(DataError, match="no checkpoint.*msd-triplet fit"):
        export_savedmodel(untrained, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    # overwrite replaces an earlier export as a whole
    previous = tmp_path / "previous"
    shutil.copytree(exported, previous)
    (previous / "stale.txt").write_text("old")
    assert export_savedmodel(trained_run, previous, checkpoint="last", overwrite=True) == previous
    assert not (previous / "stale.txt").exists() and (previous / "saved_model.pb").is_file()
    assert "checkpoints/last.keras" in (previous / "README.txt").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "notes", "previous", "untrained"]


def test_keras_checkpoint_round_trips_with_and_without_compile(trained_run, tmp_path):
    import keras

    from msd_triplet.losses import LsiTripletLoss
    from msd_triplet.runs import run_config

    path = trained_run / "checkpoints" / "best.keras"
    x = np.random.default_rng(0).standard_normal((4, 80, 130, 1)).astype(np.float32)
    compiled = keras.models.load_model(path)
    plain = keras.models.load_model(path, compile=False)
    assert isinstance(compiled.loss, LsiTripletLoss) and compiled.loss.margin == run_config(trained_run).loss.margin
    assert not plain.compiled
    expected = np.asarray(compiled.predict_on_batch(x))
    np.testing.assert_array_equal(np.asarray(plain.predict_on_batch(x)), expected)
    compiled.save(tmp_path / "again.keras")  # and once more, through a fresh object graph
    np.testing.assert_array_equal(
        np.asarray(keras.models.load_model(tmp_path / "again.keras").predict_on_batch(x)), expected
    )


def test_load_embedding_model_cuts_normalised_or_raw_and_freezes(trained_run, exported, tmp_path):
    import keras

    from msd_triplet.export import load_embedding_model
    from msd_triplet.model import embedding_model
    from msd_triplet.training import load_run_model

    x = np.random.default_rng(1).standard_normal((6, 80, 130, 1)).astype(np.float32)
    run_model = load_run_model(trained_run)
    unit = load_embedding_model(trained_run)
    raw = load_embedding_model(trained_run / "checkpoints" / "best.keras", normalized=False)
    assert unit.output_shape == raw.output_shape == (None, DIM) and not unit.compiled and not raw.compiled
    assert raw.layers[-1].name == "embedding"
    u, r = np.asarray(unit.predict_on_batch(x)), np.asarray(raw.predict_on_batch(x))
    np.testing.assert_allclose(u, run_model.predict_on_batch(x), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(r, embedding_model(run_model).predict_on_batch(x), rtol=0, atol=1e-6)
    np.testing.assert_allclose(u, r / np.linalg.norm(r, axis=1, keepdims=True), rtol=0, atol=1e-5)
    assert np.abs(np.linalg.norm(r, axis=1) - 1.0).max() > 1e-3

    # frozen inside a downstream classifier: training changes the head only, batch norm stays in inference mode
    raw.trainable = False
    assert raw.trainable_weights == []
    before = [w.copy() for w in raw.get_weights()]
    classifier = keras.Sequential([raw, keras.layers.Dense(3, name="head")])
    classifier.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    head = classifier.get_layer("head")
    classifier.predict_on_batch(x)  # builds the head
    head_before = head.get_weights()[0].copy()
    classifier.train_on_batch(x, np.arange(6) % 3)
    assert all(np.array_equal(a, b) for a, b in zip(before, raw.get_weights()))
    assert not np.array_equal(head_before, head.get_weights()[0])
    np.testing.assert_allclose(raw(x, training=True), r, rtol=0, atol=1e-6)

    with pytest.raises(MsdTripletError, match="exported SavedModel"):
        load_embedding_model(exported)
    with pytest.raises(DataError, match="not a run folder"):
        load_embedding_model(tmp_path)
    (tmp_path / "model.h5").write_text("x")
    with pytest.raises(MsdTripletError, match="not a model"):
        load_embedding_model(tmp_path / "model.h5")


def test_load_embedding_model_normalises_a_model_trained_without_l2(tmp_path):
    from msd_triplet.config import ModelConfig
    from msd_triplet.export import load_embedding_model
    from msd_triplet.model import build_dpnn

    model = build_dpnn(ModelConfig(widths=(2, 2, 4, 4), embedding_dim=DIM, l2_normalize=False), seed=0)
    model.save(tmp_path / "raw.keras")
    x = np.random.default_rng(2).standard_normal((3, 80, 130, 1)).astype(np.float32)
    unit = load_embedding_model(tmp_path / "raw.keras")
    expected = np.asarray(model.predict_on_batch(x))
    np.testing.assert_allclose(
        unit.predict_on_batch(x), expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=0, atol=1e-5
    )


LOAD_AFTER_IMPORT = textwrap.dedent("""
    import sys
    import msd_triplet
    assert "tensorflow" not in sys.modules
    import keras
    keras.models.load_model(sys.argv[1], compile=True)
""")


@pytest.mark.slow
def test_import_msd_triplet_is_enough_to_load_a_checkpoint(trained_run, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AFTER_IMPORT, str(trained_run / "checkpoints" / "best.keras")],
        cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
