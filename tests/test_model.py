"""DPNN initialisation: every layer draws from its own random stream."""

from __future__ import annotations

import itertools

import numpy as np

from msd_triplet.config import ModelConfig


def _kernels(seed):
    from msd_triplet.model import build_dpnn

    model = build_dpnn(ModelConfig(widths=(4, 4, 8, 8), embedding_dim=16), seed=seed)
    return {layer.name: layer for layer in model.layers if hasattr(layer, "kernel")}


def test_no_two_kernels_share_a_seed_or_a_random_stream():
    layers = _kernels(seed=3)
    assert len(layers) == 9  # 4 conv per stack + the embedding
    seeds = {name: layer.kernel_initializer.seed for name, layer in layers.items()}
    assert all(isinstance(s, int) for s in seeds.values())
    assert len(set(seeds.values())) == len(seeds), seeds
    # Glorot uniform draws U(-limit, limit): kernels from one stream would agree after dividing
    # by their limits on their common prefix (the old seed + 100 i + len(name) made timbre_convI
    # and rhythm_convI equal, since len("timbre") == len("rhythm")).
    scaled = {}
    for name, layer in layers.items():
        w = np.asarray(layer.kernel).reshape(-1)
        fan_in, fan_out = np.prod(layer.kernel.shape[:-1]), layer.kernel.shape[-1]
        if len(layer.kernel.shape) == 4:
            fan_out = fan_out * np.prod(layer.kernel.shape[:2])
        scaled[name] = w / np.sqrt(6.0 / (fan_in + fan_out))
    for a, b in itertools.combinations(scaled, 2):
        n = min(len(scaled[a]), len(scaled[b]), 64)
        assert not np.allclose(scaled[a][:n], scaled[b][:n], atol=1e-6), (a, b)


def test_same_seed_same_weights_other_seed_other_weights():
    first, again, other = _kernels(5), _kernels(5), _kernels(6)
    for name in first:
        np.testing.assert_array_equal(np.asarray(first[name].kernel), np.asarray(again[name].kernel))
        assert not np.allclose(np.asarray(first[name].kernel), np.asarray(other[name].kernel))
    assert {n: layer.kernel_initializer.seed for n, layer in first.items()} != {
        n: layer.kernel_initializer.seed for n, layer in other.items()
    }
