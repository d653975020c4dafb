"""The prepared tracks as people read them: names, tags of every facet, where the audio is.

:func:`track_table` joins ``prepare``'s output (ids, splits, tag matrices) with
the display names the metadata file holds (title, artist name, release of the
MSD ``track_metadata.db`` or ``unique_tracks.txt``; columns ``title``,
``artist_name``, ``release`` of a CSV). Used by ``serve`` and by the TensorBoard
projector files; tracks without names show their ids.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from msd_triplet.config import Config, DataConfig

#: Columns of :func:`track_table` besides one per tag set.
NAME_COLUMNS = ("track_id", "title", "artist", "album", "artist_id", "album_id", "split", "audio_path")

_SQLITE_MAGIC = b"SQLite format 3\x00"


def track_table(config: Config, prepared=None, *, separator: str = "; ") -> pd.DataFrame:
    """One row per prepared track, in ``prepared.tracks`` order.

    Columns: :data:`NAME_COLUMNS` then one per tag set of ``config.data.tag_sets``
    (its tags joined by ``separator``, in vocabulary order). ``audio_path`` is
    resolved against ``data.root`` (absolute where the configured root is).
    Names missing from the metadata fall back to the track, artist and album ids.
    """
    if prepared is None:
        from msd_triplet.prepare import load_prepared

        prepared = load_prepared(config)
    tracks = prepared.tracks
    ids = tracks["track_id"].to_numpy(str)
    names = read_names(config.data).reindex(ids)
    table = pd.DataFrame(
        {
            "track_id": ids,
            "title": _fill(names["title"], ids),
            "artist": _fill(names["artist"], tracks["artist_id"].to_numpy(str)),
            "album": _fill(names["album"], tracks["album_id"].to_numpy(str)),
            "artist_id": tracks["artist_id"].to_numpy(str),
            "album_id": tracks["album_id"].to_numpy(str),
            "split": tracks["split"].to_numpy(str),
            "audio_path": [str(config.data.path(p)) for p in tracks["audio_path"]],
        }
    )
    for tagset in config.data.tag_sets:
        matrix = prepared.matrices[tagset]
        csr = matrix.matrix.tocsr()
        vocabulary = np.asarray(matrix.vocabulary, dtype=object)
        table[tagset] = [
            separator.join(vocabulary[np.sort(csr.indices[a:b])]) for a, b in zip(csr.indptr[:-1], csr.indptr[1:])
        ]
    return table


def read_names(data: DataConfig) -> pd.DataFrame:
    """Title, artist and album names by track id (empty where the metadata file has none)."""
    empty = pd.DataFrame(columns=["title", "artist", "album"], index=pd.Index([], name="track_id"), dtype=object)
    path = data.path(data.metadata)
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_SQLITE_MAGIC))
    except OSError:
        return empty
    if magic == _SQLITE_MAGIC:
        frame = _sqlite_names(path)
    elif path.suffix.lower() == ".txt":
        frame = _unique_tracks_names(path)
    else:
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, UnicodeDecodeError):
            return empty
        frame = frame.rename(columns={"artist_name": "artist", "release": "album"})
    if frame is None or "track_id" not in frame:
        return empty
    for column in ("title", "artist", "album"):
        if column not in frame:
            frame[column] = ""
    frame = frame.drop_duplicates("track_id", keep="first").set_index("track_id")
    return frame[["title", "artist", "album"]]


def _sqlite_names(path: Path) -> Optional[pd.DataFrame]:
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT track_id, title, artist_name, release FROM songs").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return pd.DataFrame(rows, columns=["track_id", "title", "artist", "album"], dtype=object)


def _unique_tracks_names(path: Path) -> Optional[pd.DataFrame]:
    rows = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split("<SEP>", 3)
                if len(parts) == 4:
                    rows.append((parts[0].strip(), parts[3].strip(), parts[2].strip(), ""))
    except OSError:
        return None
    return pd.DataFrame(rows, columns=["track_id", "title", "artist", "album"], dtype=object)


def _fill(values: pd.Series, fallback: np.ndarray) -> np.ndarray:
    text = values.fillna("").astype(str).str.strip().to_numpy(object)
    return np.where(text == "", fallback.astype(object), text)
