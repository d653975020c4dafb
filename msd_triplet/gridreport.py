"""Reports on a finished grid of cells (tag-set combination × LSI topics × training seed): tables, curves, the paper.

The grid writes ``results.csv`` with one row per cell and seed: ``combination``,
``k`` (LSI topics), ``seed`` (training seed), ``eval_k`` (the k of P@k),
``epochs``, ``best_epoch``, ``seconds``, and per facet f in genre, style, mood,
theme, artist, album: the precision ``p_<f>`` with its bootstrap interval
``ci_low_<f>``, ``ci_high_<f>``, the chance level ``chance_<f>``, the untrained
model's precision (same seed) ``untrained_p_<f>`` and the paired interval of
trained − untrained ``diff_ci_low_<f>``, ``diff_ci_high_<f>``.

* :func:`read_results` reads and checks that file (also the older layout
  without seeds and intervals, whose new columns are then empty);
* :func:`table2` prints it in the layout of the paper's Table II (best k per
  tag set, plus the k = 20 row, plus the untrained model and chance); each
  figure is the mean over seeds ± the sd over seeds, with an interval;
* :func:`plot_curves` draws P@k against the number of topics, one PNG per facet,
  with the intervals as error bars;
* :func:`compare` sets our cells beside the paper's (``experiments/paper_table2.csv``,
  read with :func:`read_paper`).

Intervals of a cell averaged over several seeds cannot be read off the rows:
they are the bootstrap interval of the seed-averaged per-query precisions,
which the grid computes (:func:`msd_triplet.gridqueries.pooled_intervals`)
and passes as ``intervals``. Without it, a cell's interval is taken from its
row when it has one seed, and left out otherwise.

The best k of a tag set is the one with the highest mean over the six facets
of the seed-averaged precision (ties: the smallest k). A cell and seed that
appears twice (a re-run) counts once, with its last row.

>>> results = read_results("runs/grid/results.csv")                     # doctest: +SKIP
>>> print(table2(results))                                              # doctest: +SKIP
>>> print(compare(results, read_paper("experiments/paper_table2.csv")))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from msd_triplet.errors import ConfigError, DataError
from msd_triplet.fileio import atomic_path
from msd_triplet.lsi import combination_name, combinations
from msd_triplet.uncertainty import BootstrapSettings, format_figure

__all__ = [
    "FACETS",
    "RESULT_COLUMNS",
    "ResultsError",
    "best_ks",
    "compare",
    "plot_curves",
    "read_paper",
    "read_results",
    "table2",
]

FACETS: tuple[str, ...] = ("genre", "style", "mood", "theme", "artist", "album")
#: per facet, in this order
FACET_FIGURES: tuple[str, ...] = ("p", "ci_low", "ci_high", "chance", "untrained_p", "diff_ci_low", "diff_ci_high")
RESULT_COLUMNS: tuple[str, ...] = ("combination", "k", "seed", "eval_k", "epochs", "best_epoch", "seconds") + tuple(
    f"{prefix}_{f}" for f in FACETS for prefix in FACET_FIGURES
)
#: the layout before seeds and intervals: read, with the new columns empty
LEGACY_COLUMNS: tuple[str, ...] = ("combination", "k", "eval_k", "epochs", "best_epoch", "seconds") + tuple(
    f"{prefix}_{f}" for f in FACETS for prefix in ("p", "chance")
)
PAPER_COLUMNS: tuple[str, ...] = ("combination", "k") + FACETS
PAPER_EVAL_K = 100
UNTRAINED = "untrained"  # the combination name of the untrained model's row in ``intervals``


class ResultsError(DataError, ValueError):
    """A results or paper table cannot be used (a ``ValueError`` and a :class:`DataError`)."""


# ---------------------------------------------------------------------- reading


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a grid's ``results.csv``: one row per cell and seed, columns :data:`RESULT_COLUMNS` (more are kept).

    A file in the older layout (:data:`LEGACY_COLUMNS`: no seed, no intervals)
    is read with the new columns empty. Combination names are put in the
    canonical spelling (``moods-genres`` → ``genres-moods``). ResultsError (a
    ValueError) naming the file for missing columns, an unknown combination, a
    non-integer ``k``/``eval_k``/``seed`` or non-numeric figures.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ResultsError(f"{path}: cannot read grid results: {exc}") from exc
    return _check_results(frame, str(path))


def read_paper(path: str | os.PathLike) -> pd.DataFrame:
    """Read the paper's Table II (``experiments/paper_table2.csv``; ``#`` lines are comments).

    Columns ``combination, k, <facets>`` and optionally ``row`` (``best`` or
    ``fixed``). ResultsError naming the file for missing columns.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, comment="#")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ResultsError(f"{path}: cannot read the paper table: {exc}") from exc
    _require(frame, PAPER_COLUMNS, str(path))
    return frame


def _require(frame: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ResultsError(
            f"{where}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
            f"has {', '.join(map(str, frame.columns)) or 'none'}"
        )


def _check_results(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    frame = frame.copy()
    new = [c for c in RESULT_COLUMNS if c not in LEGACY_COLUMNS]
    if not any(c in frame.columns for c in new):  # the layout before seeds and intervals
        _require(frame, LEGACY_COLUMNS, where)
        for column in new:
            frame[column] = np.nan
    _require(frame, RESULT_COLUMNS, where)
    try:
        frame["combination"] = [combination_name(str(c)) for c in frame["combination"]]
    except ConfigError as exc:
        raise ResultsError(f"{where}: {exc}") from exc
    for column in ("k", "eval_k", "seed"):
        values = pd.to_numeric(frame[column], errors="coerce")
        missing = values.isna() & (frame[column].notna() | (column != "seed"))  # an old row may lack a seed
        bad = missing | (values.notna() & (values != values.round()))
        if bad.any():
            raise ResultsError(f"{where}: column {column} must hold integers, found {_shown(frame.loc[bad, column])}")
        frame[column] = values.astype(int) if values.notna().all() else values
    for column in RESULT_COLUMNS[7:]:
        values = pd.to_numeric(frame[column], errors="coerce")
        if (values.isna() & frame[column].notna()).any():
            raise ResultsError(
                f"{where}: column {column} must hold numbers, "
                f"found {_shown(frame.loc[values.isna() & frame[column].notna(), column])}"
            )
        frame[column] = values.astype(float)
    return frame


def _shown(bad: pd.Series) -> str:
    """repr of the first offending value, as a plain Python value (1.5, 'x')."""
    value = bad.iloc[0]
    return repr(value.item() if isinstance(value, np.generic) else value)


def _cells(
    results: pd.DataFrame, facets: Sequence[str], intervals: Optional[pd.DataFrame] = None
) -> tuple[pd.DataFrame, int, list]:
    """One row per (combination, k): seed means ``p_<f>``, sds ``sd_<f>``, intervals, ``seeds``, ``mean``.

    Also returns eval_k and the sorted seeds of the results (NaN for old rows without one).
    """
    unknown = [f for f in facets if f not in FACETS]
    if unknown or not facets:
        raise ResultsError(f"facets {', '.join(unknown) or '(none)'}: allowed are {', '.join(FACETS)}")
    frame = _check_results(results, "results")
    if frame.empty:
        raise ResultsError("results: no cells")
    eval_ks = sorted(frame["eval_k"].unique())
    if len(eval_ks) > 1:
        raise ResultsError(
            f"results: cells evaluated at several P@k ({', '.join(map(str, eval_ks))}); select one eval_k first"
        )
    frame = frame.drop_duplicates(["combination", "k", "seed"], keep="last")
    groups = frame.groupby(["combination", "k"], sort=False)
    cells = groups[[c for c in frame.columns if c.startswith(("p_", "untrained_p_"))]].mean()
    for f in FACETS:
        cells[f"sd_{f}"] = groups[f"p_{f}"].std(ddof=1)
        cells[f"chance_{f}"] = groups[f"chance_{f}"].first()
        for bound in ("ci_low", "ci_high"):  # a single seed's interval is that of its cell
            cells[f"{bound}_{f}"] = groups[f"{bound}_{f}"].first().where(groups.size() == 1)
    cells["seeds"] = groups.size()
    cells = cells.reset_index()
    if intervals is not None:
        given = intervals.set_index(["combination", "k"])
        at = pd.MultiIndex.from_frame(cells[["combination", "k"]])
        for column in (f"{bound}_{f}" for f in FACETS for bound in ("ci_low", "ci_high")):
            if column in given.columns:  # where given; a single seed's own interval elsewhere
                cells[column] = given[column].reindex(at).fillna(cells[column].set_axis(at)).to_numpy()
    cells["mean"] = cells[[f"p_{f}" for f in facets]].mean(axis=1, skipna=False)
    return cells, int(eval_ks[0]), sorted(frame["seed"].dropna().unique().tolist())


def _ordered(names: Sequence[str]) -> list[str]:
    """``names`` in the paper's order of :func:`msd_triplet.lsi.combinations`."""
    present = set(names)
    return [c for c in combinations() if c in present]


def _best(cells: pd.DataFrame) -> Optional[pd.Series]:
    """The row of the highest mean precision (smallest k on ties); None if no cell is complete."""
    complete = cells[cells["mean"].notna()].sort_values("k", kind="stable")
    return None if complete.empty else complete.loc[complete["mean"].idxmax()]


def best_ks(results: pd.DataFrame, facets: Sequence[str] = FACETS) -> dict[str, int]:
    """{combination: its best k}: the highest mean over ``facets`` of the seed-averaged P@k (paper order)."""
    cells, _, _ = _cells(results, facets)
    best = {name: _best(cells[cells["combination"] == name]) for name in _ordered(cells["combination"])}
    return {name: int(row["k"]) for name, row in best.items() if row is not None}


def _notes(notes: Sequence[str]) -> str:
    return "\n".join(f"- {n}" for n in notes)


def _figure(row: pd.Series, facet: str) -> str:
    """``mean ± sd [low, high]`` of one facet of an aggregated row (sd with 2+ seeds, interval when known)."""
    return format_figure(
        row[f"p_{facet}"], row.get(f"ci_low_{facet}"), row.get(f"ci_high_{facet}"), sd=row.get(f"sd_{facet}")
    )


def _untrained_row(results: pd.DataFrame, facets: Sequence[str], intervals: Optional[pd.DataFrame]) -> pd.Series:
    """The untrained model's figures: mean and sd over seeds (one value per seed), interval from ``intervals``."""
    frame = _check_results(results, "results").drop_duplicates(["combination", "k", "seed"], keep="last")
    per_seed = frame.groupby("seed")[[f"untrained_p_{f}" for f in FACETS]].first()
    row = pd.Series({f"p_{f}": per_seed[f"untrained_p_{f}"].mean() for f in FACETS}, dtype=float)
    for f in FACETS:
        row[f"sd_{f}"] = per_seed[f"untrained_p_{f}"].std(ddof=1)
    if intervals is not None:
        mine = intervals[intervals["combination"] == UNTRAINED]
        for column in mine.columns.drop(["combination", "k"], errors="ignore"):
            row[column] = float(mine[column].iloc[0]) if len(mine) else math.nan
    return row


# ---------------------------------------------------------------------- Table II


def table2(
    results: pd.DataFrame,
    facets: Sequence[str] = FACETS,
    fixed_k: Optional[int] = 20,
    intervals: Optional[pd.DataFrame] = None,
    settings: Optional[BootstrapSettings] = None,
) -> str:
    """Markdown in the layout of the paper's Table II, each figure ``mean ± sd [low, high]``.

    Per tag-set combination (paper order), the row of its best k by the mean
    P@k over ``facets`` (seed-averaged), then its row at ``fixed_k`` when there
    is one and it is not the best; a row ``untrained model`` (same architecture,
    not trained, mean over seeds) when the results carry it; a last row
    ``chance`` with the chance levels of the first cell (a footnote says so
    when they differ across cells).

    Parameters
    ----------
    results : one row per cell and seed, the columns of :func:`read_results`
    facets : the facets shown, which also choose the best k
    fixed_k : the number of topics of the second row per combination; None for best rows only
    intervals : per (combination, k) ``ci_low_<f>``, ``ci_high_<f>`` of the seed-averaged
        per-query precision, and the untrained model's under combination ``"untrained"``
        (:func:`msd_triplet.gridqueries.pooled_intervals`); see the module notes without it
    settings : how ``intervals`` were computed, for the footnote
    """
    frame, eval_k, seeds = _cells(results, facets, intervals)
    header = "| tag set | topics | " + " | ".join(facets) + " |"
    lines = [header, "|---|---:|" + "---:|" * len(facets)]
    incomplete = []
    for name in _ordered(frame["combination"]):
        cells = frame[frame["combination"] == name]
        best = _best(cells)
        rows = [] if best is None else [best]
        if best is None:
            incomplete.append(name)
        fixed = cells[cells["k"] == fixed_k] if fixed_k is not None else cells.iloc[:0]
        if len(fixed) and (best is None or int(best["k"]) != fixed_k):
            rows.append(fixed.iloc[0])
        for row in rows:
            lines.append(f"| {name} | {int(row['k'])} | " + " | ".join(_figure(row, f) for f in facets) + " |")
    untrained = _untrained_row(results, facets, intervals)
    if untrained[[f"p_{f}" for f in facets]].notna().any():
        lines.append("| untrained model | | " + " | ".join(_figure(untrained, f) for f in facets) + " |")
    first = frame.iloc[0]
    lines.append("| chance | | " + " | ".join(format_figure(first[f"chance_{f}"]) for f in facets) + " |")

    several = len(seeds) > 1
    notes = [
        f"P@{eval_k} per facet"
        + (
            f", mean ± sd over the {len(seeds)} training seeds {', '.join(str(int(s)) for s in seeds)}"
            if several
            else ""
        )
        + ". First row per tag set: its best number of topics by the mean over "
        f"{', '.join(facets)}" + (f"; second: k = {fixed_k}" if fixed_k is not None else "") + ".",
        "[low, high]: "
        + (settings.describe() if settings else "percentile bootstrap interval")
        + (" of the seed-averaged per-query precision" if several else "")
        + ".",
    ]
    if several and intervals is None:
        notes.append(
            "Intervals of cells with several seeds need the per-query precisions "
            "(msd_triplet.gridqueries.pooled_intervals); not shown."
        )
    differ = [
        f
        for f in facets
        if not np.allclose(frame[f"chance_{f}"], first[f"chance_{f}"], rtol=1e-9, atol=0, equal_nan=True)
    ]
    if differ:
        ranges = ", ".join(f"{f} {frame[f'chance_{f}'].min():.4f}–{frame[f'chance_{f}'].max():.4f}" for f in differ)
        notes.append(
            f"Chance levels differ across cells ({ranges}); the chance row is that of "
            f"{first['combination']} k = {int(first['k'])}."
        )
    if incomplete:
        notes.append(f"No cell with all facets evaluated: {', '.join(incomplete)}.")
    return "\n".join(lines) + "\n\n" + _notes(notes) + "\n"


# ---------------------------------------------------------------------- curves


def plot_curves(
    results: pd.DataFrame,
    out_dir: str | os.PathLike,
    facets: Sequence[str] = FACETS,
    intervals: Optional[pd.DataFrame] = None,
) -> list[Path]:
    """Write ``p_at_k_<facet>.png`` per facet into ``out_dir``: P@k against LSI topics, intervals as error bars.

    One line with markers per combination (paper order; the seed-averaged P@k,
    error bars where the interval is known, see :func:`table2` for ``intervals``),
    the chance level of the first cell as a dashed line, the legend outside the
    axes. Written atomically, without a display (a bare Agg figure; pyplot is not
    used, so the caller's backend is left alone). Returns the paths in facet order.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frame, eval_k, _ = _cells(results, facets, intervals)
    out_dir = Path(out_dir)
    names = _ordered(frame["combination"])
    colours = [
        f"C{i}" if i < 10 else ("black", "lime", "navy", "crimson", "darkgoldenrod")[i - 10] for i in range(len(names))
    ]
    markers = "osD^v<>ph*XPd8H"
    written = []
    for facet in facets:
        fig = Figure(figsize=(9, 4.8), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for i, name in enumerate(names):
            cells = frame[frame["combination"] == name].sort_values("k")
            p = cells[f"p_{facet}"].to_numpy()
            below = np.nan_to_num(p - cells[f"ci_low_{facet}"].to_numpy())  # no bar where unknown
            above = np.nan_to_num(cells[f"ci_high_{facet}"].to_numpy() - p)
            ax.errorbar(
                cells["k"],
                p,
                yerr=np.vstack([below, above]),
                marker=markers[i % len(markers)],
                markersize=4,
                lw=1.2,
                capsize=2,
                elinewidth=0.8,
                color=colours[i % len(colours)],
                label=name,
            )
        chance = float(frame.iloc[0][f"chance_{facet}"])
        if not math.isnan(chance):
            ax.axhline(chance, color="0.4", ls="--", lw=1, label=f"chance ({chance:.4f})")
        ax.set_xlabel("LSI topics (k)")
        ax.set_ylabel(f"P@{eval_k}")
        ax.set_title(f"{facet}: precision at {eval_k} against the number of LSI topics (bars: intervals)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
        path = out_dir / f"p_at_k_{facet}.png"
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
        written.append(path)
    return written


# ---------------------------------------------------------------------- the paper


def compare(
    results: pd.DataFrame, paper: pd.DataFrame, facets: Sequence[str] = FACETS, intervals: Optional[pd.DataFrame] = None
) -> str:
    """Markdown: our cells beside the paper's, ``0.3790 [0.3500, 0.4010] (paper .3971)`` per facet.

    Ours is the seed-averaged P@k with its interval (see :func:`table2` for
    ``intervals``). Pairing rule, per paper row (paper order) whose combination we ran:

    1. our cell at the same k, when we have one (column ``match``: ``same k``);
    2. else, for a paper row of the tag set's best k (``row == "best"``, or
       every row when the table has no ``row`` column), our best cell by the
       mean over ``facets`` (``match``: ``our best``);
    3. else (a fixed-k paper row we did not run) no line.

    A note says when our precision is not at the paper's cut-off of 100.
    """
    frame, eval_k, _ = _cells(results, facets, intervals)
    _require(paper, PAPER_COLUMNS, "paper table")
    paper = paper.copy()
    try:
        paper["combination"] = [combination_name(str(c)) for c in paper["combination"]]
    except ConfigError as exc:
        raise ResultsError(f"paper table: {exc}") from exc
    lines = [
        "| tag set | paper k | our k | match | " + " | ".join(facets) + " |",
        "|---|---:|---:|---|" + "---|" * len(facets),
    ]
    paired = 0
    for _, theirs in paper.iterrows():
        name, k = theirs["combination"], int(theirs["k"])
        cells = frame[frame["combination"] == name]
        if cells.empty:
            continue
        same = cells[cells["k"] == k]
        if len(same):
            ours, match = same.iloc[0], "same k"
        elif "row" not in paper.columns or theirs["row"] == "best":
            ours, match = _best(cells), "our best"
            if ours is None:
                continue
        else:
            continue
        paired += 1
        values = " | ".join(
            f"{format_figure(ours[f'p_{f}'], ours[f'ci_low_{f}'], ours[f'ci_high_{f}'])} "
            f"(paper {_paper_num(theirs[f])})"
            for f in facets
        )
        lines.append(f"| {name} | {k} | {int(ours['k'])} | {match} | {values} |")
    notes = [
        f"{paired} of {len(paper)} paper rows paired: our cell at the paper's k, else (for the paper's "
        f"best-k rows) our best k by the mean over {', '.join(facets)}. Ours: seed-averaged P@{eval_k} "
        "[its bootstrap interval]."
    ]
    if eval_k != PAPER_EVAL_K:
        notes.append(f"Ours is P@{eval_k}, the paper's P@{PAPER_EVAL_K}: not directly comparable.")
    return "\n".join(lines) + "\n\n" + _notes(notes) + "\n"


def _paper_num(value: float) -> str:
    """The paper's spelling of a precision: ``.3971``."""
    text = format_figure(float(value))
    return text[1:] if text.startswith("0.") else text
