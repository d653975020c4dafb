"""The on-disk log-mel cache: resumable, shardable extraction and tf.data readers.

Extraction (:func:`extract_features`) is one tf.data pipeline per shard:
file paths → parallel decode (:func:`msd_triplet.audio.read_segment` in
``workers`` threads; soundfile and soxr release the GIL) → batches →
:func:`msd_triplet.audio.log_mel` as TF ops → rows of a memory-mapped array.

Cache layout, ``<directory>`` = ``<prepared>/<features.cache>/<key>``, where the
key is a hash of every feature parameter (:func:`cache_key`)::

    cache.json                      parameters, shape, number of tracks and shards
    tracks.csv                      track_id, audio_path: row order of the cache
    shard-00000-of-00004/
        features.npy                float32 [rows, n_mels, frames], memory-mapped
        status.npy                  int8 [rows]: 0 to do, 1 extracted, 2 skipped
        skipped.csv                 row, track_id, path, kind, message

Rows are written before their status, and the status (with the skip
manifest) is replaced atomically at least every ``checkpoint_seconds``, so a
killed run loses at most that much work and a rerun continues where it
stopped. Shards are contiguous row ranges, one folder each, so many machines
can extract into the same cache (``--shard i/n``) without touching each
other's files. Features are stored per track id: if the track list changes,
rows of tracks already extracted are carried over.

Memory-mapped arrays rather than TFRecord: training draws random batches and
a memmap gives true random access, where TFRecord only approximates it with a
shuffle buffer (``benchmarks/features.py`` measures both).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd

from msd_triplet import audio
from msd_triplet.config import Config, FeatureConfig
from msd_triplet.errors import AudioError, DataError
from msd_triplet.fileio import atomic_path, atomic_write_json

CACHE_FORMAT = 1
TODO, OK, SKIPPED = 0, 1, 2
SKIP_MANIFEST_COLUMNS = ("row", "track_id", "path", "kind", "message")

Progress = Callable[[int, int], None]


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


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 <= i < n; ValueError naming the value otherwise."""
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard {text!r}: expected i/n, e.g. 0/4 for the first of four shards") from None
    if not 0 <= i < n:
        raise ValueError(f"shard {text!r}: need 0 <= i < n")
    return i, n


def _shard_bounds(n_rows: int, n_shards: int) -> np.ndarray:
    return np.array([i * n_rows // n_shards for i in range(n_shards + 1)], dtype=np.int64)


def _shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}"


@dataclass
class _Shard:
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
            raise DataError(f"{self.directory / 'features.npy'}: holds {array.dtype} {array.shape}, expected "
                            f"float32 {(self.rows, *self.shape)}; delete {self.directory.parent} to rebuild")
        return array

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
        return {int(r) - self.start: (t, p, k, m) for r, t, p, k, m in frame[list(SKIP_MANIFEST_COLUMNS)].itertuples(
            index=False)}

    def save_status(self, status: np.ndarray, skips: dict[int, tuple[str, str, str, str]]) -> None:
        rows = sorted(skips)
        frame = pd.DataFrame([(self.start + r, *skips[r]) for r in rows], columns=list(SKIP_MANIFEST_COLUMNS))
        with atomic_path(self.directory / "skipped.csv") as tmp:
            frame.to_csv(tmp, index=False)
        with atomic_path(self.directory / "status.npy", suffix=".npy") as tmp:
            np.save(tmp, status)


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
            raise DataError(f"{self.directory}: no feature cache here (cache.json missing); "
                            "run `msd-triplet prepare --config <your config>` to extract features")
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
            tracks = pd.read_csv(self.directory / "tracks.csv", dtype=str, keep_default_na=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.directory}: cannot read the feature cache ({exc}); delete it to rebuild") from None
        if self.meta.get("format") != CACHE_FORMAT:
            raise DataError(f"{meta_path}: cache format {self.meta.get('format')}, this version reads "
                            f"{CACHE_FORMAT}; delete {self.directory} to rebuild")
        self.track_ids = tracks["track_id"].to_numpy(dtype=str)
        self.audio_paths = tracks["audio_path"].to_numpy(dtype=str)
        self.shape = tuple(self.meta["shape"])
        n_shards = int(self.meta["shards"])
        bounds = _shard_bounds(len(self.track_ids), n_shards)
        self.bounds = bounds
        self.shards = [_Shard(self.directory / _shard_name(i, n_shards), int(bounds[i]), int(bounds[i + 1]),
                              self.shape) for i in range(n_shards)]
        self._arrays: Optional[list[np.ndarray]] = None
        self._index: Optional[dict[str, int]] = None

    def __len__(self) -> int:
        return len(self.track_ids)

    def status(self) -> np.ndarray:
        """int8 [n]: 0 not extracted yet, 1 extracted, 2 skipped (see :meth:`skipped`)."""
        return np.concatenate([s.status() for s in self.shards]) if self.shards else np.zeros(0, np.int8)

    def skipped(self) -> pd.DataFrame:
        """The skip manifest of all shards: row, track_id, path, kind, message."""
        frames = [pd.read_csv(s.directory / "skipped.csv", dtype=str, keep_default_na=False)
                  for s in self.shards if (s.directory / "skipped.csv").exists()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SKIP_MANIFEST_COLUMNS)

    def rows(self, track_ids: Sequence[str]) -> np.ndarray:
        """int64 rows of ``track_ids``; DataError if one is not in the cache or was not extracted."""
        if self._index is None:
            self._index = {t: i for i, t in enumerate(self.track_ids)}
        try:
            rows = np.fromiter((self._index[t] for t in track_ids), dtype=np.int64, count=len(track_ids))
        except KeyError as exc:
            raise DataError(f"{self.directory}: track {exc.args[0]} is not in the feature cache; "
                            "run `msd-triplet prepare` again") from None
        status = self.status()[rows]
        if np.any(status != OK):
            bad = np.asarray(track_ids)[status != OK]
            raise DataError(f"{self.directory}: {len(bad)} of the requested tracks have no features "
                            f"(e.g. {bad[0]}: {'skipped' if status[status != OK][0] == SKIPPED else 'not extracted'})")
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


# --------------------------------------------------------------------------- extraction

@dataclass
class ExtractionReport:
    """What one :func:`extract_features` call did."""

    directory: Path
    total: int                 # rows of the cache (all shards)
    shards: list[int]          # the shards this call worked on
    extracted: int = 0         # rows decoded by this call
    skipped_now: int = 0       # rows skipped by this call
    silent_now: int = 0        # rows of this call whose segment is all zeros (kept: finite features)
    seconds: float = 0.0
    ok: int = 0                # rows with features, over the whole cache
    skipped: int = 0           # rows skipped, over the whole cache
    todo: int = 0              # rows still to extract, over the whole cache
    kinds: dict[str, int] = field(default_factory=dict)  # skipped rows per AudioError kind, whole cache

    @property
    def complete(self) -> bool:
        return self.todo == 0

    @property
    def clips_per_second(self) -> float:
        done = self.extracted + self.skipped_now
        return done / self.seconds if self.seconds > 0 else 0.0

    @property
    def manifest(self) -> Path:
        return self.directory / "skipped.csv"


def default_workers() -> int:
    """Decoding threads: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def extract_features(track_ids: Sequence[str], audio_paths: Sequence[str], features: FeatureConfig,
                     directory: str | os.PathLike, *, shard: Optional[tuple[int, int]] = None,
                     workers: Optional[int] = None, batch_size: int = 32, checkpoint_seconds: float = 30.0,
                     progress: Optional[Progress] = None) -> ExtractionReport:
    """Decode and transform every track into the cache at ``directory``; resumable.

    Parameters
    ----------
    track_ids, audio_paths : the tracks, in cache row order, and their audio files
    features : segment and log-mel parameters (must match the cache's key)
    directory : the cache folder, normally :func:`cache_dir`
    shard : (i, n) to work on shard i of n only (many machines, one cache);
        None works on every shard of the cache (n = 1 for a new cache)
    workers : decoding threads (default: the usable CPUs)
    batch_size : clips per log-mel batch
    checkpoint_seconds : longest time between two saves of the status
    progress : called as ``progress(done, total)`` with rows done over the shards worked on

    Returns
    -------
    ExtractionReport; bad files never stop the run, they are skipped and listed
    with their reason in each shard's ``skipped.csv`` and :meth:`FeatureCache.skipped`.
    """
    if len(track_ids) != len(audio_paths):
        raise ValueError(f"{len(track_ids)} track ids but {len(audio_paths)} audio paths")
    directory = Path(directory)
    cache = _open_or_create(directory, list(track_ids), list(audio_paths), features, shard)
    n_shards = len(cache.shards)
    if shard is not None and shard[1] != n_shards:
        raise DataError(f"{directory}: the cache was created with {n_shards} shard(s); use --shard i/{n_shards}")
    selected = [shard[0]] if shard is not None else list(range(n_shards))
    report = ExtractionReport(directory, len(cache), selected)
    statuses = {i: cache.shards[i].status() for i in selected}
    total = sum(len(s) for s in statuses.values())
    done = sum(int(np.count_nonzero(s != TODO)) for s in statuses.values())
    if progress:
        progress(done, total)
    started = time.perf_counter()
    for i in selected:
        done = _extract_shard(cache, cache.shards[i], features, workers or default_workers(),
                              batch_size, checkpoint_seconds, report, progress, done, total)
    report.seconds = time.perf_counter() - started
    status = cache.status()
    report.ok = int(np.count_nonzero(status == OK))
    report.skipped = int(np.count_nonzero(status == SKIPPED))
    report.todo = int(np.count_nonzero(status == TODO))
    skipped = cache.skipped()
    report.kinds = {str(k): int(v) for k, v in skipped["kind"].value_counts().items()} if len(skipped) else {}
    _write_manifest(cache, skipped)
    return report


def extract_tracks(config: Config, tracks: pd.DataFrame, *, shard: Optional[tuple[int, int]] = None,
                   workers: Optional[int] = None, progress: Optional[Progress] = None) -> ExtractionReport:
    """:func:`extract_features` for a track table (``track_id``, ``audio_path`` relative to ``data.root``)
    into :func:`cache_dir` of ``config``."""
    paths = [str(config.data.path(p)) for p in tracks["audio_path"]]
    return extract_features(list(tracks["track_id"]), paths, config.features, cache_dir(config),
                            shard=shard, workers=workers, progress=progress)


def _write_manifest(cache: FeatureCache, skipped: pd.DataFrame) -> None:
    with atomic_path(cache.directory / "skipped.csv") as tmp:
        skipped.to_csv(tmp, index=False)


def _extract_shard(cache: FeatureCache, shard: _Shard, features: FeatureConfig, workers: int,
                   batch_size: int, checkpoint_seconds: float, report: ExtractionReport,
                   progress: Optional[Progress], done: int, total: int) -> int:
    status = shard.status()
    todo = np.flatnonzero(status == TODO)
    if len(todo) == 0:
        return done
    skips = shard.skips()
    track_ids = cache.track_ids[shard.start:shard.stop]
    paths = cache.audio_paths[shard.start:shard.stop]
    array = shard.features("r+")
    dataset = extraction_dataset(paths[todo], todo, features, workers, batch_size)
    last_save = time.perf_counter()
    try:
        for rows, mels, kinds, messages, silent in dataset.as_numpy_iterator():
            ok = kinds == b""
            array[rows[ok]] = mels[ok]
            status[rows[ok]] = OK
            status[rows[~ok]] = SKIPPED
            for row, kind, message in zip(rows[~ok], kinds[~ok], messages[~ok]):
                skips[int(row)] = (str(track_ids[row]), str(paths[row]), kind.decode(), message.decode())
            report.extracted += int(ok.sum())
            report.skipped_now += int((~ok).sum())
            report.silent_now += int(silent[ok].sum())
            done += len(rows)
            if progress:
                progress(done, total)
            if time.perf_counter() - last_save >= checkpoint_seconds:
                array.flush()
                shard.save_status(status, skips)
                last_save = time.perf_counter()
    finally:
        array.flush()
        shard.save_status(status, skips)
        del array
    return done


def extraction_dataset(paths: Sequence[str], rows: np.ndarray, features: FeatureConfig, workers: int,
                       batch_size: int):
    """tf.data: (rows, log-mel [B, n_mels, frames], kind, message, silent) per batch, in input order.

    ``kind`` is b"" for a decoded clip, else the :class:`AudioError` kind
    (features of a skipped row are meaningless).
    """
    import tensorflow as tf

    spec = audio.SegmentSpec.from_config(features)
    samples = spec.samples

    def decode(path: bytes):
        try:
            waveform = audio.read_segment(path.decode("utf-8"), spec)
            return waveform, b"", b"", np.bool_(not np.any(waveform))
        except AudioError as exc:
            return np.zeros(samples, np.float32), exc.kind.encode(), str(exc).encode(), np.bool_(False)
        except Exception as exc:  # noqa: BLE001 - one odd file must never stop a batch job
            message = f"{path.decode('utf-8', 'replace')}: unexpected {type(exc).__name__}: {exc}"
            return np.zeros(samples, np.float32), b"error", message.encode(), np.bool_(False)

    def decode_op(row, path):
        waveform, kind, message, silent = tf.numpy_function(
            decode, [path], [tf.float32, tf.string, tf.string, tf.bool], stateful=False)
        waveform.set_shape([samples])
        return row, waveform, kind, message, silent

    mel_kwargs = audio.log_mel_kwargs(features)

    def transform(rows, waveforms, kinds, messages, silent):
        return rows, audio.log_mel(waveforms, **mel_kwargs), kinds, messages, silent

    options = tf.data.Options()
    options.threading.private_threadpool_size = workers + 1
    options.deterministic = True
    dataset = tf.data.Dataset.from_tensor_slices((np.asarray(rows, np.int64), np.asarray(paths, dtype=str)))
    dataset = dataset.map(decode_op, num_parallel_calls=workers)
    dataset = dataset.batch(batch_size).map(transform).prefetch(1)
    return dataset.with_options(options)


def _open_or_create(directory: Path, track_ids: list[str], audio_paths: list[str], features: FeatureConfig,
                    shard: Optional[tuple[int, int]]) -> FeatureCache:
    """Open the cache at ``directory`` for this track list, creating or re-laying it out as needed."""
    if len(set(track_ids)) != len(track_ids):
        raise ValueError("track ids must be unique")
    if (directory / "cache.json").is_file():
        cache = FeatureCache(directory)
        if cache.meta.get("key") != cache_key(features):
            raise DataError(f"{directory}: built for other feature parameters (key {cache.meta.get('key')}, "
                            f"these give {cache_key(features)}); point features.cache elsewhere or delete it")
        if list(cache.track_ids) == track_ids:
            return cache
        return _relayout(cache, track_ids, audio_paths, features, shard)
    _create(directory, track_ids, audio_paths, features, shard[1] if shard else 1)
    return FeatureCache(directory)


def _create(directory: Path, track_ids: list[str], audio_paths: list[str], features: FeatureConfig,
            n_shards: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    shape = audio.feature_shape(features)
    bounds = _shard_bounds(len(track_ids), n_shards)
    for i in range(n_shards):
        _Shard(directory / _shard_name(i, n_shards), int(bounds[i]), int(bounds[i + 1]), shape).create()
    with atomic_path(directory / "tracks.csv") as tmp:
        pd.DataFrame({"track_id": track_ids, "audio_path": audio_paths}).to_csv(tmp, index=False)
    # cache.json last: its presence means the layout is complete
    atomic_write_json(directory / "cache.json", {
        "format": CACHE_FORMAT, "key": cache_key(features), "params": feature_params(features),
        "shape": list(shape), "dtype": "float32", "tracks": len(track_ids), "shards": n_shards})


def _relayout(old: FeatureCache, track_ids: list[str], audio_paths: list[str], features: FeatureConfig,
              shard: Optional[tuple[int, int]]) -> FeatureCache:
    """A new layout for a changed track list, carrying over the rows already extracted or skipped."""
    staging = old.directory.with_name(old.directory.name + ".relayout")
    if staging.exists():
        shutil.rmtree(staging)
    _create(staging, track_ids, audio_paths, features, shard[1] if shard else len(old.shards))
    new = FeatureCache(staging)
    old_status = old.status()
    old_index = {t: i for i, t in enumerate(old.track_ids)}
    old_skips = old.skipped()
    old_skip_by_id = {t: (k, m) for t, k, m in zip(old_skips["track_id"], old_skips["kind"], old_skips["message"])}
    for sh in new.shards:
        ids = np.asarray(track_ids[sh.start:sh.stop])
        src = np.array([old_index.get(t, -1) for t in ids], dtype=np.int64)
        have = src >= 0
        status = np.zeros(sh.rows, np.int8)
        status[have] = old_status[src[have]]
        done = np.flatnonzero(status == OK)
        if len(done):
            array = sh.features("r+")
            array[done] = old.read(src[done])
            array.flush()
            del array
        skips = {int(r): (ids[r], audio_paths[sh.start + r], *old_skip_by_id.get(ids[r], ("error", "")))
                 for r in np.flatnonzero(status == SKIPPED)}
        sh.save_status(status, skips)
    retired = old.directory.with_name(old.directory.name + ".retired")
    if retired.exists():
        shutil.rmtree(retired)
    os.replace(old.directory, retired)
    os.replace(staging, old.directory)
    shutil.rmtree(retired)
    return FeatureCache(old.directory)


# --------------------------------------------------------------------------- reading for training

def epoch_order(n: int, seed: int, epoch: int):
    """The visiting order of ``n`` examples in ``epoch``: a pure function of (seed, epoch).

    A stateless shuffle, so a run resumed at epoch e sees the same batches as
    an uninterrupted one. Returns an int64 tensor [n].
    """
    import tensorflow as tf

    return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64),
                                                    seed=tf.stack([tf.cast(seed, tf.int64), epoch]))


def feature_dataset(cache: FeatureCache, rows: np.ndarray, targets: Any = None, *, batch_size: int,
                    seed: Optional[int] = None, epochs: Optional[int] = 1, first_epoch: int = 0,
                    drop_remainder: bool = False, channel_axis: bool = True):
    """tf.data over cached features: ``features`` or ``(features, targets)`` batches.

    Parameters
    ----------
    cache : the feature cache
    rows : int [n] cache rows of the examples (e.g. ``cache.rows(track_ids)``)
    targets : None, one array [n, ...] or a tuple of arrays [n, ...], aligned with ``rows``
    batch_size : examples per batch
    seed : None keeps the given order; an int shuffles every epoch with
        :func:`epoch_order` (batches never straddle two epochs)
    epochs : how many epochs to yield, from ``first_epoch`` (None: forever)
    drop_remainder : drop each epoch's last, smaller batch (static batch shape)
    channel_axis : append a channel axis: features float32 [B, n_mels, frames, 1]

    Returns
    -------
    tf.data.Dataset of ``features`` or ``(features, targets)``; features are
    gathered from the memory-mapped cache in a ``tf.numpy_function``.
    """
    import tensorflow as tf

    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    if n == 0:
        raise ValueError("feature_dataset: no rows")
    single = targets is not None and not isinstance(targets, (tuple, list))
    target_list = [] if targets is None else [np.asarray(t) for t in ([targets] if single else targets)]
    for t in target_list:
        if len(t) != n:
            raise ValueError(f"feature_dataset: a target array has {len(t)} rows, expected {n}")
    shape = cache.shape

    def gather(index: np.ndarray):
        out = [cache.read(rows[index])]
        out.extend(t[index] for t in target_list)
        return out

    def load(index):
        values = tf.numpy_function(gather, [index], [tf.float32] + [tf.as_dtype(t.dtype) for t in target_list],
                                   stateful=False)
        feats = values[0]
        feats.set_shape([None, *shape])
        if channel_axis:
            feats = feats[..., None]
        outs = list(values[1:])
        for out, t in zip(outs, target_list):
            out.set_shape([None, *t.shape[1:]])
        if not target_list:
            return feats
        return feats, (outs[0] if single else tuple(outs))

    def one_epoch(epoch):
        order = tf.range(n, dtype=tf.int64) if seed is None else epoch_order(n, seed, epoch)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder)

    if epochs is None:
        epoch_ids = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
    else:
        epoch_ids = tf.data.Dataset.range(first_epoch, first_epoch + epochs)
    dataset = epoch_ids.flat_map(one_epoch).map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(n: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Batches per epoch of :func:`feature_dataset`."""
    return n // batch_size if drop_remainder else -(-n // batch_size)
