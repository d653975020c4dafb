"""Shared fixtures: a tiny MSD-like data set in the real on-disk formats (tmp_path based)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from msd_triplet.config import Config, DataConfig

GENRES = ["Pop/Rock", "Electronic", "Jazz", "Latin", "Children's"]
STYLES = ["Rock en Español", "Bop", "Dance-Pop", "Club/Dance", "Alternative Pop/Rock", "Lullabies"]
MOODS = ["Happy", "Sad", "Energetic", "Calm"]
THEMES = ["Party Time", "Rainy Day", "Girls' Night Out"]


def tid(i: int) -> str:
    """A valid, deterministic MSD-style track id."""
    return f"TR{i:016X}"


@dataclass
class TinyDataset:
    """A written fixture data set and what the intersection filter must make of it."""

    config: Config
    root: Path
    tags: dict[str, dict[str, list[str]]]  # track -> set -> raw tags (h5 spelling)
    artist: dict[str, str]
    album: dict[str, str]
    expected_kept: list[str]
    expected_reasons: dict[str, str]  # dropped track -> first reason (prefix)


def write_h5(frame: pd.DataFrame, path: Path) -> Path:
    """``frame.to_hdf(path, key="data")`` without the PyTables pickling warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        frame.to_hdf(path, key="data")
    return path


def make_tiny_dataset(root: Path, seed: int = 0, n_artists: int = 8, tracks_per_album: int = 3) -> TinyDataset:
    """8 artists × 2 albums × 3 tracks = 48 tracks; album-level tags; a few broken tracks.

    Broken on purpose: one track without styles, one without themes, one without
    metadata, one whose audio file is missing, one malformed id in the h5.
    """
    rng = np.random.default_rng(seed)
    tags, artist, album, release = {}, {}, {}, {}
    i = 0
    for a in range(n_artists):
        for b in range(2):
            album_tags = {
                "genres": list(rng.choice(GENRES, size=rng.integers(1, 3), replace=False)),
                "styles": list(rng.choice(STYLES, size=rng.integers(1, 4), replace=False)),
                "moods": list(rng.choice(MOODS, size=rng.integers(1, 3), replace=False)),
                "themes": list(rng.choice(THEMES, size=rng.integers(1, 3), replace=False)),
            }
            for _ in range(tracks_per_album):
                t = tid(i)
                tags[t] = {k: list(v) for k, v in album_tags.items()}
                artist[t] = f"AR{a:04d}"
                # every artist has a "Greatest Hits": the album key must keep them apart
                release[t] = "Greatest  Hits" if b == 0 else f"Album {a}"
                album[t] = f"AR{a:04d}/" + ("greatest hits" if b == 0 else f"album {a}")
                i += 1
    ids = sorted(tags)
    no_styles, no_themes, no_meta, no_audio = ids[1], ids[5], ids[10], ids[20]
    tags[no_styles]["styles"] = []
    tags[no_themes]["themes"] = []
    expected_reasons = {
        no_styles: "no tag in styles",
        no_themes: "no tag in themes",
        no_meta: "no metadata",
        no_audio: "audio file missing",
    }

    frame = pd.DataFrame(
        {s: [tags[t][s] if tags[t][s] else np.nan for t in ids] for s in ("genres", "styles", "moods", "themes")},
        index=pd.Index(ids, name="track_id"),
    )
    frame.loc["not-a-track-id"] = [["Jazz"], ["Bop"], ["Sad"], ["Rainy Day"]]
    write_h5(frame, root / "msd_amglabels_all.h5")

    con = sqlite3.connect(root / "track_metadata.db")
    con.execute(
        "CREATE TABLE songs (track_id TEXT, title TEXT, song_id TEXT, release TEXT, "
        "artist_id TEXT, artist_name TEXT, duration REAL, year INT)"
    )
    con.executemany(
        "INSERT INTO songs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(t, "title", "SO", release[t], artist[t], "name", 30.0, 2000) for t in ids if t != no_meta],
    )
    con.commit()
    con.close()

    (root / "audio").mkdir()
    for t in ids:
        if t != no_audio:
            (root / "audio" / f"{t}.mp3").write_bytes(b"")
    config = Config(
        seed=seed,
        data=DataConfig(
            root=str(root), tags=("msd_amglabels_all.h5",), metadata="track_metadata.db", audio="audio/{track_id}.mp3"
        ),
    )
    kept = [t for t in ids if t not in expected_reasons]
    return TinyDataset(config, root, tags, artist, album, kept, expected_reasons)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> TinyDataset:
    return make_tiny_dataset(tmp_path)


@pytest.fixture
def make_dataset():
    """The factory behind ``tiny_dataset``, for other seeds or sizes."""
    return make_tiny_dataset


# --------------------------------------------------------------------------- edge-case audio


def music_like(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """float32 [samples, channels]: harmonic notes with envelopes, noise bursts and a noise floor."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    out = np.zeros((n, channels))
    for c in range(channels):
        y = 0.002 * rng.standard_normal(n)
        for start in np.arange(0.0, seconds, 0.5):
            f0 = 55.0 * 2 ** (rng.integers(0, 36) / 12)
            env = np.exp(-np.clip(t - start, 0, None) * 4.0) * (t >= start)
            for h in range(1, 6):
                if f0 * h < sr / 2:
                    y += 0.08 / h * env * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
            burst = (t >= start) & (t < start + 0.03)
            y[burst] += 0.2 * rng.standard_normal(int(burst.sum()))
        out[:, c] = y
    return np.clip(out, -1, 1).astype(np.float32)


#: name → (extension, sample rate, channels, seconds, soundfile subtype or None)
GOOD_AUDIO = {
    "wav_22k_mono": ("wav", 22_050, 1, 12.0, "PCM_16"),
    "mp3_44k_stereo": ("mp3", 44_100, 2, 12.0, None),
    "mp3_22k_mono": ("mp3", 22_050, 1, 11.0, None),
    "flac_48k_stereo": ("flac", 48_000, 2, 10.0, "PCM_16"),
    "ogg_32k_mono": ("ogg", 32_000, 1, 10.0, None),
    "wav_8k_mono": ("wav", 8_000, 1, 10.0, "PCM_16"),
    "wav_8bit": ("wav", 22_050, 1, 10.0, "PCM_U8"),
    "wav_24bit_stereo": ("wav", 44_100, 2, 10.0, "PCM_24"),
    "wav_5_1": ("wav", 48_000, 6, 10.0, "PCM_16"),
}
#: name → the AudioError kind it must give
BAD_AUDIO = {
    "missing": "missing",
    "empty": "empty",
    "truncated_mp3": "truncated",
    "not_audio": "undecodable",
    "short_wav": "too_short",
    "short_mp3": "too_short",
}


@dataclass
class AudioFiles:
    good: dict[str, Path]
    bad: dict[str, Path]
    silent: Path

    @property
    def all(self) -> dict[str, Path]:
        return {**self.good, **self.bad, "silent": self.silent}


def write_audio_files(folder: Path) -> AudioFiles:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    good = {}
    for i, (name, (ext, sr, ch, seconds, subtype)) in enumerate(GOOD_AUDIO.items()):
        path = folder / f"{name}.{ext}"
        sf.write(path, music_like(seconds, sr, ch, seed=i), sr, subtype=subtype, format=ext.upper())
        good[name] = path
    bad = {
        "missing": folder / "missing.mp3",
        "empty": folder / "empty.mp3",
        "truncated_mp3": folder / "truncated.mp3",
        "not_audio": folder / "not_audio.flac",
        "short_wav": folder / "short.wav",
        "short_mp3": folder / "short.mp3",
    }
    bad["empty"].write_bytes(b"")
    full = good["mp3_44k_stereo"].read_bytes()
    bad["truncated_mp3"].write_bytes(full[: len(full) * 2 // 5])  # ~4.8 s of a declared 12 s
    bad["not_audio"].write_bytes(b"<html><body>this is not audio</body></html>\n" * 50)
    sf.write(bad["short_wav"], music_like(4.2, 22_050), 22_050, subtype="PCM_16")
    sf.write(bad["short_mp3"], music_like(8.5, 44_100, 2), 44_100, format="MP3")
    silent = folder / "silent.wav"
    sf.write(silent, np.zeros((22_050 * 10, 1), np.float32), 22_050, subtype="PCM_16")
    return AudioFiles(good, bad, silent)


@pytest.fixture(scope="session")
def audio_files(tmp_path_factory) -> AudioFiles:
    """Good, bad and silent audio files of every format and layout the decoder must handle."""
    return write_audio_files(tmp_path_factory.mktemp("audio"))


@pytest.fixture(scope="session")
def librosa():
    """librosa, imported once per session (its first import compiles for ~20 s)."""
    import librosa as _librosa

    return _librosa


# --------------------------------------------------------------------------- prepared data for training

TINY = """\
seed: {seed}
data:
  root: {root}
  audio: audio/{{track_id}}.wav
  split_proportions: [0.6, 0.2, 0.2]
lsi:
  k: 6
model:
  widths: [2, 2, 4, 4]
  embedding_dim: 8
training:
  batch_size: 8
  epochs: {epochs}
  early_stopping_patience: 0
  runs: {runs}
  precision: {precision}
evaluation:
  k: 3
"""


def quick_tones(seconds: float, sr: int, seed: int) -> np.ndarray:
    """float32 [samples]: three harmonic notes under a tremolo, plus a noise floor (fast to make)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.01 * rng.standard_normal(t.size)
    for f0 in 110.0 * 2 ** (rng.integers(0, 24, 3) / 12):
        for h in range(1, 5):
            y += 0.1 / h * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
    return (y * (0.7 + 0.3 * np.sin(2 * np.pi * rng.uniform(1, 6) * t))).astype(np.float32)


@pytest.fixture(scope="session")
def prepared_root(tmp_path_factory) -> Path:
    """The tiny tag data set with 10 s of audio per track, prepared with features extracted.

    Train on it with a config from :func:`write_run_config` (tiny model, batch 8).
    """
    import soundfile as sf

    from msd_triplet.config import load_config
    from msd_triplet.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("prepared")
    dataset = make_tiny_dataset(root)
    for i, track in enumerate(dataset.expected_kept):
        sf.write(root / "audio" / f"{track}.wav", quick_tones(10.0, 22050, seed=i), 22050)
    config = load_config(write_run_config(root, root / "runs"))
    prepare_dataset(config, workers=1)
    return root


def write_run_config(
    root: Path, runs: Path, seed: int = 0, epochs: int = 2, name: str = "tiny.yaml", precision: str = "float32"
) -> Path:
    """A tiny run's config; float32 unless asked, so tests pin the same numbers on every machine."""
    path = root / name
    path.write_text(TINY.format(seed=seed, root=root, runs=runs, epochs=epochs, precision=precision))
    return path


@pytest.fixture(scope="session")
def tiny_run(prepared_root, tmp_path_factory) -> Path:
    """One epoch of the tiny DPNN (widths 2-2-4-4, embedding 8) on :func:`prepared_root`: a run folder.

    Shared by the evaluation, export, embedding and probe tests; they add files
    to it (metrics, exports, indexes) but never change what is there.
    """
    from msd_triplet.config import load_config
    from msd_triplet.training import fit

    config = load_config(
        write_run_config(prepared_root, tmp_path_factory.mktemp("tiny-run"), epochs=1, name="tiny-run.yaml")
    )
    return fit(config, verbose=0, say=lambda _: None).run_dir


@pytest.fixture()
def runner():
    """A click ``CliRunner`` for the ``msd-triplet`` commands."""
    from click.testing import CliRunner

    return CliRunner()


@pytest.fixture()
def keep_log_level(monkeypatch):
    """A command sets ``TF_CPP_MIN_LOG_LEVEL`` in the test process: restore it after the test."""
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))


def run_until_killed(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -c script args…`` from the tests folder; the script SIGKILLs itself part-way (a crash).

    Fails unless it was killed; returns the finished process with its stdout and stderr as text.
    """
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        cwd=Path(__file__).parent,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    return done
