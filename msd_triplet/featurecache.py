"""The on-disk log-mel feature cache: layout, keys, and read access.

Layout of ``<directory>`` = ``<prepared>/<features.cache>/<key>``, where the
key is a hash of every feature parameter (:func:`cache_key`)::

    cache.json                      parameters, shape, number of tracks and shards
    tracks.csv                      track_id, audio_path: row order of the cache
    shard-00000-of-00004/
        features.npy                float32 [rows, n_mels, frames], memory-mapped
        status.npy                  int8 [rows]: 0 to do, 1 extracted, 2 skipped
        skipped.csv                 row, track_id, path, kind, message
    skipped.csv                     the manifests of all shards, after each run

Shards are contiguous row ranges, one folder each, so many machines can fill
one cache without touching each other's files. ``cache.json`` is written
last, so its presence means the layout is complete. Features belong to track
ids: when the track list changes, :func:`open_or_create` lays the cache out
anew and carries over every row already extracted or skipped.

Memory-mapped arrays rather than TFRecord: training draws random batches, and
a memmap gives true random access where TFRecord only approximates it with a
shuffle buffer (``benchmarks/features.py`` measures both).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from msd_triplet import audio
from msd_triplet.config import Config, FeatureConfig
from msd_triplet.errors import ArgumentError, DataError
from msd_triplet.fileio import atomic_path, atomic_write_json

CACHE_FORMAT = 1
TODO, OK, SKIPPED = 0, 1, 2
SKIP_MANIFEST_COLUMNS = ("row", "track_id", "path", "kind", "message")


# --------------------------------------------------------------------------- keys and layout


def feature_params(features: FeatureConfig) -> dict[str, Any]:
    """Every parameter that changes the cached numbers (not where the cache lives)."""
    params = dataclasses.asdict(features)
    params.pop("cache")
    params["format"] = CACHE_FORMAT
    params["resample_quality"] = audio.RESAMPLE_QUALITY
    return params


def cache_key(features: FeatureConfig) -> str:
    """16 hex digits of the SHA-256 of :func:`feature_params` (sorted JSON)."""
    blob = json.dumps(feature_params(features), sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_dir(config: Config) -> Path:
    """Where the cache of ``config.features`` lives (a relative ``features.cache`` is under the prepared dir)."""
    base = Path(config.features.cache)
    if not base.is_absolute():
        base = config.data.prepared_dir / base
    return base / cache_key(config.features)


def _shard_bounds(n_rows: int, n_shards: int) -> np.ndarray:
    return np.array([i * n_rows // n_shards for i in range(n_shards + 1)], dtype=np.int64)


def _shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}"


@dataclass
class Shard:
    """One shard folder: its rows [start, stop) of the cache and its files."""

    directory: Path
    start: int
    stop: int
    shape: tuple[int, int]

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def create(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.directory / "features.npy", suffix=".npy") as tmp:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(self.rows, *self.shape)).flush()
        self.save_status(np.zeros(self.rows, np.int8), {})

    def features(self, mode: str = "r") -> np.ndarray:
        array = np.load(self.directory / "features.npy", mmap_mode=mode)
        if array.shape != (self.rows, *self.shape) or array.dtype != np.float32:
            raise DataError(
                f"{self.directory / 'features.npy'}: holds {array.dtype} {array.shape}, expected "
                f"float32 {(self.rows, *self.shape)}; delete {self.directory.parent} to rebuild"
            )
        return array

    def writer(self) -> "RowWriter":
        """Positional writes of rows into ``features.npy`` (no mapping: memory stays flat)."""
        self.features("r")  # validates shape and dtype
        return RowWriter(self.directory / "features.npy", self.shape)

    def status(self) -> np.ndarray:
        status = np.load(self.directory / "status.npy")
        if status.shape != (self.rows,):
            raise DataError(f"{self.directory / 'status.npy'}: {status.shape[0]} rows, expected {self.rows}")
        return status

    def skips(self) -> dict[int, tuple[str, str, str, str]]:
        """Shard-local row → (track_id, path, kind, message) of the skipped rows."""
        path = self.directory / "skipped.csv"
        if not path.exists():
            return {}
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        return {
            int(r) - self.start: (t, p, k, m)
            for r, t, p, k, m in frame[list(SKIP_MANIFEST_COLUMNS)].itertuples(index=False)
        }

    def save_status(self, status: np.ndarray, skips: dict[int, tuple[str, str, str, str]]) -> None:
        rows = sorted(skips)
        frame = pd.DataFrame([(self.start + r, *skips[r]) for r in rows], columns=list(SKIP_MANIFEST_COLUMNS))
        with atomic_path(self.directory / "skipped.csv") as tmp:
            frame.to_csv(tmp, index=False)
        with atomic_path(self.directory / "status.npy", suffix=".npy") as tmp:
            np.save(tmp, status)


class RowWriter:
    """Writes float32 rows into an existing ``.npy`` file at their offsets with ``os.pwrite``.

    Writing through a memory map would make every written page part of the
    process's resident memory until the kernel writes it back; positional
    writes leave them to the page cache, so extraction memory does not grow
    with the number of files.
    """

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            _, fortran_order, _ = read_header(f)
            self._offset = f.tell()
        if fortran_order:
            raise DataError(f"{path}: Fortran-ordered array; delete the cache to rebuild it")
        self._row_bytes = int(np.prod(shape)) * 4
        self._shape = tuple(shape)
        self._fd = os.open(path, os.O_RDWR)

    def write(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Store ``values[i]`` (float32 [*shape]) at row ``rows[i]``; runs of consecutive rows in one call."""
        rows = np.asarray(rows, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=np.float32)
        if values.shape != (len(rows), *self._shape):
            raise ArgumentError(
                f"values: shape {values.shape} for {len(rows)} rows; expected {(len(rows), *self._shape)}"
            )
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
            data = memoryview(values[start:stop]).cast("B")
            position = self._offset + int(rows[start]) * self._row_bytes
            while len(data):  # pwrite may write less than asked
                written = os.pwrite(self._fd, data, position)
                data, position = data[written:], position + written

    def sync(self) -> None:
        """Make the written rows durable before their status says so."""
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FeatureCache:
    """Read access to a feature cache folder (see the module docstring for its layout).

    Attributes
    ----------
    track_ids : str [n] in row order; ``audio_paths`` alike
    shape : (n_mels, frames) of one track
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / "cache.json"
        if not meta_path.is_file():
            raise DataError(
                f"{self.directory}: no feature cache here (cache.json missing); "
                "run `msd-triplet prepare --config <your config>` to extract features"
            )
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
            tracks = pd.read_csv(self.directory / "tracks.csv", dtype=str, keep_default_na=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.directory}: cannot read the feature cache ({exc}); delete it to rebuild") from None
        if self.meta.get("format") != CACHE_FORMAT:
            raise DataError(
                f"{meta_path}: cache format {self.meta.get('format')}, this version reads "
                f"{CACHE_FORMAT}; delete {self.directory} to rebuild"
            )
        self.track_ids = tracks["track_id"].to_numpy(dtype=str)
        self.audio_paths = tracks["audio_path"].to_numpy(dtype=str)
        self.shape = tuple(self.meta["shape"])
        n_shards = int(self.meta["shards"])
        bounds = _shard_bounds(len(self.track_ids), n_shards)
        self.bounds = bounds
        self.shards = [
            Shard(self.directory / _shard_name(i, n_shards), int(bounds[i]), int(bounds[i + 1]), self.shape)
            for i in range(n_shards)
        ]
        self._arrays: Optional[list[np.ndarray]] = None
        self._index: Optional[dict[str, int]] = None

    def __len__(self) -> int:
        return len(self.track_ids)

    def status(self) -> np.ndarray:
        """int8 [n]: 0 not extracted yet, 1 extracted, 2 skipped (see :meth:`skipped`)."""
        return np.concatenate([s.status() for s in self.shards]) if self.shards else np.zeros(0, np.int8)

    def skipped(self) -> pd.DataFrame:
        """The skip manifest of all shards: row, track_id, path, kind, message."""
        frames = [
            pd.read_csv(s.directory / "skipped.csv", dtype=str, keep_default_na=False)
            for s in self.shards
            if (s.directory / "skipped.csv").exists()
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SKIP_MANIFEST_COLUMNS)

    def _track_index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {t: i for i, t in enumerate(self.track_ids)}
        return self._index

    def positions(self, track_ids: Sequence[str]) -> np.ndarray:
        """int64 rows of ``track_ids``, -1 for a track the cache does not hold (whatever its status)."""
        index = self._track_index()
        return np.fromiter((index.get(str(t), -1) for t in track_ids), dtype=np.int64, count=len(track_ids))

    def rows(self, track_ids: Sequence[str]) -> np.ndarray:
        """int64 rows of ``track_ids``; DataError if one is not in the cache or was not extracted."""
        index = self._track_index()
        try:
            rows = np.fromiter((index[t] for t in track_ids), dtype=np.int64, count=len(track_ids))
        except KeyError as exc:
            raise DataError(
                f"{self.directory}: track {exc.args[0]} is not in the feature cache; run `msd-triplet prepare` again"
            ) from None
        status = self.status()[rows]
        if np.any(status != OK):
            bad = np.asarray(track_ids)[status != OK]
            raise DataError(
                f"{self.directory}: {len(bad)} of the requested tracks have no features "
                f"(e.g. {bad[0]}: {'skipped' if status[status != OK][0] == SKIPPED else 'not extracted'})"
            )
        return rows

    def read(self, rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), n_mels, frames]: the features of cache rows, in the order given."""
        if self._arrays is None:
            self._arrays = [s.features("r") for s in self.shards]
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape), np.float32)
        order = np.argsort(rows, kind="stable")  # read each shard in ascending row order
        sorted_rows = rows[order]
        which = np.searchsorted(self.bounds, sorted_rows, side="right") - 1
        for i in np.unique(which):
            sel = which == i
            out[order[sel]] = self._arrays[i][sorted_rows[sel] - self.bounds[i]]
        return out


def store_rows(
    cache: FeatureCache,
    track_ids: Sequence[str],
    log_mel: np.ndarray,
    kinds: Sequence[str],
    messages: Sequence[str],
) -> tuple[int, int]:
    """Write results computed elsewhere (e.g. by Beam workers) into the cache, by track id.

    ``log_mel[i]`` (float32 [n_mels, frames]) is stored for ``track_ids[i]``
    when ``kinds[i]`` is ""; otherwise the track is marked skipped with that
    kind and message, exactly as a local extraction would. Tracks the cache
    does not hold, and rows already extracted or skipped, are left alone, so
    storing the same results twice changes nothing. Rows are written and
    synced before their status, shard by shard. Returns (stored, skipped).
    """
    log_mel = np.asarray(log_mel, dtype=np.float32)
    if log_mel.shape != (len(track_ids), *cache.shape):
        raise ArgumentError(
            f"log_mel: shape {log_mel.shape} for {len(track_ids)} tracks; expected {(len(track_ids), *cache.shape)}"
        )
    rows = cache.positions(track_ids)
    kinds = np.asarray(kinds, dtype=str)
    stored = skipped = 0
    for shard in cache.shards:
        mine = np.flatnonzero((rows >= shard.start) & (rows < shard.stop))
        if len(mine) == 0:
            continue
        status = shard.status()
        local = rows[mine] - shard.start
        todo = status[local] == TODO
        mine, local = mine[todo], local[todo]
        ok = kinds[mine] == ""
        if ok.any():
            order = np.argsort(local[ok])
            with shard.writer() as writer:
                writer.write(local[ok][order], log_mel[mine[ok]][order])
                writer.sync()
        skips = shard.skips()
        for j, row in zip(mine[~ok], local[~ok]):
            skips[int(row)] = (
                str(cache.track_ids[shard.start + row]),
                str(cache.audio_paths[shard.start + row]),
                str(kinds[j]),
                str(messages[j]),
            )
        status[local[ok]] = OK
        status[local[~ok]] = SKIPPED
        shard.save_status(status, skips)
        stored += int(ok.sum())
        skipped += int((~ok).sum())
    return stored, skipped


def open_or_create(
    directory: Path,
    track_ids: list[str],
    audio_paths: list[str],
    features: FeatureConfig,
    shard: Optional[tuple[int, int]],
) -> FeatureCache:
    """Open the cache at ``directory`` for this track list, creating or re-laying it out as needed."""
    if len(set(track_ids)) != len(track_ids):
        raise ArgumentError(
            f"track_ids: {len(track_ids) - len(set(track_ids))} repeated among {len(track_ids)}; "
            "each track id must appear once"
        )
    if (directory / "cache.json").is_file():
        cache = FeatureCache(directory)
        if cache.meta.get("key") != cache_key(features):
            raise DataError(
                f"{directory}: built for other feature parameters (key {cache.meta.get('key')}, "
                f"these give {cache_key(features)}); point features.cache elsewhere or delete it"
            )
        if list(cache.track_ids) == track_ids:
            return cache
        if shard is not None:
            raise DataError(
                f"{directory}: the cache holds another track list ({len(cache)} tracks, this run "
                f"{len(track_ids)}); shards must share one list: run prepare once without --shard "
                "to re-lay the cache out (extracted rows are kept), then start the shards"
            )
        return _relayout(cache, track_ids, audio_paths, features)
    staging = _staging(directory, "new")
    _create(staging, track_ids, audio_paths, features, shard[1] if shard else 1)
    try:
        # a directory rename is atomic: when several machines start at once, one layout wins
        # and nobody's rows are written into files another machine then replaces
        os.rename(staging, directory)
    except OSError:
        shutil.rmtree(staging)
        if not (directory / "cache.json").is_file():
            raise
        return open_or_create(directory, track_ids, audio_paths, features, shard)
    return FeatureCache(directory)


def _staging(directory: Path, what: str) -> Path:
    directory.parent.mkdir(parents=True, exist_ok=True)
    return directory.with_name(f".{directory.name}.{what}.{os.getpid()}.{uuid.uuid4().hex[:8]}")


def _create(
    directory: Path, track_ids: list[str], audio_paths: list[str], features: FeatureConfig, n_shards: int
) -> None:
    directory.mkdir(parents=True)
    shape = audio.feature_shape(features)
    bounds = _shard_bounds(len(track_ids), n_shards)
    for i in range(n_shards):
        Shard(directory / _shard_name(i, n_shards), int(bounds[i]), int(bounds[i + 1]), shape).create()
    with atomic_path(directory / "tracks.csv") as tmp:
        pd.DataFrame({"track_id": track_ids, "audio_path": audio_paths}).to_csv(tmp, index=False)
    # cache.json last: its presence means the layout is complete
    atomic_write_json(
        directory / "cache.json",
        {
            "format": CACHE_FORMAT,
            "key": cache_key(features),
            "params": feature_params(features),
            "shape": list(shape),
            "dtype": "float32",
            "tracks": len(track_ids),
            "shards": n_shards,
        },
    )


def _relayout(old: FeatureCache, track_ids: list[str], audio_paths: list[str], features: FeatureConfig) -> FeatureCache:
    """A new layout for a changed track list, carrying over the rows already extracted or skipped."""
    staging = _staging(old.directory, "relayout")
    _create(staging, track_ids, audio_paths, features, len(old.shards))
    new = FeatureCache(staging)
    old_status = old.status()
    old_index = {t: i for i, t in enumerate(old.track_ids)}
    old_skips = old.skipped()
    old_skip_by_id = {t: (k, m) for t, k, m in zip(old_skips["track_id"], old_skips["kind"], old_skips["message"])}
    for sh in new.shards:
        ids = np.asarray(track_ids[sh.start : sh.stop])
        src = np.array([old_index.get(t, -1) for t in ids], dtype=np.int64)
        have = src >= 0
        status = np.zeros(sh.rows, np.int8)
        status[have] = old_status[src[have]]
        done = np.flatnonzero(status == OK)
        if len(done):
            with sh.writer() as writer:
                writer.write(done, old.read(src[done]))
                writer.sync()
        skips = {
            int(r): (ids[r], audio_paths[sh.start + r], *old_skip_by_id.get(ids[r], ("error", "")))
            for r in np.flatnonzero(status == SKIPPED)
        }
        sh.save_status(status, skips)
    retired = _staging(old.directory, "retired")
    os.replace(old.directory, retired)
    os.replace(staging, old.directory)
    shutil.rmtree(retired)
    return FeatureCache(old.directory)
