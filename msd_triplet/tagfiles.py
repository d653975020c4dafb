"""Read tag-set files into one long table ``track_id, tagset, tag``.

Readers (SPEC section 2.1; format picked by extension and content) each return
a long DataFrame ``track_id, tagset, tag`` plus skip records:

* ``.h5``/``.hdf5``: a pandas HDFStore (key ``"data"`` or the only key), index =
  track id, columns among ``genres, styles, moods, themes``, cells = lists of tags
  or NaN. A one-column file whose column is not a set name takes its set from the
  ``SET=`` prefix or the file name ``msd_amglabels_<set>.h5``.
* wide CSV: the lossy ``msd_amglabels_all.csv`` (``track_id;genres;styles;moods;themes``,
  header optional, tags joined by ``", "``, list residue such as ``["Childrens", Pop/Rock``)
  or a pandas ``to_csv`` of the h5 table (cells are list reprs, header names the sets);
* long CSV/TSV: header ``track_id, tag[, tagset]``;
* ``.cls`` (MSD benchmark partitions): ``TRACKID<TAB>label``, ``%``/``#`` comments.

Every entry of ``DataConfig.tags`` is ``path`` or ``SET=path``; the prefix names
the set of a single-set file, or picks one set out of a multi-set file. Tags are
folded with :func:`normalise_tag` so the h5 and the lossy CSV give one vocabulary.
The public names are re-exported by :mod:`msd_triplet.prepare`.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from msd_triplet import metadata as md
from msd_triplet.config import TAG_SETS, DataConfig
from msd_triplet.errors import ConfigError, DataError

ASSIGNMENT_COLUMNS = ("track_id", "tagset", "tag")
_WHAT = "a tag-set file (pandas .h5, ';' wide CSV, long CSV/TSV track_id,tag[,tagset] or .cls)"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_SET_IN_NAME = re.compile(r"msd_amglabels_(genres|styles|moods|themes)", re.IGNORECASE)
_DROP = str.maketrans("", "", "'[]\"")


# ---------------------------------------------------------------------------
# tags and cells


def normalise_tag(tag: str) -> str:
    """Fold the h5 and the lossy CSV spelling of a tag to one vocabulary.

    Drops non-ASCII characters (``Rock en Español`` → ``Rock en Espaol``),
    apostrophes (``Children's`` → ``Childrens``), ``[``, ``]`` and ``"``, and
    collapses whitespace. An empty result means "not a tag".
    """
    ascii_only = str(tag).encode("ascii", "ignore").decode("ascii")
    return " ".join(ascii_only.translate(_DROP).split())


_normalise = functools.lru_cache(maxsize=65_536)(normalise_tag)


def split_tag_cell(value) -> list[str]:
    """Tags of one wide-format cell: a list, a list repr, a ``", "``-joined string or NaN.

    Returns normalised, non-empty tags in cell order (repeats are kept; they are
    counted as duplicates later).
    """
    if isinstance(value, (list, tuple, np.ndarray)):
        items = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
        items = [v for v in items if isinstance(v, str)]
    elif value is None or (not isinstance(value, str) and pd.isna(value)):
        return []
    else:
        text = str(value).strip()
        items = None
        if text.startswith("[") and text.endswith("]"):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                parsed = None
            if isinstance(parsed, (list, tuple)):
                items = [str(v) for v in parsed]
        if items is None:
            items = text.split(",")
    return [t for t in map(_normalise, items) if t]


def parse_tag_entry(entry: str, data: Optional[DataConfig] = None) -> tuple[Optional[str], str]:
    """Split a ``DataConfig.tags`` entry into ``(tag set or None, path)``.

    ``styles=labels.cls`` → ``("styles", "labels.cls")``. An unknown prefix is a
    ConfigError unless the whole entry names an existing file.
    """
    match = re.fullmatch(r"\s*([A-Za-z_]+)\s*=\s*(.+?)\s*", entry)
    if not match:
        return None, entry
    name = match.group(1).lower()
    if name in TAG_SETS:
        return name, match.group(2)
    if data is not None and data.path(entry).is_file():
        return None, entry
    raise ConfigError(
        f"data.tags: entry {entry!r} names unknown tag set {match.group(1)!r} "
        f"(allowed: {', '.join(TAG_SETS)}); write SET=path or just path"
    )


# ---------------------------------------------------------------------------
# readers


def read_tag_file(path: str | Path, tagset: Optional[str] = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read one tag-set file.

    Parameters
    ----------
    path : path of the file (any format of the module docstring)
    tagset : the set named by a ``SET=`` prefix, or None

    Returns
    -------
    assignments : DataFrame [n] with str columns ``track_id, tagset, tag`` (normalised tags)
    skips : DataFrame of skip records (``source, line, track_id, reason``)
    """
    path = Path(path)
    md.require_file(path, _WHAT)
    is_h5 = path.suffix.lower() in (".h5", ".hdf5", ".hdf") or _has_hdf5_signature(path)
    if is_h5:
        rows, set_columns = _read_h5(path, tagset)
    else:
        rows, set_columns = _read_text(path, tagset)
        if "tag" in rows:
            return _explode_long(path, rows)
    rows, skips = md.split_valid_ids(rows, path, "tag", "row" if is_h5 else "line")
    out = {c: [] for c in ASSIGNMENT_COLUMNS}
    for column, name in set_columns.items():
        for track_id, cell in zip(rows["track_id"], rows[column]):
            for tag in split_tag_cell(cell):
                out["track_id"].append(track_id)
                out["tagset"].append(name)
                out["tag"].append(tag)
    return _assignments(out), skips


def read_tag_files(data: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read and combine every entry of ``data.tags``; duplicate assignments are dropped and counted.

    A track whose tags of one set differ between two files keeps the union of them, and each
    such (track, set) is listed in the skip records with both files' tags (``conflicting_tracks``
    counts them), so that a merge is never silent.
    """
    frames, skips, sources = [], [], []
    for entry in data.tags:
        tagset, relative = parse_tag_entry(entry, data)
        assignments, skipped = read_tag_file(data.path(relative), tagset)
        frames.append(assignments)
        skips.append(skipped)
        sources.append(str(data.path(relative)))
    combined = pd.concat(frames, ignore_index=True)
    unique = combined.drop_duplicates(list(ASSIGNMENT_COLUMNS), ignore_index=True)
    conflicts = conflicting_tags(frames, sources)
    counts = {
        "tag_files": len(frames),
        "assignments_read": int(len(combined)),
        "duplicate_assignments": int(len(combined) - len(unique)),
        "conflicting_tracks": int(conflicts["track_id"].nunique()),
    }
    return unique, pd.concat([*skips, conflicts], ignore_index=True), counts


def conflicting_tags(frames: list[pd.DataFrame], sources: list[str]) -> pd.DataFrame:
    """Skip records of (track, set) pairs whose tags differ between files (``frames[i]`` read from ``sources[i]``).

    Only pairs present in two or more files are compared, so files of disjoint sets or tracks cost
    one pass over their keys.
    """
    if len(frames) < 2:
        return md.skip_frame()
    keys = pd.concat(
        [f[["track_id", "tagset"]].drop_duplicates().assign(file=i) for i, f in enumerate(frames)], ignore_index=True
    )
    shared = keys.loc[keys.duplicated(["track_id", "tagset"], keep=False), ["track_id", "tagset"]].drop_duplicates()
    if shared.empty:
        return md.skip_frame()
    tags = []
    for i, frame in enumerate(frames):
        rows = frame.merge(shared, on=["track_id", "tagset"])
        if len(rows):
            joined = rows.groupby(["track_id", "tagset"])["tag"].agg(lambda t: ", ".join(sorted(set(t))))
            tags.append(joined.rename(i))
    table = pd.concat(tags, axis=1)
    records = []
    for (track, tagset), row in table.iterrows():
        present = row.dropna()
        if len(present) > 1 and present.nunique() > 1:
            listed = "; ".join(f"{sources[i]}: {present[i]}" for i in present.index)
            records.append(
                (
                    " + ".join(sources[i] for i in present.index),
                    None,
                    track,
                    f"conflicting {tagset} tags between files ({listed}); kept their union",
                )
            )
    return md.skip_frame(records)


def _assignments(columns: dict) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(columns[c], dtype=object) for c in ASSIGNMENT_COLUMNS}).astype(str)


def _set_columns(columns: list[str], path: Path, tagset: Optional[str]) -> dict[str, str]:
    """Map the columns of a wide table to tag sets (see module docstring)."""
    found = {c: c for c in columns if c in TAG_SETS}
    if not found:
        name_match = _SET_IN_NAME.search(path.name)
        inferred = tagset or (name_match.group(1).lower() if name_match else None)
        if len(columns) != 1 or inferred is None:
            raise DataError(
                f"{path}: no tag-set column (found {columns}; allowed: {', '.join(TAG_SETS)}); "
                "a one-column file needs its set in the name (msd_amglabels_<set>) or as SET=path"
            )
        found = {columns[0]: inferred}
    if tagset is not None:
        found = {c: s for c, s in found.items() if s == tagset}
        if not found:
            raise DataError(f"{path}: no column for tag set {tagset!r} of the SET= prefix (found {columns})")
    return found


def _has_hdf5_signature(path: Path) -> bool:
    return md.read_magic(path, len(_HDF5_MAGIC)) == _HDF5_MAGIC


def _read_h5(path: Path, tagset: Optional[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    try:
        import tables  # noqa: F401  (pandas needs it; say so plainly)
    except ImportError:
        raise DataError(f"{path}: reading HDF5 needs PyTables (pip install tables)") from None
    try:
        with pd.HDFStore(path, mode="r") as store:
            keys = store.keys()
            key = "/data" if "/data" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise DataError(f"{path}: expected key 'data' or a single key in the HDF5 store, found {keys}")
            table = store.select(key)  # like pd.read_hdf; store.get unpickles 3x slower
    except DataError:
        raise
    except Exception as exc:  # PyTables/HDF5 raise many types; never leak a traceback
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        signature = "" if _has_hdf5_signature(path) else "no HDF5 signature; "
        raise DataError(
            f"{path}: cannot read as a pandas HDF5 store ({signature}{type(exc).__name__}: "
            f"{lines[-1] if lines else ''}); expected e.g. msd_amglabels_all.h5"
        ) from None
    if isinstance(table, pd.Series):
        table = table.to_frame(str(table.name) if table.name is not None else "value")
    if not isinstance(table, pd.DataFrame):
        raise DataError(f"{path}: key {key!r} holds {type(table).__name__}, expected a table")
    table = table.rename(columns=lambda c: str(c).lower())
    if "track_id" in table.columns:
        table = table.set_index("track_id")
    set_columns = _set_columns(list(table.columns), path, tagset)
    ids = [v.decode("ascii", "replace") if isinstance(v, bytes) else str(v).strip() for v in table.index]
    rows = pd.DataFrame({"track_id": ids, "line": np.arange(1, len(table) + 1)})
    for column in set_columns:
        rows[column] = table[column].to_numpy(dtype=object)
    return rows, set_columns


def _read_text(path: Path, tagset: Optional[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    lines = md.read_lines(path, _WHAT)
    numbered = [(n, ln) for n, ln in enumerate(lines, 1) if ln.strip() and ln.lstrip()[0] not in "%#"]
    if not numbered:
        raise DataError(f"{path}: no rows, expected {_WHAT}")
    first_line, first = numbered[0]
    starts_with_id = md.TRACK_ID_PATTERN.fullmatch(first[:18]) and first[18:19] in md.DELIMITERS
    delimiter = first[18] if starts_with_id else md.sniff_delimiter(first)
    names = [n.lower() for n in md.parse_row(first, delimiter)]
    if path.suffix.lower() == ".cls" or (len(names) == 2 and delimiter == "\t" and "tag" not in names):
        return _read_cls(path, numbered, tagset)
    if "track_id" in names and "tag" in names:
        rows = md.parse_table(path, numbered, "a long tag CSV", ("track_id", "tag"), ("tagset",))
        return _long_sets(path, rows, tagset), {}
    if starts_with_id or (not any(n in TAG_SETS for n in names) and len(names) == 5 and delimiter == ";"):
        names = ["track_id", *TAG_SETS]  # the lossy msd_amglabels_all.csv without header
    elif any(n in TAG_SETS for n in names):
        if "track_id" not in names:  # pandas to_csv writes an unnamed index as ''
            if names[0] in TAG_SETS:
                raise DataError(f"{path} line {first_line}: header {names} has no track-id column")
            names[0] = "track_id"
        numbered = numbered[1:]
    else:
        raise DataError(
            f"{path} line {first_line}: not a recognised tag-set file; expected a header naming "
            "track_id and tag[, tagset] (long form) or genres/styles/moods/themes (wide form), "
            "rows track_id;genres;styles;moods;themes, or TRACKID<TAB>label (.cls); "
            f"got {first[:80]!r}"
        )
    rows = md.parse_rows(path, numbered, names, delimiter)
    value_columns = [c for c in rows.columns if c not in ("track_id", "line")]
    return rows, _set_columns(value_columns, path, tagset)


def _read_cls(
    path: Path, numbered: list[tuple[int, str]], tagset: Optional[str]
) -> tuple[pd.DataFrame, dict[str, str]]:
    if tagset is None:
        raise DataError(
            f"{path}: a .cls file (TRACKID<TAB>label) holds one unnamed tag set; "
            f"name it in data.tags as SET=path, e.g. 'genres={path.name}'"
        )
    rows = []
    for number, line in numbered:
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{path} line {number}: expected TRACKID<TAB>label, got {len(fields)} field(s)")
        rows.append((fields[0].strip(), number, tagset, fields[1]))
    return pd.DataFrame(rows, columns=["track_id", "line", "tagset", "tag"], dtype=object), {}


def _long_sets(path: Path, rows: pd.DataFrame, tagset: Optional[str]) -> pd.DataFrame:
    """Fill/check the ``tagset`` column of a long table (prefix or column)."""
    if "tagset" not in rows:
        if tagset is None:
            raise DataError(
                f"{path}: long tag file has no 'tagset' column; name its set in data.tags "
                f"as SET=path, e.g. 'styles={path.name}', or add a tagset column"
            )
        rows["tagset"] = tagset
        return rows
    rows["tagset"] = rows["tagset"].astype(str).str.strip().str.lower()
    unknown = ~rows["tagset"].isin(TAG_SETS)
    if unknown.any():
        bad = rows.loc[unknown].iloc[0]
        raise DataError(
            f"{path} line {bad['line']}: unknown tag set {bad['tagset']!r} (allowed: {', '.join(TAG_SETS)})"
        )
    return rows if tagset is None else rows.loc[rows["tagset"] == tagset]


def _explode_long(path: Path, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, skips = md.split_valid_ids(rows, path, "tag")
    tags = [_normalise(t) for t in rows["tag"]]
    keep = np.array([bool(t) for t in tags], dtype=bool)
    out = {
        "track_id": rows["track_id"].to_numpy()[keep],
        "tagset": rows["tagset"].to_numpy()[keep],
        "tag": np.asarray(tags, dtype=object)[keep],
    }
    return _assignments({k: list(v) for k, v in out.items()}), skips
