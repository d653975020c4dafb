"""Retrieval evaluation: embeddings → exact k nearest neighbours → precision@k per facet (SPEC section 8).

For each query track, its ``k`` nearest *other* tracks of the same split
(Euclidean distance between embeddings) are retrieved; precision@k is the
share of them that are relevant, averaged over queries. Relevance depends on
the facet:

* genre, style, mood, theme (from the ``genres``, ``styles``, ``moods``,
  ``themes`` tag matrices): ``"identical"`` (default) = the same set of tags in
  that facet; ``"overlap"`` = at least one shared tag;
* artist, album: the same id.

A track without a label in a facet (no tag of the set, empty id) is not a
query of that facet and is relevant to no one; it still takes a neighbour
slot. Every figure comes with its chance level: the expected precision of a
random ranking, mean over queries of (#other relevant tracks) / (N − 1).

Example
-------
>>> prepared = load_prepared(config)                                      # doctest: +SKIP
>>> rows = split_rows(prepared, "test")                                   # doctest: +SKIP
>>> results = evaluate_embeddings(embed(rows), facets_from_prepared(prepared, rows))  # doctest: +SKIP
>>> print(format_results(results))                                        # doctest: +SKIP
| facet | P@100 | chance | queries |
...
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    from msd_triplet.tagsets import PreparedData

__all__ = [
    "FACET_MATCHES", "FACET_TAG_SETS", "Facet", "chance_precision", "evaluate_embeddings",
    "facets_from_prepared", "format_results", "nearest_neighbours", "precision_at_k", "split_rows",
]

#: facet name → tag set it is read from
FACET_TAG_SETS = {"genre": "genres", "style": "styles", "mood": "moods", "theme": "themes"}
#: facet name → column of ``PreparedData.tracks``
FACET_ID_COLUMNS = {"artist": "artist_id", "album": "album_id"}
FACET_MATCHES = ("identical", "overlap")

_NO_KEY = np.uint64(2 ** 64 - 1)  # fills unused candidate slots; above every real key
_QUERY_BLOCK = 4_096  # queries per step when looking up relevance
_TILE_COLUMNS = 4_096  # columns per distance tile (at least 2k)
_CHANCE_WORDS = 2 ** 22  # uint64 words gathered per batch for the overlap chance level


# ---------------------------------------------------------------------------
# exact k nearest neighbours


def nearest_neighbours(embeddings: np.ndarray, k: int, *, chunk_size: int = 4_096,
                       threads: Optional[int] = None) -> np.ndarray:
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
    threads = _check_int("threads", _usable_cpus() if threads is None else threads, 1, None,
                         "a positive integer")
    # Columns in a fixed random order, so that the first tile is a fair sample of all.
    perm = np.random.default_rng(0).permutation(n)
    where = np.empty(n, np.int64)
    where[perm] = np.arange(n)  # row i is column where[i] of the permuted matrix
    xp = x[perm]
    sq = np.einsum("ij,ij->i", xp, xp)
    if not np.isfinite(sq).all():
        raise ValueError("embeddings: squared norms overflow float32; scale the embeddings down")
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


def _chunk_neighbours(xp: np.ndarray, sq: np.ndarray, perm: np.ndarray, cols: np.ndarray,
                      tiles: list[tuple[int, int]], k: int) -> np.ndarray:
    """Top k of the queries at permuted columns ``cols`` [c]: int64 [c, k] original indices."""
    c = len(cols)
    q = -2.0 * xp[cols]  # q @ x.T + ‖x‖² ranks like the squared distance
    rows = np.arange(c)
    most = max(b1 - b0 for b0, b1 in tiles)
    dist_buffer, mask_buffer = np.empty(c * most, np.float32), np.empty(c * most, bool)
    keys, filled, limit = None, np.zeros(c, np.int64), None  # candidate keys, slots used, limit [c, 1]
    for b0, b1 in tiles:
        w = b1 - b0
        dist = dist_buffer[:c * w].reshape(c, w)
        np.matmul(q, xp[b0:b1].T, out=dist)
        dist += sq[b0:b1]
        mine = (cols >= b0) & (cols < b1)
        dist[rows[mine], cols[mine] - b0] = np.inf  # a query is not its own neighbour
        mask = mask_buffer[:c * w].reshape(c, w)
        if limit is None:
            # First tile: split it into m >= k groups of columns; the k-th smallest of the
            # group minima has >= k values at or below it, so the top k of the tile are
            # among those values (little more than k of them when m is a few times k).
            m = min(w, 4 * k)
            minima = dist[:, :w // m * m].reshape(c, w // m, m).min(axis=1)
            bound = np.partition(minima, k - 1, axis=1)[:, k - 1:k]
            np.less_equal(dist, bound, out=mask)
        else:
            np.less_equal(dist, limit, out=mask)
        keys, filled = _gather_keys(dist, mask, perm[b0:b1], keys, filled)
        if limit is None or filled.max() >= 2 * k:
            # Move each row's k smallest keys to its first k slots; the k-th value is the new,
            # tighter limit. The keys left behind are worse than all k, so they never return.
            keys.partition(k - 1, axis=1)
            keys = np.ascontiguousarray(keys[:, :3 * k])  # room for the next tiles' hits
            filled[:] = k
            limit = _key_values(keys[:, k - 1])[:, None]
    keys = np.partition(keys, k - 1, axis=1)[:, :k] if keys.shape[1] > k else keys
    keys.sort(axis=1)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _gather_keys(dist: np.ndarray, mask: np.ndarray, index: np.ndarray, keys: Optional[np.ndarray],
                 filled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
            grown[:, :keys.shape[1]] = keys
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
        raise ValueError(f"embeddings: expected a 2-D array [tracks, dims], got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"embeddings: expected real numbers, got dtype {x.dtype}")
    if x.shape[0] >= 2 ** 32:
        raise ValueError(f"embeddings: at most 2**32 - 1 rows are supported, got {x.shape[0]}")
    with np.errstate(over="ignore"):  # too large for float32: reported as not finite below
        x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"embeddings: {int(bad.sum())} value(s) not finite (in float32), "
                         f"e.g. row {i} column {j} = {np.asarray(embeddings)[i, j]}; all must be finite")
    return x


def _check_int(name: str, value: Any, low: int, high: Optional[int], allowed: str) -> int:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        raise ValueError(f"{name} = {value!r}: allowed is {allowed}")
    return int(value)


# ---------------------------------------------------------------------------
# facets


@dataclass(frozen=True, eq=False)
class Facet:
    """Which tracks are relevant to which, for one facet over N tracks.

    Exactly one of:

    groups : int64 [N]; relevant = same group id; -1 = unlabelled (relevant to no one)
    tags : bool scipy.sparse.csr_matrix [N, tags]; relevant = at least one shared tag;
        a row without tags is unlabelled

    Build with :meth:`from_ids` or :meth:`from_tags`.
    """

    name: str
    groups: Optional[np.ndarray] = None
    tags: Optional[sp.csr_matrix] = None

    def __post_init__(self) -> None:
        if (self.groups is None) == (self.tags is None):
            raise ValueError(f"facet {self.name!r}: give exactly one of groups and tags")

    @classmethod
    def from_ids(cls, name: str, ids: Any) -> "Facet":
        """Relevant = the same id; missing ids (None, NaN, "") are unlabelled."""
        ids = pd.Series(np.asarray(ids, dtype=object))
        ids = ids.where(ids.astype(str).str.len() > 0)  # "" counts as missing
        groups, _ = pd.factorize(ids, use_na_sentinel=True)
        return cls(name, groups=groups.astype(np.int64))

    @classmethod
    def from_tags(cls, name: str, matrix: Any, match: str = "identical") -> "Facet":
        """From a track × tag matrix (nonzero = has the tag) and ``match`` ("identical" or "overlap")."""
        if match not in FACET_MATCHES:
            raise ValueError(f"facet match {match!r}: allowed are {', '.join(FACET_MATCHES)}")
        tags = sp.csr_matrix(matrix, dtype=bool)
        tags.eliminate_zeros()
        tags.sum_duplicates()
        tags.sort_indices()
        if match == "overlap":
            return cls(name, tags=tags)
        return cls(name, groups=_pattern_ids(tags))

    @property
    def size(self) -> int:
        """Number of tracks N."""
        return len(self.groups) if self.groups is not None else self.tags.shape[0]

    @property
    def labelled(self) -> np.ndarray:
        """bool [N]: the tracks that are queries of this facet."""
        return self.groups >= 0 if self.groups is not None else np.diff(self.tags.indptr) > 0

    def relevant(self, queries: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
        """bool [q, k]: whether ``neighbours[i, j]`` is relevant to ``queries[i]``."""
        if self.groups is not None:
            g = self.groups[queries][:, None]
            return (self.groups[neighbours] == g) & (g >= 0)
        return (self._bits[queries][:, None, :] & self._bits[neighbours]).any(axis=2)

    @functools.cached_property
    def _bits(self) -> np.ndarray:
        """uint64 [N, ceil(tags / 64)]: row i has bit j set iff track i has tag j."""
        tags = self.tags
        bits = np.zeros((tags.shape[0], max(1, -(-tags.shape[1] // 64))), np.uint64)
        rows = np.repeat(np.arange(tags.shape[0]), np.diff(tags.indptr))
        np.bitwise_or.at(bits, (rows, tags.indices // 64), np.uint64(1) << (tags.indices % 64).astype(np.uint64))
        return bits


def _pattern_ids(tags: sp.csr_matrix) -> np.ndarray:
    """int64 [N]: one id per distinct row of a (sorted, canonical) csr matrix; -1 for empty rows."""
    starts, ends = tags.indptr[:-1], tags.indptr[1:]
    patterns = [tags.indices[a:b].tobytes() if b > a else None for a, b in zip(starts, ends)]
    ids, _ = pd.factorize(pd.Series(patterns, dtype=object), use_na_sentinel=True)
    return ids.astype(np.int64)


def split_rows(prepared: PreparedData, split: str) -> np.ndarray:
    """int64 positions in ``prepared.tracks`` of the tracks of ``split`` (train, validation or test)."""
    rows = np.flatnonzero(prepared.tracks["split"].to_numpy() == split)
    if not len(rows):
        found = sorted(set(prepared.tracks["split"]))
        raise ValueError(f"split {split!r}: no track has it; the prepared data has {found}")
    return rows


def facets_from_prepared(prepared: PreparedData, rows: Any, match: str = "identical") -> dict[str, Facet]:
    """Facets genre, style, mood, theme (those whose tag set was prepared), artist and album.

    Parameters
    ----------
    prepared : :class:`~msd_triplet.tagsets.PreparedData`
    rows : int [N] positions in ``prepared.tracks`` (e.g. :func:`split_rows`), in the
        order of the embeddings that will be evaluated
    match : "identical" (same tag set) or "overlap" (at least one shared tag)
    """
    if match not in FACET_MATCHES:
        raise ValueError(f"facet match {match!r}: allowed are {', '.join(FACET_MATCHES)}")
    rows = np.asarray(rows)
    total = len(prepared.tracks)
    if rows.ndim != 1 or (rows.size and (rows.dtype.kind not in "iu" or rows.min() < 0 or rows.max() >= total)):
        raise ValueError(f"rows: expected a 1-D array of integer positions in 0..{total - 1}, "
                         f"got shape {rows.shape} dtype {rows.dtype}")
    facets = {}
    for name, tagset in FACET_TAG_SETS.items():
        if tagset in prepared.matrices:
            facets[name] = Facet.from_tags(name, prepared.matrices[tagset].matrix[rows], match)
    for name, column in FACET_ID_COLUMNS.items():
        facets[name] = Facet.from_ids(name, prepared.tracks[column].to_numpy()[rows])
    return facets


# ---------------------------------------------------------------------------
# precision and chance


def precision_at_k(neighbours: np.ndarray, facet: Facet) -> float:
    """Mean over the labelled queries of the share of their k neighbours that are relevant.

    ``neighbours`` : int [N, k] as from :func:`nearest_neighbours`. NaN if no track is labelled.
    """
    neighbours = np.asarray(neighbours)
    if neighbours.ndim != 2 or neighbours.shape[0] != facet.size:
        raise ValueError(f"neighbours: expected shape [{facet.size}, k] (one row per track of facet "
                         f"{facet.name!r}), got {neighbours.shape}")
    queries = np.flatnonzero(facet.labelled)
    if not len(queries):
        return float("nan")
    hits = 0
    for i in range(0, len(queries), _QUERY_BLOCK):
        q = queries[i:i + _QUERY_BLOCK]
        hits += int(facet.relevant(q, neighbours[q]).sum())
    return float(hits / (len(queries) * neighbours.shape[1]))


def chance_precision(facet: Facet) -> float:
    """Expected precision of a random ranking: mean over labelled queries of #other relevant / (N − 1).

    For overlap facets: per distinct tag set, OR of its tags' track bitsets, in batches (never N × N).
    NaN if no track is labelled or N < 2.
    """
    n = facet.size
    labelled = facet.labelled
    if n < 2 or not labelled.any():
        return float("nan")
    if facet.groups is not None:
        size = np.bincount(facet.groups[labelled]).astype(np.float64)
        others = size * (size - 1)  # per group: its members × their other members
        return float(others.sum() / (labelled.sum() * (n - 1)))
    # overlap: for each distinct tag set, the tracks holding any of its tags = popcount of
    # the OR of its tags' track bitsets (N / 8 bytes each), in batches of bounded size
    tags = facet.tags
    by_tag = tags.T.tocsr()  # tag × track
    track_bits = np.zeros((tags.shape[1], -(-n // 64)), np.uint64)  # [tags, words]
    owner = np.repeat(np.arange(tags.shape[1]), np.diff(by_tag.indptr))
    np.bitwise_or.at(track_bits, (owner, by_tag.indices // 64), np.uint64(1) << (by_tag.indices % 64).astype(np.uint64))
    ids = _pattern_ids(tags)
    distinct, first = np.unique(ids[labelled], return_index=True)
    patterns = tags[np.flatnonzero(labelled)[first]]  # [P, tags], all rows non-empty
    counts = np.bincount(ids[labelled])[distinct].astype(np.float64)
    step = max(1, _CHANCE_WORDS // track_bits.shape[1])  # tag rows gathered per batch
    total, p0 = 0.0, 0
    while p0 < patterns.shape[0]:
        p1 = max(p0 + 1, int(np.searchsorted(patterns.indptr, patterns.indptr[p0] + step, "right")) - 1)
        sub = patterns[p0:p1]
        union = np.bitwise_or.reduceat(track_bits[sub.indices], sub.indptr[:-1], axis=0)
        reach = _popcount(union).astype(np.float64)  # tracks sharing a tag, the query itself included
        total += float(counts[p0:p1] @ (reach - 1.0))
        p0 = p1
    return float(total / (labelled.sum() * (n - 1)))


def _popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per row of uint64 [rows, words]."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(words).sum(axis=1, dtype=np.int64)
    return np.unpackbits(words.view(np.uint8), axis=1).sum(axis=1, dtype=np.int64)


def evaluate_embeddings(embeddings: np.ndarray, facets: Mapping[str, Facet], k: int = 100,
                        chunk_size: int = 4_096) -> dict[str, dict]:
    """Precision@k and chance per facet: ``{facet: {"precision", "chance", "queries", "k"}}``.

    ``embeddings`` : float [N, d], rows aligned with every facet. Values are plain
    Python floats and ints, ready for ``json.dump``.
    """
    for name, facet in facets.items():
        if facet.size != len(embeddings):
            raise ValueError(f"facet {name!r} has {facet.size} tracks, embeddings have {len(embeddings)} rows")
    neighbours = nearest_neighbours(embeddings, k, chunk_size=chunk_size)
    return {name: {"precision": precision_at_k(neighbours, facet), "chance": chance_precision(facet),
                   "queries": int(facet.labelled.sum()), "k": int(k)}
            for name, facet in facets.items()}


def format_results(results: Mapping[str, Mapping], extra_columns: Optional[Mapping[str, Mapping]] = None) -> str:
    """Markdown table: facet, P@k, any extra columns, chance, queries.

    ``extra_columns`` : {label: {facet: results entry or float}}, e.g. ``{"untrained": untrained_results}``;
    shown between P@k and chance (blank where a facet is missing).
    """
    extra = dict(extra_columns or {})
    k = next((r.get("k") for r in results.values() if isinstance(r, Mapping) and "k" in r), None)
    head = ["facet", f"P@{k}" if k else "P@k", *extra, "chance", "queries"]

    def cell(value) -> str:
        if isinstance(value, Mapping):
            value = value.get("precision")
        return "" if value is None else f"{float(value):.4f}"

    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, r in results.items():
        cells = [name, cell(r["precision"]), *(cell(col.get(name)) for col in extra.values()),
                 cell(r["chance"]), f"{int(r['queries']):,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
