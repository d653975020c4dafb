"""Precision and XLA settings: what ``auto`` resolves to, and the mixed-precision DPNN and its step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from msd_triplet import devices
from msd_triplet.config import Config, ModelConfig, TrainingConfig
from msd_triplet.errors import ArgumentError, ConfigError

TINY = ModelConfig(widths=(2, 2, 4, 4), embedding_dim=8)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    intel = tmp_path / "intel"
    intel.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert devices.cpu_has_bfloat16(devices.cpu_flags(str(intel)))
    assert not devices.cpu_has_bfloat16(devices.cpu_flags(str(arm)))  # no oneDNN bf16 kernels there
    assert devices.cpu_flags(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize(
    "setting, gpus, bf16, expected",
    [
        ("auto", 1, True, "mixed_float16"),
        ("auto", 0, True, "mixed_bfloat16"),
        ("auto", 0, False, "float32"),
        ("float32", 2, True, "float32"),
        ("mixed_bfloat16", 0, False, "mixed_bfloat16"),
    ],
)
def test_precision_auto_follows_the_machine(setting, gpus, bf16, expected):
    assert devices.resolve_precision(setting, gpus=gpus, bfloat16_cpu=bf16) == expected


def test_jit_compile_auto_is_on_with_a_gpu_only():
    assert devices.resolve_jit_compile("auto", gpus=1) is True
    assert devices.resolve_jit_compile("auto", gpus=0) is False
    assert devices.resolve_jit_compile(True, gpus=0) is True
    with pytest.raises(ArgumentError, match="jit_compile"):
        devices.resolve_jit_compile("yes")
    with pytest.raises(ArgumentError, match="float64"):
        devices.resolve_precision("float64")


def test_config_accepts_auto_or_a_boolean_and_names_the_choices(tmp_path):
    from msd_triplet.config import load_config

    path = tmp_path / "c.yaml"
    for value, expected in (("auto", "auto"), ("true", True), ("false", False)):
        path.write_text(f"training:\n  jit_compile: {value}\n  precision: mixed_bfloat16\n")
        config = load_config(path)
        assert config.training.jit_compile == expected and config.training.precision == "mixed_bfloat16"
    path.write_text("training:\n  jit_compile: on_gpu\n")
    with pytest.raises(
        ConfigError,
        match=r"c\.yaml: 'training\.jit_compile' must be true or false or 'auto', "
        r"got 'on_gpu'",
    ):
        load_config(path)
    path.write_text("training:\n  precision: bfloat16\n")
    with pytest.raises(ConfigError, match="'training.precision' must be one of 'auto', 'float32'"):
        load_config(path)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_dpnn_computes_the_stacks_in_16_bits_and_keeps_float32_at_the_edges(precision):
    import keras

    from msd_triplet.model import build_dpnn

    model = build_dpnn(TINY, seed=0, precision=precision)
    half = precision.removeprefix("mixed_")
    for layer in model.layers[1:]:
        edge = layer.name in ("input_bn", "embedding", "l2_normalize")
        assert layer.dtype_policy.name == ("float32" if edge else precision), layer.name
        assert layer.compute_dtype == ("float32" if edge else half), layer.name
    assert all(w.dtype == "float32" for w in model.weights)
    x = np.random.default_rng(0).standard_normal((3, 80, 130, 1)).astype(np.float32)
    out = model(x)
    assert out.dtype == "float32" and np.allclose(np.linalg.norm(np.asarray(out), axis=1), 1, atol=1e-5)
    # the same weights in float32 give nearly, not exactly, the same embedding
    reference = build_dpnn(TINY, seed=0)
    reference.set_weights(model.get_weights())
    difference = np.abs(np.asarray(reference(x)) - np.asarray(out)).max()
    assert 0 < difference < 5e-2
    with pytest.raises(ArgumentError, match="float64"):
        build_dpnn(TINY, precision="float64")
    assert keras.mixed_precision.dtype_policy().name == "float32"  # no global policy was set


@pytest.mark.parametrize("precision, scaled", [("mixed_bfloat16", False), ("mixed_float16", True)])
def test_mixed_training_step_has_a_float32_loss_and_scales_float16(precision, scaled):
    import keras

    from msd_triplet import training

    config = Config(model=TINY, training=TrainingConfig(batch_size=16, precision=precision, jit_compile=False))
    model = training.compile_model(config, seed=0)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == scaled
    x, y = training.random_batch(config, k=6)
    before = [w.numpy() for w in model.trainable_weights]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["loss"] > 0 and logs["valid_anchors"] > 0
    moved = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert sum(moved) > len(moved) // 2
    assert training.model_compute(model)["precision"] == precision

    # the loss on the mixed model's embeddings equals the float32 loss on the same embeddings
    from msd_triplet import losses

    embeddings = model.predict_on_batch(x)
    lsi, albums = losses.unpack_targets(y)
    assert embeddings.dtype == np.float32
    value = float(model.loss(y, embeddings))
    reference = float(losses.lsi_triplet_loss(embeddings, lsi, albums, mining=config.loss.mining))
    assert value == pytest.approx(reference, abs=1e-6)


def test_dry_run_reports_the_precision_and_xla_used():
    from msd_triplet import training

    config = Config(model=TINY, training=TrainingConfig(batch_size=8, precision="mixed_bfloat16"))
    report = training.dry_run(dataclasses.replace(config))
    assert report.precision == "mixed_bfloat16" and report.jit_compile is False
