"""Every Keras object the package registers survives serialisation (keras-hub's round-trip pattern).

For each registered object: ``get_config`` → ``from_config`` and Keras's own
``serialize_keras_object`` → ``deserialize_keras_object`` give an object with
the same config that computes the same numbers, with non-default arguments so
that a forgotten config key shows. A registered object without a case here
fails :func:`test_every_registered_object_has_a_case`.
"""

from __future__ import annotations

import numpy as np
import pytest


def _cases():
    from msd_triplet.layers import LogMel
    from msd_triplet.losses import LsiTripletLoss, TripletStatistic, pack_targets

    rng = np.random.default_rng(0)
    lsi = rng.standard_normal((12, 4)).astype(np.float32)
    albums = np.repeat(np.arange(6), 2)
    y_true = pack_targets(lsi, albums)
    y_pred = rng.standard_normal((12, 5)).astype(np.float32)
    y_pred /= np.linalg.norm(y_pred, axis=1, keepdims=True)
    wave = (0.1 * rng.standard_normal((2, 16_000))).astype(np.float32)

    def layer_output(obj):
        return np.asarray(obj(wave))

    def loss_output(obj):
        return np.asarray(obj(y_true, y_pred))

    def metric_output(obj):
        obj.reset_state()
        obj.update_state(y_true, y_pred)
        return np.asarray(obj.result())

    loss_args = dict(
        positive_threshold=0.7,
        negative_threshold=0.1,
        margin=0.3,
        mining="batch_all",
        album_filter=False,
        soft_margin=True,
        relatedness="cosine",
    )
    mel_args = dict(
        sample_rate=16_000, n_fft=1_024, hop_length=256, n_mels=40, fmin=30.0, fmax=7_000.0, log_floor=1e-5, name="mel"
    )
    return {  # key: (class, non-default arguments, what it computes)
        "msd_triplet>LogMel": (LogMel, mel_args, layer_output),
        "msd_triplet>LsiTripletLoss": (LsiTripletLoss, dict(loss_args, name="custom_loss"), loss_output),
        "msd_triplet>TripletStatistic": (
            TripletStatistic,
            dict(loss_args, statistic="active_triplets", name="act"),
            metric_output,
        ),
    }


def test_every_registered_object_has_a_case():
    import keras

    import msd_triplet  # noqa: F401 - registers the objects when keras is imported

    registered = {k for k in keras.saving.get_custom_objects() if k.startswith("msd_triplet>")}
    assert registered == set(_cases()), "add a round-trip case for every registered object"


@pytest.mark.parametrize("key", ["msd_triplet>LogMel", "msd_triplet>LsiTripletLoss", "msd_triplet>TripletStatistic"])
def test_round_trip_keeps_config_and_numbers(key):
    import keras

    cls, arguments, output = _cases()[key]
    original = cls(**arguments)
    config = original.get_config()
    assert keras.saving.get_registered_name(cls) == key
    for name, value in arguments.items():  # every argument is in the config, with its value
        assert config[name] == value, name

    rebuilt = type(original).from_config(config)
    assert rebuilt.get_config() == config

    serialised = keras.saving.serialize_keras_object(original)
    assert serialised["registered_name"] == key
    restored = keras.saving.deserialize_keras_object(serialised)
    assert type(restored) is type(original)
    assert restored.get_config() == config

    expected = output(original)
    np.testing.assert_allclose(output(rebuilt), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(output(restored), expected, rtol=1e-6, atol=1e-7)
    # the non-default arguments change what the object computes, so the comparison above means something
    default = output(cls())
    assert default.shape != expected.shape or not np.allclose(default, expected)
