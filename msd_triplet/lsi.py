"""LSI of tag sets: truncated SVD of the binary tag × track matrix (paper III-B, SPEC section 4).

W is the tag × track matrix of the selected tag sets stacked (one block of
rows per set). Its truncated SVD W ≈ U_k Σ_k V_kᵀ gives k topics (columns of
U_k, each a weighting of tags); the LSI vector of a track with tag column w
is U_kᵀ w = Σ_k v (its row of V_k scaled by Σ_k). Tracks outside the
training split are folded in with the same projection.

Two solvers give the same topics:

* ``gram``: the tag Gram matrix W Wᵀ is tiny (at most a few thousand tags
  squared), so one dense symmetric eigendecomposition gives *all*
  components at once: σ² are its eigenvalues and U its eigenvectors.
* ``svds``: ``scipy.sparse.linalg.svds`` (ARPACK) with a fixed start vector,
  for vocabularies too large for a dense Gram matrix.

Either way the signs are fixed (the largest-magnitude tag weight of each
topic is positive), and the components of a fit at k are a prefix of those of
a fit at any larger k, so :meth:`LsiModel.truncate` serves a whole k grid
from one fit.

Tracks are rows here (``X = Wᵀ``, track × tag, as in the prepared data).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from msd_triplet.config import LsiConfig
from msd_triplet.errors import ArgumentError, ConfigError, DataError
from msd_triplet.fileio import atomic_path
from msd_triplet.tagnames import (  # noqa: F401 - combinations etc. stay importable from msd_triplet.lsi
    TAG_SETS,
    combination_name,
    combinations,
    parse_combination,
)

#: Above this many tags ``solver="auto"`` uses svds instead of a dense Gram matrix.
GRAM_MAX_TAGS = 6_000
LSI_FORMAT = 1


@dataclass
class LsiModel:
    """A fitted LSI: topics over a tag vocabulary.

    Attributes
    ----------
    sets : tag sets, canonical order
    vocabulary : tuple of ``"set:tag"`` [n_tags], the column order of the input matrix
    singular_values : float64 [k], descending
    components : float64 [k, n_tags], orthonormal rows (U_kᵀ)
    weighting : "binary" or "tfidf"
    idf : float64 [n_tags] for tfidf, else None
    solver : the solver that produced it
    n_train : training tracks of the fit
    """

    sets: tuple[str, ...]
    vocabulary: tuple[str, ...]
    singular_values: np.ndarray
    components: np.ndarray
    weighting: str = "binary"
    idf: Optional[np.ndarray] = None
    solver: str = "gram"
    n_train: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    @property
    def name(self) -> str:
        return combination_name(self.sets)

    def truncate(self, k: int) -> "LsiModel":
        """The model of the first ``k`` topics: equal to a fit at ``k`` (the prefix property)."""
        if not 1 <= k <= self.k:
            raise ConfigError(f"lsi.k: {k} topics asked of a model with {self.k}; allowed 1..{self.k}")
        return LsiModel(
            self.sets,
            self.vocabulary,
            self.singular_values[:k].copy(),
            self.components[:k].copy(),
            self.weighting,
            self.idf,
            self.solver,
            self.n_train,
            dict(self.meta),
        )

    def weight(self, matrix: sp.spmatrix) -> sp.csr_matrix:
        """The track × tag matrix as the SVD saw it (binary, or TF-IDF with unit-length rows)."""
        matrix = _check_matrix(matrix, len(self.vocabulary))
        if self.weighting == "binary":
            return matrix
        weighted = matrix @ sp.diags(self.idf)
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1))).ravel()
        return sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ weighted

    def transform(self, matrix: sp.spmatrix, zero_norm_rtol: float = 1e-6) -> np.ndarray:
        """LSI vectors of tracks: float32 [tracks, k] = rows of ``weight(matrix) @ componentsᵀ``.

        A track whose tags lie outside the k topics has, in exact arithmetic,
        the zero vector; computed, it is round-off of norm ~1e-15, and
        normalising that noise would give a random direction and random pairs
        in the loss. Rows with a norm <= ``zero_norm_rtol`` × σ₁ (the largest
        singular value) are therefore set to exactly zero: such a track has
        no topic, and the loss makes it neither a positive nor a negative of
        any track (:func:`msd_triplet.losses.pair_masks`).

        Why σ₁ and 1e-6:

        * σ₁ = ‖W‖₂ is at least the norm of every (weighted) tag row the model
          was fitted on, and an LSI vector is never longer than its tag row
          (the topics are orthonormal): σ₁ is the scale of the data. It is a
          property of the model, so a track is zeroed or kept whatever other
          tracks are transformed with it. (The earlier bound, relative to the
          median row norm, failed when most tracks lie outside the k topics:
          the median was itself round-off and nothing was zeroed.)
        * Noise: both solvers are backward stable, so the computed topics are
          exact for a matrix within about n·ε·σ₁ of W (n tags, ε = 2.2e-16
          in float64); the leakage of a track into topics it has no share in
          is about n·ε·σ₁ times σ₁² / (σ_k² − σ_{k+1}²), which for 6,000 tags
          is ~1e-12·σ₁ times that gap factor (measured: ~1e-16·σ₁).
        * Margin: 1e-6 lies six orders of magnitude above that pessimistic
          bound at a gap factor of 1, three at 1e3, and ten above the measured
          noise; a kept track has at least a millionth of the data's scale
          inside the k topics. σ₁ >= 1 (a row with one tag has norm 1), so a
          kept vector has norm >= 1e-6: float32 normalises it accurately, far
          above the 1e-12 below which the loss sees a zero row. No √k factor:
          the bound is on the norm, and the norm of k noise coordinates grows
          only like √k (<= 100 for k <= 10,000), well inside the margin.

        ArgumentError if ``zero_norm_rtol`` is negative or not finite (0 zeroes
        only exact zeros).
        """
        if not (np.isfinite(zero_norm_rtol) and zero_norm_rtol >= 0):
            raise ArgumentError(
                f"zero_norm_rtol {zero_norm_rtol!r}: expected a finite number >= 0 "
                "(a fraction of the largest singular value, e.g. 1e-6)"
            )
        vectors = np.asarray(self.weight(matrix) @ self.components.T)
        vectors[np.linalg.norm(vectors, axis=1) <= self.zero_norm(zero_norm_rtol)] = 0.0
        return vectors.astype(np.float32)

    def zero_norm(self, zero_norm_rtol: float = 1e-6) -> float:
        """The norm at or below which :meth:`transform` sets an LSI vector to zero: ``zero_norm_rtol`` × σ₁."""
        return float(zero_norm_rtol) * float(self.singular_values[0]) if len(self.singular_values) else 0.0

    def topic_terms(self, topic: int, n: int = 10) -> tuple[list[tuple[str, str, float]], list[tuple[str, str, float]]]:
        """The ``n`` strongest positive and negative tags of ``topic`` as (set, tag, weight)."""
        if not 0 <= topic < self.k:
            raise ConfigError(f"topic {topic}: the model has topics 0..{self.k - 1}")
        weights = self.components[topic]
        order = np.argsort(weights, kind="stable")
        split = [tuple(v.split(":", 1)) for v in self.vocabulary]
        pos = [(*split[j], float(weights[j])) for j in order[::-1][:n] if weights[j] > 0]
        neg = [(*split[j], float(weights[j])) for j in order[:n] if weights[j] < 0]
        return pos, neg

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> Path:
        """Write one ``.npz`` (arrays + JSON metadata) atomically; returns the path."""
        path = Path(path)
        meta = {
            "format": LSI_FORMAT,
            "sets": list(self.sets),
            "weighting": self.weighting,
            "solver": self.solver,
            "n_train": self.n_train,
            **self.meta,
        }
        arrays = {
            "singular_values": self.singular_values,
            "components": self.components,
            "vocabulary": np.array(self.vocabulary, dtype=str),
            "meta": np.array(json.dumps(meta)),
        }
        if self.idf is not None:
            arrays["idf"] = self.idf
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, vocabulary: Optional[Sequence[str]] = None) -> "LsiModel":
        """Read :meth:`save` output; with ``vocabulary``, DataError unless it is the model's, in order."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                model = cls(
                    tuple(meta.pop("sets")),
                    tuple(str(v) for v in z["vocabulary"]),
                    z["singular_values"],
                    z["components"],
                    meta.pop("weighting"),
                    z["idf"] if "idf" in z else None,
                    meta.pop("solver"),
                    int(meta.pop("n_train")),
                )
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path}: not an LSI model file ({exc})") from None
        if meta.pop("format", None) != LSI_FORMAT:
            raise DataError(f"{path}: LSI file format is not {LSI_FORMAT}; fit it again")
        model.meta = meta
        if vocabulary is not None and tuple(vocabulary) != model.vocabulary:
            raise DataError(
                f"{path}: {_vocabulary_difference(model.vocabulary, tuple(vocabulary))}; "
                "the model was fitted on other tags: fit it again on this data"
            )
        return model


def _vocabulary_difference(saved: tuple[str, ...], given: tuple[str, ...]) -> str:
    missing = sorted(set(saved) - set(given))
    extra = sorted(set(given) - set(saved))
    if not missing and not extra:
        return f"same {len(saved)} tags in another order"
    parts = [f"{len(saved)} tags in the model, {len(given)} in the data"]
    if missing:
        parts.append(f"not in the data: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if extra:
        parts.append(f"not in the model: {', '.join(extra[:5])}{' …' if len(extra) > 5 else ''}")
    return "; ".join(parts)


def _check_matrix(matrix, n_tags: int) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    if matrix.shape[1] != n_tags:
        raise DataError(f"tag matrix has {matrix.shape[1]} tag columns, the LSI vocabulary {n_tags}")
    return matrix


# --------------------------------------------------------------------------- fitting


def fit_lsi(
    matrix: sp.spmatrix,
    vocabulary: Sequence[str],
    k: int,
    *,
    sets: Sequence[str] = TAG_SETS,
    weighting: str = "binary",
    solver: str = "auto",
    seed: int = 0,
) -> LsiModel:
    """Truncated SVD of a track × tag matrix (training tracks); deterministic.

    Parameters
    ----------
    matrix : sparse [tracks, tags], 0/1 entries
    vocabulary : ``"set:tag"`` names of the columns
    k : topics, 1 <= k < min(tracks, tags)
    weighting : "binary" (paper) or "tfidf" (idf from these tracks, unit-length rows)
    solver : "gram", "svds" or "auto" (gram up to :data:`GRAM_MAX_TAGS` tags)
    seed : seeds the svds start vector (gram needs none)
    """
    matrix = _check_matrix(matrix, len(vocabulary))
    n_tracks, n_tags = matrix.shape
    if matrix.nnz == 0:
        raise DataError(
            f"the tag matrix of {combination_name(sets)} is empty ({n_tracks} tracks × {n_tags} tags, "
            "no tag assigned); nothing to fit"
        )
    if not 1 <= k < min(n_tracks, n_tags):
        raise ConfigError(
            f"lsi.k: {k} topics for a {n_tracks} tracks × {n_tags} tags matrix of "
            f"{combination_name(sets)}; allowed 1..{min(n_tracks, n_tags) - 1}"
        )
    if weighting not in ("binary", "tfidf"):
        raise ConfigError(f"lsi.weighting: {weighting!r}, expected binary or tfidf")
    idf = None
    if weighting == "tfidf":
        df = np.asarray((matrix > 0).sum(axis=0)).ravel()
        idf = np.log(n_tracks / np.maximum(df, 1))
    model = LsiModel(
        tuple(parse_combination(sets)),
        tuple(vocabulary),
        np.zeros(0),
        np.zeros((0, n_tags)),
        weighting,
        idf,
        solver,
        n_tracks,
    )
    weighted = model.weight(matrix)
    chosen = solver if solver != "auto" else ("gram" if n_tags <= GRAM_MAX_TAGS else "svds")
    if chosen == "gram":
        values, vectors = _gram_svd(weighted, k)
    elif chosen == "svds":
        values, vectors = _svds(weighted, k, seed)
    else:
        raise ConfigError(f"lsi.solver: {solver!r}, expected auto, gram or svds")
    model.singular_values, model.components, model.solver = values, _fix_signs(vectors), chosen
    return model


def _gram_svd(matrix: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k singular values and right singular vectors [k, tags] of ``matrix`` from XᵀX."""
    gram = (matrix.T @ matrix).toarray()
    n = gram.shape[0]
    eigenvalues, eigenvectors = scipy.linalg.eigh(gram, subset_by_index=[n - k, n - 1])
    order = np.argsort(eigenvalues, kind="stable")[::-1]
    return np.sqrt(np.clip(eigenvalues[order], 0.0, None)), eigenvectors[:, order].T


def _svds(matrix: sp.csr_matrix, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.sparse.linalg import svds

    v0 = np.random.default_rng(seed).uniform(-1.0, 1.0, size=min(matrix.shape))
    _, values, vt = svds(matrix, k=k, v0=v0, solver="arpack", return_singular_vectors="vh")
    order = np.argsort(values, kind="stable")[::-1]
    return values[order], vt[order]


def _fix_signs(components: np.ndarray) -> np.ndarray:
    """Flip each row so that its largest-magnitude entry is positive."""
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(len(components)), idx])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


# --------------------------------------------------------------------------- prepared data


def stacked_matrix(
    matrices: dict, sets: Iterable[str], rows: Optional[np.ndarray] = None
) -> tuple[sp.csr_matrix, tuple[str, ...]]:
    """Join per-set :class:`~msd_triplet.prepare.TagMatrix` objects column-wise.

    Returns the track × tag matrix (rows ``rows`` of the prepared tracks, all
    by default) and its ``"set:tag"`` vocabulary. DataError if a set is
    missing or a track has no tag in one of the sets (the intersection filter
    should have removed it).
    """
    sets = parse_combination(tuple(sets))
    blocks, vocabulary = [], []
    for s in sets:
        if s not in matrices:
            raise DataError(
                f"tag set {s} is not in the prepared data (it has {', '.join(matrices)}); "
                "add it to data.tag_sets and run prepare again"
            )
        tm = matrices[s]
        block = tm.matrix if rows is None else tm.matrix[rows]
        empty = np.flatnonzero(np.asarray(block.getnnz(axis=1)) == 0)
        if len(empty):
            ids = tm.track_ids if rows is None else tm.track_ids[rows]
            raise DataError(
                f"{len(empty)} track(s) have no tag in {s} (e.g. {ids[empty[0]]}); the intersection "
                "filter should have removed them: run prepare with this set in data.tag_sets"
            )
        blocks.append(block)
        vocabulary.extend(f"{s}:{t}" for t in tm.vocabulary)
    return sp.hstack(blocks, format="csr"), tuple(vocabulary)


def fit_prepared(prepared, config: LsiConfig, seed: int, k: Optional[int] = None) -> tuple[LsiModel, np.ndarray]:
    """Fit on the training split of prepared data; return the model and LSI vectors of every track.

    ``k`` overrides ``config.k`` (e.g. the largest k of a grid). Vectors are
    float32 [tracks, k] in the row order of ``prepared.tracks``; validation and
    test tracks are folded in.
    """
    from msd_triplet.splits import split_positions

    train = split_positions(prepared.tracks, "train")
    if not len(train):
        raise DataError("the prepared data has no training tracks; check data.split_proportions")
    matrix, vocabulary = stacked_matrix(prepared.matrices, config.tag_sets)
    model = fit_lsi(
        matrix[train],
        vocabulary,
        k or config.k,
        sets=config.tag_sets,
        weighting=config.weighting,
        solver=config.solver,
        seed=seed,
    )
    return model, model.transform(matrix, config.zero_norm_rtol)


def cosine_similarity(vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity matrix of the rows of ``vectors``; zero rows have cosine 0 with everything."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return unit @ unit.T
