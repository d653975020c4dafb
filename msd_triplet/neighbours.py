"""Exact Euclidean k nearest neighbours in chunks, for retrieval evaluation (SPEC section 8).

:func:`nearest_neighbours` finds, for every row of an embedding matrix, its
``k`` nearest *other* rows, nearest first, ties broken by the lower index;
memory stays bounded at 150,000 rows (see its Notes). Used by
:mod:`msd_triplet.evaluation`, which re-exports it.
"""

from __future__ import annotations

import contextlib
import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numpy as np

from msd_triplet.errors import ArgumentError

__all__ = ["nearest_neighbours"]

_NO_KEY = np.uint64(2**64 - 1)  # fills unused candidate slots; above every real key
_TILE_COLUMNS = 4_096  # columns per distance tile (at least 2k)


def nearest_neighbours(
    embeddings: np.ndarray, k: int, *, chunk_size: int = 4_096, threads: Optional[int] = None
) -> np.ndarray:
    """Exact Euclidean k nearest neighbours of every row among the other rows.

    Parameters
    ----------
    embeddings : float [N, d], finite; ranked in float32
    k : 1 <= k <= N - 1
    chunk_size : query rows per step (fewer if that gives each thread at least 4 steps)
    threads : worker threads, each on its own chunks of queries with a single-threaded
        BLAS; default: the usable CPUs

    Returns
    -------
    int64 [N, k]: row i holds the indices of the k rows nearest to row i (never i itself),
    nearest first; equal distances are ordered by lower index.

    Notes
    -----
    A chunk of queries q meets the columns (all rows, in a fixed random order)
    in tiles of 4,096; each tile is one float32 GEMM giving ‖x‖² − 2 q·x, which
    ranks like the squared distance (‖q‖² is constant per query). Rows whose
    distances differ by less than float32 rounding may therefore swap places
    relative to a float64 computation. No query row is ever sorted whole: the
    first tile yields a per-query limit that at least k distances reach (from
    the minima of column groups), later tiles keep only the distances at or
    below the limit, and the limit tightens to the k-th smallest kept whenever
    a query has collected 2k: about k·(1 + ln(N / 4096)) candidates per query
    are ranked in all, by a key (float32 bits, index), which also breaks ties.

    Memory beyond the input and the [N, k] result: a float32 copy of the
    embeddings (N·d·4 bytes) and, per thread, about chunk_size × (5 · 4096 +
    40·k) bytes: 532 MiB in all (measured, result included) for N = 143,587,
    d = 256, k = 100, chunk_size = 4096 and 2 threads, in 69 s on 2 cores
    (scikit-learn brute force: 135 s, 237 MiB; ``benchmarks/evaluate.py``).
    """
    x = _check_embeddings(embeddings)
    n = x.shape[0]
    k = _check_int("k", k, 1, n - 1, f"1 <= k <= N - 1 = {n - 1} (N = {n} rows)")
    chunk_size = _check_int("chunk_size", chunk_size, 1, None, "a positive integer")
    threads = _check_int("threads", _usable_cpus() if threads is None else threads, 1, None, "a positive integer")
    # Columns in a fixed random order, so that the first tile is a fair sample of all.
    perm = np.random.default_rng(0).permutation(n)
    where = np.empty(n, np.int64)
    where[perm] = np.arange(n)  # row i is column where[i] of the permuted matrix
    xp = x[perm]
    sq = np.einsum("ij,ij->i", xp, xp)
    if not np.isfinite(sq).all():
        raise ArgumentError("embeddings: squared norms overflow float32; scale the embeddings down")
    width = max(_TILE_COLUMNS, 2 * k)
    tiles = [(b, min(b + width, n)) for b in range(0, n, width)]
    out = np.empty((n, k), np.int64)
    # at least 4 chunks per thread where possible, so that no thread idles long at the end
    chunk_size = min(chunk_size, -(-n // (4 * threads)))
    starts = range(0, n, chunk_size)

    def run(q0: int) -> None:
        q1 = min(q0 + chunk_size, n)
        out[q0:q1] = _chunk_neighbours(xp, sq, perm, where[q0:q1], tiles, k)

    workers = min(threads, len(starts))
    if workers == 1:
        for q0 in starts:
            run(q0)
        return out
    # One BLAS thread per worker: the GEMMs and the selection (numpy, without the GIL)
    # of different chunks then run side by side instead of one after the other.
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn

        single_blas = threadpool_limits(limits=1, user_api="blas")
    except ImportError:
        single_blas = contextlib.nullcontext()
    with single_blas, ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, starts))
    return out


def _chunk_neighbours(
    xp: np.ndarray, sq: np.ndarray, perm: np.ndarray, cols: np.ndarray, tiles: list[tuple[int, int]], k: int
) -> np.ndarray:
    """Top k of the queries at permuted columns ``cols`` [c]: int64 [c, k] original indices."""
    c = len(cols)
    q = -2.0 * xp[cols]  # q @ x.T + ‖x‖² ranks like the squared distance
    rows = np.arange(c)
    most = max(b1 - b0 for b0, b1 in tiles)
    dist_buffer, mask_buffer = np.empty(c * most, np.float32), np.empty(c * most, bool)
    keys, filled, limit = None, np.zeros(c, np.int64), None  # candidate keys, slots used, limit [c, 1]
    for b0, b1 in tiles:
        w = b1 - b0
        dist = dist_buffer[: c * w].reshape(c, w)
        np.matmul(q, xp[b0:b1].T, out=dist)
        dist += sq[b0:b1]
        mine = (cols >= b0) & (cols < b1)
        dist[rows[mine], cols[mine] - b0] = np.inf  # a query is not its own neighbour
        mask = mask_buffer[: c * w].reshape(c, w)
        if limit is None:
            # First tile: split it into m >= k groups of columns; the k-th smallest of the
            # group minima has >= k values at or below it, so the top k of the tile are
            # among those values (little more than k of them when m is a few times k).
            m = min(w, 4 * k)
            minima = dist[:, : w // m * m].reshape(c, w // m, m).min(axis=1)
            bound = np.partition(minima, k - 1, axis=1)[:, k - 1 : k]
            np.less_equal(dist, bound, out=mask)
        else:
            np.less_equal(dist, limit, out=mask)
        keys, filled = _gather_keys(dist, mask, perm[b0:b1], keys, filled)
        if limit is None or filled.max() >= 2 * k:
            # Move each row's k smallest keys to its first k slots; the k-th value is the new,
            # tighter limit. The keys left behind are worse than all k, so they never return.
            keys.partition(k - 1, axis=1)
            keys = np.ascontiguousarray(keys[:, : 3 * k])  # room for the next tiles' hits
            filled[:] = k
            limit = _key_values(keys[:, k - 1])[:, None]
    keys = np.partition(keys, k - 1, axis=1)[:, :k] if keys.shape[1] > k else keys
    keys.sort(axis=1)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _gather_keys(
    dist: np.ndarray, mask: np.ndarray, index: np.ndarray, keys: Optional[np.ndarray], filled: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Append the keys of ``dist[mask]`` (column j has index ``index[j]``) to each row's slots.

    ``keys`` : uint64 [c, capacity] or None, ``filled`` : int64 [c] slots used per row.
    Returns the (possibly grown) keys and the new fill counts.
    """
    c, w = dist.shape
    flat = np.flatnonzero(mask)  # row-major, so grouped by row
    r = flat // w
    key = _sort_keys(dist.reshape(-1)[flat], index[flat - r * w])
    count = np.bincount(r, minlength=c)
    total = filled + count
    need = int(total.max(initial=0))
    if keys is None or need > keys.shape[1]:
        grown = np.full((c, need + need // 2), _NO_KEY)
        if keys is not None:
            grown[:, : keys.shape[1]] = keys
        keys = grown
    # the j-th hit of row i goes to slot filled[i] + j
    base = np.arange(c) * keys.shape[1] + filled - (np.cumsum(count) - count)
    keys.reshape(-1)[np.repeat(base, count) + np.arange(len(flat))] = key
    return keys, total


def _sort_keys(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """uint64 keys ordered like (float32 value, index): monotone value bits, then the index (< 2**32)."""
    bits = values.view(np.int32)
    bits = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).view(np.uint32) ^ np.uint32(0x80000000)
    return (bits.astype(np.uint64) << np.uint64(32)) | index.astype(np.uint64)


def _key_values(keys: np.ndarray) -> np.ndarray:
    """The float32 values of :func:`_sort_keys` keys (the bit map is its own inverse)."""
    bits = ((keys >> np.uint64(32)).astype(np.uint32) ^ np.uint32(0x80000000)).view(np.int32)
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).view(np.float32)


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _check_embeddings(embeddings: Any) -> np.ndarray:
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ArgumentError(f"embeddings: expected a 2-D array [tracks, dims], got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise ArgumentError(f"embeddings: expected real numbers, got dtype {x.dtype}")
    if x.shape[0] >= 2**32:
        raise ArgumentError(f"embeddings: at most 2**32 - 1 rows are supported, got {x.shape[0]}")
    with np.errstate(over="ignore"):  # too large for float32: reported as not finite below
        x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ArgumentError(
            f"embeddings: {int(bad.sum())} value(s) not finite (in float32), "
            f"e.g. row {i} column {j} = {np.asarray(embeddings)[i, j]}; all must be finite"
        )
    return x


def _check_int(name: str, value: Any, low: int, high: Optional[int], allowed: str) -> int:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        raise ArgumentError(f"{name} = {value!r}: allowed is {allowed}")
    return int(value)
