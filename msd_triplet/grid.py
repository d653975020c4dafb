"""The experiment grid of paper Table II: tag-set combinations × LSI sizes, each cell trained and evaluated.

``run_grid(config)`` works in ``<grid.folder>/<name>/``::

    config.yaml                 the grid's resolved config
    cells/<combination>-k<k>/   one run folder per cell (msd_triplet.training.fit) + cell.json
    results.csv                 one row per finished cell (rewritten atomically after each)
    table2.md                   the paper's Table II layout (best k per combination, and k = 20)
    plots/p_at_k_<facet>.png    P@k against the number of topics, one line per combination

Every cell uses the same seed, splits, model and training settings; only
``lsi.tag_sets`` and ``lsi.k`` change. One LSI is fitted per combination at its
largest k and every smaller k is its prefix (``LsiModel.truncate``). A cell is
done when its ``cell.json`` exists: a rerun skips it, so a killed grid loses
only the running cell (and that cell's run resumes from its last epoch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from msd_triplet.config import Config, save_config, with_overrides
from msd_triplet.errors import ConfigError
from msd_triplet.fileio import atomic_write_json, atomic_write_text
from msd_triplet.gridreport import FACETS, RESULT_COLUMNS  # the results.csv layout


@dataclass
class GridReport:
    folder: Path
    results: pd.DataFrame
    trained_now: int
    skipped: int


def grid_folder(config: Config) -> Path:
    return Path(config.grid.folder) / config.name


def cell_name(combination: str, k: int) -> str:
    return f"{combination}-k{k}"


def parse_only(text: str) -> tuple[str, int]:
    """``"genres-moods:160"`` → ("genres-moods", 160)."""
    from msd_triplet.lsi import combination_name, parse_combination

    combination, _, k = text.partition(":")
    if not k.isdigit() or int(k) < 1:
        raise ConfigError(f"--only {text!r}: expected COMBINATION:K, e.g. genres-moods:160")
    return combination_name(parse_combination(combination)), int(k)


def grid_cells(config: Config, only: Optional[tuple[str, int]] = None) -> list[tuple[str, int]]:
    """(combination, k) of every cell, in the paper's order of combinations, k ascending."""
    from msd_triplet.lsi import combination_name, combinations, parse_combination

    names = [combination_name(parse_combination(c)) for c in (config.grid.combinations or combinations())]
    missing = sorted({s for n in names for s in parse_combination(n)} - set(config.data.tag_sets))
    if missing:
        raise ConfigError(f"grid.combinations use {missing}, which data.tag_sets {list(config.data.tag_sets)} "
                          "does not prepare")
    cells = [(n, k) for n in names for k in sorted(config.grid.ks)]
    if only is not None:
        if only not in cells:
            raise ConfigError(f"--only {only[0]}:{only[1]} is not a cell of this grid "
                              f"(combinations {', '.join(names)}; k {', '.join(map(str, sorted(config.grid.ks)))})")
        cells = [only]
    return cells


def cell_config(config: Config, combination: str, k: int) -> Config:
    from msd_triplet.lsi import parse_combination

    return with_overrides(config, {"lsi.tag_sets": list(parse_combination(combination)), "lsi.k": k,
                                   "name": f"{config.name}-{cell_name(combination, k)}"})


def _collect(folder: Path) -> pd.DataFrame:
    import json

    rows = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((folder / "cells").glob("*/cell.json"))]
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    if len(frame):
        from msd_triplet.lsi import combinations

        order = {name: i for i, name in enumerate(combinations())}
        frame = frame.sort_values(["combination", "k"], key=lambda c: c.map(order) if c.name == "combination" else c)
    return frame.reset_index(drop=True)


def run_grid(config: Config, *, only: Optional[tuple[str, int]] = None, say: Callable[[str], None] = print,
             verbose: int = 0) -> GridReport:
    """Train and evaluate every cell not done yet; rewrite results.csv, table2.md and the plots."""
    from msd_triplet import lsi, runs, training
    from msd_triplet.featurecache import FeatureCache, cache_dir
    from msd_triplet.tagsets import load_prepared

    folder = grid_folder(config)
    cells = grid_cells(config, only)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(config, folder / "config.yaml")
    prepared = load_prepared(config)
    FeatureCache(cache_dir(config))  # a clear error now, not after the first LSI fit
    # an LSI of a combination has at most min(tags, training tracks) - 1 topics (e.g. 20 or so for genres)
    n_train = int((prepared.tracks["split"] == "train").sum())
    limit = {c: min(sum(len(prepared.matrices[s].vocabulary) for s in lsi.parse_combination(c)), n_train) - 1
             for c in {c for c, _ in cells}}
    too_large = [(c, k) for c, k in cells if k > limit[c]]
    if too_large:
        say(f"skipping {len(too_large)} cells whose k exceeds what the combination allows: "
            + ", ".join(f"{c} k > {limit[c]}" for c in dict.fromkeys(c for c, _ in too_large)))
    cells = [(c, k) for c, k in cells if k <= limit[c]]
    todo = [(c, k) for c, k in cells if not (folder / "cells" / cell_name(c, k) / "cell.json").is_file()]
    say(f"grid {folder}: {len(cells)} cells, {len(cells) - len(todo)} done, {len(todo)} to train")
    fitted: dict[str, object] = {}
    for number, (combination, k) in enumerate(todo, start=1):
        if combination not in fitted:  # one SVD per combination, at the largest k still to train
            largest = max(kk for c, kk in todo if c == combination)
            lsi_config = cell_config(config, combination, largest).lsi
            fitted[combination] = lsi.fit_prepared(prepared, lsi_config, config.seed, largest)[0]
        cell = cell_config(config, combination, k)
        run = folder / "cells" / cell_name(combination, k)
        say(f"cell {number}/{len(todo)}: {combination}, k = {k}")
        started = time.perf_counter()
        data = training.load_training_data(cell, lsi_model=fitted[combination].truncate(k))
        result = training.fit(cell, run_dir=run, resume=(run / "state.json").is_file(), data=data,
                              verbose=verbose, say=lambda line: None)
        evaluation = runs.evaluate_run(run, untrained=False, say=say)
        row = {"combination": combination, "k": k, "eval_k": evaluation.k, "epochs": result.epochs,
               "best_epoch": result.best_epoch, "seconds": round(time.perf_counter() - started, 1)}
        for facet in FACETS:
            figures = evaluation.results.get(facet, {})
            row[f"p_{facet}"] = figures.get("precision", float("nan"))
            row[f"chance_{facet}"] = figures.get("chance", float("nan"))
        atomic_write_json(run / "cell.json", row)
        results = _collect(folder)
        atomic_write_text(folder / "results.csv", results.to_csv(index=False))
        say(f"cell {number}/{len(todo)} done in {row['seconds']:.0f} s: "
            + ", ".join(f"{f} {row[f'p_{f}']:.3f}" for f in FACETS))
    results = _collect(folder)
    atomic_write_text(folder / "results.csv", results.to_csv(index=False))
    if len(results):
        write_reports(folder, results)
    return GridReport(folder, results, len(todo), len(cells) - len(todo))


def write_reports(folder: Path, results: pd.DataFrame, paper: Optional[pd.DataFrame] = None) -> list[Path]:
    """table2.md, the per-facet plots and (with ``paper``) compare.md, from a results table."""
    from msd_triplet import gridreport

    written = [atomic_write_text(folder / "table2.md", gridreport.table2(results) + "\n")]
    written += gridreport.plot_curves(results, folder / "plots")
    if paper is not None:
        written.append(atomic_write_text(folder / "compare.md", gridreport.compare(results, paper) + "\n"))
    return written
