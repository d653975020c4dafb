"""Shared fixtures: a tiny MSD-like data set in the real on-disk formats (tmp_path based)."""

from __future__ import annotations

import sqlite3
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
    expected_reasons = {no_styles: "no tag in styles", no_themes: "no tag in themes",
                        no_meta: "no metadata", no_audio: "audio file missing"}

    frame = pd.DataFrame(
        {s: [tags[t][s] if tags[t][s] else np.nan for t in ids] for s in ("genres", "styles", "moods", "themes")},
        index=pd.Index(ids, name="track_id"),
    )
    frame.loc["not-a-track-id"] = [["Jazz"], ["Bop"], ["Sad"], ["Rainy Day"]]
    write_h5(frame, root / "msd_amglabels_all.h5")

    con = sqlite3.connect(root / "track_metadata.db")
    con.execute("CREATE TABLE songs (track_id TEXT, title TEXT, song_id TEXT, release TEXT, "
                "artist_id TEXT, artist_name TEXT, duration REAL, year INT)")
    con.executemany("INSERT INTO songs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(t, "title", "SO", release[t], artist[t], "name", 30.0, 2000) for t in ids if t != no_meta])
    con.commit()
    con.close()

    (root / "audio").mkdir()
    for t in ids:
        if t != no_audio:
            (root / "audio" / f"{t}.mp3").write_bytes(b"")
    config = Config(seed=seed, data=DataConfig(root=str(root), tags=("msd_amglabels_all.h5",),
                                               metadata="track_metadata.db", audio="audio/{track_id}.mp3"))
    kept = [t for t in ids if t not in expected_reasons]
    return TinyDataset(config, root, tags, artist, album, kept, expected_reasons)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> TinyDataset:
    return make_tiny_dataset(tmp_path)


@pytest.fixture
def make_dataset():
    """The factory behind ``tiny_dataset``, for other seeds or sizes."""
    return make_tiny_dataset
