"""Audio segment decoding and the log-mel transform (paper IV-B-2, SPEC section 3).

Two halves:

* :func:`read_segment` decodes only the requested segment of one file with
  soundfile (libsndfile reads mp3, wav, flac and ogg; it seeks instead of
  decoding from the start), averages the channels and resamples with soxr.
  It follows exactly the steps of ``librosa.load(path, sr, mono=True,
  offset, duration)`` with librosa's default resampler (soxr "HQ"), so the
  two agree sample for sample; see ``tests/test_audio.py``.
* :func:`log_mel` is the spectrogram as TensorFlow ops (centred Hann STFT,
  power, Slaney mel filter bank, natural log with a floor), and
  :class:`LogMel` wraps it as a serialisable Keras layer so an exported model
  can take raw waveforms. :func:`mel_filterbank` builds the filter bank in
  numpy with librosa's defaults (Slaney mel scale, area normalisation).

TensorFlow is imported inside the functions that need it, so importing this
module (e.g. in a decoding worker process) stays cheap.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from msd_triplet.config import FeatureConfig
from msd_triplet.errors import ArgumentError, AudioError

#: Compute dtypes offered for the FFT and mel projection of :func:`log_mel`.
PRECISIONS = ("float32", "float64")

#: soxr quality used by librosa.load's default ``res_type="soxr_hq"``.
RESAMPLE_QUALITY = "HQ"

# Tolerance when comparing durations: 1 ms, well under one hop.
_DURATION_SLACK = 1e-3


@dataclass(frozen=True)
class SegmentSpec:
    """What :func:`read_segment` extracts: ``duration`` s from ``offset`` s, at ``sample_rate`` Hz."""

    sample_rate: int = 22_050
    offset: float = 3.0
    duration: float = 6.0
    pad_short: bool = False

    @classmethod
    def from_config(cls, features: FeatureConfig) -> "SegmentSpec":
        return cls(features.sample_rate, features.offset, features.duration, features.pad_short)

    @property
    def samples(self) -> int:
        """Length of the returned waveform: ``ceil(duration * sample_rate)`` (132,300 by default)."""
        return int(math.ceil(self.duration * self.sample_rate - 1e-9))


def read_segment(path: str | os.PathLike, spec: SegmentSpec = SegmentSpec()) -> np.ndarray:
    """Decode ``spec.duration`` seconds from ``spec.offset`` seconds of one audio file.

    Parameters
    ----------
    path : audio file readable by libsndfile (mp3, wav, flac, ogg, ...)
    spec : segment and output sample rate

    Returns
    -------
    waveform : float32 [spec.samples] at ``spec.sample_rate`` Hz, mono (mean of
        the channels), finite.

    Raises
    ------
    AudioError
        The file is missing, not a regular file (kind ``not_a_file``: a
        directory, device, FIFO or socket), empty, not audio, cannot be decoded, or holds
        less than ``offset + duration`` seconds (unless ``spec.pad_short``, in
        which case the missing end is zeros; a file shorter than ``offset``
        is an error either way).
    """
    import soundfile as sf
    import soxr

    path = os.fspath(path)
    if not os.path.isfile(path):
        if os.path.exists(path):
            raise AudioError(f"{path}: not a regular file but {_file_kind(path)}", "not_a_file")
        if os.path.islink(path):
            raise AudioError(f"{path}: file not found (a broken symbolic link to {os.readlink(path)})", "missing")
        raise AudioError(f"{path}: file not found", "missing")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: empty file (0 bytes)", "empty")
    need = spec.offset + spec.duration
    try:
        with sf.SoundFile(path) as f:
            native_sr = f.samplerate
            declared = f.frames
            start = int(spec.offset * native_sr)
            length = int(spec.duration * native_sr)
            if declared and declared < start:
                raise AudioError(_too_short(path, spec, declared / native_sr), "too_short")
            if start:
                f.seek(start)
            y = f.read(frames=length, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        raise AudioError(f"{path}: cannot decode audio ({_reason(exc)})", "undecodable") from None
    if y.shape[0] < length:
        have = (start + y.shape[0]) / native_sr
        if not spec.pad_short or y.shape[0] == 0:
            truncated = declared / native_sr > need + _DURATION_SLACK
            raise AudioError(_too_short(path, spec, have, truncated), "truncated" if truncated else "too_short")
        y = np.pad(y, ((0, length - y.shape[0]), (0, 0)))
    mono = _downmix(y)
    if native_sr != spec.sample_rate:
        mono = soxr.resample(mono, native_sr, spec.sample_rate, quality=RESAMPLE_QUALITY)
    out = _fix_length(np.ascontiguousarray(mono, dtype=np.float32), spec.samples)
    if not np.all(np.isfinite(out)):
        raise AudioError(f"{path}: decoded samples are not finite (NaN or inf)", "not_finite")
    return out


def _file_kind(path: str) -> str:
    """What ``path`` (which exists and is not a regular file) is, for a message: "a directory", "a FIFO", …."""
    mode = os.stat(path).st_mode
    kind = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a character device"
        if stat.S_ISCHR(mode)
        else "a block device"
        if stat.S_ISBLK(mode)
        else "a FIFO (named pipe)"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a special file"
    )
    return f"{kind} (a symbolic link to {os.readlink(path)})" if os.path.islink(path) else kind


def _downmix(y: np.ndarray) -> np.ndarray:
    """Mean over channels of float32 [frames, channels], summed channel by channel.

    Same order of float32 additions as librosa's ``to_mono`` (mean over the
    leading axis of [channels, frames]), so the result is bit-identical; and
    about 15x faster than ``y.mean(axis=1)`` on the interleaved layout.
    """
    if y.shape[1] == 1:
        return y[:, 0]
    mono = y[:, 0].copy()
    for channel in range(1, y.shape[1]):
        mono += y[:, channel]
    mono /= np.float32(y.shape[1])
    return mono


def _fix_length(y: np.ndarray, size: int) -> np.ndarray:
    if y.shape[0] > size:
        return y[:size]
    if y.shape[0] < size:
        return np.pad(y, (0, size - y.shape[0]))
    return y


def _too_short(path: str, spec: SegmentSpec, have: float, truncated: bool = False) -> str:
    what = "decoding stopped" if truncated else "file has"
    hint = " (truncated?)" if truncated else ""
    return (
        f"{path}: segment {spec.offset:g}–{spec.offset + spec.duration:g} s needs "
        f"{spec.offset + spec.duration:g} s of audio, {what} {have:.2f} s{hint}"
    )


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if "possibly a pipe" in text:  # libsndfile's words for an existing file whose content it does not recognise
        return "not a recognised audio format"
    return text or type(exc).__name__


# --------------------------------------------------------------------------- mel filter bank

# Slaney mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic (27 mels per factor 6.4) above.
_MEL_HZ_PER_MEL = 200.0 / 3
_MEL_BREAK_HZ = 1000.0
_MEL_BREAK = _MEL_BREAK_HZ / _MEL_HZ_PER_MEL
_MEL_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MEL_BREAK + np.log(np.maximum(hz, _MEL_BREAK_HZ) / _MEL_BREAK_HZ) / _MEL_LOG_STEP
    return np.where(hz >= _MEL_BREAK_HZ, log_part, hz / _MEL_HZ_PER_MEL)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    log_part = _MEL_BREAK_HZ * np.exp(_MEL_LOG_STEP * (mel - _MEL_BREAK))
    return np.where(mel >= _MEL_BREAK, log_part, _MEL_HZ_PER_MEL * mel)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filters with Slaney area normalisation, like ``librosa.filters.mel``.

    Returns
    -------
    weights : float32 [n_mels, n_fft // 2 + 1]; row m maps power-spectrum bins to band m.
        Treat as read-only (cached).
    """
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


def n_frames(samples: int, hop_length: int) -> int:
    """Frames of a centred STFT of ``samples`` samples: ``1 + samples // hop_length`` (130 by default)."""
    return 1 + samples // hop_length


def feature_shape(features: FeatureConfig) -> tuple[int, int]:
    """(mel bands, frames) of one track's log-mel matrix: (80, 130) by default."""
    return features.n_mels, n_frames(SegmentSpec.from_config(features).samples, features.hop_length)


# --------------------------------------------------------------------------- log-mel as TF ops


def log_mel(
    waveform: Any,
    *,
    sample_rate: int = 22_050,
    n_fft: int = 2_048,
    hop_length: int = 1_024,
    n_mels: int = 80,
    fmin: float = 16.0,
    fmax: float = 11_000.0,
    log_floor: float = 1e-6,
    precision: str = "float32",
) -> Any:
    """Log-mel spectrogram of waveforms, as TensorFlow ops (XLA-compilable).

    Equals ``np.log(librosa.feature.melspectrogram(y=waveform, sr=sample_rate,
    n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax) +
    log_floor)``: centred STFT with ``n_fft // 2`` zeros on each side, periodic
    Hann window, power spectrum, Slaney mel bank, natural log.

    Parameters
    ----------
    waveform : float32 [..., samples] at ``sample_rate`` Hz
    precision : "float32" or "float64", the dtype of the FFT and mel projection.
        float32 agrees with librosa to 2e-4 on music and noise and to ~1e-3 on
        full-scale pure tones (librosa's FFT runs in float64; TF's float32 FFT
        leaves ~1e-12 of a tone's power in far bands, which the 1e-6 log floor
        magnifies); float64 agrees to 2e-5 and costs 1.6-1.75x the time.

    Returns
    -------
    log_mel : float32 [..., n_mels, frames], frames = 1 + samples // hop_length
    """
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ArgumentError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    dtype = tf.float64 if precision == "float64" else tf.float32
    waveform = tf.cast(tf.convert_to_tensor(waveform), dtype)
    pad = n_fft // 2
    rank = waveform.shape.rank
    padded = tf.pad(waveform, [[0, 0]] * (rank - 1) + [[pad, pad]])
    frames = tf.signal.frame(padded, n_fft, hop_length, pad_end=False)  # [..., frames, n_fft]
    spectrum = tf.signal.rfft(frames * tf.constant(hann_window(n_fft), dtype=dtype))
    power = tf.math.square(tf.math.real(spectrum)) + tf.math.square(tf.math.imag(spectrum))
    bank = tf.constant(mel_filterbank(sample_rate, n_fft, n_mels, float(fmin), float(fmax)).T, dtype=dtype)
    mel = tf.cast(tf.tensordot(power, bank, axes=1), tf.float32)  # [..., frames, n_mels]
    logmel = tf.math.log(mel + log_floor)
    perm = list(range(rank - 1)) + [rank, rank - 1]
    return tf.transpose(logmel, perm)


def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window, float64 [n_fft] (``scipy.signal.get_window("hann", n_fft)``, as librosa uses)."""
    n = np.arange(n_fft, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)


#: The keyword arguments of :func:`log_mel`; a :class:`FeatureConfig` and the ``LogMel`` layer name them alike.
LOG_MEL_ARGUMENTS = ("sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "log_floor", "precision")


def log_mel_kwargs(settings: FeatureConfig | Any) -> dict[str, Any]:
    """The keyword arguments of :func:`log_mel` taken from a feature config (or anything with those attributes)."""
    return {name: getattr(settings, name) for name in LOG_MEL_ARGUMENTS}
