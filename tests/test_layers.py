"""Keras layers: outputs and `.keras` round trips."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import music_like

from msd_triplet import audio
from msd_triplet.config import FeatureConfig
from msd_triplet.errors import ArgumentError


@pytest.fixture(scope="module")
def keras():
    import keras as _keras

    return _keras


def test_log_mel_layer_equals_the_cache_transform(keras):
    from msd_triplet.layers import LogMel

    y = np.stack([music_like(6.0, 22_050, seed=s)[:, 0] for s in range(2)])
    layer = LogMel.from_features(FeatureConfig())
    out = np.asarray(layer(y))
    assert out.shape == (2, 80, 130, 1)
    np.testing.assert_allclose(
        out[..., 0], audio.log_mel(y, **audio.log_mel_kwargs(FeatureConfig())).numpy(), atol=1e-6
    )
    assert layer.compute_output_shape((None, 132_300)) == (None, 80, 130, 1)
    with pytest.raises(ArgumentError, match="precision"):  # also a ValueError
        LogMel(precision="float16")


def test_log_mel_layer_round_trips_in_a_saved_model(keras, tmp_path):
    from msd_triplet.layers import LogMel

    inputs = keras.Input((132_300,), name="waveform")
    x = LogMel(n_mels=64, fmax=8_000.0, precision="float32", name="log_mel")(inputs)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    y = np.stack([music_like(6.0, 22_050, seed=s)[:, 0] for s in range(2)])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    restored = loaded.get_layer("log_mel")
    assert isinstance(restored, LogMel) and restored.n_mels == 64 and restored.fmax == 8_000.0
    assert restored.get_config() == model.get_layer("log_mel").get_config()
    np.testing.assert_allclose(loaded.predict(y, verbose=0), model.predict(y, verbose=0), atol=1e-6)
