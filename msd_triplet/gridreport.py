"""Reports on a finished grid of cells (tag-set combination × LSI topics): tables, curves, the paper.

The grid writes ``results.csv`` with one row per cell: ``combination``, ``k``
(LSI topics), ``eval_k`` (the k of P@k), ``epochs``, ``best_epoch``,
``seconds``, and per facet f in genre, style, mood, theme, artist, album the
precision ``p_<f>`` and its chance level ``chance_<f>``.

* :func:`read_results` reads and checks that file;
* :func:`table2` prints it in the layout of the paper's Table II (best k per
  tag set, plus the k = 20 row, plus chance);
* :func:`plot_curves` draws P@k against the number of topics, one PNG per facet;
* :func:`compare` sets our cells beside the paper's (``experiments/paper_table2.csv``,
  read with :func:`read_paper`).

The best k of a tag set is the one with the highest mean precision over the
six facets (ties: the smallest k). A cell that appears twice (a re-run cell)
counts once, with its last row.

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

__all__ = ["FACETS", "RESULT_COLUMNS", "ResultsError", "compare", "plot_curves", "read_paper", "read_results",
           "table2"]

FACETS: tuple[str, ...] = ("genre", "style", "mood", "theme", "artist", "album")
RESULT_COLUMNS: tuple[str, ...] = (
    ("combination", "k", "eval_k", "epochs", "best_epoch", "seconds")
    + tuple(f"{prefix}_{f}" for f in FACETS for prefix in ("p", "chance")))
PAPER_COLUMNS: tuple[str, ...] = ("combination", "k") + FACETS
PAPER_EVAL_K = 100


class ResultsError(DataError, ValueError):
    """A results or paper table cannot be used (a ``ValueError`` and a :class:`DataError`)."""


# ---------------------------------------------------------------------- reading


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a grid's ``results.csv``: one row per cell, columns :data:`RESULT_COLUMNS` (more are kept).

    Combination names are put in the canonical spelling (``moods-genres`` →
    ``genres-moods``). ResultsError (a ValueError) naming the file for missing
    columns, an unknown combination, a non-integer ``k``/``eval_k`` or
    non-numeric precisions.
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
        raise ResultsError(f"{where}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                           f"has {', '.join(map(str, frame.columns)) or 'none'}")


def _check_results(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    _require(frame, RESULT_COLUMNS, where)
    frame = frame.copy()
    try:
        frame["combination"] = [combination_name(str(c)) for c in frame["combination"]]
    except ConfigError as exc:
        raise ResultsError(f"{where}: {exc}") from exc
    for column in ("k", "eval_k"):
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().any() or (values != values.round()).any():
            bad = frame.loc[values.isna() | (values != values.round()), column].iloc[0]
            raise ResultsError(f"{where}: column {column} must hold integers, found {bad!r}")
        frame[column] = values.astype(int)
    for column in RESULT_COLUMNS[6:]:
        values = pd.to_numeric(frame[column], errors="coerce")
        if (values.isna() & frame[column].notna()).any():
            bad = frame.loc[values.isna() & frame[column].notna(), column].iloc[0]
            raise ResultsError(f"{where}: column {column} must hold numbers, found {bad!r}")
        frame[column] = values.astype(float)
    return frame


def _cells(results: pd.DataFrame, facets: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """Checked results, one row per (combination, k) (last wins), with a ``mean`` column; and eval_k."""
    unknown = [f for f in facets if f not in FACETS]
    if unknown or not facets:
        raise ResultsError(f"facets {', '.join(unknown) or '(none)'}: allowed are {', '.join(FACETS)}")
    frame = _check_results(results, "results")
    if frame.empty:
        raise ResultsError("results: no cells")
    eval_ks = sorted(frame["eval_k"].unique())
    if len(eval_ks) > 1:
        raise ResultsError(f"results: cells evaluated at several P@k ({', '.join(map(str, eval_ks))}); "
                           "select one eval_k first")
    frame = frame.drop_duplicates(["combination", "k"], keep="last")
    frame["mean"] = frame[[f"p_{f}" for f in facets]].mean(axis=1, skipna=False)
    return frame, int(eval_ks[0])


def _ordered(names: Sequence[str]) -> list[str]:
    """``names`` in the paper's order of :func:`msd_triplet.lsi.combinations`."""
    present = set(names)
    return [c for c in combinations() if c in present]


def _best(cells: pd.DataFrame) -> Optional[pd.Series]:
    """The row of the highest mean precision (smallest k on ties); None if no cell is complete."""
    complete = cells[cells["mean"].notna()].sort_values("k", kind="stable")
    return None if complete.empty else complete.loc[complete["mean"].idxmax()]


def _notes(notes: Sequence[str]) -> str:
    return "\n".join(f"- {n}" for n in notes)


def _num(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


# ---------------------------------------------------------------------- Table II


def table2(results: pd.DataFrame, facets: Sequence[str] = FACETS, fixed_k: Optional[int] = 20) -> str:
    """Markdown in the layout of the paper's Table II.

    Per tag-set combination (paper order), the row of its best k by the mean
    P@k over ``facets``, then its row at ``fixed_k`` when there is one and it
    is not the best; a last row ``chance`` with the chance levels of the first
    cell (a footnote says so when they differ across cells).

    Parameters
    ----------
    results : one row per cell, the columns of :func:`read_results`
    facets : the facets shown, which also choose the best k
    fixed_k : the number of topics of the second row per combination; None for best rows only
    """
    frame, eval_k = _cells(results, facets)
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
            lines.append(f"| {name} | {int(row['k'])} | " + " | ".join(_num(row[f"p_{f}"]) for f in facets) + " |")
    first = frame.iloc[0]
    lines.append("| chance | | " + " | ".join(_num(first[f"chance_{f}"]) for f in facets) + " |")

    notes = [f"P@{eval_k} per facet. First row per tag set: its best number of topics by the mean over "
             f"{', '.join(facets)}" + (f"; second: k = {fixed_k}" if fixed_k is not None else "") + "."]
    differ = [f for f in facets if not np.allclose(frame[f"chance_{f}"], first[f"chance_{f}"], rtol=1e-9,
                                                   atol=0, equal_nan=True)]
    if differ:
        ranges = ", ".join(f"{f} {frame[f'chance_{f}'].min():.4f}–{frame[f'chance_{f}'].max():.4f}" for f in differ)
        notes.append(f"Chance levels differ across cells ({ranges}); the chance row is that of "
                     f"{first['combination']} k = {int(first['k'])}.")
    if incomplete:
        notes.append(f"No cell with all facets evaluated: {', '.join(incomplete)}.")
    return "\n".join(lines) + "\n\n" + _notes(notes) + "\n"


# ---------------------------------------------------------------------- curves


def plot_curves(results: pd.DataFrame, out_dir: str | os.PathLike,
                facets: Sequence[str] = FACETS) -> list[Path]:
    """Write ``p_at_k_<facet>.png`` per facet into ``out_dir``: P@k against LSI topics.

    One line with markers per combination (paper order), the chance level of
    the first cell as a dashed line, the legend outside the axes. Written
    atomically, without a display (a bare Agg figure; pyplot is not used, so
    the caller's backend is left alone). Returns the paths in facet order.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frame, eval_k = _cells(results, facets)
    out_dir = Path(out_dir)
    names = _ordered(frame["combination"])
    colours = [f"C{i}" if i < 10 else ("black", "lime", "navy", "crimson", "darkgoldenrod")[i - 10]
               for i in range(len(names))]
    markers = "osD^v<>ph*XPd8H"
    written = []
    for facet in facets:
        fig = Figure(figsize=(9, 4.8), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for i, name in enumerate(names):
            cells = frame[frame["combination"] == name].sort_values("k")
            ax.plot(cells["k"], cells[f"p_{facet}"], marker=markers[i % len(markers)], markersize=4, lw=1.2,
                    color=colours[i % len(colours)], label=name)
        chance = float(frame.iloc[0][f"chance_{facet}"])
        if not math.isnan(chance):
            ax.axhline(chance, color="0.4", ls="--", lw=1, label=f"chance ({chance:.4f})")
        ax.set_xlabel("LSI topics (k)")
        ax.set_ylabel(f"P@{eval_k}")
        ax.set_title(f"{facet}: precision at {eval_k} against the number of LSI topics")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
        path = out_dir / f"p_at_k_{facet}.png"
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
        written.append(path)
    return written


# ---------------------------------------------------------------------- the paper


def compare(results: pd.DataFrame, paper: pd.DataFrame, facets: Sequence[str] = FACETS) -> str:
    """Markdown: our cells beside the paper's, ``0.3790 (paper .3971)`` per facet.

    Pairing rule, per paper row (paper order) whose combination we ran:

    1. our cell at the same k, when we have one (column ``match``: ``same k``);
    2. else, for a paper row of the tag set's best k (``row == "best"``, or
       every row when the table has no ``row`` column), our best cell by the
       mean over ``facets`` (``match``: ``our best``);
    3. else (a fixed-k paper row we did not run) no line.

    A note says when our precision is not at the paper's cut-off of 100.
    """
    frame, eval_k = _cells(results, facets)
    _require(paper, PAPER_COLUMNS, "paper table")
    paper = paper.copy()
    try:
        paper["combination"] = [combination_name(str(c)) for c in paper["combination"]]
    except ConfigError as exc:
        raise ResultsError(f"paper table: {exc}") from exc
    lines = ["| tag set | paper k | our k | match | " + " | ".join(facets) + " |",
             "|---|---:|---:|---|" + "---|" * len(facets)]
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
        values = " | ".join(f"{_num(ours[f'p_{f}'])} (paper {_paper_num(theirs[f])})" for f in facets)
        lines.append(f"| {name} | {k} | {int(ours['k'])} | {match} | {values} |")
    notes = [f"{paired} of {len(paper)} paper rows paired: our cell at the paper's k, else (for the paper's "
             f"best-k rows) our best k by the mean over {', '.join(facets)}."]
    if eval_k != PAPER_EVAL_K:
        notes.append(f"Ours is P@{eval_k}, the paper's P@{PAPER_EVAL_K}: not directly comparable.")
    return "\n".join(lines) + "\n\n" + _notes(notes) + "\n"


def _paper_num(value: float) -> str:
    """The paper's spelling of a precision: ``.3971``."""
    text = _num(float(value))
    return text[1:] if text.startswith("0.") else text
