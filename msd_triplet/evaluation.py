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
| facet | P@100 [95 % CI] | chance | queries |
...
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np
import pandas as pd
import scipy.sparse as sp

from msd_triplet.errors import ArgumentError
from msd_triplet.neighbours import nearest_neighbours
from msd_triplet.uncertainty import BootstrapSettings, format_figure, interval_sign, level_text, mean_of

if TYPE_CHECKING:
    from msd_triplet.prepare import PreparedData

__all__ = [
    "FACET_MATCHES",
    "FACET_TAG_SETS",
    "Facet",
    "chance_precision",
    "evaluate_embeddings",
    "facets_from_prepared",
    "format_results",
    "nearest_neighbours",
    "per_query_precision",
    "precision_at_k",
    "split_rows",
]

#: facet name → tag set it is read from
FACET_TAG_SETS = {"genre": "genres", "style": "styles", "mood": "moods", "theme": "themes"}
#: facet name → column of ``PreparedData.tracks``
FACET_ID_COLUMNS = {"artist": "artist_id", "album": "album_id"}
FACET_MATCHES = ("identical", "overlap")

_QUERY_BLOCK = 4_096  # queries per step when looking up relevance
_CHANCE_WORDS = 2**22  # uint64 words gathered per batch for the overlap chance level


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
            raise ArgumentError(f"facet {self.name!r}: give exactly one of groups and tags")

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
            raise ArgumentError(f"facet match {match!r}: allowed are {', '.join(FACET_MATCHES)}")
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
    from msd_triplet.splits import split_positions

    return split_positions(prepared.tracks, split, required=True)


def facets_from_prepared(prepared: PreparedData, rows: Any, match: str = "identical") -> dict[str, Facet]:
    """Facets genre, style, mood, theme (those whose tag set was prepared), artist and album.

    Parameters
    ----------
    prepared : :class:`~msd_triplet.prepare.PreparedData`
    rows : int [N] positions in ``prepared.tracks`` (e.g. :func:`split_rows`), in the
        order of the embeddings that will be evaluated
    match : "identical" (same tag set) or "overlap" (at least one shared tag)
    """
    if match not in FACET_MATCHES:
        raise ArgumentError(f"facet match {match!r}: allowed are {', '.join(FACET_MATCHES)}")
    rows = np.asarray(rows)
    total = len(prepared.tracks)
    if rows.ndim != 1 or (rows.size and (rows.dtype.kind not in "iu" or rows.min() < 0 or rows.max() >= total)):
        raise ArgumentError(
            f"rows: expected a 1-D array of integer positions in 0..{total - 1}, "
            f"got shape {rows.shape} dtype {rows.dtype}"
        )
    facets = {}
    for name, tagset in FACET_TAG_SETS.items():
        if tagset in prepared.matrices:
            facets[name] = Facet.from_tags(name, prepared.matrices[tagset].matrix[rows], match)
    for name, column in FACET_ID_COLUMNS.items():
        facets[name] = Facet.from_ids(name, prepared.tracks[column].to_numpy()[rows])
    return facets


# ---------------------------------------------------------------------------
# precision and chance


def per_query_precision(neighbours: np.ndarray, facet: Facet) -> np.ndarray:
    """float64 [N]: per track, the share of its k neighbours that are relevant; NaN for unlabelled tracks.

    ``neighbours`` : int [N, k] as from :func:`nearest_neighbours`. An unlabelled
    track is not a query of the facet, hence NaN.
    """
    neighbours = np.asarray(neighbours)
    if neighbours.ndim != 2 or neighbours.shape[0] != facet.size:
        raise ArgumentError(
            f"neighbours: expected shape [{facet.size}, k] (one row per track of facet "
            f"{facet.name!r}), got {neighbours.shape}"
        )
    out = np.full(facet.size, np.nan)
    queries = np.flatnonzero(facet.labelled)
    for i in range(0, len(queries), _QUERY_BLOCK):
        q = queries[i : i + _QUERY_BLOCK]
        out[q] = facet.relevant(q, neighbours[q]).sum(axis=1) / neighbours.shape[1]
    return out


def precision_at_k(neighbours: np.ndarray, facet: Facet) -> float:
    """Mean over the labelled queries of :func:`per_query_precision`; NaN if no track is labelled."""
    return mean_of(per_query_precision(neighbours, facet))


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


def evaluate_embeddings(
    embeddings: np.ndarray,
    facets: Mapping[str, Facet],
    k: int = 100,
    chunk_size: int = 4_096,
    *,
    bootstrap: Optional[BootstrapSettings] = None,
    clusters: Optional[np.ndarray] = None,
    return_per_query: bool = False,
):
    """Precision@k, its bootstrap interval and chance per facet.

    Parameters
    ----------
    embeddings : float [N, d], rows aligned with every facet
    facets : {name: :class:`Facet`} over the same N tracks
    k, chunk_size : as in :func:`nearest_neighbours`
    bootstrap : how the intervals are computed (default :class:`BootstrapSettings` ():
        1,000 resamples of queries, 95 %, seed 0)
    clusters : int [N] or None; cluster label per track (album or artist index) for the
        cluster bootstrap, e.g. ``bootstrap.clusters(artist_ids, album_ids)``
    return_per_query : also return the per-query precisions

    Returns
    -------
    ``{facet: {"precision", "ci_low", "ci_high", "chance", "queries", "k"}}`` (plain
    Python floats and ints, ready for ``json.dump``); with ``return_per_query`` a pair
    (that, ``{facet: float64 [N]}`` from :func:`per_query_precision`), so that two models
    can be compared on the same queries (:func:`msd_triplet.uncertainty.paired_differences`).
    """
    bootstrap = bootstrap or BootstrapSettings()
    _check_finite(embeddings)
    for name, facet in facets.items():
        if facet.size != len(embeddings):
            raise ArgumentError(f"facet {name!r} has {facet.size} tracks, embeddings have {len(embeddings)} rows")
    neighbours = nearest_neighbours(embeddings, k, chunk_size=chunk_size)
    results, per_query = {}, {}
    for name, facet in facets.items():
        values = per_query[name] = per_query_precision(neighbours, facet)
        low, high = bootstrap.interval(values, clusters)
        results[name] = {
            "precision": mean_of(values),
            "ci_low": low,
            "ci_high": high,
            "chance": chance_precision(facet),
            "queries": int(facet.labelled.sum()),
            "k": int(k),
        }
    return (results, per_query) if return_per_query else results


def _check_finite(embeddings: Any) -> None:
    """ArgumentError if an embedding is NaN or infinite: the usual sign of a model whose training diverged."""
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.dtype.kind not in "fc":
        return  # integers are finite; other shapes and types are reported by nearest_neighbours
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))
        raise ArgumentError(
            f"embeddings: {len(rows)} of {len(x)} rows hold NaN or infinite values (e.g. row "
            f"{rows[0]}); the checkpoint may have diverged (look for a NaN loss in its metrics) - "
            "evaluate an earlier checkpoint or train again with a lower learning rate"
        )


def format_results(
    results: Mapping[str, Mapping],
    untrained: Optional[Mapping[str, Mapping]] = None,
    difference: Optional[Mapping[str, Mapping]] = None,
    level: float = 0.95,
) -> str:
    """Markdown table: facet | P@k [CI] | untrained [CI] | trained − untrained [paired CI] | chance | queries.

    ``results``, ``untrained`` : as from :func:`evaluate_embeddings` (intervals shown when
    present); ``difference`` : {facet: {"difference", "ci_low", "ci_high"}} as from
    :func:`msd_triplet.uncertainty.paired_differences`. A difference whose interval excludes
    0 is marked ``*`` (explained below the table). Columns of what is not given are left out.
    """
    k = next((r.get("k") for r in results.values() if isinstance(r, Mapping) and "k" in r), None)
    ci = f"[{level_text(level)} CI]"
    head = ["facet", f"P@{k or 'k'} {ci}"] + ([f"untrained {ci}"] if untrained is not None else [])
    head += [f"trained − untrained [paired {level_text(level)} CI]"] if difference is not None else []
    head += ["chance", "queries"]

    def figure(entry: Optional[Mapping], key: str = "precision", signed: bool = False) -> str:
        return (
            "" if entry is None else format_figure(entry[key], entry.get("ci_low"), entry.get("ci_high"), signed=signed)
        )

    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    marked = False
    for name, r in results.items():
        cells = [name, figure(r)]
        if untrained is not None:
            cells.append(figure(untrained.get(name)))
        if difference is not None:
            d = difference.get(name)
            cells.append(figure(d, "difference", signed=True))
            if d is not None and interval_sign(d["ci_low"], d["ci_high"]):
                cells[-1] += " *"
                marked = True
        cells += [format_figure(r["chance"]), f"{int(r['queries']):,}"]
        lines.append("| " + " | ".join(cells) + " |")
    if marked:
        lines += ["", f"Marked *: the paired {level_text(level)} interval of trained − untrained excludes 0."]
    return "\n".join(lines)
