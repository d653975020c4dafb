"""The claims of the paper's results section (SPEC section 11), tested on a grid's test queries.

Every claim is a set of directional comparisons between two models on the
same test queries, each judged by the paired bootstrap interval of their
difference (:func:`msd_triplet.uncertainty.paired_bootstrap_interval`):

* "A > B" *holds* when the interval of A − B lies above 0, *fails* when it
  lies below 0, and is *not separable* otherwise;
* "A ≯ B" (A brings no gain over B) holds when the interval lies below 0,
  fails when it lies above 0, and is not separable otherwise: an interval
  around 0 cannot tell a small gain from none.

A claim holds when all of its comparisons hold, fails when any fails, and is
not separable otherwise; a claim whose combinations the grid lacks is "not
tested" with what it needs. Each combination enters at its best k unless the
claim is about k. "Mean over facets" is the per-query mean over the six facets
(genre, style, mood, theme, artist, album, those evaluated), on the queries
labelled in all of them, bootstrapped like any facet.

:func:`check_claims` works on plain per-query arrays, so it does not care
where they come from; :func:`format_claims` writes ``claims.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from msd_triplet.lsi import combination_name, combinations, parse_combination
from msd_triplet.uncertainty import BootstrapSettings, format_figure, interval_sign, level_text, mean_of

__all__ = [
    "Claim",
    "Comparison",
    "HOLDS",
    "FAILS",
    "NOT_SEPARABLE",
    "MEAN",
    "check_claims",
    "format_claims",
    "labelled_in_all",
]

HOLDS, FAILS, NOT_SEPARABLE = "holds", "fails", "not separable"
FACETS: tuple[str, ...] = ("genre", "style", "mood", "theme", "artist", "album")
TAG_FACETS: tuple[str, ...] = ("genre", "style", "mood", "theme")
MEAN = "mean over facets"
GAIN, NO_GAIN = ">", "≯"

Cell = tuple[str, int]  # (combination, k)


@dataclass(frozen=True)
class Comparison:
    """A − B on one facet (or :data:`MEAN`), with the paired interval; ``counted`` = part of the verdict."""

    a: str
    b: str
    facet: str
    expect: str  # GAIN ("A > B") or NO_GAIN ("A ≯ B")
    difference: float
    low: float
    high: float
    counted: bool = True

    @property
    def verdict(self) -> str:
        sign = interval_sign(self.low, self.high) * (1 if self.expect == GAIN else -1)
        return {1: HOLDS, -1: FAILS, 0: NOT_SEPARABLE}[sign]


@dataclass(frozen=True)
class Claim:
    number: int
    statement: str
    comparisons: tuple[Comparison, ...] = ()
    needs: Optional[str] = None  # what the grid lacks when nothing could be compared
    notes: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        counted = {c.verdict for c in self.comparisons if c.counted}
        if not counted:
            return f"not tested (needs {self.needs})" if self.needs else "not tested"
        return FAILS if FAILS in counted else HOLDS if counted == {HOLDS} else NOT_SEPARABLE


class _Judge:
    """Builds :class:`Comparison` s from per-query arrays with one bootstrap setting."""

    def __init__(self, settings: BootstrapSettings, clusters: Optional[np.ndarray]) -> None:
        self.settings, self.clusters = settings, clusters

    @staticmethod
    def values(arrays: Mapping[str, np.ndarray], facet: str) -> Optional[np.ndarray]:
        if facet in arrays or facet != MEAN:
            return arrays.get(facet)
        present = [arrays[f] for f in FACETS if f in arrays]
        return np.mean(np.stack(present), axis=0) if present else None  # NaN unless labelled in all

    def compare(
        self,
        a: str,
        a_arrays: Mapping[str, np.ndarray],
        b: str,
        b_arrays: Mapping[str, np.ndarray],
        facet: str,
        expect: str = GAIN,
        counted: bool = True,
    ) -> list[Comparison]:
        """[the comparison], or [] when either side lacks the facet."""
        x, y = self.values(a_arrays, facet), self.values(b_arrays, facet)
        if x is None or y is None:
            return []
        low, high = self.settings.paired_interval(x, y, self.clusters)
        return [Comparison(a, b, facet, expect, mean_of(x) - mean_of(y), low, high, counted)]


def check_claims(
    cells: Mapping[Cell, Mapping[str, np.ndarray]],
    best_k: Mapping[str, int],
    untrained: Optional[Mapping[str, np.ndarray]] = None,
    *,
    settings: BootstrapSettings,
    clusters: Optional[np.ndarray] = None,
) -> list[Claim]:
    """Test claims (1)–(5) of SPEC section 11.

    Parameters
    ----------
    cells : {(combination, k): {facet: float64 [N]}}, per-query precisions of each cell on
        the same N test queries (seed-averaged), NaN where a track is not a query; may be
        lazy (:class:`msd_triplet.gridqueries.GridQueries`)
    best_k : {combination: its best k} (:func:`msd_triplet.gridreport.best_ks`)
    untrained : {facet: float64 [N]} of the untrained model, or None (claim 5 not tested)
    settings : resamples, level, seed and unit of every paired interval
    clusters : int [N] cluster labels for an album / artist bootstrap, or None

    Returns
    -------
    The five :class:`Claim` s, in order.
    """
    judge = _Judge(settings, clusters)
    best = {c: (c, int(best_k[c])) for c in combinations() if c in best_k and (c, int(best_k[c])) in cells}

    def label(cell: Cell) -> str:
        return f"{cell[0]} (k {cell[1]})"

    def versus(a: Cell, b: Cell, facet: str, expect: str = GAIN, counted: bool = True) -> list[Comparison]:
        return judge.compare(label(a), cells[a], label(b), cells[b], facet, expect, counted)

    return [
        _genres_claim(best, versus),
        _moods_styles_claim(best, versus),
        _moods_claim(best, versus),
        _topics_claim(cells, judge, label),
        _untrained_claim(cells, untrained, judge, label),
    ]


def _genres_claim(best: dict[str, Cell], versus) -> Claim:
    statement = (
        "The genres set helps only the genre facet (genres-X beats X on genre, not on the other facets), "
        "and no combination beats genres alone on the genre facet"
    )
    if "genres" not in best or len(best) < 2:
        return Claim(1, statement, needs="genres and another combination")
    comparisons, pairs = [], 0
    for x, cell in best.items():
        if "genres" in parse_combination(x):
            continue
        with_genres = combination_name(("genres",) + parse_combination(x))
        if with_genres not in best:
            continue
        pairs += 1
        comparisons += versus(best[with_genres], cell, "genre")
        for facet in FACETS[1:]:
            comparisons += versus(best[with_genres], cell, facet, NO_GAIN)
    for other, cell in best.items():
        if other != "genres":
            comparisons += versus(cell, best["genres"], "genre", NO_GAIN)
    notes = (
        ()
        if pairs
        else ("The first part is not tested: it needs a combination X without genres and genres-X beside it.",)
    )
    return Claim(1, statement, tuple(comparisons), notes=notes)


def _moods_styles_claim(best: dict[str, Cell], versus) -> Claim:
    statement = "Moods alone beat styles alone (mean over facets; each facet listed, not part of the verdict)"
    if "moods" not in best or "styles" not in best:
        return Claim(2, statement, needs="moods and styles")
    comparisons = versus(best["moods"], best["styles"], MEAN)
    for facet in FACETS:
        comparisons += versus(best["moods"], best["styles"], facet, counted=False)
    return Claim(2, statement, tuple(comparisons))


def _moods_claim(best: dict[str, Cell], versus) -> Claim:
    statement = "Every combination that contains moods beats every combination that does not (mean over facets)"
    with_moods = [c for c in best if "moods" in parse_combination(c)]
    without = [c for c in best if "moods" not in parse_combination(c)]
    if not with_moods or not without:
        return Claim(3, statement, needs="a combination with moods and one without")
    return Claim(3, statement, tuple(c for a in with_moods for b in without for c in versus(best[a], best[b], MEAN)))


def _topics_claim(cells: Mapping[Cell, Mapping[str, np.ndarray]], judge: _Judge, label) -> Claim:
    statement = (
        "More LSI topics help, up to a ceiling: per combination, its largest k beats its smallest "
        "(mean over facets), and the last step (second-largest → largest k) adds less than the first"
    )
    ks: dict[str, list[int]] = {}
    for combination, k in cells:
        ks.setdefault(combination, []).append(int(k))
    comparisons, ceilings = [], 0
    for combination in (c for c in combinations() if c in ks and len(ks[c]) >= 2):
        k = sorted(ks[combination])
        low, high = (combination, k[0]), (combination, k[-1])
        comparisons += judge.compare(label(high), cells[high], label(low), cells[low], MEAN)
        if len(k) >= 3:
            ceilings += 1
            steps = [judge.values(cells[(combination, a)], MEAN) for a in (k[0], k[1], k[-2], k[-1])]
            first = {MEAN: steps[1] - steps[0]}
            last = {MEAN: steps[3] - steps[2]}
            comparisons += judge.compare(
                f"{combination}: first step k {k[0]} → {k[1]}", first, f"last step k {k[-2]} → {k[-1]}", last, MEAN
            )
    if not comparisons:
        return Claim(4, statement, needs="a combination evaluated at two or more k")
    notes = () if ceilings else ("The ceiling is not tested: it needs a combination at three or more k.",)
    return Claim(4, statement, tuple(comparisons), notes=notes)


def _untrained_claim(
    cells: Mapping[Cell, Mapping[str, np.ndarray]], untrained: Optional[Mapping[str, np.ndarray]], judge: _Judge, label
) -> Claim:
    statement = (
        "The trained network beats an untrained one of the same architecture on every tag facet "
        "(every cell, seed-averaged)"
    )
    if untrained is None:
        return Claim(5, statement, needs="the untrained model's per-query precisions")
    comparisons = []
    for cell in sorted(cells, key=lambda c: (combinations().index(c[0]), c[1])):
        for facet in TAG_FACETS:
            comparisons += judge.compare(label(cell), cells[cell], "untrained", untrained, facet)
    return Claim(5, statement, tuple(comparisons), needs="a cell")


def labelled_in_all(arrays: Mapping[str, np.ndarray]) -> int:
    """How many queries the mean over facets has: those labelled (not NaN) in every facet of ``arrays``."""
    values = _Judge.values(arrays, MEAN)
    return 0 if values is None else int((~np.isnan(values)).sum())


# ---------------------------------------------------------------------- claims.md


def format_claims(
    claims: Sequence[Claim],
    *,
    settings: BootstrapSettings,
    queries: int,
    mean_queries: Optional[int] = None,
    seeds: Sequence[int] = (),
    best_k: Optional[Mapping[str, int]] = None,
) -> str:
    """Markdown: a summary table of the verdicts, then every comparison of every claim with its numbers.

    ``queries`` : test tracks; ``mean_queries`` : those labelled in every facet (the
    mean over facets); ``seeds`` : training seeds averaged; ``best_k`` : shown in the preamble.
    """
    level = level_text(settings.level)
    total = sum(len(c.comparisons) for c in claims)
    lines = [
        "# The paper's claims on this grid",
        "",
        f"Per-query precision on {queries:,} test queries"
        + (f", averaged over the training seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else "")
        + f"; differences between two models on the same queries with paired {settings.describe()}.",
        "",
        "- A > B *holds* when the interval of A − B lies above 0, *fails* when it lies below 0, and is *not "
        "separable* otherwise. A ≯ B (no gain expected) holds when the interval lies below 0 and fails when it "
        "lies above 0. A claim holds when all its comparisons hold, fails when any fails, else it is not "
        "separable.",
        f"- Mean over facets: the per-query mean over {', '.join(FACETS)}"
        + (f", on the {mean_queries:,} queries labelled in all of them" if mean_queries is not None else "")
        + ".",
    ]
    if best_k:
        lines.append(
            "- Each combination at its best k (the highest mean over facets of the seed-averaged P@k): "
            + ", ".join(f"{c} {k}" for c, k in best_k.items())
            + "."
        )
    lines += ["", "| claim | verdict | comparisons |", "|---|---|---|"]
    for claim in claims:
        counted = [c.verdict for c in claim.comparisons if c.counted]
        tally = ", ".join(f"{counted.count(v)} {v}" for v in (HOLDS, FAILS, NOT_SEPARABLE) if v in counted)
        lines.append(f"| ({claim.number}) {claim.statement} | **{claim.verdict}** | {tally or '–'} |")
    for claim in claims:
        lines += ["", f"## ({claim.number}) {claim.verdict}", "", claim.statement + "."]
        lines += [f"- {note}" for note in claim.notes]
        if claim.comparisons:
            lines += [
                "",
                f"| A | B | facet | expected | A − B [{level} paired CI] | result |",
                "|---|---|---|---|---|---|",
            ]
            for c in claim.comparisons:
                result = c.verdict if c.counted else f"({c.verdict}; listed)"
                lines.append(
                    f"| {c.a} | {c.b} | {c.facet} | A {c.expect} B | "
                    f"{format_figure(c.difference, c.low, c.high, signed=True)} | {result} |"
                )
    lines += [
        "",
        "## Multiple comparisons",
        "",
        f"{total} comparisons, each judged at {level} without correction for multiplicity: where a true "
        f"difference is 0, about {100 - settings.level * 100:g} % of such comparisons still come out as "
        "holds or fails by chance, so a verdict that rests on one comparison among many is weak evidence.",
    ]
    return "\n".join(lines) + "\n"
