"""Does training ever wait for its input? The feature-cache reader against the train step, and the stall.

Training reads batches of log-mel features (float32 [B, 80, 130]) from the
memory-mapped cache (:mod:`msd_triplet.featurecache`) through
:func:`msd_triplet.features.feature_dataset`: a ``tf.numpy_function`` gather
(:meth:`FeatureCache.read`, rows sorted within the batch) in a parallel
``map`` followed by ``prefetch``. This script measures, in one run:

* **Cache.** A synthetic cache with paper-shaped rows (float32 [80, 130], the
  key of ``experiments/paper.yaml``'s features) for ``--tracks`` tracks
  (default 20,000: 832 MB; the paper's training split of 122,766 tracks is
  5.1 GB), written with the package's own functions
  (:func:`featurecache.open_or_create`, :meth:`Shard.writer`,
  :meth:`Shard.save_status`), so no audio is needed. It lives under
  ``--cache-dir`` (default: a temporary folder) and is reused when complete.
* **Reader alone** (one child process per batch size, 600, 150 and 128;
  every variant at 600 and 128, ``--variant-batches``, the first two at 150):
  batches/s and MB/s (1 MB = 10**6 bytes; a batch of 600 is 25 MB) of the
  dataset ``training.fit`` builds - ``feature_dataset(cache, rows, targets,
  batch_size=B, seed=42, drop_remainder=True)`` with fit's
  ``tf.data.Options`` - and of variants that show what each part buys: a
  serial map without prefetch and a parallel map without prefetch (both
  with tf.data's default rewrites ``map_parallelization`` and
  ``inject_prefetch`` turned off, else tf.data puts back what the variant
  leaves out), fixed parallelism and buffer (2 and 2), the gather without
  sorting the rows, a gather by ``os.preadv`` instead of the memory map (one
  thread, and 8 threads), tf.data threading and RAM-budget options, and the
  contiguous order (``seed=None``: consecutive rows, the ceiling of any
  shuffle). Every variant with the shipped order is checked to yield the
  shipped batches. The first batch (pipeline start) is timed apart, 3 more
  are discarded (they may come from buffers filled meanwhile), then batches
  are counted for ``--min-seconds`` (cold: at most to the end of the first
  epoch, since later epochs read a warm cache). "peak anon" is the largest
  anonymous resident set seen (sampled every 20 ms) above the one before
  the variant: what its buffers hold.
* **Warm and cold page cache.** Warm: every cache file is read once before
  (resident share checked with ``mincore``). Cold: the files are evicted with
  ``posix_fadvise(DONTNEED)`` (only ours; ``echo 3 > /proc/sys/vm/drop_caches``
  if that leaves more than 1 % resident) and ``mincore`` must then report
  < 1 % resident, else the row says how much was left. The machine is a VM:
  "cold" reads come from its virtual disk, which the host may cache, so cold
  figures are optimistic for a real disk. The sequential cold read speed of
  the cache file is printed for scale.
* **Train step and stall** (in the same child as the reader, so both share
  the two cores as in training): the DPNN compiled by
  :func:`training.compile_model` from ``experiments/paper.yaml`` (batch 600)
  or ``experiments/demo.yaml`` (batch 128) with ``training.batch_size``
  replaced and ``training.precision`` as configured (auto: mixed_bfloat16 on
  this CPU), targets packed as in training (clustered LSI vectors with the
  config's k, albums of four). ``model.fit`` runs ``--steps`` + 1 steps per
  call, fed (a) from one batch of the pipeline held in memory
  (``tf.data.Dataset.from_tensors(batch).repeat()``, its batch dimension
  relaxed to None as the pipeline's, so both run one trace), (b) from a fresh
  ``feature_dataset`` on the warm cache, (c) from one on the evicted cache;
  a callback that reads the loss after every step times the steps, the first
  step of each call (pipeline start) is reported apart. At batch 128
  (``--control``) a control (d) runs too: the shipped gather behind a
  serial map without prefetch that sleeps a known 5 % of the step
  (``--control-share``) per batch, so the stall it shows says what size of
  wait the method resolves. Repeated ``--repeats`` times, (a)-(b)-(d)-(c)
  interleaved, the order reversed every other repeat (a slow drift of the
  step time cancels out). Then once (e): 2 x ``--steps`` steps by hand on the evicted
  cache, ``next(iterator)`` timed and then ``model.train_on_batch`` - the
  wait for a batch measured directly rather than as a difference, so other
  load and step-to-step noise hardly move it; its floor, the same loop fed
  from memory, is printed with it (``next()`` right after a step takes a
  few milliseconds even then). **Stall per step** =
  median step of (b), (c) or (d) minus median step of (a) in the same
  repeat: the time the model waited for input, or lost to the reader's CPU
  use; median and range over the repeats. Step batches/s = 1 / median step
  of (a); the ratio reader ÷ step says how much faster the reader is than
  the model eats.
* **others' CPU**: the share of both cores used by other processes during
  each measurement (from /proc/stat minus our own CPU time): the timings
  are only as quiet as the machine was.

Measured on 2 cores, 2026-11-29 (Intel Xeon VM, TensorFlow 2.21.0, Keras 3.15, default run: 20,000
tracks, 832 MB, one shard; 11.9 min). Others' CPU was <= 4 % during the train steps, but 50-70 % during
the batch-600 reader rows (someone else's job), so those reader figures are low: a quiet run an hour
earlier gave 103-189 batches/s warm at 600 for the same variants. Cold = evicted with fadvise, 0.00 %
resident by ``mincore``; the virtual disk read the cache sequentially at 1.7 GB/s (host-cached, so "cold"
here is far kinder than a real disk).

| B | model | cache | reader batch/s | step batch/s (s) | ratio | stall ms, median [range] | stall | next() ms (mem.) |
|---|---|---|---|---|---|---|---|---|
| 600 | paper, bf16 | warm | 63.9 | 0.16 (6.33) | 405x | +70 [-23, +272] | +1.1 % | - |
| 600 | paper, bf16 | cold | 77.8 | 0.16 (6.33) | 493x | -137 [-162, +19] | -2.2 % | 12.1 / 19.4 (15.1 / 20.8) |
| 150 | - | warm / cold | 461.6 / 458.0 | - | - | - | - | - |
| 128 | demo, bf16 | warm | 533.5 | 1.45 (0.69) | 368x | +23 [+10, +30] | +3.3 % | - |
| 128 | demo, bf16 | cold | 430.7 | 1.45 (0.69) | 297x | +28 [+9, +47] | +4.1 % | 4.1 / 9.4 (3.0 / 4.8) |
| 128 | demo, bf16 | control: +36 ms per batch | - | 1.45 (0.69) | - | +79 [+37, +125] | +11.4 % | - |

Readers (batches/s warm / cold; first batch s cold; CPU ms per batch warm / cold):

| reader | 600 | 128 |
|---|---|---|
| shipped: parallel map + prefetch (AUTOTUNE) | 63.9 / 77.8; 0.61; 16 / 17 | 533.5 / 430.7; 0.49; 3 / 4 |
| serial map, no prefetch | 59.9 / 38.0; 0.54; 16 / 21 | 318.2 / 281.2; 0.39; 3 / 4 |
| parallel map (AUTOTUNE), no prefetch | 57.5 | 542.2 |
| parallel map 2 + prefetch 2 | 61.6 | 536.3 |
| shipped, private threadpool 2 | 79.3 | 535.7 |
| shipped, autotune RAM budget 256 MB | 75.1 | 569.9 |
| shipped, gather unsorted | 67.3 / 61.1; 0.59; 14 / 16 | 606.4 / 434.4; 0.54; 3 / 3 |
| shipped, gather by preadv | 80.5 / 30.7; 0.13; 12 / 23 | 340.3 / 46.2; 0.10; 4 / 14 |
| shipped, gather by preadv in 8 threads | 63.4 / 33.3; 0.13; 16 / 25 | 194.9 / 83.0; 0.05; 7 / 12 |
| shipped, contiguous rows (seed=None) | 63.2 / 23.1; 0.07; 15 / 39 | 555.9 / 114.4; 0.04; 3 / 16 |

What it says:

* The reader outruns the model 300-500x at every batch size, warm or cold: a batch of 600 (25 MB)
  takes 5-16 ms to gather warm and about 0.6 s for the first one after eviction (a tenth of a step);
  the rest of a cold epoch reads nearly as fast as warm, because each page fault reads 128 KB around
  the row (about three rows), so the page cache fills ahead of the shuffle. The AUTOTUNE prefetch
  holds up to ~140 MiB at 600 (five or six batches).
* The model does not wait for its input. Measured directly, ``next()`` right after a step returns as
  fast from the cold pipeline as from a batch in memory (600: 12 vs 15 ms; 128: 4.1 vs 3.0 ms), and
  the reader's whole CPU cost is 3-4 ms per batch at 128 (0.5 % of a step) and 13-17 ms at 600
  (0.3 %). The step-time difference (pipeline minus memory) is within +-2.2 % at 600, but +3.3 / +4.1 %
  at 128 in this run, every repeat positive; that is not time spent waiting (see above), and it is not
  stable: the same cells run with the memory feed always first (before the order was alternated)
  gave -4.3 % / -2.8 %, and the control's 36-37 ms read as +79 ms here and +31 ms then. On this shared
  VM the difference method resolves about +-30 ms (4 %) at batch 128 and +-5 % at 600; the direct
  wait and the CPU cost are the sharper figures.
* What each part buys, reader alone: the parallel map is 1.4-1.7x the serial one at 128 and 150 (one
  gather per core; at 600 1.3x on the quiet machine, 1.07x on the busy one); prefetch adds nothing
  to the reader's rate but overlaps it with the step (without it the gather's 2-16 ms would add to
  every step). Fixed parallelism 2 and buffer 2, a private thread pool of 2, a 256 MB autotune budget
  and unsorted gathers are all within the noise of the shipped pipeline. ``os.preadv`` instead of the
  memory map is slower warm and 2.5-9x slower cold (no read-around: every row is its own read), 8
  threads do not recover it; contiguous rows gain nothing consistent warm and, read cold through the
  map, are slower than the random order.
* Nothing to fix: the package is unchanged. What could change this: a real disk (HDD: ~600 random
  reads per batch of 600 at ~8 ms is ~5 s, a whole step, during the first epoch; not measured), or a
  much faster step (a GPU), which this script would show as a smaller ratio.

Usage::

    python benchmarks/input_pipeline.py                      # ~12 min on 2 cores (builds the cache first)
    python benchmarks/input_pipeline.py --quick              # 2,000 tracks, batch 128, few steps: a smoke run
    python benchmarks/input_pipeline.py --cache-dir /tmp/ipcache --tracks 122766   # the paper's size, kept
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import functools
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import _status, _vm_hwm_mib, cpu_model, machine_cpu_seconds, own_cpu_seconds, run_json

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"paper": REPO / "experiments" / "paper.yaml", "demo": REPO / "experiments" / "demo.yaml"}
SEED = 42
MB = 1e6


# --------------------------------------------------------------------------- the synthetic cache


def build_cache(folder: Path, tracks: int, shards: int, seed: int = 0) -> Path:
    """A complete cache of ``tracks`` random paper-shaped rows under ``folder``; reused when already complete."""
    import numpy as np

    from msd_triplet.config import load_config
    from msd_triplet.featurecache import OK, FeatureCache, cache_key, open_or_create

    features = load_config(CONFIGS["paper"]).features
    directory = Path(folder) / f"tracks-{tracks}-shards-{shards}" / cache_key(features)
    ids = [f"TRSYNTH{i:010d}" for i in range(tracks)]
    if (directory / "cache.json").is_file():
        cache = FeatureCache(directory)
        if len(cache) == tracks and bool(np.all(cache.status() == OK)):
            return directory
    cache = open_or_create(
        directory, ids, [f"synthetic/{t}.mp3" for t in ids], features, (0, shards) if shards > 1 else None
    )
    rng = np.random.default_rng(seed)
    for shard in cache.shards:
        with shard.writer() as writer:
            for start in range(0, shard.rows, 1000):
                rows = np.arange(start, min(start + 1000, shard.rows))
                values = rng.standard_normal((len(rows), *cache.shape), dtype=np.float32) * 2.0 - 5.0
                writer.write(rows, values)
            writer.sync()
        shard.save_status(np.full(shard.rows, OK, np.int8), {})
    return directory


def feature_files(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob("shard-*/features.npy"))


def training_targets(n: int, k: int, seed: int = 0):
    """Packed targets [n, k + 1] like training's: clustered LSI-like vectors (8 topics), albums of four."""
    import numpy as np

    from msd_triplet import losses

    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((8, k))
    lsi = topics[rng.integers(0, 8, n)] + 0.3 * rng.standard_normal((n, k))
    return losses.pack_targets(lsi, np.arange(n) // 4)


# --------------------------------------------------------------------------- page cache


def resident_share(paths: list[Path]) -> float:
    """Share of the pages of ``paths`` in the page cache, from ``mincore`` on a fresh read-only mapping."""
    import numpy as np

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    page = os.sysconf("SC_PAGE_SIZE")
    resident = total = 0
    for path in paths:
        size = os.path.getsize(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            address = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
            if address in (None, ctypes.c_void_p(-1).value):
                return float("nan")
            pages = (size + page - 1) // page
            vector = np.zeros(pages, np.uint8)
            failed = libc.mincore(address, size, vector.ctypes.data)
            libc.munmap(address, size)
            if failed:
                return float("nan")
            resident += int(np.count_nonzero(vector & 1))
            total += pages
        finally:
            os.close(fd)
    return resident / max(total, 1)


def warm(paths: list[Path]) -> float:
    """Read every file once (into the page cache); the resident share afterwards."""
    buffer = bytearray(16 << 20)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass
    return resident_share(paths)


def evict(paths: list[Path]) -> dict:
    """Drop ``paths`` from the page cache (fadvise, then drop_caches if needed); method and residency after."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    method, left = "fadvise", resident_share(paths)
    if not left < 0.01 and os.access("/proc/sys/vm/drop_caches", os.W_OK):
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        method, left = "drop_caches", resident_share(paths)
    return {"method": method, "resident": left}


def sequential_cold_mb_s(path: Path, limit: int = 512 << 20) -> float:
    """MB/s of reading up to ``limit`` bytes of ``path`` in order right after evicting it."""
    evict([path])
    buffer, done = bytearray(8 << 20), 0
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while done < limit:
            n = f.readinto(buffer)
            if not n:
                break
            done += n
    return done / MB / (time.perf_counter() - started)


# --------------------------------------------------------------------------- measuring


class AnonPeak:
    """Largest ``RssAnon`` (MiB) seen by a thread sampling every 20 ms while in the ``with`` block."""

    def __init__(self) -> None:
        self.start = self.peak = _status(("RssAnon",)).get("RssAnon", float("nan"))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _status(("RssAnon",)).get("RssAnon", float("nan")))

    def __enter__(self) -> "AnonPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class CpuWindow:
    """Others' share of all cores between ``__enter__`` and ``__exit__`` (attribute ``others``)."""

    def __enter__(self) -> "CpuWindow":
        self._machine, self._own, self._wall = machine_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._wall
        others = machine_cpu_seconds() - self._machine - (own_cpu_seconds() - self._own)
        self.others = min(max(others / (wall * (os.cpu_count() or 1)), 0.0), 1.0)


def time_reader(
    dataset, batch_bytes: float, min_seconds: float, min_batches: int, max_batches: int, skip: int = 3
) -> dict:
    """Batches/s of ``dataset`` after its first batch (timed apart) and ``skip`` more.

    Counts at least ``min_batches`` and ``min_seconds``, at most ``max_batches``
    (a cold run must stay in its first epoch: later epochs read a warm cache).
    """
    with CpuWindow() as cpu, AnonPeak() as anon:
        started = time.perf_counter()
        iterator = iter(dataset)
        next(iterator)
        first = time.perf_counter() - started
        for _ in range(skip):
            next(iterator)
        count, started, own = 0, time.perf_counter(), own_cpu_seconds()
        while count < max_batches and (count < min_batches or time.perf_counter() - started < min_seconds):
            next(iterator)
            count += 1
        seconds, own = time.perf_counter() - started, own_cpu_seconds() - own
        del iterator
    rate = count / seconds
    return dict(
        batches_s=rate,
        mb_s=rate * batch_bytes / MB,
        first_s=first,
        batches=count,
        cpu_s=own / count,
        anon_mib=anon.peak - anon.start,
        others_cpu=cpu.others,
    )


# --------------------------------------------------------------------------- reader variants


class ClosableCache:
    """The cache as ``feature_dataset`` uses it (``read``, ``shape``), plus other gathers and ``close()``.

    TensorFlow keeps the Python function of every ``tf.numpy_function`` traced
    in eager mode alive as long as the process (``script_ops`` ties it to the
    outermost graph, the global one), and with it the cache that function
    reads: a :class:`FeatureCache` given to ``feature_dataset`` never unmaps
    its files, so their pages cannot be evicted for a cold run and every
    mapping adds to the resident set. The datasets here read through this
    stand-in; ``close()`` drops the FeatureCache, its maps and descriptors.
    ``read`` is the package's :meth:`FeatureCache.read`.
    """

    def __init__(self, directory: Path) -> None:
        from msd_triplet.featurecache import FeatureCache

        self._cache = FeatureCache(directory)
        self.directory, self.shape, self.bounds = self._cache.directory, self._cache.shape, self._cache.bounds
        self._arrays = self._fds = self._pool = None

    def read(self, rows):
        return self._cache.read(rows)

    def read_unsorted(self, rows):
        """The memory-map gather of ``read`` without sorting the rows first."""
        import numpy as np

        if self._arrays is None:
            self._arrays = [s.features("r") for s in self._cache.shards]
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape), np.float32)
        which = np.searchsorted(self.bounds, rows, side="right") - 1
        for i in np.unique(which):
            selected = which == i
            out[selected] = self._arrays[i][rows[selected] - self.bounds[i]]
        return out

    def read_pread(self, rows, threads: int = 1):
        """Rows read in ascending order with ``os.preadv`` into the batch (no memory map), in ``threads`` threads."""
        from concurrent.futures import ThreadPoolExecutor

        import numpy as np

        if self._fds is None:
            self._fds = [
                (
                    os.open(s.directory / "features.npy", os.O_RDONLY),
                    np.load(s.directory / "features.npy", mmap_mode="r").offset,
                )
                for s in self._cache.shards
            ]
        row_bytes = int(np.prod(self.shape)) * 4
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape), np.float32)
        order = np.argsort(rows, kind="stable")
        which = np.searchsorted(self.bounds, rows[order], side="right") - 1

        def read_some(part):
            for position_in_batch, w in zip(order[part], which[part]):
                fd, offset = self._fds[w]
                view = memoryview(out[position_in_batch]).cast("B")
                position = offset + (int(rows[position_in_batch]) - int(self.bounds[w])) * row_bytes
                while len(view):
                    n = os.preadv(fd, [view], position)
                    view, position = view[n:], position + n

        if threads == 1:
            read_some(np.arange(len(rows)))
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(threads)
            list(self._pool.map(read_some, np.array_split(np.arange(len(rows)), threads)))
        return out

    def close(self) -> None:
        for fd, _ in self._fds or []:
            os.close(fd)
        if self._pool is not None:
            self._pool.shutdown()
        self._cache = self._arrays = self._fds = self._pool = None


def variant_dataset(cache, rows, targets, batch: int, *, parallel, prefetch, read=None, options=None):
    """``feature_dataset``'s pipeline (same order and shapes) with the map, prefetch and gather swapped."""
    import numpy as np
    import tensorflow as tf

    from msd_triplet.features import epoch_order

    read = read or cache.read
    n = len(rows)

    def gather(index):
        return read(rows[index]), targets[index]

    def load(index):
        x, y = tf.numpy_function(gather, [index], [tf.float32, tf.float32], stateful=False)
        x.set_shape([None, *cache.shape])
        y.set_shape([None, targets.shape[1]])
        return x[..., None], y

    def one_epoch(epoch):
        return tf.data.Dataset.from_tensor_slices(epoch_order(n, SEED, epoch)).batch(batch, drop_remainder=True)

    dataset = tf.data.Dataset.range(0, np.iinfo(np.int64).max).flat_map(one_epoch)
    dataset = dataset.map(load, num_parallel_calls=parallel, deterministic=True)
    if prefetch is not None:
        dataset = dataset.prefetch(prefetch)
    return dataset.with_options(options) if options is not None else dataset


def fit_options(literal: bool = False):
    """The ``tf.data.Options`` ``training.fit`` puts on its training dataset.

    ``literal``: also turn off tf.data's default rewrites that would make a
    serial map parallel (``map_parallelization``) and add a prefetch after a
    last synchronous step (``inject_prefetch``), so that a pipeline built
    without them runs as written.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    if literal:
        options.experimental_optimization.map_parallelization = False
        options.experimental_optimization.inject_prefetch = False
    return options


def shipped(cache, rows, targets, batch: int):
    """Exactly the training dataset of ``training.fit`` (``epochs=None``: the reader test must not run out)."""
    from msd_triplet.features import feature_dataset

    return feature_dataset(
        cache, rows, targets, batch_size=batch, seed=SEED, epochs=None, drop_remainder=True
    ).with_options(fit_options())


def variants(cache, rows, targets, batch: int) -> dict:
    """name → (a function making the dataset, whether it is also measured on a cold page cache)."""
    import tensorflow as tf

    from msd_triplet.features import feature_dataset

    auto = tf.data.AUTOTUNE

    def variant(parallel=auto, prefetch=auto, read=None, options=None):
        return lambda: variant_dataset(
            cache,
            rows,
            targets,
            batch,
            parallel=parallel,
            prefetch=prefetch,
            read=read,
            options=options or fit_options(),
        )

    threads, ram = fit_options(), fit_options()
    threads.threading.private_threadpool_size = 2
    ram.autotune.ram_budget = 256 << 20
    return {
        "shipped: parallel map + prefetch (AUTOTUNE)": (lambda: shipped(cache, rows, targets, batch), True),
        "serial map, no prefetch": (variant(parallel=None, prefetch=None, options=fit_options(literal=True)), True),
        "parallel map (AUTOTUNE), no prefetch": (variant(prefetch=None, options=fit_options(literal=True)), False),
        "parallel map 2 + prefetch 2": (variant(parallel=2, prefetch=2), False),
        "shipped, private threadpool 2": (variant(options=threads), False),
        "shipped, autotune RAM budget 256 MB": (variant(options=ram), False),
        "shipped, gather unsorted": (variant(read=cache.read_unsorted), True),
        "shipped, gather by preadv": (variant(read=cache.read_pread), True),
        "shipped, gather by preadv in 8 threads": (variant(read=functools.partial(cache.read_pread, threads=8)), True),
        "shipped, contiguous rows (seed=None)": (
            lambda: feature_dataset(
                cache, rows, targets, batch_size=batch, seed=None, epochs=None, drop_remainder=True
            ).with_options(fit_options()),
            True,
        ),
    }


def check_variants_agree(cache, rows, targets, batch: int) -> None:
    """The variants with the shipped order must yield the shipped batches (same rows, same features)."""
    import numpy as np

    reference = [b for _, b in zip(range(2), shipped(cache, rows, targets, batch).as_numpy_iterator())]
    for name, (make, _) in variants(cache, rows, targets, batch).items():
        if "contiguous" in name:
            continue
        got = [b for _, b in zip(range(2), make().as_numpy_iterator())]
        for (x, y), (gx, gy) in zip(reference, got):
            if not (np.array_equal(x, gx) and np.array_equal(y, gy)):
                raise AssertionError(f"variant {name!r} yields other batches than feature_dataset")


# --------------------------------------------------------------------------- train step and stall


def stall(
    model_name: str,
    directory: Path,
    rows,
    batch: int,
    steps: int,
    repeats: int,
    cold: bool,
    files,
    control: float = 0.0,
) -> dict:
    """Step times of ``model.fit`` fed from memory, the warm and the cold pipeline; times in seconds."""
    import keras
    import numpy as np
    import tensorflow as tf

    from msd_triplet import training
    from msd_triplet.config import load_config

    config = load_config(CONFIGS[model_name])
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, batch_size=batch))
    targets = training_targets(len(rows), config.lsi.k)
    keras.utils.set_random_seed(SEED)
    model = training.compile_model(config, seed=SEED)
    compute = training.model_compute(model)

    class StepClock(keras.callbacks.Callback):
        """Times at the end of every step; reading the loss makes each step finish before the next begins."""

        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_train_batch_end(self, step, logs=None):
            float(logs["loss"])
            self.ends.append(time.perf_counter())

    def run(dataset) -> tuple[float, list[float]]:
        clock = StepClock()
        started = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[clock], shuffle=False)
        return clock.ends[0] - started, list(np.diff(clock.ends))

    def run_direct(dataset, timed: int) -> tuple[list[float], list[float]]:
        """Steps by hand: ``next()`` timed (the wait for input), then ``train_on_batch``; the first is not kept."""
        iterator, ends, waits = iter(dataset), [], []
        for _ in range(timed + 1):
            before = time.perf_counter()
            x, y = next(iterator)
            waits.append(time.perf_counter() - before)
            model.train_on_batch(x, y)  # returns numbers: the step has finished
            ends.append(time.perf_counter())
        return list(np.diff(ends)), waits[1:]

    def relax(x, y):  # the pipeline's element spec (batch dimension None), so one trace serves both
        return (
            tf.compat.v1.placeholder_with_default(x, [None, *x.shape[1:]]),
            tf.compat.v1.placeholder_with_default(y, [None, *y.shape[1:]]),
        )

    cache = ClosableCache(directory)
    pipeline = shipped(cache, rows, targets, batch)
    x, y = next(iter(pipeline))
    memory = tf.data.Dataset.from_tensors((x, y)).repeat().map(relax).with_options(fit_options())
    if memory.element_spec != pipeline.element_spec:
        raise AssertionError(f"memory {memory.element_spec} != pipeline {pipeline.element_spec}")
    del pipeline
    cache.close()
    started = time.perf_counter()
    _, warmup = run(memory)  # traces the train function
    first_fit = time.perf_counter() - started
    model.train_on_batch(x, y)  # and the step train_on_batch calls
    _, floor = run_direct(memory, 2 * steps)  # next() after a step costs some milliseconds even from memory
    delay = control * statistics.median(warmup)

    def delayed(cache):
        def read(selected):
            time.sleep(delay)
            return cache.read(selected)

        return variant_dataset(
            cache, rows, targets, batch, parallel=None, prefetch=None, read=read, options=fit_options(literal=True)
        )

    sides = ["memory", "warm"] + (["control"] if control else []) + (["cold"] if cold else [])
    result = {side: {"first": [], "steps": [], "medians": [], "resident": [], "others": []} for side in sides}
    with CpuWindow() as cpu:
        for repeat in range(repeats):
            for side in sides if repeat % 2 == 0 else sides[::-1]:  # ABBA: a drift in time cancels out
                if side == "memory":
                    dataset, resident = memory, float("nan")
                else:
                    fresh = ClosableCache(directory)  # released after the run: no map keeps pages resident
                    resident = evict(files)["resident"] if side == "cold" else warm(files)
                    dataset = delayed(fresh) if side == "control" else shipped(fresh, rows, targets, batch)
                with CpuWindow() as side_cpu:
                    first, times = run(dataset)
                result[side]["others"].append(side_cpu.others)
                result[side]["first"].append(first)
                result[side]["steps"].extend(times)
                result[side]["medians"].append(statistics.median(times))
                result[side]["resident"].append(resident)
                del dataset
                if side != "memory":
                    fresh.close()
                gc.collect()
        if cold:  # the wait measured directly, once: the steps by hand on the evicted cache
            fresh = ClosableCache(directory)
            resident = evict(files)["resident"]
            with CpuWindow() as side_cpu:
                times, waits = run_direct(shipped(fresh, rows, targets, batch), 2 * steps)
            fresh.close()
            by_hand = dict(
                wait_s=statistics.median(waits),
                wait_max_s=max(waits),
                waits=len(waits),
                step_s=statistics.median(times),
                resident_max=resident,
                others=[side_cpu.others],
                step_medians=[statistics.median(times)],
            )
    out = dict(
        model=model_name,
        batch=batch,
        precision=compute["precision"],
        jit_compile=compute["jit_compile"],
        parameters=int(model.count_params()),
        first_fit_s=first_fit,
        others_cpu=cpu.others,
        delay_s=delay,
        next_floor_s=statistics.median(floor),
        next_floor_max_s=max(floor),
        step_s=statistics.median(result["memory"]["steps"]),
        step_medians=result["memory"]["medians"],
        others=result["memory"]["others"],
        step_min_s=min(result["memory"]["steps"]),
        step_max_s=max(result["memory"]["steps"]),
    )
    for side in sides[1:]:
        stalls = [p - m for p, m in zip(result[side]["medians"], result["memory"]["medians"])]
        starts = [p - m for p, m in zip(result[side]["first"], result["memory"]["first"])]
        out[side] = dict(
            step_s=statistics.median(result[side]["steps"]),
            stall_s=statistics.median(stalls),
            stall_min_s=min(stalls),
            stall_max_s=max(stalls),
            start_s=statistics.median(starts),
            resident_max=max(result[side]["resident"]),
            step_medians=result[side]["medians"],
            others=result[side]["others"],
        )
    if cold:
        out["cold_next"] = by_hand
    return out


# --------------------------------------------------------------------------- one child: one batch size


def cell(job: dict) -> dict:
    """Reader variants at one batch size (warm, then cold), then the stall of the job's model if any."""
    import numpy as np
    import tensorflow as tf

    directory = Path(job["cache"])
    files = feature_files(directory)
    batch = job["batch"]
    cache = ClosableCache(directory)
    rows = np.arange(int(cache.bounds[-1]), dtype=np.int64)
    targets = training_targets(len(rows), job["k"])
    batch_bytes = batch * int(np.prod(cache.shape)) * 4
    warm(files)
    check_variants_agree(cache, rows, targets, batch)
    cache.close()
    readers = []
    names = [(name, cold_too) for name, (_, cold_too) in variants(cache, rows, targets, batch).items()]
    if not job["all_variants"]:
        names = names[:2]  # shipped, and serial without prefetch
    for name, cold_too in names:
        for temperature in ["warm"] + (["cold"] if cold_too and job["cold"] else []):
            cache = ClosableCache(directory)  # released after the run, so no map keeps pages resident
            dataset = variants(cache, rows, targets, batch)[name][0]()
            resident = warm(files) if temperature == "warm" else evict(files)["resident"]
            seconds = job["min_seconds"] if temperature == "warm" else job["min_seconds_cold"]
            first_epoch = max(len(rows) // batch - 4, 1)  # the batches of epoch 0 after the first and the skipped
            row = time_reader(
                dataset, batch_bytes, seconds, job["min_batches"], first_epoch if temperature == "cold" else 10**9
            )
            readers.append(dict(variant=name, cache=temperature, resident=resident, batch=batch, **row))
            print(
                f"batch {batch} {temperature} {name}: {row['batches_s']:.2f} batches/s, {row['mb_s']:,.0f} MB/s, "
                f"first {row['first_s']:.3f} s (resident before {100 * resident:.1f} %, others' CPU "
                f"{100 * row['others_cpu']:.0f} %)",
                file=sys.stderr,
                flush=True,
            )
            del dataset
            cache.close()
            gc.collect()
    out = dict(batch=batch, readers=readers, baseline_mib=_vm_hwm_mib())
    if job.get("model"):
        out["stall"] = stall(
            job["model"], directory, rows, batch, job["steps"], job["repeats"], job["cold"], files, job["control"]
        )
    out.update(peak_mib=_vm_hwm_mib(), tensorflow=tf.__version__)
    return out


# --------------------------------------------------------------------------- report


def _reader(result: dict, variant: str, temperature: str) -> dict | None:
    return next((r for r in result["readers"] if r["variant"] == variant and r["cache"] == temperature), None)


def _waits(stall: dict, side: str) -> str:
    """Median / largest wait in next() of the hand loop on ``side``, and the same from memory."""
    t = stall.get(f"{side}_next")
    if not t:
        return "-"
    return (
        f"{1e3 * t['wait_s']:.1f} / {1e3 * t['wait_max_s']:.1f} (memory {1e3 * stall['next_floor_s']:.1f} / "
        f"{1e3 * stall['next_floor_max_s']:.1f})"
    )


def summary_table(results: list[dict]) -> str:
    """Reader (shipped) against the train step, and the stall, per batch size and page cache state."""
    name = "shipped: parallel map + prefetch (AUTOTUNE)"
    lines = [
        "| batch | model (precision) | page cache | reader batches/s | reader MB/s | step batches/s (step s) "
        "| reader ÷ step | stall ms/step, median [range] | stall / step | wait in next() ms, median / max "
        "| 1st step extra s | others' CPU, reader / model |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        s = result.get("stall")
        for side in ("warm", "cold", "control"):
            r = _reader(result, name, side)
            if r is None and not (s and side in s):
                continue
            reader = (f"{r['batches_s']:,.1f}", f"{r['mb_s']:,.0f}") if r else ("-", "-")
            cpu = f"{100 * r['others_cpu']:.0f} %" if r else "-"
            state = side if side != "control" else f"control: warm, serial, +{1e3 * s['delay_s']:.0f} ms per batch"
            if s and side in s:
                t = s[side]
                step = (
                    f"{1 / s['step_s']:.2f} ({s['step_s']:.2f})",
                    f"{r['batches_s'] * s['step_s']:,.0f}x" if r else "-",
                    f"{1e3 * t['stall_s']:+.0f} [{1e3 * t['stall_min_s']:+.0f}, {1e3 * t['stall_max_s']:+.0f}]",
                    f"{100 * t['stall_s'] / s['step_s']:+.1f} %",
                    _waits(s, side),
                    f"{t['start_s']:+.2f}",
                    f"{cpu} / {100 * s['others_cpu']:.0f} %",
                )
                model = f"{s['model']} ({s['precision']})"
            else:
                step, model = ("-", "-", "-", "-", "-", "-", cpu), "-"
            lines.append(
                f"| {result['batch']} | {model} | {state} | {reader[0]} | {reader[1]} | " + " | ".join(step) + " |"
            )
    return "\n".join(lines)


def variants_table(results: list[dict]) -> str:
    lines = [
        "| batch | reader | warm batches/s | warm MB/s | cold batches/s | cold MB/s | first batch s, warm / cold "
        "| CPU ms per batch, warm / cold | peak anon MiB | others' CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for variant in dict.fromkeys(r["variant"] for r in result["readers"]):
            w, c = _reader(result, variant, "warm"), _reader(result, variant, "cold")
            cold = (
                (f"{c['batches_s']:,.1f}", f"{c['mb_s']:,.0f}", f"{c['first_s']:.3f}", f"{1e3 * c['cpu_s']:.0f}")
                if c
                else ("-", "-", "-", "-")
            )
            others = max(w["others_cpu"], c["others_cpu"] if c else 0.0)
            lines.append(
                f"| {result['batch']} | {variant} | {w['batches_s']:,.1f} | {w['mb_s']:,.0f} | {cold[0]} "
                f"| {cold[1]} | {w['first_s']:.3f} / {cold[2]} | {1e3 * w['cpu_s']:.0f} / {cold[3]} "
                f"| {w['anon_mib']:,.0f} | {100 * others:.0f} % |"
            )
    return "\n".join(lines)


def _judge(share: float, lowest: float, threshold: float) -> str:
    if share <= threshold:
        return f"no wait beyond {100 * threshold:.0f} %"
    if lowest > 0:
        return "the model WAITS"
    return f"median above {100 * threshold:.0f} %, but the range spans zero: not resolved at this step noise"


def verdict(results: list[dict], threshold: float = 0.02) -> list[str]:
    lines = []
    for result in results:
        s = result.get("stall")
        if not s:
            continue
        head = f"{s['model']} batch {s['batch']} ({s['precision']})"
        for side in ("warm", "cold"):
            if side in s:
                t = s[side]
                share = t["stall_s"] / s["step_s"]
                lines.append(
                    f"{head}, {side} cache: stall {1e3 * t['stall_s']:+.0f} ms per {s['step_s']:.2f} s step "
                    f"({100 * share:+.1f} %, range {100 * t['stall_min_s'] / s['step_s']:+.1f} to "
                    f"{100 * t['stall_max_s'] / s['step_s']:+.1f} %): " + _judge(share, t["stall_min_s"], threshold)
                )
        if "cold_next" in s:
            t = s["cold_next"]
            lines.append(
                f"{head}, cold cache, steps by hand: the wait in next() for a batch, median "
                f"{1e3 * t['wait_s']:.2f} ms, at most {1e3 * t['wait_max_s']:.1f} ms over {t['waits']} steps "
                f"after the first; from the in-memory batch, the same loop waits "
                f"{1e3 * s['next_floor_s']:.2f} ms (at most {1e3 * s['next_floor_max_s']:.1f})"
            )
        if "control" in s:
            t = s["control"]
            lines.append(
                f"{head}, control: a wait of {1e3 * s['delay_s']:.0f} ms per batch injected (serial map, no "
                f"prefetch), measured stall {1e3 * t['stall_s']:+.0f} ms "
                f"[{1e3 * t['stall_min_s']:+.0f}, {1e3 * t['stall_max_s']:+.0f}]"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", help="where to build (or reuse) the synthetic cache; default: a temp folder")
    parser.add_argument("--tracks", type=int, default=20_000, help="rows of the synthetic cache")
    parser.add_argument("--shards", type=int, default=1, help="shards of the synthetic cache")
    parser.add_argument("--batches", nargs="+", type=int, default=[600, 150, 128], help="reader batch sizes")
    parser.add_argument(
        "--models",
        nargs="*",
        default=["paper:600", "demo:128"],
        help="MODEL:BATCH cells that also time the train step and the stall",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per fit call (default: 3 at batch >= 300, else 8)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="memory / warm / cold rounds per model cell")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="reader: counted seconds per warm variant")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold page cache runs")
    parser.add_argument(
        "--variant-batches",
        nargs="*",
        type=int,
        default=[600, 128],
        help="batch sizes that measure every reader variant (others: shipped and serial only)",
    )
    parser.add_argument(
        "--control",
        nargs="*",
        type=int,
        default=[128],
        help="batch sizes whose model cell also runs the control (a known wait per batch)",
    )
    parser.add_argument(
        "--control-share",
        type=float,
        default=0.05,
        help="the control's wait per batch, as a share of the step from memory",
    )
    parser.add_argument("--quick", action="store_true", help="2,000 tracks, batch 128 with the demo model, few steps")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(cell(json.loads(args.child))))
        return
    if args.quick:
        args.tracks, args.batches, args.models, args.repeats, args.min_seconds = 2_000, [128], ["demo:128"], 2, 0.5
        args.variant_batches = [128]
        args.steps = args.steps or 3
    models = dict((int(b), m) for m, b in (spec.split(":") for spec in args.models))
    with tempfile.TemporaryDirectory(prefix="input-pipeline-") as scratch:
        folder = Path(args.cache_dir) if args.cache_dir else Path(scratch)
        started = time.perf_counter()
        from msd_triplet.config import load_config

        directory = build_cache(folder, args.tracks, args.shards)
        files = feature_files(directory)
        size = sum(os.path.getsize(f) for f in files)
        print(
            f"cache: {directory} ({args.tracks:,} tracks, {size / MB:,.0f} MB, {len(files)} shard(s)); "
            f"ready in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        cold = not args.no_cold
        if cold:
            left = evict(files)
            sequential = sequential_cold_mb_s(files[0])
            print(
                f"page cache: after eviction ({left['method']}) {100 * left['resident']:.2f} % of the cache "
                f"resident; sequential cold read {sequential:,.0f} MB/s",
                flush=True,
            )
            if not left["resident"] < 0.01:
                print("eviction did not work here: cold runs skipped", flush=True)
                cold = False
        results = []
        for batch in sorted(set(args.batches) | set(models), reverse=True):
            steps = args.steps or (3 if batch >= 300 else 8)
            k = load_config(CONFIGS[models.get(batch, "paper")]).lsi.k  # the targets' LSI size, as in training
            job = dict(
                cache=str(directory),
                batch=batch,
                model=models.get(batch),
                k=k,
                steps=steps,
                repeats=args.repeats,
                control=args.control_share if batch in args.control else 0.0,
                cold=cold,
                all_variants=batch in args.variant_batches,
                min_seconds=args.min_seconds,
                min_seconds_cold=max(args.min_seconds, 1.0),
                min_batches=5,
            )
            result = run_json([sys.executable, __file__, "--child", json.dumps(job)], f"batch {batch}", cwd=REPO)
            results.append(result)
            s = result.get("stall")
            if s:
                sides = [("memory", s)] + [(t, s[t]) for t in ("warm", "control", "cold", "cold_next") if t in s]
                print(
                    f"{s['model']} batch {batch} ({s['precision']}), median step per repeat (others' CPU): "
                    + "; ".join(
                        f"{t} "
                        + ", ".join(f"{v:.3f} s ({100 * o:.0f} %)" for v, o in zip(d["step_medians"], d["others"]))
                        for t, d in sides
                    ),
                    flush=True,
                )
        total = time.perf_counter() - started
    print()
    print(
        f"{os.cpu_count()} CPUs ({cpu_model()}), TensorFlow {results[0]['tensorflow']}; cache {args.tracks:,} "
        f"tracks ({size / MB:,.0f} MB); {total / 60:.1f} min"
    )
    print()
    print(summary_table(results))
    print()
    print(variants_table(results))
    print()
    print("\n".join(verdict(results)))
    resident = [r["resident"] for result in results for r in result["readers"] if r["cache"] == "cold"]
    resident += [
        result["stall"][side]["resident_max"]
        for result in results
        for side in ("cold", "cold_next")
        if side in result.get("stall", {})
    ]
    if resident:
        print(f"cold runs began with at most {100 * max(resident):.2f} % of the cache in the page cache (mincore)")
    for result in results:
        print(
            f"batch {result['batch']}: peak {result['peak_mib']:,.0f} MiB (after the readers "
            f"{result['baseline_mib']:,.0f} MiB; both include mapped cache pages)"
        )


if __name__ == "__main__":
    main()
