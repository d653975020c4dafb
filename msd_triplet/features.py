"""Feature extraction into the on-disk cache, and the tf.data pipeline that reads it back for training.

Extraction (:func:`extract_features`) works shard by shard of the cache
(:mod:`msd_triplet.featurecache`): file paths → parallel decode
(:func:`msd_triplet.audio.read_segment` in ``workers`` threads; soundfile and
soxr release the GIL) → batches → :func:`msd_triplet.audio.log_mel` as TF
ops in a ``tf.function`` (:func:`decoded_batches`) → rows of the shard's
``features.npy`` (positional writes). Rows are
written and synced before their status, and the status (with the skip
manifest) is replaced atomically at least every ``checkpoint_seconds``: a killed run loses at most that much work
and a rerun continues where it stopped. Bad files never stop a run; each is
skipped and listed with its reason.

Training reads the cache with :func:`feature_dataset`: seeded, per-epoch
shuffled batches whose order is a pure function of (seed, epoch), so a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from msd_triplet import audio
from msd_triplet.config import Config, FeatureConfig
from msd_triplet.errors import ArgumentError, AudioError, DataError
from msd_triplet.featurecache import (  # re-exported: the cache API
    OK,
    SKIPPED,
    TODO,
    FeatureCache,
    Shard,
    cache_dir,
    cache_key,
    feature_params,
    open_or_create,
)
from msd_triplet.fileio import atomic_path

__all__ = [
    "OK",
    "SKIPPED",
    "TODO",
    "ExtractionReport",
    "FeatureCache",
    "cache_dir",
    "cache_key",
    "default_workers",
    "DecodedBatch",
    "decoded_batches",
    "epoch_order",
    "extract_features",
    "extract_tracks",
    "feature_dataset",
    "feature_params",
    "parse_shard",
    "steps_per_epoch",
]

Progress = Callable[[int, int], None]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 <= i < n; ArgumentError (a ValueError) naming the value otherwise."""
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ArgumentError(f"shard {text!r}: expected i/n, e.g. 0/4 for the first of four shards") from None
    if not 0 <= i < n:
        raise ArgumentError(f"shard {text!r}: need 0 <= i < n, e.g. 0/4 .. 3/4")
    return i, n


# --------------------------------------------------------------------------- extraction


@dataclass
class ExtractionReport:
    """What one :func:`extract_features` call did."""

    directory: Path
    total: int  # rows of the cache (all shards)
    shards: list[int]  # the shards this call worked on
    extracted: int = 0  # rows decoded by this call
    skipped_now: int = 0  # rows skipped by this call
    silent_now: int = 0  # rows of this call whose segment is all zeros (kept: finite features)
    seconds: float = 0.0
    ok: int = 0  # rows with features, over the whole cache
    skipped: int = 0  # rows skipped, over the whole cache
    todo: int = 0  # rows still to extract, over the whole cache
    kinds: dict[str, int] = field(default_factory=dict)  # skipped rows per AudioError kind, whole cache
    # on Apache Beam (msd_triplet.pipelines): the work items (chunks) this call computed, and those an
    # interrupted earlier call had finished, which were stored and not computed again
    chunks_run: list[int] = field(default_factory=list)
    chunks_resumed: list[int] = field(default_factory=list)

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


def extract_features(
    track_ids: Sequence[str],
    audio_paths: Sequence[str],
    features: FeatureConfig,
    directory: str | os.PathLike,
    *,
    shard: Optional[tuple[int, int]] = None,
    workers: Optional[int] = None,
    batch_size: int = 16,
    checkpoint_seconds: float = 30.0,
    progress: Optional[Progress] = None,
) -> ExtractionReport:
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
        raise ArgumentError(f"{len(track_ids)} track ids but {len(audio_paths)} audio paths; expected one path per id")
    directory = Path(directory)
    cache = open_or_create(directory, list(track_ids), list(audio_paths), features, shard)
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
        done = _extract_shard(
            cache,
            cache.shards[i],
            features,
            workers or default_workers(),
            batch_size,
            checkpoint_seconds,
            report,
            progress,
            done,
            total,
        )
    report.seconds = time.perf_counter() - started
    return close_report(cache, report)


def close_report(cache: FeatureCache, report: ExtractionReport) -> ExtractionReport:
    """Fill the whole-cache counts of ``report`` and write the cache's ``skipped.csv``; returns ``report``."""
    status = cache.status()
    report.ok = int(np.count_nonzero(status == OK))
    report.skipped = int(np.count_nonzero(status == SKIPPED))
    report.todo = int(np.count_nonzero(status == TODO))
    skipped = cache.skipped()
    report.kinds = {str(k): int(v) for k, v in skipped["kind"].value_counts().items()} if len(skipped) else {}
    write_manifest(cache, skipped)
    return report


def extract_tracks(
    config: Config,
    tracks: pd.DataFrame,
    *,
    shard: Optional[tuple[int, int]] = None,
    workers: Optional[int] = None,
    progress: Optional[Progress] = None,
) -> ExtractionReport:
    """:func:`extract_features` for a track table (``track_id``, ``audio_path`` relative to ``data.root``)
    into :func:`cache_dir` of ``config``."""
    paths = [str(config.data.path(p)) for p in tracks["audio_path"]]
    return extract_features(
        list(tracks["track_id"]),
        paths,
        config.features,
        cache_dir(config),
        shard=shard,
        workers=workers,
        progress=progress,
    )


def write_manifest(cache: FeatureCache, skipped: pd.DataFrame) -> None:
    """The cache's ``skipped.csv``: the manifests of all shards (:meth:`FeatureCache.skipped`)."""
    with atomic_path(cache.directory / "skipped.csv") as tmp:
        skipped.to_csv(tmp, index=False)


def _extract_shard(
    cache: FeatureCache,
    shard: Shard,
    features: FeatureConfig,
    workers: int,
    batch_size: int,
    checkpoint_seconds: float,
    report: ExtractionReport,
    progress: Optional[Progress],
    done: int,
    total: int,
) -> int:
    status = shard.status()
    todo = np.flatnonzero(status == TODO)
    if len(todo) == 0:
        return done
    skips = shard.skips()
    track_ids = cache.track_ids[shard.start : shard.stop]
    paths = cache.audio_paths[shard.start : shard.stop]
    writer = shard.writer()
    last_save = time.perf_counter()
    try:
        for batch in decoded_batches(paths[todo], todo, features, workers, batch_size):
            ok = batch.kinds == ""
            writer.write(batch.rows[ok], batch.log_mel[ok])
            status[batch.rows[ok]] = OK
            status[batch.rows[~ok]] = SKIPPED
            for row, kind, message in zip(batch.rows[~ok], batch.kinds[~ok], batch.messages[~ok]):
                skips[int(row)] = (str(track_ids[row]), str(paths[row]), kind, message)
            report.extracted += int(ok.sum())
            report.skipped_now += int((~ok).sum())
            report.silent_now += int(batch.silent[ok].sum())
            done += len(batch.rows)
            if progress:
                progress(done, total)
            if time.perf_counter() - last_save >= checkpoint_seconds:
                writer.sync()
                shard.save_status(status, skips)
                last_save = time.perf_counter()
    finally:
        writer.sync()
        shard.save_status(status, skips)
        writer.close()
    return done


@dataclass
class DecodedBatch:
    """One batch of :func:`decoded_batches`; rows whose ``kinds`` is not "" were skipped."""

    rows: np.ndarray  # int64 [B], as given
    log_mel: np.ndarray  # float32 [B, n_mels, frames]; zeros' transform for skipped rows
    kinds: np.ndarray  # str [B]: "" or the AudioError kind ("error" for an unexpected exception)
    messages: np.ndarray  # str [B]: "" or the reason, naming the file
    silent: np.ndarray  # bool [B]: the segment is all zeros (kept: its features are the log floor)


def decoded_batches(
    paths: Sequence[str], rows: Sequence[int], features: FeatureConfig, workers: int, batch_size: int
) -> Iterator[DecodedBatch]:
    """Decode ``paths`` in ``workers`` threads and transform them in batches; yields in input order.

    Decoding (:func:`msd_triplet.audio.read_segment`) runs in a thread pool
    with a bounded window of clips in flight, so memory does not grow with
    the number of files; soundfile and soxr release the GIL, so the threads
    use every core. Each full batch goes through :func:`msd_triplet.audio.log_mel`
    in one compiled ``tf.function`` while the pool keeps decoding the next
    clips. On 2 cores this ran 25-40 % faster than an earlier tf.data
    pipeline with the decoder in a ``tf.numpy_function`` (measured once, on
    the clips of ``benchmarks/features.py``); tf.data remains the reader for
    training (:func:`feature_dataset`).
    """
    spec = audio.SegmentSpec.from_config(features)
    zeros = np.zeros(spec.samples, np.float32)
    transform = _log_mel_function(features)

    def decode(path: str) -> tuple[np.ndarray, str, str]:
        try:
            return audio.read_segment(path, spec), "", ""
        except AudioError as exc:
            return zeros, exc.kind, str(exc)
        except Exception as exc:  # noqa: BLE001 - one odd file must never stop a batch job
            return zeros, "error", f"{path}: unexpected {type(exc).__name__}: {exc}"

    rows = np.asarray(rows, dtype=np.int64)
    pending: list[tuple[np.ndarray, str, str]] = []
    start = 0
    for result in _ordered_map(decode, [str(p) for p in paths], workers, window=max(2 * batch_size, 4 * workers)):
        pending.append(result)
        if len(pending) == batch_size or start + len(pending) == len(rows):
            waves = np.stack([w for w, _, _ in pending])
            yield DecodedBatch(
                rows[start : start + len(pending)],
                transform(waves).numpy(),
                np.array([k for _, k, _ in pending], dtype=object),
                np.array([m for _, _, m in pending], dtype=object),
                ~np.any(waves, axis=1),
            )
            start += len(pending)
            pending = []


@lru_cache(maxsize=4)
def _log_mel_function(features: FeatureConfig):
    """A traced ``tf.function`` of :func:`msd_triplet.audio.log_mel` for batches of segments, one per config."""
    import tensorflow as tf

    samples = audio.SegmentSpec.from_config(features).samples
    return tf.function(
        lambda waves: audio.log_mel(waves, **audio.log_mel_kwargs(features)),
        input_signature=[tf.TensorSpec([None, samples], tf.float32)],
    )


def _ordered_map(fn: Callable, items: Sequence, workers: int, window: int) -> Iterator:
    """``map(fn, items)`` in a thread pool, in order, with at most ``window`` items in flight."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="msd-decode") as pool:
        futures: deque = deque()
        for item in items:
            futures.append(pool.submit(fn, item))
            if len(futures) >= window:
                yield futures.popleft().result()
        while futures:
            yield futures.popleft().result()


# --------------------------------------------------------------------------- reading for training


def epoch_order(n: int, seed: int, epoch: int):
    """The visiting order of ``n`` examples in ``epoch``: a pure function of (seed, epoch).

    A stateless shuffle, so a run resumed at epoch e sees the same batches as
    an uninterrupted one. Returns an int64 tensor [n].
    """
    import tensorflow as tf

    return tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch])
    )


def feature_dataset(
    cache: FeatureCache,
    rows: np.ndarray,
    targets: Any = None,
    *,
    batch_size: int,
    seed: Optional[int] = None,
    epochs: Optional[int] = 1,
    first_epoch: int = 0,
    drop_remainder: bool = False,
    channel_axis: bool = True,
    order: Optional[Callable[[int], np.ndarray]] = None,
):
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
    order : None, or ``order(epoch)`` → int64 [n], a permutation of range(n)
        giving the epoch's visiting order (e.g. :func:`msd_triplet.batches.related_order_fn`);
        replaces ``seed``'s shuffle. It must be a pure function of the epoch,
        so a resumed run sees the same batches; it runs in a ``tf.numpy_function``.

    Returns
    -------
    tf.data.Dataset of ``features`` or ``(features, targets)``; features are
    gathered from the memory-mapped cache in a ``tf.numpy_function``.
    """
    import tensorflow as tf

    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    if n == 0:
        raise ArgumentError("feature_dataset: rows is empty; give at least one cache row")
    single = targets is not None and not isinstance(targets, (tuple, list))
    target_list = [] if targets is None else [np.asarray(t) for t in ([targets] if single else targets)]
    for t in target_list:
        if len(t) != n:
            raise ArgumentError(f"feature_dataset: a target array has {len(t)} rows, expected {n}")
    shape = cache.shape

    def gather(index: np.ndarray):
        out = [cache.read(rows[index])]
        out.extend(t[index] for t in target_list)
        return out

    def load(index):
        values = tf.numpy_function(
            gather, [index], [tf.float32] + [tf.as_dtype(t.dtype) for t in target_list], stateful=False
        )
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

    given = order  # ``order`` is the name of the default path's local below

    def given_order(epoch: np.ndarray) -> np.ndarray:
        visit = np.asarray(given(int(epoch)), dtype=np.int64)
        if visit.shape != (n,) or not np.array_equal(np.sort(visit), np.arange(n)):
            raise ArgumentError(
                f"feature_dataset: order({int(epoch)}) is not a permutation of range({n}) (shape {visit.shape})"
            )
        return visit

    def one_epoch(epoch):
        if given is not None:
            visit = tf.numpy_function(given_order, [epoch], tf.int64, stateful=False)
            visit.set_shape([n])
            return tf.data.Dataset.from_tensor_slices(visit).batch(batch_size, drop_remainder=drop_remainder)
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
