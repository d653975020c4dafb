"""Exact k nearest neighbours for precision@100: ours against scikit-learn brute force, time and memory.

Both contenders search the same embeddings in the same run, each in a fresh
child process (``multiprocessing``, "spawn"):

* **Embeddings.** Seeded float32 [N, 256], L2-normalised like the model's
  outputs, with two levels of cluster structure: each track is the sum of a
  "genre" centre (16 of them, weight 0.5), an "album" centre (one per 40
  tracks, weight 1) and per-track noise (weight 1), all standard normal per
  coordinate, then normalised. N = 14,358 and 143,587 (the test split and
  all tracks after the paper's intersection filter); ``--quick``: 5,000.
  Every child rebuilds them from the seed.
* **Contenders** (wall time of the search only, one run each):

  - ours: :func:`msd_triplet.evaluation.nearest_neighbours` with k = 100 and
    the default ``EvaluationConfig.chunk_size``, one worker thread per
    usable CPU;
  - scikit-learn: ``NearestNeighbors(n_neighbors=100, algorithm="brute")
    .fit(x).kneighbors(return_distance=False)``, its defaults (the query
    excludes itself when ``kneighbors`` gets no ``X``).

* **Peak memory.** In each child, after imports and the data build, the
  peak-RSS mark is reset (``echo 5 > /proc/self/clear_refs``) and ``VmRSS``
  read (the baseline: interpreter, libraries, embeddings); ``VmHWM`` after
  the search is the peak. "Search peak" is peak minus baseline, the extra
  memory the search needed at its high point. ``ru_maxrss`` is not used: it
  carries the parent's high-water mark into a child. Where the reset is
  refused the baseline is ``VmHWM`` after the build, and the script says so.
* **Agreement.** The parent compares the two [N, 100] results row by row.
  Rows that differ are checked in float64: the distances of the two ranked
  lists, position by position, must agree to 1e-5 (both are exact; they
  may order near-ties differently: ours ranks float32 distances, scikit-learn
  float64 ones). Precision@100 of the "album" facet (same album centre) is
  computed from both.

Run::

    python benchmarks/evaluate.py            # 14,358 and 143,587 tracks: ~4 min on 2 cores
    python benchmarks/evaluate.py --quick    # smoke run, 5,000 tracks
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import _reset_peak, _status, cpu_model, in_child, machine_cpu_seconds, markdown_table, own_cpu_seconds

DIMS = 256
K = 100
SIZES = (14_358, 143_587)
QUICK_SIZES = (5_000,)
TRACKS_PER_ALBUM = 40
GENRES = 16
DISTANCE_TOLERANCE = 1e-5


# --------------------------------------------------------------------------- data


def embeddings(n: int, seed: int = 0, block: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
    """Seeded L2-normalised float32 [n, DIMS] with genre and album structure; album ids [n]."""
    rng = np.random.default_rng(seed)
    genres = 0.5 * rng.standard_normal((GENRES, DIMS), dtype=np.float32)
    n_albums = max(1, n // TRACKS_PER_ALBUM)
    albums = rng.standard_normal((n_albums, DIMS), dtype=np.float32)
    album_genre = rng.integers(0, GENRES, n_albums)
    album = rng.integers(0, n_albums, n)
    out = np.empty((n, DIMS), np.float32)
    for b in range(0, n, block):  # bounded temporaries
        a = album[b : b + block]
        x = genres[album_genre[a]] + albums[a] + rng.standard_normal((len(a), DIMS), dtype=np.float32)
        out[b : b + block] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, album


# --------------------------------------------------------------------------- child processes


def search_job(job: dict) -> dict:
    """Child: build the embeddings, run one contender; its time, memory and (saved) neighbours."""
    import sklearn.neighbors  # noqa: F401 - imported by both, so both baselines hold it

    from msd_triplet.config import EvaluationConfig
    from msd_triplet.evaluation import nearest_neighbours

    x, _ = embeddings(job["n"], job["seed"])
    gc.collect()
    reset = _reset_peak()
    before = _status(("VmRSS", "VmHWM"))
    started = time.perf_counter()
    if job["method"] == "ours":
        neighbours = nearest_neighbours(x, job["k"], chunk_size=EvaluationConfig().chunk_size)
    else:
        neighbours = (
            sklearn.neighbors.NearestNeighbors(n_neighbors=job["k"], algorithm="brute")
            .fit(x)
            .kneighbors(return_distance=False)
        )
    seconds = time.perf_counter() - started
    peak = _status(("VmHWM",))["VmHWM"]
    np.save(job["out"], neighbours)
    return {"seconds": seconds, "baseline": before["VmRSS"] if reset else before["VmHWM"], "peak": peak, "reset": reset}


# --------------------------------------------------------------------------- agreement


def agreement(x: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Identical rows, and the largest float64 distance difference of the ranked lists where rows differ."""
    differ = np.flatnonzero((ours != theirs).any(axis=1))
    worst = 0.0
    for b in range(0, len(differ), 1_024):
        rows = differ[b : b + 1_024]
        q = x[rows].astype(np.float64)[:, None, :]
        d_ours = np.sqrt(((x[ours[rows]].astype(np.float64) - q) ** 2).sum(axis=2))
        d_theirs = np.sqrt(((x[theirs[rows]].astype(np.float64) - q) ** 2).sum(axis=2))
        worst = max(worst, float(np.abs(d_ours - d_theirs).max()))
    same_sets = np.mean([set(a) == set(b) for a, b in zip(ours[differ], theirs[differ])]) if len(differ) else 1.0
    return {
        "rows_identical": 1 - len(differ) / len(ours),
        "rows_differ": len(differ),
        "differing_rows_same_set": float(same_sets),
        "max_distance_diff": worst,
    }


# --------------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    import scipy
    import sklearn
    from threadpoolctl import threadpool_info

    blas = sorted(
        {
            f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)"
            for i in threadpool_info()
            if i["user_api"] == "blas"
        }
    )
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "BLAS": " + ".join(blas) or "unknown",
    }


# --------------------------------------------------------------------------- main


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def measure(n: int, seed: int, scratch: Path) -> dict:
    """Both contenders on one size; their results and the agreement."""
    out = {}
    for method in ("ours", "sklearn"):
        job = {"method": method, "n": n, "k": K, "seed": seed, "out": str(scratch / f"{method}-{n}.npy")}
        busy, own = machine_cpu_seconds(), own_cpu_seconds()
        result = in_child(search_job, job)
        result["others_cpu"] = max(0.0, (machine_cpu_seconds() - busy) - (own_cpu_seconds() - own))
        out[method] = result
    from msd_triplet.evaluation import Facet, precision_at_k

    x, album = embeddings(n, seed)
    ours, theirs = (np.load(scratch / f"{m}-{n}.npy") for m in ("ours", "sklearn"))
    out["agreement"] = agreement(x, ours, theirs)
    facet = Facet.from_ids("album", album)
    out["precision"] = {m: precision_at_k(v, facet) for m, v in (("ours", ours), ("sklearn", theirs))}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--sizes",
        type=lambda s: tuple(int(v) for v in s.split(",")),
        default=SIZES,
        help="comma-separated track counts (default 14358,143587)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 5,000 tracks")
    args = ap.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else args.sizes
    total_start = time.perf_counter()
    from msd_triplet.config import EvaluationConfig

    print("versions:", ", ".join(f"{k} {v}" for k, v in versions().items()))
    print(
        f"cpus: {_usable_cpus()} usable of {os.cpu_count()} ({cpu_model()}); {DIMS} dims, k = {K}, "
        f"ours with chunk_size {EvaluationConfig().chunk_size}; one run per contender, each in a fresh process"
    )
    rows, checks = [], []
    with tempfile.TemporaryDirectory(prefix="msd-eval-bench-") as scratch:
        for n in sizes:
            r = measure(n, args.seed, Path(scratch))
            ours, theirs, agree = r["ours"], r["sklearn"], r["agreement"]
            for name, m in (("ours", ours), ("scikit-learn brute", theirs)):
                rows.append(
                    [f"{n:,}", name, m["seconds"], m["baseline"], m["peak"], m["peak"] - m["baseline"], m["others_cpu"]]
                )
            rows.append(
                [
                    f"{n:,}",
                    "**ratio ours / scikit-learn**",
                    f"{ours['seconds'] / theirs['seconds']:.2f}x",
                    "",
                    f"{ours['peak'] / theirs['peak']:.2f}x",
                    f"{(ours['peak'] - ours['baseline']) / (theirs['peak'] - theirs['baseline']):.2f}x",
                    "",
                ]
            )
            checks.append(
                [
                    f"{n:,}",
                    f"{100 * agree['rows_identical']:.3f} %",
                    agree["rows_differ"],
                    f"{100 * agree['differing_rows_same_set']:.1f} %",
                    f"{agree['max_distance_diff']:.1e}",
                    f"{r['precision']['ours']:.4f}",
                    f"{r['precision']['sklearn']:.4f}",
                ]
            )
            if agree["max_distance_diff"] > DISTANCE_TOLERANCE:
                print(
                    f"WARNING: {n} tracks: ranked distances differ by {agree['max_distance_diff']:.2e} "
                    f"> {DISTANCE_TOLERANCE:g}: the results are not the same neighbours",
                    file=sys.stderr,
                )
    print("\n## Exact top-100 search: wall time (s) and memory (MiB)\n")
    print(
        markdown_table(
            ["tracks", "method", "time s", "RSS before search", "peak RSS", "search peak", "other processes' CPU s"],
            rows,
            group_ints=True,
        )
    )
    if not all(r["reset"] for r in (ours, theirs)):
        print("\nnote: /proc/self/clear_refs refused; baselines are VmHWM after the data build")
    print("\n## Agreement\n")
    print(
        markdown_table(
            [
                "tracks",
                "rows identical",
                "rows differing",
                "of those: same neighbour set",
                "max distance difference (float64)",
                "album P@100 ours",
                "album P@100 sklearn",
            ],
            checks,
            group_ints=True,
        )
    )
    print(
        f"\nrows may differ only where neighbours are tied to float32 rounding (tolerance {DISTANCE_TOLERANCE:g});"
        f" other processes' CPU s: CPU time others used during the run (ideally ~0)"
    )
    print(f"\ntotal runtime {time.perf_counter() - total_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
