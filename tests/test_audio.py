"""Decoding and log-mel: compared with librosa, which we did not write (SPEC section 3)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BAD_AUDIO, GOOD_AUDIO, music_like

from msd_triplet import audio
from msd_triplet.config import FeatureConfig
from msd_triplet.errors import AudioError

SR = 22_050
MEL = dict(sr=SR, n_fft=2048, hop_length=1024, n_mels=80, fmin=16, fmax=11000)


def librosa_log_mel(librosa, y: np.ndarray) -> np.ndarray:
    return np.log(librosa.feature.melspectrogram(y=y, **MEL) + 1e-6)


def test_filterbank_matches_librosa(librosa):
    for sr, n_fft, n_mels, fmin, fmax in [
        (22_050, 2048, 80, 16.0, 11_000.0),
        (16_000, 1024, 40, 0.0, 8_000.0),
        (44_100, 4096, 128, 30.0, 16_000.0),
    ]:
        ours = audio.mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        assert ours.shape == ref.shape == (n_mels, n_fft // 2 + 1)
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-9)


def test_mel_scale_round_trip(librosa):
    hz = np.array([0.0, 16.0, 440.0, 999.0, 1000.0, 1001.0, 11_000.0])
    np.testing.assert_allclose(audio.hz_to_mel(hz), librosa.hz_to_mel(hz), rtol=1e-12)
    np.testing.assert_allclose(audio.mel_to_hz(audio.hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)


def _waveforms() -> dict[str, np.ndarray]:
    n = 132_300
    t = np.arange(n) / SR
    rng = np.random.default_rng(7)
    return {
        "music": music_like(6.0, SR, seed=3)[:, 0],
        "noise": (0.1 * rng.standard_normal(n)).astype(np.float32),
        "quiet": (1e-4 * rng.standard_normal(n)).astype(np.float32),
        "silence": np.zeros(n, np.float32),
        "tone": (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32),
        "full_scale_chirp": np.sin(2 * np.pi * (50 + 500 * t) * t).astype(np.float32),
    }


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_log_mel_matches_librosa(librosa, precision):
    waves = _waveforms()
    batch = np.stack(list(waves.values()))
    ours = audio.log_mel(batch, precision=precision).numpy()
    assert ours.shape == (len(waves), 80, 130) and ours.dtype == np.float32
    errors = {
        name: float(np.abs(got - librosa_log_mel(librosa, y)).max()) for (name, y), got in zip(waves.items(), ours)
    }
    # the spec's bound against librosa on the same float32 waveform
    assert max(errors.values()) <= 1e-3 if precision == "float64" else 1.5e-3, errors
    if precision == "float64":
        # against librosa computing in float64 too: equal up to rounding the result to float32
        exact = {
            name: float(np.abs(got - librosa_log_mel(librosa, y.astype(np.float64))).max())
            for (name, y), got in zip(waves.items(), ours)
        }
        assert max(exact.values()) <= 2e-6, exact
    else:
        # float32: far inside 1e-3 on music and noise; only full-scale pure tones come near it
        assert max(errors[k] for k in ("music", "noise", "quiet", "silence")) <= 2e-4, errors


def test_log_mel_of_silence_is_the_floor():
    out = audio.log_mel(np.zeros((1, 132_300), np.float32)).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, np.log(1e-6), rtol=1e-6)


def test_log_mel_other_parameters_and_ranks(librosa):
    y = music_like(3.0, 16_000, seed=1)[:, 0]
    kwargs = dict(sample_rate=16_000, n_fft=1024, hop_length=256, n_mels=40, fmin=0.0, fmax=8_000.0, log_floor=1e-5)
    ours = audio.log_mel(y, precision="float64", **kwargs).numpy()  # rank 1: no batch axis
    ref = np.log(
        librosa.feature.melspectrogram(y=y, sr=16_000, n_fft=1024, hop_length=256, n_mels=40, fmin=0.0, fmax=8_000.0)
        + 1e-5
    )
    assert ours.shape == ref.shape == (40, 1 + len(y) // 256)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    stacked = audio.log_mel(np.stack([[y, y]]), precision="float64", **kwargs).numpy()  # rank 3
    assert stacked.shape == (1, 2, 40, ours.shape[1])
    np.testing.assert_allclose(stacked[0, 1], ours, atol=1e-6)


def test_log_mel_compiles_with_xla():
    import tensorflow as tf

    y = np.stack([music_like(6.0, SR, seed=s)[:, 0] for s in range(2)])
    eager = audio.log_mel(y).numpy()
    compiled = tf.function(lambda w: audio.log_mel(w), jit_compile=True)(tf.constant(y)).numpy()
    np.testing.assert_allclose(compiled, eager, atol=1e-4)


def test_feature_shape_follows_config():
    assert audio.feature_shape(FeatureConfig()) == (80, 130)
    assert audio.feature_shape(FeatureConfig(duration=3.0, hop_length=512, n_mels=64)) == (64, 130)
    assert audio.SegmentSpec().samples == 132_300


@pytest.mark.parametrize("name", sorted(GOOD_AUDIO))
def test_read_segment_matches_librosa_load(librosa, audio_files, name):
    path = audio_files.good[name]
    ours = audio.read_segment(path)
    ref, sr = librosa.load(path, sr=SR, mono=True, offset=3.0, duration=6.0)
    assert ours.dtype == np.float32 and ours.shape == (132_300,) and sr == SR
    assert ref.shape == ours.shape
    # same decoder (libsndfile), same seek, same channel mean and the same soxr "HQ" resampler as librosa's
    # default res_type, so the samples agree exactly; the bound leaves room for float summation order.
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert np.abs(ours).max() > 0.01


@pytest.mark.parametrize("name", sorted(BAD_AUDIO))
def test_bad_audio_is_a_clear_error(audio_files, name):
    path = audio_files.bad[name]
    with pytest.raises(AudioError) as info:
        audio.read_segment(path)
    assert info.value.kind == BAD_AUDIO[name]
    assert str(path) in str(info.value)


def test_short_audio_message_states_what_is_needed(audio_files):
    with pytest.raises(AudioError, match=r"short\.wav: segment 3–9 s needs 9 s of audio, file has 4\.20 s"):
        audio.read_segment(audio_files.bad["short_wav"])


def test_short_audio_is_padded_only_on_request(audio_files):
    spec = audio.SegmentSpec(pad_short=True)
    y = audio.read_segment(audio_files.bad["short_wav"], spec)
    assert y.shape == (132_300,)
    have = int(round((4.2 - 3.0) * SR))
    assert np.abs(y[: have - 10]).max() > 0 and not np.any(y[have + 10 :])
    with pytest.raises(AudioError, match="needs 11 s of audio, file has 4.20 s"):  # shorter than the offset
        audio.read_segment(audio_files.bad["short_wav"], audio.SegmentSpec(offset=5.0, pad_short=True))


def test_silence_decodes_to_zeros_and_a_finite_matrix(audio_files):
    y = audio.read_segment(audio_files.silent)
    assert y.shape == (132_300,) and not np.any(y)
    assert np.all(np.isfinite(audio.log_mel(y).numpy()))


def test_other_segments(librosa, audio_files):
    path = audio_files.good["flac_48k_stereo"]
    spec = audio.SegmentSpec(sample_rate=16_000, offset=0.0, duration=2.5)
    ours = audio.read_segment(path, spec)
    ref, _ = librosa.load(path, sr=16_000, mono=True, offset=0.0, duration=2.5)
    assert ours.shape == ref.shape == (40_000,)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_a_path_that_is_not_a_regular_file_says_what_it_is(tmp_path):
    import os

    (tmp_path / "folder.mp3").mkdir()
    os.mkfifo(tmp_path / "pipe.wav")  # opening it would block: it must never be opened
    (tmp_path / "zero.wav").symlink_to("/dev/zero")
    (tmp_path / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    cases = {
        "folder.mp3": ("not_a_file", "not a regular file but a directory"),
        "pipe.wav": ("not_a_file", "not a regular file but a FIFO"),
        "zero.wav": ("not_a_file", "a character device (a symbolic link to /dev/zero)"),
        "dangling.wav": ("missing", f"broken symbolic link to {tmp_path / 'gone.wav'}"),
    }
    for name, (kind, message) in cases.items():
        with pytest.raises(AudioError) as info:
            audio.read_segment(tmp_path / name)
        assert info.value.kind == kind and str(info.value).startswith(str(tmp_path / name)), name
        assert message in str(info.value), name
