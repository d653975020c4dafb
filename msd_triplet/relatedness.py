"""Relatedness sources for the triplet masks: which track pairs count as positives and negatives.

The paper relates two tracks by the LSI cosine of their tag vectors (positives
>= 0.8, negatives < 0.2). For an ablation the same masks can come from other
sources, each a per-track vector and a *kind* of pairwise relatedness:

==========  =========  ====================================================
source      kind       relatedness of tracks i, j (diagonal always 0)
==========  =========  ====================================================
``lsi``     cosine     cosine of the LSI vectors (:func:`msd_triplet.losses.lsi_cosine`)
``jaccard`` jaccard    |a ∧ b| / |a ∨ b| of the binary tags of the chosen sets
``genre``   label      1 if both have the same main genre, else 0
``artist``  label      1 if both are by the same artist, else 0
==========  =========  ====================================================

* :func:`relatedness_matrix` — the [B, B] matrix of a batch as TF ops (traces
  in ``tf.function``, compiles with XLA, any batch size);
  :func:`relatedness_numpy` is its numpy twin (agree to 1e-6), and
  :func:`relatedness_block` the rectangular [a, b] version the sampler uses.
* :func:`source_vectors` — the per-track vectors of a source from prepared data.
* :func:`pair_shares` — the shares of positive and negative pairs (i < j,
  different albums) at given thresholds, exact or on a seeded sample.
* :func:`calibrate_thresholds` — thresholds whose shares come closest to target shares,
  so that sources can be compared at equal shares of positives and negatives.

A label is an integer stored as a float (exact below 2**24); a negative label
(-1: unknown, e.g. a track without a genre tag) relates 0 to every track,
including another -1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from msd_triplet.errors import ArgumentError, DataError

SOURCES = ("lsi", "jaccard", "genre", "artist")
KINDS = ("cosine", "jaccard", "label")
SOURCE_KIND = {"lsi": "cosine", "jaccard": "jaccard", "genre": "label", "artist": "label"}
GENRE_SET = "genres"
#: Rows with a norm at most this count as zero rows: a track without a topic (LsiModel.transform zeroes
#: it exactly), in no pair, positive or negative, here, in the loss (which imports it) and in ``topics``.
ZERO_NORM = 1e-12

__all__ = [
    "GENRE_SET",
    "KINDS",
    "SOURCES",
    "SOURCE_KIND",
    "ZERO_NORM",
    "Calibration",
    "artist_labels",
    "calibrate_thresholds",
    "check_kind",
    "check_source",
    "main_genre_labels",
    "pair_shares",
    "pair_values",
    "relatedness_block",
    "relatedness_matrix",
    "relatedness_numpy",
    "sample_pairs",
    "source_vectors",
]

_PAIR_CHUNK = 65_536  # pairs per vectorised step of pair_values: memory O(chunk × m)


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`KINDS`, else ArgumentError naming it."""
    if kind not in KINDS:
        raise ArgumentError(f"relatedness kind {kind!r}: expected one of {', '.join(KINDS)}")
    return kind


def check_source(source: str) -> str:
    """``source`` if it is one of :data:`SOURCES`, else ArgumentError naming it."""
    if source not in SOURCES:
        raise ArgumentError(f"relatedness source {source!r}: expected one of {', '.join(SOURCES)}")
    return source


# --------------------------------------------------------------------------- TF


def relatedness_matrix(vectors, kind: str):
    """Relatedness [B, B] of the rows of a batch, float32, diagonal 0 (TF ops).

    Parameters
    ----------
    vectors : float32 [B, m]: LSI vectors (``cosine``), 0/1 tags (``jaccard``;
        any non-zero counts as 1) or [B, 1] integer labels stored as floats (``label``)
    kind : one of :data:`KINDS`

    Returns
    -------
    float32 [B, B] in [0, 1] (cosine: [-1, 1]); zero rows (cosine), empty
    unions (jaccard) and negative labels relate 0 to everyone.
    """
    check_kind(kind)
    if kind == "cosine":
        from msd_triplet.losses import lsi_cosine  # here: losses imports this module

        return lsi_cosine(vectors)
    import tensorflow as tf

    v = tf.convert_to_tensor(vectors, tf.float32)
    if kind == "jaccard":
        binary = tf.cast(tf.not_equal(v, 0.0), tf.float32)
        inter = tf.matmul(binary, binary, transpose_b=True)
        sizes = tf.reduce_sum(binary, axis=1)
        union = sizes[:, None] + sizes[None, :] - inter
        out = tf.where(union > 0, inter / tf.maximum(union, 1.0), tf.zeros_like(inter))
    else:
        labels = v[:, 0]
        known = labels >= 0
        same = tf.logical_and(
            tf.equal(labels[:, None], labels[None, :]), tf.logical_and(known[:, None], known[None, :])
        )
        out = tf.cast(same, tf.float32)
    return tf.linalg.set_diag(out, tf.zeros(tf.shape(out)[0], tf.float32))


# --------------------------------------------------------------------------- numpy


def _unit_rows(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, zero rows (norm <= ZERO_NORM) kept 0, as :func:`msd_triplet.losses.lsi_cosine`."""
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(norms > ZERO_NORM, v / np.maximum(norms, ZERO_NORM), 0.0).astype(np.float32)


def relatedness_block(a: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
    """Relatedness float32 [len(a), len(b)] of every row of ``a`` with every row of ``b`` (numpy).

    The same values as :func:`relatedness_matrix` off its diagonal (float32
    arithmetic throughout); nothing is set to 0 on a diagonal here.
    """
    check_kind(kind)
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if kind == "cosine":
        return _unit_rows(a) @ _unit_rows(b).T
    if kind == "jaccard":
        a, b = (a != 0).astype(np.float32), (b != 0).astype(np.float32)
        inter = a @ b.T
        union = a.sum(axis=1)[:, None] + b.sum(axis=1)[None, :] - inter
        return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    la, lb = a[:, 0], b[:, 0]
    return ((la[:, None] == lb[None, :]) & (la[:, None] >= 0) & (lb[None, :] >= 0)).astype(np.float32)


def relatedness_numpy(vectors: np.ndarray, kind: str) -> np.ndarray:
    """The numpy twin of :func:`relatedness_matrix`: float32 [n, n], diagonal 0."""
    out = relatedness_block(vectors, vectors, kind)
    np.fill_diagonal(out, 0.0)
    return out


def pair_values(vectors: np.ndarray, kind: str, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Relatedness float32 [p] of the pairs (i[p], j[p]); memory O(chunk × m), not O(p × m)."""
    check_kind(kind)
    v = np.asarray(vectors, np.float32)
    if kind == "cosine":
        v = _unit_rows(v)
    elif kind == "jaccard":
        v = (v != 0).astype(np.float32)
        sizes = v.sum(axis=1)
    out = np.empty(len(i), np.float32)
    for start in range(0, len(i), _PAIR_CHUNK):
        a, b = i[start : start + _PAIR_CHUNK], j[start : start + _PAIR_CHUNK]
        if kind == "label":
            la, lb = v[a, 0], v[b, 0]
            out[start : start + len(a)] = (la == lb) & (la >= 0)
            continue
        dot = np.einsum("pm,pm->p", v[a], v[b])
        if kind == "cosine":
            out[start : start + len(a)] = dot
        else:
            union = sizes[a] + sizes[b] - dot
            out[start : start + len(a)] = np.divide(dot, union, out=np.zeros_like(dot), where=union > 0)
    return out


# --------------------------------------------------------------------------- source vectors


def main_genre_labels(prepared) -> np.ndarray:
    """int64 [tracks]: each prepared track's main genre as an index into the genres vocabulary, -1 if none.

    The main genre of a track is, among its ``genres`` tags, the one most
    frequent over *all* prepared tracks (every split, so the label of a track
    does not depend on which split is being looked at); ties go to the
    alphabetically first tag (the vocabulary is sorted).
    """
    if GENRE_SET not in prepared.matrices:
        raise DataError(
            f"source 'genre' needs the tag set {GENRE_SET!r}, but the prepared data has only "
            f"{', '.join(prepared.matrices) or 'no sets'}; add it to data.tag_sets and run prepare again"
        )
    matrix = sp.csr_matrix(prepared.matrices[GENRE_SET].matrix)
    binary = (matrix != 0).astype(np.int64).tocsr()
    counts = np.asarray(binary.sum(axis=0)).ravel()
    n_tags = len(counts)
    # rank 0 = most frequent, ties by vocabulary (= alphabetical) order
    rank = np.empty(n_tags, np.int64)
    rank[np.lexsort((np.arange(n_tags), -counts))] = np.arange(n_tags)
    scored = binary.multiply((n_tags - rank)[None, :]).tocsr()  # > 0 exactly on the track's tags
    labels = np.asarray(scored.argmax(axis=1)).ravel().astype(np.int64)
    labels[np.diff(binary.indptr) == 0] = -1
    return labels


def artist_labels(prepared) -> np.ndarray:
    """int64 [tracks]: the artist of each prepared track as a dense index (sorted artist ids, all splits)."""
    _, index = np.unique(prepared.tracks["artist_id"].to_numpy(str), return_inverse=True)
    return index.astype(np.int64)


def source_vectors(
    source: str, prepared, positions: np.ndarray, lsi_vectors: np.ndarray | None = None, tag_sets: Sequence[str] = ()
) -> np.ndarray:
    """Per-track vectors of a relatedness source, float32 [len(positions), m].

    Parameters
    ----------
    source : one of :data:`SOURCES`; its kind is ``SOURCE_KIND[source]``
    prepared : :class:`msd_triplet.prepare.PreparedData` (``tracks`` and ``matrices``)
    positions : int [n] rows of ``prepared.tracks`` (e.g. ``TrainingData.positions["train"]``)
    lsi_vectors : float [n, k], the LSI vectors *of the tracks at positions*
        (e.g. ``TrainingData.targets["train"][:, :-1]``); only for ``lsi``
    tag_sets : the sets whose binary tags are stacked side by side, in this
        order; only for ``jaccard``

    Returns
    -------
    lsi: the LSI vectors [n, k]; jaccard: 0/1 [n, Σ tags]; genre: main genre
    index [n, 1] (:func:`main_genre_labels`, -1 without a genre tag); artist:
    artist index [n, 1] (:func:`artist_labels`). Labels are indexed over all
    prepared tracks, so they agree across splits.
    """
    check_source(source)
    positions = np.asarray(positions, np.int64)
    n_tracks = len(prepared.tracks)
    if len(positions) and (positions.min() < 0 or positions.max() >= n_tracks):
        raise ArgumentError(
            f"positions must lie in [0, {n_tracks}) (rows of prepared.tracks), got {positions.min()}..{positions.max()}"
        )
    if source == "lsi":
        if lsi_vectors is None:
            raise ArgumentError("source 'lsi' needs lsi_vectors (the LSI vectors of the tracks at positions)")
        vectors = np.asarray(lsi_vectors, np.float32)
        if vectors.ndim != 2 or len(vectors) != len(positions):
            raise ArgumentError(
                f"lsi_vectors has shape {vectors.shape}; expected [{len(positions)}, k], one row per position"
            )
        return vectors
    if source == "jaccard":
        if isinstance(tag_sets, str):
            tag_sets = (tag_sets,)
        if not tag_sets:
            raise ArgumentError("source 'jaccard' needs tag_sets, e.g. ('genres', 'styles', 'moods', 'themes')")
        missing = [s for s in tag_sets if s not in prepared.matrices]
        if missing:
            raise DataError(
                f"tag set(s) {', '.join(missing)} not in the prepared data (it has "
                f"{', '.join(prepared.matrices) or 'no sets'}); add them to data.tag_sets and run "
                "prepare again"
            )
        blocks = [sp.csr_matrix(prepared.matrices[s].matrix)[positions] for s in tag_sets]
        return (sp.hstack(blocks, format="csr") != 0).astype(np.float32).toarray()
    labels = main_genre_labels(prepared) if source == "genre" else artist_labels(prepared)
    if labels.max(initial=0) >= 2**24:
        raise DataError(f"source {source!r}: more than 2**24 labels cannot be stored exactly as float32")
    return labels[positions].astype(np.float32)[:, None]


# --------------------------------------------------------------------------- shares and calibration


def _album_codes(albums, n: int) -> np.ndarray:
    albums = np.asarray(albums)
    if len(albums) != n:
        raise ArgumentError(f"albums has {len(albums)} entries, expected {n} (one per vector row)")
    return np.unique(albums, return_inverse=True)[1].ravel()


def sample_pairs(n: int, max_pairs: int = 2_000_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, bool]:
    """Pairs (i, j), i < j, of n items: all of them if n(n−1)/2 <= max_pairs, else a seeded uniform sample.

    The sample draws ``max_pairs`` ordered pairs uniformly with replacement,
    drops i = j (about 1/n of them) and orders each pair; every unordered pair
    is equally likely. Returns (i, j, exact).
    """
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = np.triu_indices(n, k=1)
        return i.astype(np.int64), j.astype(np.int64), True
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, n, size=(2, max_pairs))
    keep = i != j
    i, j = i[keep], j[keep]
    return np.minimum(i, j), np.maximum(i, j), False


def _pair_sample(vectors, kind, albums, max_pairs, seed) -> tuple[np.ndarray, bool]:
    """Relatedness of the (sampled) pairs i < j from different albums, and whether they are all pairs.

    With ``cosine``, pairs with a zero row (a track without a topic) are left out, as the loss
    leaves them out of every pair (:data:`ZERO_NORM`).
    """
    check_kind(kind)
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2:
        raise ArgumentError(f"vectors must be 2-D [n, m], got shape {vectors.shape}")
    codes = _album_codes(albums, len(vectors))
    i, j, exact = sample_pairs(len(vectors), max_pairs, seed)
    keep = codes[i] != codes[j]
    if kind == "cosine":
        has_topic = np.linalg.norm(vectors, axis=1) > ZERO_NORM
        keep &= has_topic[i] & has_topic[j]
    i, j = i[keep], j[keep]
    if not len(i):
        raise ArgumentError(
            f"no pair of tracks from different albums among {len(vectors)} tracks"
            + (" with a topic" if kind == "cosine" else "")
        )
    return pair_values(vectors, kind, i, j), exact


def pair_shares(
    vectors: np.ndarray,
    kind: str,
    albums,
    positive_threshold: float,
    negative_threshold: float,
    max_pairs: int = 2_000_000,
    seed: int = 0,
) -> tuple[float, float]:
    """(share of positive pairs, share of negative pairs) among the pairs i < j from different albums.

    Positive: relatedness >= ``positive_threshold``; negative: relatedness <
    ``negative_threshold``. Exact when there are at most ``max_pairs`` pairs,
    else on a seeded uniform sample of pairs (:func:`sample_pairs`).
    """
    values, _ = _pair_sample(vectors, kind, albums, max_pairs, seed)
    return (
        np.count_nonzero(values >= positive_threshold) / len(values),
        np.count_nonzero(values < negative_threshold) / len(values),
    )


@dataclass(frozen=True)
class Calibration:
    """Thresholds found by :func:`calibrate_thresholds` and the shares of pairs they achieve."""

    positive_threshold: float
    negative_threshold: float
    positive_share: float  # achieved: share of pairs with relatedness >= positive_threshold
    negative_share: float  # achieved: share of pairs with relatedness < negative_threshold
    target_positive_share: float
    target_negative_share: float
    exact: bool = True  # False: shares measured on a sample of pairs


def calibrate_thresholds(
    vectors: np.ndarray,
    kind: str,
    albums,
    positive_share: float,
    negative_share: float,
    max_pairs: int = 2_000_000,
    seed: int = 0,
) -> Calibration:
    """Thresholds whose shares of positive and negative pairs come closest to the targets.

    Over the pairs i < j from different albums (all, or a seeded sample as in
    :func:`pair_shares`), the candidates are the relatedness values that occur
    (plus one value just above the largest); each threshold is the candidate
    whose share is closest to its target (ties: the lower positive threshold,
    the higher negative one), except that a threshold giving no positives (no
    negatives) is taken only for a target share of 0. Discrete kinds (jaccard,
    label) therefore get a value that occurs, and the achieved share may be
    far from the target: compare the returned shares (for a label kind the
    only useful thresholds are 1 and 1: same label or not).

    If the two closest thresholds cross (negative > positive, when the targets
    add up to more than the pairs allow), both are set to the one value t that
    minimises |share(>= t) − positive_share| + |share(< t) − negative_share|,
    which is the best pair with negative <= positive (of equally good ones,
    the one missing both targets by the same amount). So always
    ``negative_threshold <= positive_threshold``: no pair is both.
    """
    for name, share in (("positive_share", positive_share), ("negative_share", negative_share)):
        if not 0.0 <= share <= 1.0:
            raise ArgumentError(f"{name} {share}: must lie in [0, 1]")
    values, exact = _pair_sample(vectors, kind, albums, max_pairs, seed)
    candidates, counts = np.unique(values, return_counts=True)
    candidates = np.append(candidates, np.nextafter(candidates[-1], np.float32(np.inf)))
    counts = np.append(counts, 0)
    total = len(values)
    n_below = np.concatenate([[0], np.cumsum(counts)[:-1]])  # values < candidate
    below, at_or_above = n_below / total, (total - n_below) / total
    raw_pos_error = np.abs(at_or_above - positive_share)
    raw_neg_error = np.abs(below - negative_share)
    # A threshold that makes no pair positive (negative) only for a target of 0: with discrete
    # values it can otherwise be "closest" (label kinds: share 0 beats 20 % for a 1 % target).
    pos_error, neg_error = raw_pos_error.copy(), raw_neg_error.copy()
    if positive_share > 0:
        pos_error[-1] = np.inf
    if negative_share > 0:
        neg_error[0] = np.inf
    p = int(np.argmin(pos_error))  # first minimum: the lower threshold
    q = len(candidates) - 1 - int(np.argmin(neg_error[::-1]))  # last minimum: the higher threshold
    if q > p:
        # On the diagonal the error sum is flat wherever share(>= t) lies between 1 − negative_share
        # and positive_share; among those, take the t that misses both targets by the same amount.
        error = pos_error + neg_error
        if not np.isfinite(error.min()):  # a single value: every choice is degenerate
            error = raw_pos_error + raw_neg_error
        best = np.flatnonzero(error <= error.min() + 1e-12)
        balance = np.abs((at_or_above[best] - positive_share) - (below[best] - negative_share))
        p = q = int(best[np.argmin(balance)])
    return Calibration(
        float(candidates[p]),
        float(candidates[q]),
        float(at_or_above[p]),
        float(below[q]),
        float(positive_share),
        float(negative_share),
        exact,
    )
