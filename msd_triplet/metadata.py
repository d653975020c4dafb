"""Read track metadata (artist, album) and audio locations; shared input helpers.

Every reader checks track ids (``TR`` + 16 upper-case letters/digits), skips
and records malformed ones, and turns any failure of the underlying library
(sqlite3, csv) into a :class:`~msd_triplet.errors.DataError` that names the
file and says what was expected. Skipped rows are returned as a DataFrame with
the columns of :data:`SKIP_COLUMNS` so that ``prepare`` can write one manifest.

Formats (SPEC section 2.1):

* MSD ``track_metadata.db`` (SQLite, table ``songs``): the album key is
  ``artist_id + "/" + release`` (release case-folded, whitespace collapsed),
  because release titles such as "Greatest Hits" repeat across artists.
* ``unique_tracks.txt`` (``TRACKID<SEP>SONGID<SEP>artist name<SEP>title``):
  the artist id is the artist name; albums come from ``DataConfig.albums``
  or, without it, every track is its own album (a warning says so).
* a CSV ``track_id, artist_id, album_id``.
"""

from __future__ import annotations

import csv
import re
import sqlite3
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from msd_triplet.config import DataConfig
from msd_triplet.errors import ConfigError, DataError

TRACK_ID_PATTERN = re.compile(r"TR[A-Z0-9]{16}")
TRACK_ID_FORM = "TR followed by 16 upper-case letters or digits, e.g. TRAAAAW128F429D538"
MALFORMED_ID = "malformed track id"
SKIP_COLUMNS = ("source", "line", "track_id", "reason")
DELIMITERS = ("\t", ";", ",")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_COLUMNS = ("track_id", "release", "artist_id")


# ---------------------------------------------------------------------------
# shared helpers


def valid_track_ids(values: Iterable) -> np.ndarray:
    """Boolean mask, ``[n]``: which values are well-formed MSD track ids."""
    match = TRACK_ID_PATTERN.fullmatch
    return np.array([isinstance(v, str) and match(v) is not None for v in values], dtype=bool)


def skip_frame(records: Iterable[tuple] = ()) -> pd.DataFrame:
    """Skip records ``(source, line, track_id, reason)`` as a DataFrame; ``line`` may be None."""
    frame = pd.DataFrame(list(records), columns=list(SKIP_COLUMNS))
    frame["line"] = pd.array(frame["line"], dtype="Int64")
    for col in ("source", "track_id", "reason"):
        frame[col] = frame[col].astype(str)
    return frame


def row_skips(rows: pd.DataFrame, path: Path, reason: str) -> pd.DataFrame:
    """Skip records, one per row of ``rows`` (columns ``line``, ``track_id``), all with ``reason``."""
    return skip_frame((str(path), line, tid, reason) for line, tid in zip(rows["line"], rows["track_id"]))


def split_valid_ids(
    frame: pd.DataFrame, path: Path, what: str, unit: str = "line"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop rows of ``frame`` whose ``track_id`` is malformed; return (kept rows, skip records).

    ``frame`` needs columns ``track_id`` and ``line`` (a line of a text file, or
    the 1-based ``unit="row"`` of a table). Raises DataError when the file has
    rows but not one valid id.
    """
    ok = valid_track_ids(frame["track_id"])
    bad = frame.loc[~ok]
    if len(frame) and not ok.any():
        example = bad.iloc[0]
        raise DataError(
            f"{path}: none of its {len(frame)} {what} rows has a valid track id "
            f"(e.g. {example['track_id']!r} on {unit} {example['line']}); expected {TRACK_ID_FORM}"
        )
    return frame.loc[ok], row_skips(bad, path, f"{MALFORMED_ID} (expected {TRACK_ID_FORM})")


def require_file(path: Path, what: str) -> None:
    """Raise DataError unless ``path`` is an existing regular file."""
    if not path.exists():
        raise DataError(f"{path}: file not found (expected {what})")
    if not path.is_file():
        raise DataError(f"{path}: is a directory or special file, expected {what}")


def read_magic(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of ``path`` (empty if unreadable: the reader then says why)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def read_lines(path: Path, what: str) -> list[str]:
    """Lines of a text file (UTF-8; undecodable bytes become U+FFFD, dropped later)."""
    require_file(path, what)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if b"\x00" in raw[:4096]:
        raise DataError(f"{path}: looks like a binary file, expected {what} as text")
    return [line.rstrip("\r") for line in raw.decode("utf-8-sig", errors="replace").split("\n")]


def sniff_delimiter(header: str) -> str:
    """The first of tab, ``;``, ``,`` that occurs in ``header`` (``,`` if none)."""
    return next((d for d in DELIMITERS if d in header), ",")


def parse_row(line: str, delimiter: str) -> list[str]:
    """One CSV line → stripped fields (a quote left open ends at the line end)."""
    return [f.strip() for f in next(csv.reader([line], delimiter=delimiter))]


def read_table(path: Path, what: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """A delimited text file with a header row → DataFrame of str columns plus ``line``.

    Header names are matched case-insensitively; ``required`` must all be there.
    Blank lines are ignored; a row with a different number of fields than the
    header is a DataError naming the line.
    """
    lines = read_lines(path, what)
    return parse_table(path, [(i + 1, line) for i, line in enumerate(lines) if line.strip()], what, required, optional)


def parse_table(
    path: Path, numbered: list[tuple[int, str]], what: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> pd.DataFrame:
    """:func:`read_table` on already read ``(line number, line)`` pairs, header first."""
    if not numbered:
        raise DataError(f"{path}: empty file, expected {what}")
    header_line, header = numbered[0]
    delimiter = sniff_delimiter(header)
    names = [n.lower() for n in parse_row(header, delimiter)]
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(
            f"{path} line {header_line}: header {names} lacks column(s) {missing}; "
            f"expected {what} with a header naming {', '.join(required + optional)}"
        )
    keep = [c for c in names if c in required + optional]
    frame = parse_rows(path, numbered[1:], names, delimiter)
    return frame[[*keep, "line"]].reset_index(drop=True)


def parse_rows(path: Path, numbered: list[tuple[int, str]], names: list[str], delimiter: str) -> pd.DataFrame:
    """``(line number, line)`` pairs → DataFrame of str columns ``names`` plus ``line``.

    A row with another number of fields than ``names`` is a DataError naming the
    line; of repeated column names the first is kept.
    """
    rows = []
    for number, line in numbered:
        fields = parse_row(line, delimiter)
        if len(fields) != len(names):
            raise DataError(
                f"{path} line {number}: expected {len(names)} {delimiter!r}-separated fields "
                f"({', '.join(names)}), got {len(fields)}"
            )
        rows.append([*fields, number])
    frame = pd.DataFrame(rows, columns=[*names, "line"], dtype=object)
    frame["line"] = frame["line"].astype(np.int64)
    return frame.loc[:, ~frame.columns.duplicated()]


def _first_by_track(frame: pd.DataFrame, path: Path, what: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the first row per track id; duplicates become skip records."""
    dup = frame["track_id"].duplicated(keep="first")
    return frame.loc[~dup], row_skips(frame.loc[dup], path, f"duplicate {what} row (first kept)")


# ---------------------------------------------------------------------------
# metadata


def read_metadata(data: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read ``data.metadata`` (and ``data.albums``) into one table.

    Returns
    -------
    metadata : DataFrame [tracks] indexed by ``track_id`` with str columns ``artist_id``, ``album_id``
    skips : DataFrame of skip records (malformed ids, duplicate rows, rows without an artist)
    counts : dict with ``metadata_rows``, ``metadata_duplicates``, ``album_filter`` (bool)
    """
    path = data.path(data.metadata)
    require_file(path, "track metadata (track_metadata.db, unique_tracks.txt or a CSV)")
    if read_magic(path, len(_SQLITE_MAGIC)) == _SQLITE_MAGIC or path.suffix.lower() in (".db", ".sqlite", ".sqlite3"):
        frame, has_albums, unit = _read_sqlite(path), True, "row"
    else:
        unit = "line"
        lines = read_lines(path, "track metadata")
        first = next((line for line in lines if line.strip()), "")
        if "<SEP>" in first:
            frame, has_albums = _read_unique_tracks(path, lines), False
        else:
            frame = read_table(path, "track metadata", ("track_id", "artist_id", "album_id"))
            has_albums = True
    frame["track_id"] = frame["track_id"].astype(str).str.strip()
    frame, skips_bad = split_valid_ids(frame, path, "metadata", unit)
    no_artist = frame["artist_id"].isna() | (frame["artist_id"].astype(str).str.strip() == "")
    skips_artist = row_skips(frame.loc[no_artist], path, "metadata row without artist id")
    frame, skips_dup = _first_by_track(frame.loc[~no_artist], path, "metadata")
    frame = frame.set_index("track_id")
    if "album_id" not in frame:
        frame["album_id"] = np.nan
    if data.albums:
        albums = _read_albums(data.path(data.albums)).reindex(frame.index)
        frame["album_id"] = albums.where(albums.notna(), frame["album_id"])
        n_missing = int(frame["album_id"].isna().sum())
        if n_missing:
            warnings.warn(
                f"{data.path(data.albums)}: {n_missing} of {len(frame)} metadata tracks have no album; "
                "each of them is treated as its own album",
                UserWarning,
                stacklevel=2,
            )
        has_albums = True
    elif not has_albums:
        warnings.warn(
            f"{path}: has artist names but no albums and data.albums is not set; the album "
            "filter is off (every track is its own album)",
            UserWarning,
            stacklevel=2,
        )
    own_album = "track:" + frame.index.to_series()
    frame["album_id"] = frame["album_id"].where(frame["album_id"].notna(), own_album)
    out = frame[["artist_id", "album_id"]].astype(str)
    out.index = out.index.astype(str).rename("track_id")
    counts = {
        "metadata_rows": int(len(out)),
        "metadata_duplicates": int(len(skips_dup)),
        "album_filter": bool(has_albums),
    }
    return out, pd.concat([skips_bad, skips_artist, skips_dup], ignore_index=True), counts


def _read_sqlite(path: Path) -> pd.DataFrame:
    """MSD ``track_metadata.db`` → track_id, artist_id, album_id (artist/normalised release), line."""
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DataError(f"{path}: cannot open as an SQLite database ({exc})") from None
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        if "songs" not in tables:
            raise DataError(
                f"{path}: SQLite database has no table 'songs' (tables: {tables or 'none'}); "
                f"expected the MSD track_metadata.db with columns {', '.join(_SQLITE_COLUMNS)}"
            )
        columns = [r[1] for r in con.execute("PRAGMA table_info(songs)")]
        missing = [c for c in _SQLITE_COLUMNS if c not in columns]
        if missing:
            raise DataError(f"{path}: table 'songs' lacks column(s) {missing} (has {columns})")
        rows = con.execute("SELECT track_id, artist_id, release FROM songs ORDER BY rowid").fetchall()
    except sqlite3.Error as exc:
        raise DataError(f"{path}: cannot read as an SQLite database ({exc})") from None
    finally:
        con.close()
    frame = pd.DataFrame(rows, columns=["track_id", "artist_id", "release"], dtype=object)
    frame["line"] = np.arange(1, len(frame) + 1)
    release = frame["release"].fillna("").astype(str).str.casefold()
    release = release.str.replace(r"\s+", " ", regex=True).str.strip()
    frame["album_id"] = frame["artist_id"].astype(str) + "/" + release
    return frame.drop(columns="release")


def _read_unique_tracks(path: Path, lines: list[str]) -> pd.DataFrame:
    """``unique_tracks.txt`` → track_id, artist_id (= artist name), line."""
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split("<SEP>", 3)
        if len(parts) != 4:
            raise DataError(
                f"{path} line {number}: expected TRACKID<SEP>SONGID<SEP>artist name<SEP>title, "
                f"got {len(parts)} field(s)"
            )
        rows.append((parts[0].strip(), parts[2].strip(), number))
    return pd.DataFrame(rows, columns=["track_id", "artist_id", "line"])


def _read_albums(path: Path) -> pd.Series:
    """CSV ``track_id, album_id`` → Series album_id indexed by track_id (first row wins)."""
    frame = read_table(path, "a track → album CSV", ("track_id", "album_id"))
    frame["track_id"] = frame["track_id"].astype(str)
    frame, _ = split_valid_ids(frame, path, "album")
    frame = frame.loc[frame["album_id"].astype(str) != ""]
    frame = frame.drop_duplicates("track_id", keep="first")
    return pd.Series(frame["album_id"].to_numpy(), index=frame["track_id"].to_numpy(), dtype=object)


# ---------------------------------------------------------------------------
# audio


def is_audio_template(spec: str) -> bool:
    """Whether ``DataConfig.audio`` is a ``str.format`` template over ``track_id``."""
    return "{track_id" in spec


def audio_paths(data: DataConfig, track_ids: Iterable[str]) -> tuple[pd.Series, pd.DataFrame]:
    """Where the audio of each track is, as given (not yet checked for existence).

    Parameters
    ----------
    data : DataConfig
        ``data.audio`` is a CSV ``track_id, path`` or a template such as
        ``audio/{track_id[2]}/{track_id}.mp3``; relative paths are relative to ``data.root``.
    track_ids : iterable of str [n]
        Tracks to locate.

    Returns
    -------
    paths : Series of str indexed by track_id, for the tracks that have an entry
    skips : DataFrame of skip records from the CSV (malformed ids, duplicate rows)
    """
    track_ids = list(track_ids)
    spec = data.audio
    if is_audio_template(spec):
        try:
            spec.format(track_id="TRAAAAW128F429D538")
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"data.audio: template {spec!r} cannot be filled from a track id "
                f"({type(exc).__name__}: {exc}); only the field 'track_id' is available, "
                "e.g. 'audio/{track_id[2]}/{track_id}.mp3'"
            ) from None
        paths = pd.Series([spec.format(track_id=t) for t in track_ids], index=track_ids, dtype=object)
        return paths, skip_frame()
    path = data.path(spec)
    frame = read_table(
        path,
        "an audio CSV with columns track_id, path (or set data.audio to a template containing {track_id})",
        ("track_id", "path"),
    )
    frame["track_id"] = frame["track_id"].astype(str)
    frame, skips_bad = split_valid_ids(frame, path, "audio")
    frame, skips_dup = _first_by_track(frame, path, "audio")
    series = pd.Series(frame["path"].to_numpy(), index=frame["track_id"].to_numpy(), dtype=object)
    wanted = pd.Index(track_ids)
    return series.loc[series.index.isin(wanted)], pd.concat([skips_bad, skips_dup], ignore_index=True)


def audio_exists(data: DataConfig, paths: pd.Series) -> np.ndarray:
    """Boolean mask ``[len(paths)]``: does each given path (relative to root) name a file."""
    return np.fromiter((data.path(p).is_file() for p in paths), dtype=bool, count=len(paths))
