"""Audio feature extraction: our pipeline against librosa, its memory, and cache read speed.

Everything runs in one process on the same files (apart from the memory
probes, which need a fresh process each):

* **Clips.** ``--files`` distinct, music-like 30 s stereo 44.1 kHz clips
  (harmonic notes with envelopes, drum hits, broadband noise; seeded, one
  seed per file), written as mp3 and as 16-bit wav. Existing files in
  ``--workdir`` are reused. Every file is read once before timing, so all
  contenders start from the page cache.
* **librosa** (the reference a user would otherwise pick), one process:
  ``librosa.load(path, sr=22050, mono=True, offset=3.0, duration=6.0)`` then
  ``np.log(librosa.feature.melspectrogram(...) + 1e-6)`` with the SPEC
  section 3 parameters; warmed up first so imports and numba compilation do
  not count.
* **ours, serial**: :func:`msd_triplet.audio.read_segment` one file at a time
  on the main thread, :func:`msd_triplet.audio.log_mel` on batches of
  ``extract_features``' default size (16) in a warmed-up ``tf.function``
  (TensorFlow keeps its own intra-op threads); float32 log-mel (the default),
  and the same batches in float64 for the time split.
* **ours, pipeline**: :func:`msd_triplet.features.extract_features` (decoding
  in a thread pool, log-mel per batch in one cached ``tf.function``) into a
  fresh cache: 1 decoding thread and one per usable CPU at float32 (the
  default), and one per usable CPU at float64, each after one untimed call
  on the same files (which traces the ``tf.function``). Clips/s is from the
  wall time of the whole call, cache creation and thread pool start
  included; that fixed cost is printed as the time of a 1-clip call.
* **peak memory** of the pipeline (default float32) for N, 4N and 16N
  tracks (the same mp3 files under distinct track ids), each in a child
  process: the peak resident set (``VmHWM``) after a one-clip warm-up and
  after the run, and the largest anonymous and file-backed resident set
  seen at any batch (file-backed: mapped files, mostly shared libraries; a
  cache written through a memory map would show here, growing with the
  number of files). ``ru_maxrss`` is not used: Linux carries the parent's
  high-water mark across fork + exec, so in a child started from this
  (large) process it reports the parent's peak.
* **cache read speed** for random training batches of 128 rows out of
  ``--cache-rows`` random float32 [80, 130] rows: a memory-mapped ``.npy``
  gathered with sorted random indices (exact random access) against 8
  TFRecord shards read with tf.data interleave + shuffle(1024) + batch +
  parse (approximate shuffling). The first epoch runs after the files were
  evicted from the page cache (``posix_fadvise(DONTNEED)``), later epochs
  read from the page cache.

Speeds are the fastest of ``--repeats`` passes (the machine may be shared). Run::

    python benchmarks/features.py                 # 96 clips: ~1 min to make them + ~45 s on 2 cores
    python benchmarks/features.py --quick         # smoke run
    python benchmarks/features.py --workdir /tmp/featbench   # keep and reuse the clips
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _common import cpu_model, machine_cpu_seconds, markdown_table, own_cpu_seconds, run_json

SOURCE_RATE = 44_100
CLIP_SECONDS = 30.0
FORMATS = ("mp3", "wav")
REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- test clips


def synth_clip(rng: np.random.Generator, seconds: float = CLIP_SECONDS, sr: int = SOURCE_RATE) -> np.ndarray:
    """A music-like stereo clip: float32 [frames, 2] at ``sr`` Hz, peak 0.9.

    A melody and a bass line of harmonic notes (random timbre, attack and
    exponential decay, panned), kick / snare / hi-hat on an eighth-note grid
    at a random tempo, and broadband noise a little different per channel.
    """
    n = int(seconds * sr)
    out = np.zeros((n, 2), np.float64)
    beat = 60.0 / rng.uniform(80, 160)
    scale = np.array([0, 2, 4, 5, 7, 9, 11]) if rng.random() < 0.5 else np.array([0, 2, 3, 5, 7, 8, 10])
    root = rng.uniform(40, 52)  # MIDI note of the key
    for octave, level in ((2, 0.35), (0, 0.5)):  # melody, bass
        pan = rng.uniform(0.2, 0.8)
        start = 0.0
        while start < seconds:
            length = beat * rng.choice([0.5, 1.0, 1.0, 2.0])
            midi = root + 12 * octave + rng.choice(scale) + 12 * rng.integers(0, 2)
            note = _note(rng, 440.0 * 2 ** ((midi - 69) / 12), length, sr) * level
            _mix(out, note, int(start * sr), pan)
            start += length
    _add_drums(rng, out, beat, sr)
    out += rng.standard_normal(out.shape) * 10 ** (rng.uniform(-50, -35) / 20)
    out *= 0.9 / np.max(np.abs(out))
    return out.astype(np.float32)


def _note(rng: np.random.Generator, f0: float, seconds: float, sr: int) -> np.ndarray:
    """One harmonic note: float64 [samples] with a 10 ms attack and an exponential decay."""
    t = np.arange(int(seconds * sr)) / sr
    partials = np.arange(1, 9)
    partials = partials[partials * f0 < sr / 2]
    amps = partials ** -rng.uniform(0.8, 2.0)
    phases = rng.uniform(0, 2 * np.pi, len(partials))
    wave = np.zeros_like(t)
    for k, a, p in zip(partials, amps, phases):
        wave += a * np.sin(2 * np.pi * k * f0 * t + p)
    envelope = np.minimum(t / 0.01, 1.0) * np.exp(-t / rng.uniform(0.1, 1.0))
    return wave * envelope / amps.sum()


def _add_drums(rng: np.random.Generator, out: np.ndarray, beat: float, sr: int) -> None:
    """Kick on beats 1 and 3, snare on 2 and 4, hi-hat on every eighth (some dropped)."""
    t = np.arange(int(0.3 * sr)) / sr
    kick = np.sin(2 * np.pi * (50 * t + 70 * 0.04 * (1 - np.exp(-t / 0.04)))) * np.exp(-t / 0.12)
    snare_tone = np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.05)
    eighth = beat / 2
    for step in range(int(out.shape[0] / sr / eighth)):
        at = int(step * eighth * sr)
        if step % 4 == 0:
            _mix(out, 0.6 * kick, at, 0.5)
        if step % 4 == 2:
            noise = rng.standard_normal(len(t)) * np.exp(-t / 0.08)
            _mix(out, 0.25 * noise + 0.3 * snare_tone, at, 0.5)
        if rng.random() < 0.85:
            hat = np.diff(rng.standard_normal(len(t) + 1)) * np.exp(-t / 0.02)
            _mix(out, 0.08 * hat, at, rng.uniform(0.3, 0.7))


def _mix(out: np.ndarray, sound: np.ndarray, at: int, pan: float) -> None:
    """Add mono ``sound`` into stereo ``out`` from frame ``at``, constant-power panned."""
    sound = sound[: max(0, out.shape[0] - at)]
    gains = np.array([np.cos(pan * np.pi / 2), np.sin(pan * np.pi / 2)])
    out[at : at + len(sound)] += sound[:, None] * gains


def _write_clip(index: int, stem: Path) -> None:
    y = synth_clip(np.random.default_rng([2024, index]))
    import soundfile as sf

    for fmt in FORMATS:
        sf.write(stem.with_suffix(f".{fmt}"), y, SOURCE_RATE, format=fmt.upper())


def ensure_clips(workdir: Path, n: int, workers: int) -> dict[str, list[Path]]:
    """Paths of ``n`` clips per format in ``workdir/clips``, generating the missing ones in parallel."""
    folder = workdir / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    stems = [folder / f"clip-{i:04d}" for i in range(n)]
    missing = [
        i
        for i, s in enumerate(stems)
        if not all(s.with_suffix(f".{f}").is_file() and s.with_suffix(f".{f}").stat().st_size for f in FORMATS)
    ]
    if missing:
        started = time.perf_counter()
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_clip, missing, [stems[i] for i in missing]))
        print(
            f"generated {len(missing)} clips x {len(FORMATS)} formats in {time.perf_counter() - started:.1f} s "
            f"into {folder}"
        )
    else:
        print(f"reusing {n} clips x {len(FORMATS)} formats in {folder}")
    return {fmt: [s.with_suffix(f".{fmt}") for s in stems] for fmt in FORMATS}


def read_all(paths: list[Path]) -> None:
    """Read every file once so the timed passes all start from the page cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 22):
                pass


# --------------------------------------------------------------------------- extraction speed


def time_librosa(paths: list[Path], repeats: int) -> dict[str, float]:
    """librosa load + log-mel per clip: clips/s and ms per clip of each half (fastest of ``repeats`` passes)."""
    import librosa

    def load(p):
        return librosa.load(p, sr=22_050, mono=True, offset=3.0, duration=6.0)[0]

    def mel(y):
        s = librosa.feature.melspectrogram(
            y=y, sr=22_050, n_fft=2_048, hop_length=1_024, n_mels=80, fmin=16, fmax=11_000
        )
        return np.log(s + 1e-6)

    mel(load(paths[0]))  # imports, numba compilation, filter bank cache
    loads, mels, totals = [], [], []
    for _ in range(repeats):
        t_load = t_mel = 0.0
        for p in paths:
            t0 = time.perf_counter()
            y = load(p)
            t1 = time.perf_counter()
            mel(y)
            t2 = time.perf_counter()
            t_load += t1 - t0
            t_mel += t2 - t1
        loads.append(t_load)
        mels.append(t_mel)
        totals.append(t_load + t_mel)
    n = len(paths)
    return {"clips_per_s": n / min(totals), "decode_ms": 1e3 * min(loads) / n, "mel_ms": 1e3 * min(mels) / n}


def pipeline_batch() -> int:
    """Clips per log-mel batch of :func:`msd_triplet.features.extract_features` (its default)."""
    from msd_triplet.features import extract_features

    return inspect.signature(extract_features).parameters["batch_size"].default


def time_ours_serial(paths: list[Path], features, alternative, repeats: int) -> dict[str, float]:
    """read_segment one file at a time, log_mel per batch of :func:`pipeline_batch`: clips/s and ms per clip.

    Also times the log-mel of the same batches with the ``alternative`` feature config (``alt_mel_ms``).
    """
    from msd_triplet import audio

    spec = audio.SegmentSpec.from_config(features)
    size = pipeline_batch()
    log_mel, alt_log_mel = _log_mel_function(features, size), _log_mel_function(alternative, size)
    audio.read_segment(paths[0], spec)
    decodes, mels, alts = [], [], []
    for _ in range(repeats):
        t_decode = t_mel = t_alt = 0.0
        for first in range(0, len(paths), size):
            t0 = time.perf_counter()
            batch = np.stack([audio.read_segment(p, spec) for p in paths[first : first + size]])
            t1 = time.perf_counter()
            log_mel(batch).numpy()
            t2 = time.perf_counter()
            alt_log_mel(batch).numpy()
            t_decode += t1 - t0
            t_mel += t2 - t1
            t_alt += time.perf_counter() - t2
        decodes.append(t_decode)
        mels.append(t_mel)
        alts.append(t_alt)
    n = len(paths)
    total = min(d + m for d, m in zip(decodes, mels))
    return {
        "clips_per_s": n / total,
        "decode_ms": 1e3 * min(decodes) / n,
        "mel_ms": 1e3 * min(mels) / n,
        "alt_mel_ms": 1e3 * min(alts) / n,
    }


def _log_mel_function(features, batch: int):
    """A ``tf.function`` of :func:`msd_triplet.audio.log_mel` over float32 [batch, samples], warmed up."""
    import tensorflow as tf

    from msd_triplet import audio

    samples = audio.SegmentSpec.from_config(features).samples
    kwargs = audio.log_mel_kwargs(features)
    function = tf.function(
        lambda w: audio.log_mel(w, **kwargs), input_signature=[tf.TensorSpec([None, samples], tf.float32)]
    )
    for size in (batch, 1):
        function(np.zeros((size, samples), np.float32)).numpy()
    return function


def time_pipeline(paths: list[Path], features, workers: int, scratch: Path, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` ``extract_features`` calls into a fresh cache, after one untimed call."""
    _extract_once(paths, features, workers, scratch)
    return min(_extract_once(paths, features, workers, scratch) for _ in range(repeats))


def _extract_once(paths: list[Path], features, workers: int, scratch: Path) -> float:
    """Wall seconds of one extraction into a new cache."""
    from msd_triplet.features import extract_features

    directory = Path(tempfile.mkdtemp(prefix="cache-", dir=scratch))
    ids = [f"TRBENCH{i:09d}" for i in range(len(paths))]
    try:
        started = time.perf_counter()
        report = extract_features(ids, [str(p) for p in paths], features, directory, workers=workers)
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if report.extracted != len(paths):
        raise RuntimeError(f"extracted {report.extracted} of {len(paths)} clips; skipped: {report.kinds}")
    return seconds


# --------------------------------------------------------------------------- peak memory

# Runs in a fresh interpreter; reads {"paths", "copies", "workers", "scratch"} as JSON on stdin and
# prints one JSON line: the peak resident set (VmHWM) after a one-clip warm-up and after the run, and
# the largest RssAnon / RssFile seen at any batch of the run, all from /proc/self/status, in MiB.
MEMORY_PROBE = r"""
import json, sys, tempfile
from msd_triplet.config import FeatureConfig
from msd_triplet.features import extract_features

job = json.load(sys.stdin)
paths = job["paths"] * job["copies"]
peak = {"RssAnon": 0.0, "RssFile": 0.0}

def status(keys):
    with open("/proc/self/status") as f:
        pairs = (line.partition(":")[::2] for line in f)
        return {k: int(v.split()[0]) / 1024 for k, v in pairs if k in keys}

def sample(done, total):
    for key, value in status(peak).items():
        peak[key] = max(peak[key], value)

def run(paths, progress=None):
    with tempfile.TemporaryDirectory(dir=job["scratch"]) as d:
        ids = [f"TRMEM{i:011d}" for i in range(len(paths))]
        r = extract_features(ids, paths, FeatureConfig(), d, workers=job["workers"], progress=progress)
        assert r.extracted == len(paths), r

run(paths[:1])
warm = status({"VmHWM"})["VmHWM"]
run(paths, sample)
print(json.dumps({"tracks": len(paths), "hwm_warm": warm, "hwm_peak": status({"VmHWM"})["VmHWM"],
                  "anon_peak": peak["RssAnon"], "file_peak": peak["RssFile"]}))
"""


def peak_memory(paths: list[Path], copies: int, workers: int, scratch: Path) -> dict[str, float]:
    """Run :data:`MEMORY_PROBE` in a child process over ``copies`` x ``paths``; its JSON result."""
    job = json.dumps({"paths": [str(p) for p in paths], "copies": copies, "workers": workers, "scratch": str(scratch)})
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return run_json(
        [sys.executable, "-c", MEMORY_PROBE], "memory probe", input=job, cwd=scratch, env={"PYTHONPATH": path}
    )


# --------------------------------------------------------------------------- cache read speed


def write_caches(folder: Path, rows: int, shape: tuple[int, int], shards: int) -> tuple[Path, list[Path]]:
    """The same random float32 [rows, *shape] as one ``.npy`` and as ``shards`` TFRecord files."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).standard_normal((rows, *shape), dtype=np.float32)
    npy = folder / "features.npy"
    np.save(npy, data)
    records = []
    bounds = np.linspace(0, rows, shards + 1).astype(int)
    for s in range(shards):
        path = folder / f"features-{s:05d}-of-{shards:05d}.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for row in data[bounds[s] : bounds[s + 1]]:
                feature = {"features": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.tobytes()]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        records.append(path)
    return npy, records


def evict(paths: list[Path]) -> None:
    """Flush ``paths`` to disk and drop them from the page cache (the next read comes from the disk)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def memmap_epoch(npy: Path, batch: int, rng: np.random.Generator) -> int:
    """One epoch of random batches gathered from a memory-mapped array (sorted rows per batch)."""
    array = np.load(npy, mmap_mode="r")
    order = rng.permutation(array.shape[0])
    batches = array.shape[0] // batch
    for b in range(batches):
        out = array[np.sort(order[b * batch : (b + 1) * batch])]
        assert out.shape[0] == batch
    return batches


def tfrecord_epoch(records: list[Path], shape: tuple[int, int], batch: int, seed: int) -> int:
    """One epoch of shuffled batches from TFRecord shards: interleave, shuffle(1024), batch, parse."""
    import tensorflow as tf

    spec = {"features": tf.io.FixedLenFeature([], tf.string)}

    def parse(serialized):
        raw = tf.io.parse_example(serialized, spec)["features"]
        return tf.reshape(tf.io.decode_raw(raw, tf.float32), [-1, *shape])

    files = tf.data.Dataset.from_tensor_slices([str(p) for p in records]).shuffle(len(records), seed=seed)
    dataset = (
        files.interleave(
            tf.data.TFRecordDataset, cycle_length=len(records), num_parallel_calls=tf.data.AUTOTUNE, deterministic=False
        )
        .shuffle(1024, seed=seed)
        .batch(batch, drop_remainder=True)
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    batches = 0
    for out in dataset.as_numpy_iterator():
        assert out.shape[0] == batch
        batches += 1
    return batches


def time_cache_reads(
    folder: Path, rows: int, warm_epochs: int, batch: int = 128, shape: tuple[int, int] = (80, 130), shards: int = 8
) -> list[dict]:
    """Batches/s and MB/s of both formats, first epoch from disk, then ``warm_epochs`` from the page cache."""
    npy, records = write_caches(folder, rows, shape, shards)
    batch_mb = batch * int(np.prod(shape)) * 4 / 1e6
    contenders = {
        "memmap .npy (exact random rows)": ([npy], lambda seed: memmap_epoch(npy, batch, np.random.default_rng(seed))),
        f"TFRecord x{shards} (shuffle buffer 1024)": (
            records,
            lambda seed: tfrecord_epoch(records, shape, batch, seed),
        ),
    }
    results = []
    for name, (files, epoch) in contenders.items():
        epoch(12345)  # warm up code paths (tf.data, parse); the files are evicted below
        evict(files)
        started = time.perf_counter()
        cold_batches = epoch(0)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        warm_batches = sum(epoch(seed) for seed in range(1, warm_epochs + 1))
        warm = time.perf_counter() - started
        size = sum(p.stat().st_size for p in files) / 1e6
        results.append(
            {
                "format": name,
                "size_mb": size,
                "cold_bps": cold_batches / cold,
                "cold_mbps": cold_batches * batch_mb / cold,
                "warm_bps": warm_batches / warm,
                "warm_mbps": warm_batches * batch_mb / warm,
            }
        )
    shutil.rmtree(folder, ignore_errors=True)
    return results


# --------------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    import librosa
    import soundfile as sf
    import soxr
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        "librosa": librosa.__version__,
        "soundfile": sf.__version__,
        "libsndfile": sf.__libsndfile_version__,
        "soxr": soxr.__version__,
    }


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=96, help="distinct clips per format (default 96)")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep clips here and reuse them (default: a temporary folder, removed at the end)",
    )
    ap.add_argument("--cache-rows", type=int, default=4096, help="rows of the cache read benchmark (default 4096)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed passes per measurement; the fastest is shown (default 3)"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 clips, 512 cache rows, one pass")
    args = ap.parse_args(argv)
    if args.quick:
        args.files, args.cache_rows, args.repeats = min(args.files, 8), min(args.cache_rows, 512), 1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    total_start = time.perf_counter()

    from msd_triplet.features import default_workers

    cpus = default_workers()
    own_tmp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="msd-features-bench-")) if own_tmp else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=workdir))
    try:
        clips = ensure_clips(workdir, args.files, cpus)  # before TensorFlow: forks workers
        run(args, clips, cpus, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if own_tmp:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ntotal runtime {time.perf_counter() - total_start:.0f} s")
    return 0


def run(args, clips: dict[str, list[Path]], cpus: int, scratch: Path) -> None:
    """All measurements and their tables."""
    from msd_triplet.config import FeatureConfig

    default = FeatureConfig()
    alternative = FeatureConfig(precision="float64" if default.precision == "float32" else "float32")
    dflt, alt = default.precision, alternative.precision
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions().items()))
    print(
        f"cpus: {cpus} usable of {os.cpu_count()} ({cpu_model()}); {args.files} clips of {CLIP_SECONDS:g} s "
        f"stereo {SOURCE_RATE} Hz per format; fastest of {args.repeats} pass(es)"
    )
    busy, own, started = machine_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    speed, split, fixed = extraction_speed(clips, default, alternative, cpus, scratch, args.repeats)
    others = (machine_cpu_seconds() - busy) - (own_cpu_seconds() - own)
    print(
        f"other processes used {max(others, 0.0):.1f} CPU s of the {time.perf_counter() - started:.1f} s "
        f"x {os.cpu_count()} CPUs of the speed measurements (ideally ~0)"
    )
    print("\n## Extraction speed, clips/s (higher is better); ratio = ours / librosa; W = decoding threads\n")
    print(
        markdown_table(
            [
                "format",
                "librosa",
                "ours serial",
                "pipeline W=1",
                f"pipeline W={cpus}",
                f"pipeline W={cpus} {alt}",
                "ratio serial",
                f"ratio W={cpus}",
                f"ratio W={cpus} {alt}",
            ],
            speed,
        )
    )
    print(
        f"\nours: {dflt} log-mel (the default) unless marked; pipeline: from the wall time of extract_features "
        f"into a fresh cache (creation included); a 1-clip call takes {fixed * 1e3:.0f} ms"
    )
    batch = pipeline_batch()
    print("\n## Where the time goes, ms per clip (one thread decoding; TensorFlow ops use its own pool)\n")
    print(
        markdown_table(
            [
                "format",
                "librosa load",
                "librosa log-mel",
                "ours read_segment",
                f"ours log_mel {dflt} (default, batch {batch})",
                f"ours log_mel {alt} (batch {batch})",
            ],
            split,
        )
    )

    mem = [peak_memory(clips["mp3"], copies, cpus, scratch) for copies in (1, 4, 16)]
    print(f"\n## Memory of extract_features (mp3, W={cpus}, default {dflt}, fresh child process each), MiB\n")
    print(
        markdown_table(
            [
                "tracks",
                "peak RSS after 1-clip warm-up",
                "peak RSS after run",
                "growth in run",
                "RssAnon max in run",
                "RssFile max in run",
            ],
            [
                [
                    m["tracks"],
                    m["hwm_warm"],
                    m["hwm_peak"],
                    m["hwm_peak"] - m["hwm_warm"],
                    m["anon_peak"],
                    m["file_peak"],
                ]
                for m in mem
            ],
        )
    )
    small, large = mem[1], mem[-1]  # both past the first full batch
    extra = large["tracks"] - small["tracks"]
    slopes = {key: (large[key] - small[key]) / extra * 1024 for key in ("hwm_peak", "anon_peak", "file_peak")}
    print(
        f"\nper extra track from {small['tracks']} to {large['tracks']} tracks: peak RSS "
        f"{slopes['hwm_peak']:+.1f} KiB, RssAnon {slopes['anon_peak']:+.1f} KiB, RssFile "
        f"{slopes['file_peak']:+.1f} KiB (one cached row is {80 * 130 * 4 / 1024:.1f} KiB)"
    )

    warm_epochs = 1 if args.quick else 3
    reads = time_cache_reads(scratch / "read-bench", args.cache_rows, warm_epochs)
    print(f"\n## Cache read speed: random batches of 128 x [80, 130] float32 from {args.cache_rows} rows\n")
    print(
        markdown_table(
            ["format", "size MB", "cold batches/s", "cold MB/s", "warm batches/s", "warm MB/s"],
            [[r["format"], r["size_mb"], r["cold_bps"], r["cold_mbps"], r["warm_bps"], r["warm_mbps"]] for r in reads],
        )
    )
    print(f"\ncold: first epoch after evicting the files from the page cache; warm: {warm_epochs} more epoch(s)")


def extraction_speed(
    clips: dict[str, list[Path]], default, alternative, cpus: int, scratch: Path, repeats: int
) -> tuple[list[list], list[list], float]:
    """Rows of the speed table and of the time-split table, and the seconds of a 1-clip pipeline call.

    ``default`` and ``alternative`` are feature configs that differ in precision only.
    """
    one_clip = clips["wav"][:1]
    _extract_once(one_clip, default, cpus, scratch)  # TensorFlow start-up, tracing
    fixed = min(_extract_once(one_clip, default, cpus, scratch) for _ in range(3))
    speed, split = [], []
    for fmt, paths in clips.items():
        n = len(paths)
        read_all(paths)
        ref = time_librosa(paths, repeats)
        serial = time_ours_serial(paths, default, alternative, repeats)
        pipes = [
            time_pipeline(paths, f, w, scratch, repeats)
            for f, w in ((default, 1), (default, cpus), (alternative, cpus))
        ]
        base = ref["clips_per_s"]
        speed.append(
            [fmt, base, serial["clips_per_s"]]
            + [n / wall for wall in pipes]
            + [f"{rate / base:.2f}x" for rate in (serial["clips_per_s"], n / pipes[1], n / pipes[2])]
        )
        split.append(
            [fmt]
            + [
                f"{v:.2f}"
                for v in (ref["decode_ms"], ref["mel_ms"], serial["decode_ms"], serial["mel_ms"], serial["alt_mel_ms"])
            ]
        )
    return speed, split, fixed


if __name__ == "__main__":
    sys.exit(main())
