"""Keras layers of msd-triplet, registered for ``.keras`` and SavedModel round trips."""

from __future__ import annotations

from typing import Any

import keras

from msd_triplet import audio
from msd_triplet.config import FeatureConfig
from msd_triplet.errors import ArgumentError

PACKAGE = "msd_triplet"


@keras.saving.register_keras_serializable(package=PACKAGE)
class LogMel(keras.layers.Layer):
    """Raw waveforms → log-mel spectrograms, the same transform as the feature cache.

    Put it in front of the DPNN so an exported model accepts audio:
    ``float32 [batch, samples]`` at ``sample_rate`` Hz →
    ``float32 [batch, n_mels, frames, 1]`` (``[batch, 80, 130, 1]`` for 6 s).
    Arguments are those of :func:`msd_triplet.audio.log_mel`; no weights.
    """

    def __init__(
        self,
        sample_rate: int = 22_050,
        n_fft: int = 2_048,
        hop_length: int = 1_024,
        n_mels: int = 80,
        fmin: float = 16.0,
        fmax: float = 11_000.0,
        log_floor: float = 1e-6,
        precision: str = "float32",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if precision not in audio.PRECISIONS:
            raise ArgumentError(f"LogMel precision: expected one of {audio.PRECISIONS}, got {precision!r}")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.fmin = float(fmin)
        self.fmax = float(fmax)
        self.log_floor = float(log_floor)
        self.precision = precision
        self.input_spec = keras.layers.InputSpec(ndim=2)

    @classmethod
    def from_features(cls, features: FeatureConfig, **kwargs: Any) -> "LogMel":
        """The layer matching a feature config (and so the feature cache built from it)."""
        return cls(**audio.log_mel_kwargs(features), **kwargs)

    def call(self, waveform):
        return keras.ops.expand_dims(audio.log_mel(waveform, **audio.log_mel_kwargs(self)), -1)

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        frames = None if samples is None else audio.n_frames(samples, self.hop_length)
        return (input_shape[0], self.n_mels, frames, 1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(audio.log_mel_kwargs(self))
        return config
