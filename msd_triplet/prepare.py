"""The prepare stage (`msd-triplet prepare`): tag sets → filtered tracks, binary track × tag matrices, Table I.

:func:`prepare_dataset` reads every file of ``DataConfig.tags`` (formats: see
:mod:`msd_triplet.tagfiles`), the metadata and the audio locations
(:mod:`msd_triplet.metadata`), keeps the tracks with metadata, an existing audio
file and >= 1 tag in every set of ``DataConfig.tag_sets`` (paper V-B-1), splits
them by artist (:mod:`msd_triplet.splits`) and writes everything to
``DataConfig.prepared_dir``; :func:`load_prepared` reads it back.

Example
-------
>>> from msd_triplet.config import load_config
>>> prepared = prepare_dataset(load_config("experiments/demo.yaml"), progress=print)  # doctest: +SKIP
>>> prepared.matrices["genres"].matrix.shape                                        # doctest: +SKIP
(412, 11)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import pandas as pd
import scipy.sparse as sp

from msd_triplet import metadata as md
from msd_triplet.config import Config, DataConfig, save_config
from msd_triplet.errors import DataError
from msd_triplet.fileio import atomic_path, atomic_write_json
from msd_triplet.metadata import read_metadata
from msd_triplet.splits import SPLIT_NAMES, check_proportions, split_by_artist, split_counts
from msd_triplet.tagfiles import (  # re-exported: the public reading API
    ASSIGNMENT_COLUMNS,
    normalise_tag,
    parse_tag_entry,
    read_tag_file,
    read_tag_files,
    split_tag_cell,
)

__all__ = [
    "ASSIGNMENT_COLUMNS",
    "PreparedData",
    "TagMatrix",
    "build_tag_matrix",
    "format_table1",
    "intersection_filter",
    "load_prepared",
    "normalise_tag",
    "parse_tag_entry",
    "prepare_dataset",
    "read_tag_file",
    "read_tag_files",
    "split_tag_cell",
    "table1_statistics",
]

TRACK_COLUMNS = ("track_id", "artist_id", "album_id", "split", "audio_path")
TABLE1_ROWS = ("unique_tags", "tag_combinations", "labelled_albums", "labelled_tracks")
FILTER_SOURCE = "intersection filter"

# ---------------------------------------------------------------------------
# matrices and statistics


@dataclass(frozen=True, eq=False)
class TagMatrix:
    """Binary tags of one set: ``matrix[i, j] = 1`` iff track ``track_ids[i]`` has ``vocabulary[j]``.

    Attributes
    ----------
    tagset : str
    track_ids : ndarray of str [tracks]
    vocabulary : tuple of str [tags], sorted
    matrix : scipy.sparse.csr_matrix, float32 [tracks, tags], entries 0/1
    """

    tagset: str
    track_ids: np.ndarray
    vocabulary: tuple[str, ...]
    matrix: sp.csr_matrix


def build_tag_matrix(
    assignments: pd.DataFrame, tagset: str, track_ids: Iterable[str], vocabulary: Optional[Iterable[str]] = None
) -> tuple[TagMatrix, pd.DataFrame]:
    """Binary track × tag matrix of one set, rows in the order of ``track_ids``.

    Parameters
    ----------
    assignments : DataFrame with ``track_id, tagset, tag``; other tracks and sets are ignored
    tagset : which set
    track_ids : str [tracks], unique; tracks without a tag get an all-zero row
    vocabulary : tags [tags] to use as columns (sorted); tags outside it are dropped.
        Default: the sorted tags that occur for ``track_ids``.

    Returns
    -------
    TagMatrix, and skip records (reason ``tag outside vocabulary: <set>/<tag>``) of the dropped
    assignments.
    """
    ids = np.asarray(list(track_ids), dtype=str)
    row_index = pd.Index(ids)
    if not row_index.is_unique:
        raise DataError(
            f"build_tag_matrix({tagset!r}): track ids repeat, e.g. {row_index[row_index.duplicated()][0]!r}"
        )
    sub = assignments.loc[
        (assignments["tagset"] == tagset) & assignments["track_id"].isin(row_index), ["track_id", "tag"]
    ].drop_duplicates()
    if vocabulary is None:
        vocab = tuple(sorted(set(sub["tag"])))
        outside = pd.DataFrame(columns=["track_id", "tag"])
    else:
        vocab = tuple(sorted(set(vocabulary)))
        inside = sub["tag"].isin(vocab)
        sub, outside = sub.loc[inside], sub.loc[~inside]
    skips = md.skip_frame(
        (f"tags_{tagset}", None, t, f"tag outside vocabulary: {tagset}/{g}")
        for t, g in zip(outside["track_id"], outside["tag"])
    )
    rows = row_index.get_indexer(sub["track_id"])
    cols = pd.Index(vocab, dtype=object).get_indexer(sub["tag"])
    matrix = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(ids), len(vocab)), dtype=np.float32
    )
    matrix.sort_indices()
    return TagMatrix(tagset, ids, vocab, matrix), skips


def table1_statistics(
    assignments: pd.DataFrame, albums: pd.Series, tag_sets: Iterable[str], track_ids: Optional[Iterable[str]] = None
) -> dict[str, dict[str, int]]:
    """Paper Table I per set: unique tags, tag combinations, labelled albums, labelled tracks.

    ``albums`` maps track id → album id (tracks without metadata count for no album);
    ``track_ids`` restricts the count to those tracks (e.g. after the filter).
    """
    out = {}
    keep = None if track_ids is None else pd.Index(list(track_ids))
    for tagset in tag_sets:
        sub = assignments.loc[assignments["tagset"] == tagset, ["track_id", "tag"]].drop_duplicates()
        if keep is not None:
            sub = sub.loc[sub["track_id"].isin(keep)]
        tracks, track_codes = np.unique(sub["track_id"].to_numpy(str), return_inverse=True)
        tags, tag_codes = np.unique(sub["tag"].to_numpy(str), return_inverse=True)
        m = sp.csr_matrix((np.ones(len(sub), np.int8), (track_codes, tag_codes)), shape=(len(tracks), len(tags)))
        m.sort_indices()
        combos = {m.indices[m.indptr[i] : m.indptr[i + 1]].tobytes() for i in range(len(tracks))}
        out[tagset] = {
            "unique_tags": len(tags),
            "tag_combinations": len(combos),
            "labelled_albums": int(albums.reindex(tracks).dropna().nunique()),
            "labelled_tracks": len(tracks),
        }
    return out


def format_table1(stats: dict) -> str:
    """Plain-text paper Table I from ``{"before": {set: {...}}, "after": {set: {...}}}``.

    Also accepts the whole ``stats.json`` dict (its ``"table1"`` entry is used).
    """
    stats = stats.get("table1", stats)
    sets = list(next(iter(stats.values())))
    width = max(10, *(len(s) + 2 for s in sets))
    lines = [f"{'':<20}" + "".join(f"{s:>{width}}" for s in sets)]
    for block, per_set in stats.items():
        lines.append(f"{block} filtering" if block in ("before", "after") else str(block))
        for row in TABLE1_ROWS:
            cells = "".join(f"{per_set[s][row]:>{width},}" for s in sets)
            lines.append(f"  {row.replace('_', ' '):<18}" + cells)
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# intersection filter, preparation


def intersection_filter(
    assignments: pd.DataFrame, metadata: pd.DataFrame, data: DataConfig
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Keep tracks with >= 1 tag in every set of ``data.tag_sets``, metadata and an audio file.

    Candidates are the tracks with a tag in any selected set. Checks run in this
    order and each dropped track gets a skip record with its first failed check:
    ``no tag in <set>``, ``no metadata``, ``no audio path (not in <file>)``,
    ``audio file missing: <path>``.

    Returns
    -------
    tracks : DataFrame [kept] with ``track_id, artist_id, album_id, audio_path`` sorted by track id
    skips : skip records of the dropped tracks
    stages : track counts after each check
    """
    selected = assignments.loc[assignments["tagset"].isin(data.tag_sets)]
    candidates = pd.Index(np.unique(selected["track_id"].to_numpy(str)), name="track_id")
    reason = pd.Series("", index=candidates, dtype=object)
    for tagset in data.tag_sets:
        tagged = candidates.isin(selected.loc[selected["tagset"] == tagset, "track_id"])
        reason[~tagged & (reason == "")] = f"no tag in {tagset}"
    stages = {"candidates": len(candidates), "tagged_in_every_set": int((reason == "").sum())}
    reason[~candidates.isin(metadata.index) & (reason == "")] = "no metadata"
    stages["with_metadata"] = int((reason == "").sum())
    alive = candidates[reason.to_numpy() == ""]
    paths, audio_skips = md.audio_paths(data, alive)
    reason[alive[~alive.isin(paths.index)]] = f"no audio path (not in {data.path(data.audio)})"
    paths = paths.loc[reason.reindex(paths.index).to_numpy() == ""]
    missing = ~md.audio_exists(data, paths)
    reason[paths.index[missing]] = [f"audio file missing: {data.path(p)}" for p in paths[missing]]
    stages["with_audio"] = int((reason == "").sum())
    dropped = reason[reason != ""]
    skips = md.skip_frame((FILTER_SOURCE, None, t, r) for t, r in dropped.items())
    kept = candidates[reason.to_numpy() == ""]
    if not len(kept):
        raise DataError(_empty_message(data, stages, paths, missing))
    tracks = metadata.loc[kept, ["artist_id", "album_id"]].reset_index()
    tracks["audio_path"] = paths.loc[kept].to_numpy()
    return tracks, pd.concat([audio_skips, skips], ignore_index=True), stages


def _empty_message(data: DataConfig, stages: dict, paths: pd.Series, missing: np.ndarray) -> str:
    sets = ", ".join(data.tag_sets)
    counts = (
        f"{stages['candidates']} tracks tagged in any of {sets} → {stages['tagged_in_every_set']} "
        f"tagged in every set → {stages['with_metadata']} with metadata → "
        f"{stages['with_audio']} with an audio file"
    )
    if not stages["candidates"]:
        hint = f"no tag of the sets {sets} was read from data.tags {list(data.tags)}"
    elif not stages["tagged_in_every_set"]:
        hint = f"does data.tags hold a file for every set of data.tag_sets ({sets})? or reduce data.tag_sets"
    elif not stages["with_metadata"]:
        hint = f"no tagged track id is in {data.path(data.metadata)}; is it metadata for the same tracks?"
    elif missing.any():
        hint = (
            f"e.g. {paths.index[missing][0]} was looked for at {data.path(paths[missing].iloc[0])}; "
            f"check data.root ({data.root}) and data.audio ({data.audio})"
        )
    else:
        hint = f"no tagged track is listed in {data.path(data.audio)}"
    return f"no track survives the intersection filter: {counts}; {hint}"


@dataclass(eq=False)
class PreparedData:
    """Everything ``prepare`` wrote, in memory.

    Attributes
    ----------
    tracks : DataFrame [tracks] str columns ``track_id, artist_id, album_id, split, audio_path``
    matrices : {set: TagMatrix}, rows aligned with ``tracks``
    stats : dict as in ``stats.json``
    paths : {name: Path} of the files written
    """

    tracks: pd.DataFrame
    matrices: dict[str, TagMatrix]
    stats: dict
    paths: dict[str, Path]


def _prepared_paths(config: Config) -> dict[str, Path]:
    out = config.data.prepared_dir
    paths = {name: out / f"{name}.csv" for name in ("tracks", "splits", "skipped")}
    paths.update(
        {
            "vocabulary": out / "vocabulary.json",
            "splits_json": out / "splits.json",
            "stats": out / "stats.json",
            "config": out / "config.yaml",
        }
    )
    paths.update({f"tags_{s}": out / f"tags_{s}.npz" for s in config.data.tag_sets})
    return paths


def _ids_sha256(track_ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(track_ids)).encode("utf-8")).hexdigest()


def _splits(
    tracks: pd.DataFrame, config: Config, paths: dict[str, Path], resplit: bool
) -> tuple[np.ndarray, dict, bool]:
    """Reuse the saved splits if they match the tracks and seed, else compute (with ``resplit``)."""
    proportions = [float(p) for p in check_proportions(config.data.split_proportions)]
    sha = _ids_sha256(tracks["track_id"])
    saved_csv, saved_json = paths["splits"], paths["splits_json"]
    if not resplit and (saved_csv.exists() or saved_json.exists()):
        hint = "splits are computed once and reused; pass resplit=True (CLI --resplit) to recompute them"
        if not (saved_csv.exists() and saved_json.exists()):
            raise DataError(f"{saved_csv.parent}: only one of splits.csv / splits.json exists; {hint}")
        try:
            info = json.loads(saved_json.read_text(encoding="utf-8"))
            saved = pd.read_csv(saved_csv, dtype=str, keep_default_na=False).set_index("track_id")["split"]
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{saved_json.parent}: cannot read the saved splits ({exc}); {hint}") from None
        problems = []
        if info.get("seed") != config.seed:
            problems.append(f"saved seed {info.get('seed')} vs seed {config.seed} now")
        if info.get("track_ids_sha256") != sha:
            problems.append(
                f"saved splits cover {info.get('n_tracks')} tracks, the filter now keeps "
                f"{len(tracks)}" + (" other ones" if info.get("n_tracks") == len(tracks) else "")
            )
        if not np.allclose(info.get("proportions", [0, 0, 0]), proportions):
            problems.append(f"saved proportions {info.get('proportions')} vs {proportions} now")
        if problems:
            raise DataError(f"{saved_json}: saved splits do not match the current data ({'; '.join(problems)}); {hint}")
        if _ids_sha256(saved.index) != sha or not saved.isin(SPLIT_NAMES).all():
            raise DataError(f"{saved_csv}: does not match {saved_json.name} (edited by hand?); {hint}")
        return saved.reindex(tracks["track_id"]).to_numpy(str), info, True
    splits = split_by_artist(tracks["artist_id"], proportions, seed=config.seed)
    info = {
        "seed": config.seed,
        "proportions": proportions,
        "counts": split_counts(splits),
        "n_tracks": len(tracks),
        "track_ids_sha256": sha,
        "stratified_by": "artist",
    }
    return splits, info, False


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)


def _write_npz(matrix: sp.csr_matrix, path: Path) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        sp.save_npz(tmp, matrix)


@dataclass(eq=False)
class _Ingested:
    assignments: pd.DataFrame
    metadata: pd.DataFrame
    tracks: pd.DataFrame
    skips: pd.DataFrame
    stages: dict[str, int]
    counts: dict


def _ingest(config: Config, say: Callable[[str], None]) -> _Ingested:
    """Read tag files and metadata; apply the intersection filter (audio files exist)."""
    data = config.data
    assignments, tag_skips, counts = read_tag_files(data)
    say(
        f"read {counts['assignments_read']:,} tag assignments from {counts['tag_files']} file(s) "
        f"({counts['duplicate_assignments']:,} duplicates dropped"
        + (
            f"; {counts['conflicting_tracks']:,} tracks with conflicting tags in two files, merged and listed "
            "in skipped.csv"
            if counts.get("conflicting_tracks")
            else ""
        )
        + ")"
    )
    outside = ~assignments["tagset"].isin(data.tag_sets)
    counts["assignments_of_unselected_sets"] = int(outside.sum())
    assignments = assignments.loc[~outside].reset_index(drop=True)
    metadata, meta_skips, meta_counts = read_metadata(data)
    counts.update(meta_counts)
    say(f"read metadata of {len(metadata):,} tracks from {data.path(data.metadata)}")
    tracks, filter_skips, stages = intersection_filter(assignments, metadata, data)
    say(f"intersection filter: {stages['candidates']:,} → {stages['with_audio']:,} tracks")
    skips = pd.concat([tag_skips, meta_skips, filter_skips], ignore_index=True)
    return _Ingested(assignments, metadata, tracks, skips, stages, counts)


def extract_shard(
    config: Config,
    shard: tuple[int, int],
    *,
    workers: Optional[int] = None,
    progress: Optional[Callable[[str], None]] = None,
    extraction_progress: Optional[Callable[[int, int], None]] = None,
):
    """Ingest and filter as :func:`prepare_dataset` does, then extract features of shard ``i`` of ``n`` only.

    For many machines sharing one cache: run this with ``(i, n)`` on machine
    i, then :func:`prepare_dataset` once anywhere (it extracts whatever is
    left and writes the prepared data). Returns the
    :class:`~msd_triplet.features.ExtractionReport`.
    """
    from msd_triplet import features

    ingested = _ingest(config, progress or (lambda _msg: None))
    return features.extract_tracks(config, ingested.tracks, shard=shard, workers=workers, progress=extraction_progress)


def prepare_dataset(
    config: Config,
    *,
    resplit: bool = False,
    extract: bool = True,
    workers: Optional[int] = None,
    progress: Optional[Callable[[str], None]] = None,
    extraction_progress: Optional[Callable[[int, int], None]] = None,
    beam=None,
) -> PreparedData:
    """Read tags, metadata and audio; filter; extract features; split; write ``config.data.prepared_dir``.

    Writes (atomically) ``tracks.csv``, ``tags_<set>.npz`` per set of
    ``data.tag_sets`` (rows aligned with tracks.csv), ``vocabulary.json``,
    ``splits.csv`` + ``splits.json`` (only when computed), ``skipped.csv``,
    ``stats.json`` and ``config.yaml``. Saved splits are reused when they match
    the kept tracks and seed; otherwise a DataError, unless ``resplit``.

    With ``extract`` (default) the log-mel features of every track that passes
    the filter are extracted into the cache (:func:`msd_triplet.features.extract_tracks`,
    resumable, ``workers`` decoding threads) and tracks whose audio segment
    cannot be read are dropped with their reason, so the filter's "readable
    audio segment" condition holds. ``extract=False`` only checks that the
    files exist. ``progress`` receives one line per stage (e.g. ``click.echo``);
    ``extraction_progress(done, total)`` is called as clips are extracted.
    ``beam`` (a :class:`msd_triplet.pipelines.BeamRun`) extracts on Apache Beam
    instead (:func:`msd_triplet.pipelines.extract_tracks_beam`); the cache,
    skip manifest and prepared files are the same.
    """
    say = progress or (lambda _msg: None)
    data = config.data
    paths = _prepared_paths(config)
    ingested = _ingest(config, say)
    assignments, metadata, tracks, counts = ingested.assignments, ingested.metadata, ingested.tracks, ingested.counts
    stages = ingested.stages
    skip_parts = [ingested.skips]
    if extract:
        tracks, audio_skips, counts["features"] = _extract(config, tracks, workers, extraction_progress, say, beam)
        stages["readable_audio"] = len(tracks)
        skip_parts.append(audio_skips)
    splits, split_info, reused = _splits(tracks, config, paths, resplit)
    tracks.insert(3, "split", splits)
    tracks = tracks[list(TRACK_COLUMNS)].astype(str).reset_index(drop=True)
    matrices = {s: build_tag_matrix(assignments, s, tracks["track_id"])[0] for s in data.tag_sets}
    skips = pd.concat(skip_parts, ignore_index=True)
    reasons = skips["reason"].str.extract(r"^([^:(]*)", expand=False).str.strip().value_counts()
    counts.update(
        {
            "malformed_track_ids": int(skips["reason"].str.startswith(md.MALFORMED_ID).sum()),
            "filter_stages": stages,
            "kept_tracks": len(tracks),
            "splits": split_info["counts"],
        }
    )
    albums = metadata["album_id"]
    stats = {
        "table1": {
            "before": table1_statistics(assignments, albums, data.tag_sets),
            "after": table1_statistics(assignments, albums, data.tag_sets, tracks["track_id"]),
        },
        "counts": counts,
        "skipped": {k: int(v) for k, v in reasons.items()},
    }
    stats = json.loads(json.dumps(stats))
    _write_csv(tracks, paths["tracks"])
    for tagset, tm in matrices.items():
        _write_npz(tm.matrix, paths[f"tags_{tagset}"])
    atomic_write_json(paths["vocabulary"], {s: list(tm.vocabulary) for s, tm in matrices.items()})
    if not reused:
        _write_csv(tracks[["track_id", "split"]], paths["splits"])
        atomic_write_json(paths["splits_json"], split_info)
    _write_csv(skips, paths["skipped"])
    atomic_write_json(paths["stats"], stats)
    save_config(config, paths["config"])
    say(format_table1(stats["table1"]))
    say(
        f"{'reused' if reused else 'computed'} splits {split_info['counts']}; "
        f"skipped {len(skips):,} rows/tracks (see {paths['skipped']}); wrote {data.prepared_dir}"
    )
    return PreparedData(tracks, matrices, stats, paths)


def _extract(
    config: Config,
    tracks: pd.DataFrame,
    workers: Optional[int],
    extraction_progress: Optional[Callable[[int, int], None]],
    say: Callable[[str], None],
    beam=None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Extract features of ``tracks``; drop the unreadable ones. Returns (kept, skip records, summary)."""
    from msd_triplet import features

    if beam is not None:
        from msd_triplet.pipelines import extract_tracks_beam

        report = extract_tracks_beam(config, tracks, beam, say)
    else:
        report = features.extract_tracks(config, tracks, workers=workers, progress=extraction_progress)
    cache = features.FeatureCache(report.directory)
    status = pd.Series(cache.status(), index=cache.track_ids)
    readable = status.reindex(tracks["track_id"]).to_numpy() == features.OK
    manifest = cache.skipped().set_index("track_id")
    dropped = tracks.loc[~readable, "track_id"]
    skips = md.skip_frame(
        (
            manifest.at[t, "path"],
            None,
            t,
            f"audio {manifest.at[t, 'kind'].replace('_', ' ')}: {manifest.at[t, 'message']}",
        )
        for t in dropped
    )
    if not readable.any():
        raise DataError(
            f"no track has a readable audio segment ({len(tracks)} tried); see {report.manifest} for the reason of each"
        )
    summary = {
        "directory": str(report.directory),
        "key": report.directory.name,
        "extracted_now": report.extracted,
        "seconds": round(report.seconds, 2),
        "clips_per_second": round(report.clips_per_second, 1),
        "readable": int(readable.sum()),
        "unreadable": int((~readable).sum()),
        "silent_now": report.silent_now,
        "unreadable_by_kind": report.kinds,
    }
    if beam is not None:
        summary["beam"] = {
            "runner": beam.runner,
            "chunks_run": len(report.chunks_run),
            "chunks_resumed": len(report.chunks_resumed),
        }
    say(
        f"features: {summary['readable']:,} readable, {summary['unreadable']:,} skipped "
        f"({', '.join(f'{k} {v}' for k, v in report.kinds.items()) or 'none'}"
        + (f"; {report.silent_now} silent, kept" if report.silent_now else "")
        + "); "
        + (
            f"{report.extracted + report.skipped_now:,} decoded now at {report.clips_per_second:.0f} clips/s"
            if report.extracted + report.skipped_now
            else "all from the cache"
        )
        + f"; cache {report.directory}"
    )
    return tracks.loc[readable].reset_index(drop=True), skips, summary


def load_prepared(config: Config) -> PreparedData:
    """Read what :func:`prepare_dataset` wrote for ``config``; DataError if missing or inconsistent."""
    paths = _prepared_paths(config)
    for name, path in paths.items():
        if name != "skipped" and not path.is_file():
            raise DataError(f"{path}: not found; run `msd-triplet prepare --config <your config>` first")
    try:
        tracks = pd.read_csv(paths["tracks"], dtype=str, keep_default_na=False)
        vocabulary = json.loads(paths["vocabulary"].read_text(encoding="utf-8"))
        stats = json.loads(paths["stats"].read_text(encoding="utf-8"))
        loaded = {s: sp.load_npz(paths[f"tags_{s}"]).tocsr() for s in config.data.tag_sets}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(
            f"{config.data.prepared_dir}: cannot read prepared data ({exc}); "
            "run `msd-triplet prepare --config <your config>` again"
        ) from None
    if list(tracks.columns) != list(TRACK_COLUMNS):
        raise DataError(f"{paths['tracks']}: columns {list(tracks.columns)}, expected {list(TRACK_COLUMNS)}")
    ids = tracks["track_id"].to_numpy(str)
    matrices = {}
    for tagset, matrix in loaded.items():
        vocab = tuple(vocabulary.get(tagset, ()))
        if matrix.shape != (len(ids), len(vocab)):
            raise DataError(
                f"{paths[f'tags_{tagset}']}: shape {matrix.shape} does not match {len(ids)} tracks × "
                f"{len(vocab)} tags; run `msd-triplet prepare --config <your config>` again"
            )
        matrices[tagset] = TagMatrix(tagset, ids, vocab, matrix.astype(np.float32))
    return PreparedData(tracks, matrices, stats, paths)
