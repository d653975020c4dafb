"""Artist-stratified, seeded train / validation / test splits (paper VI, SPEC 2.3).

No artist has tracks in two splits, so an evaluation never rewards recognising
an artist seen in training. Artists are visited in a seeded random order and
each whole artist goes to the split that is furthest below its target number
of tracks. Every split then ends within one artist of its target: the absolute
error of each split's share is at most the largest artist's share of all tracks
(the greedy pass never overshoots a split by more than one artist, and the
deficits sum to zero). With very few artists a split can end empty; by default
one artist is then moved into it.

Example
-------
>>> split_by_artist(["a", "a", "b", "c", "d"], (0.6, 0.2, 0.2), seed=0).shape
(5,)
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from msd_triplet.config import PAPER_SPLIT_PROPORTIONS
from msd_triplet.errors import ArgumentError, ConfigError, DataError

SPLIT_NAMES: tuple[str, str, str] = ("train", "validation", "test")


def split_positions(tracks, split: str, *, required: bool = False) -> np.ndarray:
    """int64 positions (rows of ``tracks``, a table with a ``split`` column) of the tracks of ``split``.

    ``split`` is train, validation, test, or "all" for every row. ArgumentError for
    another name, and, when ``required``, for a split that no track has.
    """
    column = np.asarray(tracks["split"])
    if split == "all":
        return np.arange(len(column), dtype=np.int64)
    positions = np.flatnonzero(column == split).astype(np.int64)
    if (required or split not in SPLIT_NAMES) and not len(positions):
        raise ArgumentError(
            f"split {split!r}: no track has it; the prepared data has {sorted(set(column))} ('all' for every track)"
        )
    return positions


def check_proportions(proportions: Sequence[float]) -> np.ndarray:
    """Three positive finite numbers → float64 [3] summing to 1; ConfigError otherwise."""
    try:
        values = np.asarray([float(p) for p in proportions], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"split proportions: expected three positive numbers, got {proportions!r}") from None
    if values.shape != (3,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ConfigError(
            f"split proportions: expected three positive numbers (train, validation, test), got {list(proportions)}"
        )
    return values / values.sum()


def split_by_artist(
    artist_ids: Iterable[str],
    proportions: Sequence[float] = PAPER_SPLIT_PROPORTIONS,
    seed: int = 0,
    *,
    fill_empty: bool = True,
) -> np.ndarray:
    """Assign every track to ``"train"``, ``"validation"`` or ``"test"``, whole artists at a time.

    Parameters
    ----------
    artist_ids : str [tracks]
        Artist of each track.
    proportions : (train, validation, test)
        Target shares of tracks; positive, normalised to sum 1. Default: the
        paper's 122,766 / 6,461 / 14,358.
    seed : int
        Seeds the order in which artists are visited; same seed, same splits.
    fill_empty : bool
        If the greedy pass leaves a split empty (only with a handful of
        artists, e.g. three equal artists and a 4.5 % split), move one artist
        into it. Then the error bound below doubles for that input.

    Returns
    -------
    ndarray of str [tracks]
        The split of each track. Each split's share of tracks differs from its
        target by at most the largest artist's share of all tracks (twice that
        if ``fill_empty`` had to move an artist); with ``fill_empty`` no split
        is empty.
    """
    targets = check_proportions(proportions)
    artists = np.asarray(list(artist_ids), dtype=object)
    missing = [i for i, a in enumerate(artists) if not isinstance(a, str) or not a]
    if missing:
        raise DataError(f"split_by_artist: track {missing[0]} (0-based) has no artist id ({artists[missing[0]]!r})")
    names, inverse, sizes = np.unique(artists.astype(str), return_inverse=True, return_counts=True)
    if len(names) < 3:
        raise DataError(f"artist-stratified splits need >= 3 artists (one per split), found {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    deficit = targets * float(sizes.sum())  # target tracks minus assigned tracks, per split
    assignment = np.empty(len(names), dtype=np.int64)
    for artist in order:
        best = int(np.argmax(deficit))
        assignment[artist] = best
        deficit[best] -= sizes[artist]
    if fill_empty:
        _fill_empty_splits(assignment, sizes, deficit, order)
    return np.asarray(SPLIT_NAMES)[assignment[inverse.ravel()]]


def _fill_empty_splits(assignment: np.ndarray, sizes: np.ndarray, deficit: np.ndarray, order: np.ndarray) -> None:
    """Give every empty split one artist: the move that leaves the smallest worst error.

    Only arises with very few artists (e.g. three equal artists and a 4.5 % split).
    Modifies ``assignment`` and ``deficit`` in place.
    """
    for empty in range(3):
        counts = np.bincount(assignment, minlength=3)
        if counts[empty]:
            continue
        best, best_error = None, math.inf
        for artist in order:  # seeded order breaks ties
            donor = assignment[artist]
            if counts[donor] < 2:
                continue
            trial = deficit.copy()
            trial[donor] += sizes[artist]
            trial[empty] -= sizes[artist]
            error = float(np.max(np.abs(trial)))
            if error < best_error:
                best, best_error = artist, error
        donor = assignment[best]
        deficit[donor] += sizes[best]
        deficit[empty] -= sizes[best]
        assignment[best] = empty


def split_counts(splits: Iterable[str]) -> dict[str, int]:
    """Number of tracks per split name, in :data:`SPLIT_NAMES` order."""
    values = np.asarray(list(splits), dtype=str)
    return {name: int(np.count_nonzero(values == name)) for name in SPLIT_NAMES}
