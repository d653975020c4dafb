"""How sure a precision figure is: percentile bootstrap intervals over queries (SPEC section 11).

Every P@k is a mean over queries, so its uncertainty is that of a mean:
:func:`bootstrap_interval` resamples the queries with replacement
(``n_resamples`` times, from a seeded :class:`numpy.random.Generator`) and
returns the percentile interval of the resampled means. A difference between
two models on the same queries uses :func:`paired_bootstrap_interval`: the
same resampled queries for both, so what the two share (easy and hard
queries) cancels out.

Queries are not independent when they come in albums (tags are given per
album, and an album's tracks sound alike): ``clusters`` (an album or artist
label per query) then resamples whole clusters, the cluster (block)
bootstrap, whose mean is the sum of the resampled clusters' sums over the sum
of their sizes. With one query per cluster it draws exactly what the plain
bootstrap draws.

The draws and the percentile rule are those of ``scipy.stats.bootstrap(...,
method="percentile", vectorized=True, rng=np.random.default_rng(seed))``: the
same seed gives the same interval to the last bit (tested), at far less
memory: resamples are drawn in chunks of bounded size (about 64 MiB of indices
and gathered values per chunk, whatever N).

Example
-------
>>> low, high = bootstrap_interval([0.2, 0.4, 0.3, 0.5], seed=0)  # doctest: +SKIP
>>> paired_bootstrap_interval(trained, untrained, seed=0, clusters=albums)  # doctest: +SKIP
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from msd_triplet.errors import ArgumentError

__all__ = [
    "BOOTSTRAP_UNITS",
    "BootstrapSettings",
    "bootstrap_interval",
    "cluster_labels",
    "format_figure",
    "interval_sign",
    "level_text",
    "mean_of",
    "paired_bootstrap_interval",
    "paired_differences",
]

#: what one bootstrap draw resamples: single queries, or every query of an album / artist
BOOTSTRAP_UNITS: tuple[str, ...] = ("query", "album", "artist")
_RESAMPLE_BYTES = 64 * 2**20  # indices + gathered values per chunk of resamples


# ---------------------------------------------------------------------------
# intervals


def bootstrap_interval(
    values: Any, *, n_resamples: int = 1000, level: float = 0.95, seed: int, clusters: Any = None
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of the non-NaN ``values``.

    Parameters
    ----------
    values : float [N]; NaN marks a track that is not a query (dropped)
    n_resamples : resamples, >= 1
    level : confidence level, 0 < level < 1 (0.95: the 2.5 and 97.5 percentiles)
    seed : int >= 0, seeds :func:`numpy.random.default_rng`
    clusters : int [N] or None; a cluster label per value (e.g. album index): resample
        whole clusters instead of single values

    Returns
    -------
    (low, high) : floats; (NaN, NaN) when no value is a number.

    Raises
    ------
    ArgumentError (a ValueError) naming the argument, what was wrong and what is allowed.
    """
    x, labels = _prepare({"values": values}, clusters)
    return _interval(x, labels, n_resamples, level, seed)


def paired_bootstrap_interval(
    a: Any, b: Any, *, n_resamples: int = 1000, level: float = 0.95, seed: int, clusters: Any = None
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) − mean(b), resampling the same queries for both.

    ``a`` and ``b`` : float [N], the per-query values of two models on the same
    queries in the same order; NaN (not a query) must be at the same positions in
    both, and those positions are dropped. Other parameters as in
    :func:`bootstrap_interval`. Returns (low, high); (NaN, NaN) without queries.
    """
    x, labels = _prepare({"a": a, "b": b}, clusters)
    return _interval(x, labels, n_resamples, level, seed)


def _interval(
    x: np.ndarray, labels: Optional[np.ndarray], n_resamples: Any, level: Any, seed: Any
) -> tuple[float, float]:
    n_resamples, level, seed = _check_settings(n_resamples, level, seed)
    if x.shape[1] == 0:
        return float("nan"), float("nan")
    means = _resampled_means(x, labels, n_resamples, np.random.default_rng(seed))
    low, high = _percentiles(means[0] - means[1] if len(means) == 2 else means[0], level)
    return float(low), float(high)


def _resampled_means(
    x: np.ndarray, labels: Optional[np.ndarray], n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """float64 [m, n_resamples]: the mean of each row of ``x`` [m, n] over each resample.

    One resample draws as many units (values, or clusters when ``labels`` is
    given) as there are, with replacement: ``rng.integers(0, units, (rows, units))``
    per chunk of rows, which is what scipy draws (PCG64 hands out 32-bit draws
    from one stream, so the chunking does not change them).
    """
    m, n = x.shape
    if labels is None:
        sums, sizes, units = x, None, n
    else:
        units = int(labels.max()) + 1
        sums = np.stack([np.bincount(labels, weights=row, minlength=units) for row in x])
        sizes = np.bincount(labels, minlength=units).astype(np.float64)
    rows = max(1, _RESAMPLE_BYTES // (8 * units * (m + 2)))
    out = np.empty((m, n_resamples))
    for start in range(0, n_resamples, rows):
        stop = min(start + rows, n_resamples)
        draw = rng.integers(0, units, (stop - start, units))
        total = units if sizes is None else sizes[draw].sum(axis=-1)
        for j in range(m):
            out[j, start:stop] = sums[j][draw].sum(axis=-1) / total
    return out


def _percentiles(distribution: np.ndarray, level: float) -> np.ndarray:
    """The (1 − level)/2 and (1 + level)/2 quantiles, Hyndman & Fan type 7 as scipy.stats.quantile computes it."""
    alpha = (1 - level) / 2
    p = np.array([alpha, 1 - alpha])
    y = np.sort(distribution)
    n = y.size
    jg = p * n + (1 - p)
    jp1 = jg // 1
    j = jp1 - 1
    g = jg % 1
    g[j < 0] = 0
    j = np.clip(j, 0, n - 1).astype(np.int64)
    jp1 = np.clip(jp1, 0, n - 1).astype(np.int64)
    return (1 - g) * y[j] + g * y[jp1]


# ---------------------------------------------------------------------------
# input checks


def _prepare(arrays: Mapping[str, Any], clusters: Any) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """float64 [m, n] of the queries that are numbers in every array, and their cluster labels 0..C-1."""
    checked = {name: _check_values(name, values) for name, values in arrays.items()}
    lengths = {name: len(v) for name, v in checked.items()}
    if len(set(lengths.values())) > 1:
        raise ArgumentError(
            f"{' and '.join(lengths)}: lengths {' and '.join(map(str, lengths.values()))} differ; "
            "a paired interval needs the per-query values of the same queries, in the same order"
        )
    if len(checked) == 2:
        (na, a), (nb, b) = checked.items()
        differ = np.isnan(a) != np.isnan(b)
        if differ.any():
            i = int(np.flatnonzero(differ)[0])
            raise ArgumentError(
                f"{na} and {nb}: {int(differ.sum())} position(s) are a query in one and NaN in the "
                f"other (e.g. position {i}: {na} = {a[i]}, {nb} = {b[i]}); both must be NaN at the "
                "same positions (the same split and facet)"
            )
    x = np.stack(list(checked.values()))
    keep = ~np.isnan(x[0])
    if clusters is None:
        return x[:, keep], None
    n = x.shape[1]
    labels = np.asarray(clusters)
    if labels.shape != (n,) or (labels.dtype.kind not in "iu" and labels.size):
        raise ArgumentError(
            f"clusters: expected one integer label per value ({n}), got shape {labels.shape} dtype {labels.dtype}"
        )
    return x[:, keep], _first_seen(labels[keep])


def _check_values(name: str, values: Any) -> np.ndarray:
    x = np.asarray(values)
    if x.ndim != 1:
        raise ArgumentError(f"{name}: expected a 1-D array of per-query values, got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise ArgumentError(f"{name}: expected real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    infinite = np.isinf(x)
    if infinite.any():
        i = int(np.flatnonzero(infinite)[0])
        raise ArgumentError(
            f"{name}: {int(infinite.sum())} value(s) infinite (e.g. position {i} = {x[i]}); "
            "allowed are finite numbers, and NaN for a track that is not a query"
        )
    return x


def _check_settings(n_resamples: Any, level: Any, seed: Any) -> tuple[int, float, int]:
    if not _is_int(n_resamples) or n_resamples < 1:
        raise ArgumentError(f"n_resamples = {n_resamples!r}: allowed is an integer >= 1 (e.g. 1000)")
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ArgumentError(f"level = {level!r}: allowed is a number strictly between 0 and 1 (e.g. 0.95)")
    if not _is_int(seed) or seed < 0:
        raise ArgumentError(f"seed = {seed!r}: allowed is an integer >= 0")
    return int(n_resamples), float(level), int(seed)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _first_seen(labels: np.ndarray) -> np.ndarray:
    """int64 [n]: the labels renumbered 0, 1, … in the order they first appear."""
    if not labels.size:
        return labels.astype(np.int64)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def cluster_labels(ids: Any) -> np.ndarray:
    """int64 [N]: one label per distinct id (album or artist), in order of first appearance.

    A missing id (None, NaN, "") gets a label of its own: such a query is its
    own cluster rather than one big cluster of all unknowns.
    """
    ids = np.asarray(ids, dtype=object)
    missing = np.array([v is None or v == "" or (isinstance(v, float) and v != v) for v in ids], bool)
    keys = np.where(missing, [f"\0missing {i}" for i in range(len(ids))], ids.astype(str))
    return _first_seen(keys)


# ---------------------------------------------------------------------------
# settings and per-facet summaries


@dataclass(frozen=True)
class BootstrapSettings:
    """How intervals are computed: resamples, confidence level, seed and resampled unit.

    ``unit`` "query" resamples single queries; "album" / "artist" resample whole
    albums / artists (the cluster bootstrap), see :meth:`clusters`.
    """

    n_resamples: int = 1000
    level: float = 0.95
    seed: int = 0
    unit: str = "query"

    def __post_init__(self) -> None:
        _check_settings(self.n_resamples, self.level, self.seed)
        if self.unit not in BOOTSTRAP_UNITS:
            raise ArgumentError(f"unit = {self.unit!r}: allowed are {', '.join(BOOTSTRAP_UNITS)}")

    @classmethod
    def from_config(cls, config) -> "BootstrapSettings":
        """From ``evaluation.bootstrap_resamples``, ``confidence``, ``bootstrap_unit`` and the config's ``seed``."""
        e = config.evaluation
        return cls(e.bootstrap_resamples, e.confidence, config.seed, e.bootstrap_unit)

    def to_json(self) -> dict:
        return {"resamples": self.n_resamples, "level": self.level, "unit": self.unit, "seed": self.seed}

    def describe(self) -> str:
        """``95 % percentile bootstrap intervals (1,000 resamples of albums, seed 42)``."""
        units = {"query": "queries", "album": "albums", "artist": "artists"}[self.unit]
        return (
            f"{level_text(self.level)} percentile bootstrap intervals ({self.n_resamples:,} resamples of "
            f"{units}, seed {self.seed})"
        )

    def clusters(self, artist_ids: Any, album_ids: Any) -> Optional[np.ndarray]:
        """The cluster labels [N] for ``unit`` from the queries' artist and album ids; None for "query"."""
        if self.unit == "query":
            return None
        return cluster_labels(artist_ids if self.unit == "artist" else album_ids)

    def interval(self, values: Any, clusters: Any = None) -> tuple[float, float]:
        """:func:`bootstrap_interval` with these settings."""
        return bootstrap_interval(
            values, n_resamples=self.n_resamples, level=self.level, seed=self.seed, clusters=clusters
        )

    def paired_interval(self, a: Any, b: Any, clusters: Any = None) -> tuple[float, float]:
        """:func:`paired_bootstrap_interval` with these settings."""
        return paired_bootstrap_interval(
            a, b, n_resamples=self.n_resamples, level=self.level, seed=self.seed, clusters=clusters
        )


def mean_of(values: Any) -> float:
    """Mean of the non-NaN values; NaN (without a warning) when there are none."""
    x = np.asarray(values, np.float64)
    keep = ~np.isnan(x)
    return float(x[keep].mean()) if keep.any() else float("nan")


def paired_differences(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], settings: BootstrapSettings, clusters: Any = None
) -> dict[str, dict]:
    """Per facet of both: ``{"difference", "ci_low", "ci_high", "queries"}`` of mean(a) − mean(b), paired.

    ``a``, ``b`` : {facet: float64 [N]} per-query precisions of two models on the
    same queries (e.g. trained and untrained); ``clusters`` as in
    :func:`paired_bootstrap_interval`. Values are plain floats and ints.
    """
    out = {}
    for facet in a:
        if facet in b:
            low, high = settings.paired_interval(a[facet], b[facet], clusters)
            out[facet] = {
                "difference": mean_of(a[facet]) - mean_of(b[facet]),
                "ci_low": low,
                "ci_high": high,
                "queries": int((~np.isnan(np.asarray(a[facet], np.float64))).sum()),
            }
    return out


def interval_sign(low: float, high: float) -> int:
    """+1 if the interval lies above 0, −1 if below 0, 0 if it holds 0 (or is NaN)."""
    if low > 0:
        return 1
    if high < 0:
        return -1
    return 0


def format_figure(
    value: Optional[float],
    low: Optional[float] = None,
    high: Optional[float] = None,
    *,
    sd: Optional[float] = None,
    signed: bool = False,
    digits: int = 4,
) -> str:
    """``0.4120 ± 0.0100 [0.3880, 0.4370]``: a figure, its sd over seeds and its interval, each when it is a number.

    ``signed`` writes differences with their sign (``+0.0310 [+0.0100, +0.0520]``); "–" for a missing figure.
    """

    def known(v: Optional[float]) -> bool:
        return v is not None and v == v  # not None, not NaN

    def num(v: float) -> str:
        return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"

    if not known(value):
        return "–"
    text = num(value)
    if known(sd):
        text += f" ± {sd:.{digits}f}"
    if known(low) and known(high):
        text += f" [{num(low)}, {num(high)}]"
    return text


def level_text(level: float) -> str:
    """``0.95`` → ``"95 %"``."""
    return f"{level * 100:g} %"
