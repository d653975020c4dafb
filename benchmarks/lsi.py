"""LSI fitting: our gram and svds solvers against scikit-learn's TruncatedSVD, time, memory and accuracy.

All contenders fit the same synthetic track x tag matrix in the same run,
each in a fresh child process (``multiprocessing``, "spawn"):

* **Matrix.** A seeded, binary, float64 ``scipy.sparse.csr_matrix`` of
  tracks x tags with the shape of the real one: 504,502 x 1,412 (all tracks
  with a tag) and 143,587 x 1,305 (after the intersection filter). Tag
  popularity is Zipf-like (weight 1 / rank). Tracks are drawn from 256
  latent topics (Zipf-like topic popularity); each topic weights the tags by
  popularity x Gamma(0.2) noise, so it concentrates on a few dozen tags.
  Each tag slot of a track comes from its primary topic (70 %), a secondary
  topic (20 %) or global popularity (10 %). **Tags per track**: 3 + Binomial(5,
  0.4), i.e. 3-8, mean 5, all distinct (``--tags-per-track`` changes min,
  mean, max); about 2.5 M ones on the large matrix (SPEC section 4 quotes
  a matrix with 6.8 M ones, ~13.5 per track: ``--tags-per-track 8,13.5,19``
  comes close). The build is vectorised
  numpy (one ``searchsorted`` over stacked CDFs, duplicates redrawn), a
  couple of seconds for the large matrix; every child rebuilds it from the
  seed, so all fit the identical matrix.
* **Contenders** (wall time of the fit call only, fastest-of-one: each
  child fits once):

  - ``gram``: ``fit_lsi(..., solver="gram")``, the tag Gram matrix XᵀX and
    one dense ``scipy.linalg.eigh`` (top k eigenpairs);
  - ``svds``: ``fit_lsi(..., solver="svds")``, ``scipy.sparse.linalg.svds``
    (ARPACK, fixed start vector, right singular vectors only). scipy runs
    ARPACK on the small operator XᵀX, then forms X·V [tracks, k] and takes
    its dense SVD, even when only V is asked for: that sets its memory;
  - ``randomized``: ``TruncatedSVD(k, algorithm="randomized")`` (its
    defaults: 5 power iterations, 10 oversamples);
  - ``arpack``: ``TruncatedSVD(k, algorithm="arpack")`` (tol 0), the
    accuracy reference. scikit-learn's ``fit`` is ``fit_transform``: it also
    forms the [tracks, k] transformed matrix and its variance, which a user
    pays for too.

* **Peak memory.** In each child, after imports and the matrix build (its
  freed temporaries handed back with glibc ``malloc_trim``), the peak-RSS
  mark is reset (``echo 5 > /proc/self/clear_refs``) and ``VmRSS``
  is read ("RSS before fit": interpreter, libraries, matrix); ``VmHWM`` after
  the fit is the peak, and "fit peak" is peak minus RSS before fit: the
  extra memory the fit needed at its high point. Where the reset is not
  possible the baseline is ``VmHWM`` after the build, and the script says so.
* **Accuracy** against ``arpack`` at the same matrix and k: the largest
  relative error of the singular values, and the largest absolute
  difference of the 2,000 x 2,000 cosine matrix of a seeded sample of
  2,000 tracks, and its 99.9th percentile over pairs (the max is set by a
  few tracks whose vectors are short at small k). A track's LSI vector is
  its row projected on the method's components in float64
  (``X[sample] @ componentsᵀ`` = its row of U·Σ; what
  ``LsiModel.transform`` computes before its float32 cast and zero-norm
  rule, which would hide differences below 1e-7). Cosines of U·Σ rows do
  not depend on the sign of each component; the script checks this by
  flipping random component signs of the reference.
* **k grid.** In one child on the first matrix: one ``gram`` fit at the
  largest k (400), then ``truncate(k)`` for k = 10, 20, ..., 400 (40 points),
  against 40 separate ``gram`` fits, all timed; the largest difference
  between a truncated model's components and the separate fit's is printed.
  For ``svds`` the 40 separate fits are *estimated*: piecewise-linear
  interpolation, in k, of the ``svds`` times of the main table on that
  matrix (needs its smallest and largest k), summed over the grid.

A child that runs longer than ``--timeout`` seconds (default 600, matrix
build included) is stopped and its fit reported as skipped. Other processes'
CPU use during each fit is printed (the timings assume an idle machine).
Run::

    python benchmarks/lsi.py                  # full grid, ~9 min on 2 cores (less on an idle machine)
    python benchmarks/lsi.py --quick          # smoke run: 20,000 x 1,000, k 10 and 100, < 1 min
    python benchmarks/lsi.py --sizes 143587x1305 --ks 10,400 --methods gram,svds,arpack
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time

import numpy as np
from _common import _reset_peak, _status, cpu_model, in_child, machine_cpu_seconds, markdown_table, own_cpu_seconds

SIZES = ((504_502, 1_412), (143_587, 1_305))
QUICK_SIZES = ((20_000, 1_000),)
KS = (10, 100, 400)
QUICK_KS = (10, 100)
METHODS = ("gram", "svds", "randomized", "arpack")
REFERENCE = "arpack"
GRID_STEP = 10
N_TOPICS = 256


# --------------------------------------------------------------------------- synthetic matrix


def synthetic_matrix(n_tracks: int, n_tags: int, seed: int, tags_per_track: tuple[int, float, int] = (3, 5.0, 8)):
    """A binary track x tag matrix: float64 ``csr_matrix`` [n_tracks, n_tags] with topic structure.

    ``tags_per_track`` is (min, mean, max): a track has min + Binomial(max -
    min, p) distinct tags, p giving the mean. See the module docstring for
    the topic model. Deterministic in all arguments.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng([seed, n_tracks, n_tags])
    popularity = 1.0 / np.arange(1, n_tags + 1)
    popularity = popularity[rng.permutation(n_tags)]  # popular tags are not the first columns
    topics = popularity * rng.gamma(0.2, size=(N_TOPICS, n_tags))
    # Row N_TOPICS: global popularity, the "noise" tags. CDFs are stacked with row r shifted to
    # (r, r + 1], so one searchsorted draws a tag from any row: u = r + uniform[0, 1).
    weights = np.vstack([topics, popularity])
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    cdf[:, -1] = 1.0
    stacked = (cdf + np.arange(len(cdf))[:, None]).ravel()
    topic_weight = 1.0 / np.arange(1, N_TOPICS + 1) ** 0.8
    topic_weight /= topic_weight.sum()
    primary = rng.choice(N_TOPICS, n_tracks, p=topic_weight)
    secondary = rng.choice(N_TOPICS, n_tracks, p=topic_weight)

    low, mean, high = tags_per_track
    target = low + rng.binomial(high - low, (mean - low) / (high - low) if high > low else 0.0, n_tracks)

    def draw(tracks: np.ndarray) -> np.ndarray:
        """One tag per entry of ``tracks`` (a track repeated once per slot): int64 keys track * n_tags + tag."""
        source = rng.random(len(tracks))
        row = np.where(source < 0.7, primary[tracks], np.where(source < 0.9, secondary[tracks], N_TOPICS))
        index = np.searchsorted(stacked, row + rng.random(len(tracks)), side="right")
        return tracks * n_tags + np.minimum(index - row * n_tags, n_tags - 1)

    keys = _distinct(draw(np.repeat(np.arange(n_tracks), target)))
    for _ in range(100):  # redraw the slots lost to duplicates until every track has its target count
        missing = target - np.bincount(keys // n_tags, minlength=n_tracks)
        if not missing.any():
            break
        keys = _distinct(np.concatenate([keys, draw(np.repeat(np.arange(n_tracks), missing))]))
    rows, cols = np.divmod(keys, n_tags)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_tracks))])
    return sp.csr_matrix((np.ones(len(keys)), cols.astype(np.int32), indptr), shape=(n_tracks, n_tags))


def _distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values (``np.unique`` with a sort: numpy 2's hash-based unique is far slower here)."""
    keys = np.sort(keys)
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])]


def sample_rows(n_tracks: int, n: int, seed: int) -> np.ndarray:
    """The sorted, seeded sample of tracks whose cosines are compared."""
    return np.sort(np.random.default_rng([seed, 1]).choice(n_tracks, min(n, n_tracks), replace=False))


# --------------------------------------------------------------------------- child processes


def _release_free_memory() -> None:
    """Return memory freed by the matrix build to the OS (glibc ``malloc_trim``), so no fit reuses it unseen."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _import_all() -> None:
    """Import every contender's modules, so all children have the same baseline and no import is timed."""
    import scipy.linalg  # noqa: F401
    import scipy.sparse.linalg  # noqa: F401
    import sklearn.decomposition  # noqa: F401

    import msd_triplet.lsi  # noqa: F401


def _fit(method: str, matrix, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit one contender; its singular values [k] (descending) and components [k, tags]."""
    if method in ("gram", "svds"):
        from msd_triplet.lsi import fit_lsi

        vocabulary = [f"genres:tag{j}" for j in range(matrix.shape[1])]
        model = fit_lsi(matrix, vocabulary, k, weighting="binary", solver=method, seed=seed)
        return model.singular_values, model.components
    from sklearn.decomposition import TruncatedSVD

    svd = TruncatedSVD(k, algorithm=method, random_state=seed).fit(matrix)
    return svd.singular_values_, svd.components_


def fit_job(job: dict) -> dict:
    """Child: build the matrix, fit one method; time, memory, singular values and the sample's LSI vectors."""
    _import_all()
    matrix = synthetic_matrix(job["tracks"], job["tags"], job["seed"], job["tags_per_track"])
    gc.collect()
    _release_free_memory()
    reset = _reset_peak()
    before = _status(("VmRSS", "VmHWM"))
    started = time.perf_counter()
    values, components = _fit(job["method"], matrix, job["k"], job["seed"])
    seconds = time.perf_counter() - started
    peak = _status(("VmHWM",))["VmHWM"]
    vectors = np.asarray(matrix[sample_rows(job["tracks"], job["sample"], job["seed"])] @ components.T)
    return {
        "seconds": seconds,
        "rss_before": before["VmRSS"] if reset else before["VmHWM"],
        "peak": peak,
        "reset": reset,
        "values": np.asarray(values, np.float64),
        "vectors": vectors.astype(np.float64),
    }


def grid_job(job: dict) -> dict:
    """Child: one gram fit at the largest k + truncate per grid point, against a separate gram fit per point."""
    _import_all()
    from msd_triplet.lsi import fit_lsi

    matrix = synthetic_matrix(job["tracks"], job["tags"], job["seed"], job["tags_per_track"])
    vocabulary = [f"genres:tag{j}" for j in range(matrix.shape[1])]
    grid = job["grid"]
    started = time.perf_counter()
    full = fit_lsi(matrix, vocabulary, max(grid), solver="gram")
    truncated = [full.truncate(k) for k in grid]
    one_fit = time.perf_counter() - started
    separate, worst = 0.0, 0.0
    for k, prefix in zip(grid, truncated):
        started = time.perf_counter()
        model = fit_lsi(matrix, vocabulary, k, solver="gram")
        separate += time.perf_counter() - started
        worst = max(worst, float(np.max(np.abs(model.components - prefix.components))))
    return {"one_fit": one_fit, "separate": separate, "max_component_diff": worst}


# --------------------------------------------------------------------------- accuracy


def cosine_error(vectors: np.ndarray, reference: np.ndarray, quantile: float = 1.0) -> float:
    """|cosine(vectors) - cosine(reference)| over all pairs of sample tracks: its max, or another quantile."""
    from msd_triplet.lsi import cosine_similarity

    error = np.abs(cosine_similarity(vectors) - cosine_similarity(reference))
    return float(np.max(error) if quantile >= 1.0 else np.quantile(error[np.triu_indices(len(error), 1)], quantile))


def sign_check(reference: np.ndarray, seed: int) -> float:
    """Cosine change when random components of ``reference`` flip sign (should be rounding only)."""
    signs = np.random.default_rng([seed, 2]).choice([-1.0, 1.0], reference.shape[1])
    return cosine_error(reference * signs, reference)


def value_error(values: np.ndarray, reference: np.ndarray) -> float:
    """Largest relative error of the singular values."""
    return float(np.max(np.abs(values - reference) / reference))


# --------------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    import scipy
    import sklearn
    from threadpoolctl import threadpool_info

    blas = next(
        (
            f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)"
            for i in threadpool_info()
            if i["user_api"] == "blas"
        ),
        "unknown",
    )
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy BLAS": blas,
    }


def size_name(size: tuple[int, int]) -> str:
    return f"{size[0]:,} x {size[1]:,}"


def interpolated_total(times: dict[int, float], grid: list[int]) -> float | None:
    """Sum over ``grid`` of fit times interpolated linearly in k from measured ``times``; None if not covered."""
    if not times or min(times) > min(grid) or max(times) < max(grid):
        return None
    ks = sorted(times)
    return float(np.sum(np.interp(grid, ks, [times[k] for k in ks])))


# --------------------------------------------------------------------------- main


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    try:
        sizes = tuple(tuple(int(v) for v in part.lower().split("x")) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(len(s) != 2 or min(s) < 2 for s in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: expected TRACKSxTAGS[,TRACKSxTAGS...], e.g. 143587x1305")
    return sizes


def parse_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: values must be positive")
    return values


def parse_methods(text: str) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in text.split(","))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return methods


def parse_tags(text: str) -> tuple[int, float, int]:
    try:
        low, mean, high = text.split(",")
        spec = (int(low), float(mean), int(high))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MIN,MEAN,MAX, e.g. 3,5,8") from None
    if not 1 <= spec[0] <= spec[1] <= spec[2]:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= MIN <= MEAN <= MAX")
    return spec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--sizes",
        type=parse_sizes,
        default=None,
        help="matrices as TRACKSxTAGS, comma-separated (default 504502x1412,143587x1305)",
    )
    ap.add_argument("--ks", type=parse_ints, default=None, help="topics, comma-separated (default 10,100,400)")
    ap.add_argument(
        "--methods",
        type=parse_methods,
        default=METHODS,
        help=f"contenders, comma-separated (default {','.join(METHODS)}); the accuracy columns need {REFERENCE}",
    )
    ap.add_argument(
        "--tags-per-track",
        type=parse_tags,
        default=(3, 5.0, 8),
        help="MIN,MEAN,MAX distinct tags per synthetic track (default 3,5,8)",
    )
    ap.add_argument("--sample", type=int, default=2_000, help="tracks in the cosine comparison (default 2000)")
    ap.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds a child may take (build + fit) before it is stopped and skipped (default 600)",
    )
    ap.add_argument("--no-grid", action="store_true", help="skip the k-grid (truncate vs separate fits) part")
    ap.add_argument("--seed", type=int, default=0, help="matrix, sample and solver seed (default 0)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: one 20,000 x 1,000 matrix, k 10 and 100 (unless --sizes / --ks are given)",
    )
    args = ap.parse_args(argv)
    args.sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    args.ks = args.ks or (QUICK_KS if args.quick else KS)
    total_start = time.perf_counter()
    run(args)
    print(f"\ntotal runtime {time.perf_counter() - total_start:.0f} s")
    return 0


def run(args) -> None:
    """All measurements and their tables."""
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions().items()))
    print(
        f"cpus: {len(os.sched_getaffinity(0))} usable of {os.cpu_count()} ({cpu_model()}); seed {args.seed}; "
        f"tags per track min/mean/max {args.tags_per_track[0]}/{args.tags_per_track[1]:g}/{args.tags_per_track[2]}"
    )
    for size in args.sizes:
        started = time.perf_counter()
        matrix = synthetic_matrix(*size, args.seed, args.tags_per_track)
        built = time.perf_counter() - started
        counts = np.asarray(matrix.sum(axis=0)).ravel()
        mib = (matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes) / 2**20
        print(
            f"matrix {size_name(size)}: {matrix.nnz:,} ones ({matrix.nnz / size[0]:.2f} tags per track, "
            f"density {matrix.nnz / size[0] / size[1]:.2%}), tags used {np.count_nonzero(counts):,}, "
            f"most popular tag on {counts.max() / size[0]:.1%} of tracks; float64 csr {mib:,.0f} MiB; "
            f"built in {built:.1f} s"
        )
        del matrix

    rows, ratios, notes, flips = [], [], [], []
    foreign = 0.0
    svds_times: dict[tuple[int, int], dict[int, float]] = {}
    methods = [m for m in METHODS if m in args.methods]
    for size in args.sizes:
        for k in args.ks:
            if k >= min(size):
                notes.append(f"{size_name(size)} k={k}: skipped, k must be below {min(size)}")
                continue
            results = {}
            for method in methods:
                job = {
                    "tracks": size[0],
                    "tags": size[1],
                    "k": k,
                    "method": method,
                    "seed": args.seed,
                    "sample": args.sample,
                    "tags_per_track": args.tags_per_track,
                }
                print(f"  fitting {method:<10} k={k:<4} on {size_name(size)} ...", end="", flush=True)
                busy, own, started = machine_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
                result = in_child(fit_job, job, args.timeout)
                wall = time.perf_counter() - started
                others = max((machine_cpu_seconds() - busy) - (own_cpu_seconds() - own), 0.0)
                foreign += others
                if result is None:
                    print(f" stopped after {args.timeout:.0f} s")
                    notes.append(
                        f"{size_name(size)} k={k} {method}: skipped, still running after the "
                        f"{args.timeout:.0f} s timeout (build + fit)"
                    )
                    continue
                print(
                    f" {result['seconds']:.1f} s fit, {wall:.1f} s in all; other processes used {others:.1f} "
                    f"CPU s meanwhile"
                )
                result["others"] = others
                if not result["reset"]:
                    notes.append(f"{method}: peak RSS mark could not be reset; fit peak is above VmHWM after build")
                results[method] = result
                if method == "svds":
                    svds_times.setdefault(size, {})[k] = result["seconds"]
            rows += table_rows(size, k, methods, results, args.seed, flips)
            ratios += ratio_rows(size, k, results)

    print("\n## Fit time, memory and accuracy (fresh child process per fit)\n")
    print(
        markdown_table(
            [
                "matrix",
                "k",
                "method",
                "seconds",
                "RSS before fit MiB",
                "fit peak MiB",
                f"sv max rel error vs {REFERENCE}",
                f"cosine max abs error vs {REFERENCE}",
                "cosine abs error, 99.9th pct of pairs",
                "other processes' CPU s",
            ],
            rows,
        )
    )
    print(
        "\nseconds: wall time of the fit call; RSS before fit: interpreter, libraries and the float64 csr "
        "matrix; fit peak: peak RSS during the fit minus RSS before it; errors: singular values, and the "
        f"{args.sample:,} x {args.sample:,} cosine matrix of sampled tracks' float64 LSI vectors; other "
        "processes' CPU s: CPU time used by the rest of the machine while the child ran (ideally ~0; "
        "a large value means the time is inflated)"
    )
    print(f"other processes used {foreign:.1f} CPU s during the fits above (ideally ~0)")
    if flips:
        print(
            f"sign check: flipping random component signs of the {REFERENCE} vectors changes their cosines by at "
            f"most {max(flips):.1e} (over all matrices and k)"
        )
    if ratios:
        print("\n## Ours / scikit-learn randomized (below 1: ours is faster / smaller)\n")
        print(markdown_table(["matrix", "k", "gram time", "svds time", "gram fit peak", "svds fit peak"], ratios))
    if not args.no_grid:
        k_grid(args, svds_times)
    if notes:
        print("\nnotes:")
        for note in dict.fromkeys(notes):
            print(f"- {note}")


def table_rows(size, k, methods, results, seed, flips) -> list[list]:
    """Main-table rows of one matrix and k; accuracy against the reference where it ran (sign check into ``flips``)."""
    reference = results.get(REFERENCE)
    if reference is not None:
        flips.append(sign_check(reference["vectors"], seed))
    rows = []
    for method in methods:
        if method not in results:
            rows.append([size_name(size), k, method, "skipped", "", "", "", "", "", ""])
            continue
        r = results[method]
        if reference is None:
            accuracy = ["n/a", "n/a", "n/a"]
        else:
            accuracy = [
                f"{value_error(r['values'], reference['values']):.1e}",
                f"{cosine_error(r['vectors'], reference['vectors']):.1e}",
                f"{cosine_error(r['vectors'], reference['vectors'], 0.999):.1e}",
            ]
        rows.append(
            [
                size_name(size),
                k,
                method,
                f"{r['seconds']:.2f}",
                r["rss_before"],
                r["peak"] - r["rss_before"],
                *accuracy,
                r["others"],
            ]
        )
    return rows


def ratio_rows(size, k, results) -> list[list]:
    """Ours / randomized for time and fit peak memory, where both ran."""
    base = results.get("randomized")
    if base is None or not ({"gram", "svds"} & set(results)):
        return []
    base_peak = max(base["peak"] - base["rss_before"], 1e-9)

    def ratio(method, value):
        return f"{value(results[method]):.3f}x" if method in results else ""

    def seconds(r):
        return r["seconds"] / base["seconds"]

    def peak(r):
        return (r["peak"] - r["rss_before"]) / base_peak

    return [
        [size_name(size), k, ratio("gram", seconds), ratio("svds", seconds), ratio("gram", peak), ratio("svds", peak)]
    ]


def k_grid(args, svds_times) -> None:
    """One fit at the largest k + truncate per grid point against a separate fit per point, first matrix."""
    size = args.sizes[0]
    top = max(k for k in args.ks if k < min(size))
    grid = list(range(GRID_STEP, top + 1, GRID_STEP)) or [top]
    job = {"tracks": size[0], "tags": size[1], "grid": grid, "seed": args.seed, "tags_per_track": args.tags_per_track}
    print(
        f"\n## k grid on {size_name(size)}: k = {grid[0]}, {grid[0] + GRID_STEP}, ..., {grid[-1]} "
        f"({len(grid)} points)\n"
    )
    busy, own, started = machine_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    result = in_child(grid_job, job, args.timeout)
    others = max((machine_cpu_seconds() - busy) - (own_cpu_seconds() - own), 0.0)
    print(f"(other processes used {others:.1f} CPU s of the {time.perf_counter() - started:.1f} s of this part)\n")
    if result is None:
        print(f"skipped: still running after the {args.timeout:.0f} s timeout")
        return
    rows = [
        [
            "gram",
            "timed",
            f"{result['one_fit']:.2f}",
            f"{result['separate']:.2f}",
            f"{result['separate'] / result['one_fit']:.1f}x",
        ]
    ]
    svds = interpolated_total(svds_times.get(size, {}), grid)
    one_svds = svds_times.get(size, {}).get(grid[-1])
    if svds is not None and one_svds is not None:
        rows.append(
            [
                "svds",
                "estimated from the main table (interpolated in k)",
                f"{one_svds:.2f}",
                f"{svds:.2f}",
                f"{svds / one_svds:.1f}x",
            ]
        )
    print(
        markdown_table(
            [
                "solver",
                "separate fits",
                f"one fit at k={grid[-1]} + {len(grid)} truncates, s",
                f"{len(grid)} separate fits, s",
                "ratio separate / one",
            ],
            rows,
        )
    )
    print(
        f"\nlargest |component difference| between truncate(k) and a separate gram fit at k: "
        f"{result['max_component_diff']:.1e} (after sign fixing; ties of near-equal singular values could "
        f"rotate components, and would show here)"
    )


if __name__ == "__main__":
    sys.exit(main())
