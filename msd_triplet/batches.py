"""Related-batch composition: epoch orders whose batches hold groups of related tracks.

With random batches of 128 on the demo data about 1 % of the pairs in a batch
are positives, so many anchors have none and batch-hard mining has little to
work with. A *composed* order (P × K-style sampling over relatedness
neighbourhoods) guarantees positives instead:

1. :func:`related_lists` — once per run: for every track, its positives
   (relatedness >= threshold, another album, not itself), computed in row
   chunks (memory O(chunk × n)); at most ``max_related`` per track, a seeded
   random subset when there are more.
2. :func:`composed_order` — per epoch, a pure function of (seed, epoch): walk
   the tracks in a seeded random order; each track not used yet starts a group
   and pulls up to ``group_size − 1`` of its related tracks not used yet
   (chosen at random). A track whose related tracks are all used already
   joins the group of one of them (groups grow to at most 2 × group_size).
   Relatedness is symmetric, so every track of a group has at least one
   positive in it. Tracks left alone (no related track, or only ones in full
   groups) are *fillers*. Groups are packed whole
   into batches of ``batch_size``; each batch gets about the epoch's share of
   fillers (no batch is all fillers) and a gap no group fits is closed with
   more fillers; only when the fillers run out is a group split over two
   batches. The full batches are then shuffled, so nothing drifts over the
   epoch; the order is their concatenation, the short batch (if any) last,
   where ``drop_remainder`` drops it.
3. :func:`related_order_fn` — both together: ``epoch -> order``, for
   :func:`msd_triplet.features.feature_dataset` (``order=``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from msd_triplet.errors import ArgumentError
from msd_triplet.relatedness import check_kind, relatedness_block

__all__ = ["RelatedLists", "composed_order", "related_lists", "related_order_fn"]

_GROUP_LOOKAHEAD = 64  # groups looked at ahead for one that fits the room left in a batch


class RelatedLists(NamedTuple):
    """Positives of every track in CSR form: ``indices[indptr[i]:indptr[i + 1]]`` (ascending).

    ``counts[i]`` is the number of positives before the ``max_related`` cap.
    """

    indptr: np.ndarray  # int64 [n + 1]
    indices: np.ndarray  # int64 [indptr[-1]]
    counts: np.ndarray  # int64 [n]

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def of(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i] : self.indptr[i + 1]]


def _album_codes(albums, n: int) -> np.ndarray:
    albums = np.asarray(albums)
    if len(albums) != n:
        raise ArgumentError(f"albums has {len(albums)} entries, expected {n} (one per track)")
    return np.unique(albums, return_inverse=True)[1].ravel().astype(np.int64)


def _pair_keys(i: np.ndarray, j: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A pseudo-random uint64 per pair (i, j), from (seed, i, j) alone (splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        x = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + i.astype(np.uint64) * np.uint64(n) + j.astype(np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def related_lists(
    vectors: np.ndarray,
    kind: str,
    albums,
    positive_threshold: float,
    max_related: int = 64,
    chunk_size: int = 2048,
    seed: int = 0,
) -> RelatedLists:
    """For every track the indices of its positives, at most ``max_related`` of them.

    Parameters
    ----------
    vectors : float32 [n, m] per-track vectors of a relatedness source
        (:func:`msd_triplet.relatedness.source_vectors`)
    kind : its kind (:data:`msd_triplet.relatedness.KINDS`)
    albums : [n] album of each track (any labels); pairs of one album are never positives
    positive_threshold : relatedness >= this is a positive
    max_related : cap per track; above it a random subset is kept, chosen by a
        hash of (seed, i, j), so the result does not depend on ``chunk_size``
    chunk_size : rows of the relatedness matrix computed at once: peak memory
        about 5 bytes × chunk_size × n. Synthetic 122 k tracks × k = 20 (85
        positives per track): 1.4 GB peak RSS and 139 s on 2 cores that others
        were using too (45 s user, 43 s system time: page faults of the
        per-chunk arrays); composed_order then takes 0.3-1.0 s per epoch

    Returns
    -------
    :class:`RelatedLists`
    """
    check_kind(kind)
    vectors = np.asarray(vectors, np.float32)
    n = len(vectors)
    codes = _album_codes(albums, n)
    if max_related < 1 or chunk_size < 1:
        raise ArgumentError(f"max_related ({max_related}) and chunk_size ({chunk_size}) must be >= 1")
    kept_rows, kept_cols, counts = [], [], np.zeros(n, np.int64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        rows, cols = np.nonzero(relatedness_block(vectors[start:stop], vectors, kind) >= positive_threshold)
        rows += start
        other = codes[rows] != codes[cols]  # on the few related pairs only; also drops i = j
        rows, cols = rows[other], cols[other]
        chunk_counts = np.bincount(rows - start, minlength=stop - start)
        counts[start:stop] = chunk_counts
        if chunk_counts.max(initial=0) > max_related:
            # per row: the max_related pairs with the smallest keys; then back to ascending columns
            order = np.lexsort((_pair_keys(rows, cols, n, seed), rows))
            rows, cols = rows[order], cols[order]
            first = np.concatenate([[0], np.cumsum(chunk_counts)[:-1]])
            rank = np.arange(len(rows)) - np.repeat(first, chunk_counts)
            keep = rank < max_related
            rows, cols = rows[keep], cols[keep]
            order = np.lexsort((cols, rows))
            rows, cols = rows[order], cols[order]
        kept_rows.append(rows.astype(np.int64))
        kept_cols.append(cols.astype(np.int64))
    rows = np.concatenate(kept_rows) if kept_rows else np.zeros(0, np.int64)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64)
    indices = np.concatenate(kept_cols) if kept_cols else np.zeros(0, np.int64)
    return RelatedLists(indptr, indices, counts)


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    if int(seed) < 0 or int(epoch) < 0:
        raise ArgumentError(f"seed ({seed}) and epoch ({epoch}) must be >= 0")
    return np.random.default_rng([int(seed), int(epoch), 0x6261746368])  # "batch": its own stream


def _groups(related: RelatedLists, group_size: int, batch_size: int, rng: np.random.Generator) -> tuple[list, list]:
    """Walk the tracks in random order: (groups of >= 2 related tracks, fillers).

    A track whose related tracks are all used already joins the group of one
    of them (chosen at random) while that group has fewer than
    ``min(2 × group_size, batch_size)`` tracks: without this, larger groups
    strand more tracks (on the demo data, anchors with a positive in their
    batch fell from 63 % at g = 2 to 53 % at g = 8; with it, 69-70 % for
    every g, the share of tracks that have any positive).
    """
    n = len(related)
    limit = min(2 * group_size, batch_size)
    used = np.zeros(n, bool)
    group_of = np.full(n, -1, np.int64)
    groups: list[list[int]] = []
    fillers = []
    indptr, indices = related.indptr, related.indices
    for anchor in rng.permutation(n):
        if used[anchor]:
            continue
        used[anchor] = True
        related_tracks = indices[indptr[anchor] : indptr[anchor + 1]]
        candidates = related_tracks[~used[related_tracks]]
        if len(candidates):
            if len(candidates) > group_size - 1:
                candidates = rng.choice(candidates, group_size - 1, replace=False)
            used[candidates] = True
            group_of[anchor] = group_of[candidates] = len(groups)
            groups.append([int(anchor), *candidates.tolist()])
            continue
        joinable = np.unique(group_of[related_tracks])
        joinable = [k for k in joinable.tolist() if k >= 0 and len(groups[k]) < limit]
        if joinable:
            k = joinable[rng.integers(len(joinable))]
            groups[k].append(int(anchor))
            group_of[anchor] = k
        else:
            fillers.append(int(anchor))
    return [np.array(g, np.int64) for g in groups], fillers


def _take_group(pending: deque, room: int):
    """The first group among the next few that fits in ``room`` (removed from ``pending``), or None."""
    for k in range(min(len(pending), _GROUP_LOOKAHEAD)):
        if len(pending[k]) <= room:
            group = pending[k]
            del pending[k]
            return group
    return None


def _pack(groups: list, fillers: list, batch_size: int) -> list[np.ndarray]:
    """Batches of ``batch_size`` (only the last may be short): whole groups plus an even share of fillers.

    Each batch gets about the epoch's share of fillers (so no batch is all
    fillers), then groups that fit; a gap no group fits is closed with more
    fillers. Only when the fillers are used up and no group fits is a group
    split across two batches.
    """
    pending, spare = deque(groups), deque(fillers)
    total = sum(map(len, groups)) + len(fillers)
    share = len(fillers) / total if total else 0.0
    batches: list[np.ndarray] = []
    placed = placed_fillers = 0
    while pending or spare:
        parts, room = [], batch_size
        quota = min(len(spare), max(0, round(share * (placed + batch_size)) - placed_fillers))
        while room > quota and (group := _take_group(pending, room - quota)) is not None:
            parts.append(group)
            room -= len(group)
        take = min(room, len(spare))
        if take:
            parts.append(np.array([spare.popleft() for _ in range(take)], np.int64))
            room -= take
            placed_fillers += take
        while room and pending:
            group = _take_group(pending, room)
            if group is None:  # no filler left, no group fits: split one (rare, near the end)
                head = pending.popleft()
                group = head[:room]
                pending.appendleft(head[room:])
            parts.append(group)
            room -= len(group)
        batch = np.concatenate(parts).astype(np.int64)
        placed += len(batch)
        batches.append(batch)
    return batches


def composed_order(
    related: RelatedLists, albums, batch_size: int, group_size: int, seed: int, epoch: int
) -> np.ndarray:
    """One epoch's order of the n tracks: int64 [n], a permutation, a pure function of (seed, epoch).

    Consecutive runs of ``batch_size`` entries are batches (see the module
    docstring); a group (``group_size`` related tracks, grown to at most twice
    that by stranded tracks) never straddles two batches unless no filler is
    left. ``group_size`` 1 gives a plain seeded shuffle. ``albums`` [n] is
    checked for its length only: the related lists already exclude pairs of
    one album, so every member of a group has a positive of another album in
    it (two members may share an album; neither needs the other).
    """
    n = len(related)
    _album_codes(albums, n)
    if batch_size < 1 or not 1 <= group_size <= batch_size:
        raise ArgumentError(
            f"need batch_size >= 1 and 1 <= group_size <= batch_size, got batch_size "
            f"{batch_size}, group_size {group_size}"
        )
    rng = _epoch_rng(seed, epoch)
    if group_size == 1:
        return rng.permutation(n).astype(np.int64)
    groups, fillers = _groups(related, group_size, batch_size, rng)
    batches = _pack(groups, fillers, batch_size)
    short = batches.pop() if batches and len(batches[-1]) < batch_size else None
    parts = [batches[k] for k in rng.permutation(len(batches))] + ([short] if short is not None else [])
    order = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    assert len(order) == n  # every track exactly once (a permutation by construction)
    return order


def related_order_fn(
    vectors: np.ndarray,
    kind: str,
    albums,
    positive_threshold: float,
    batch_size: int,
    group_size: int,
    seed: int,
    max_related: int = 64,
) -> Callable[[int], np.ndarray]:
    """``epoch -> composed_order(...)`` with the related lists computed once (for ``feature_dataset(order=)``)."""
    related = related_lists(vectors, kind, albums, positive_threshold, max_related=max_related, seed=seed)
    albums = np.asarray(albums)
    if batch_size < 1 or not 1 <= group_size <= batch_size:
        raise ArgumentError(
            f"need batch_size >= 1 and 1 <= group_size <= batch_size, got batch_size "
            f"{batch_size}, group_size {group_size}"
        )

    def order(epoch: int) -> np.ndarray:
        return composed_order(related, albums, batch_size, group_size, seed, int(epoch))

    order.related = related  # for inspection: the lists the orders are built from
    return order
