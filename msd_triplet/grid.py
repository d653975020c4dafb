"""The experiment grid of paper Table II: tag-set combinations × LSI sizes × training seeds, each trained and evaluated.

``run_grid(config)`` works in ``<grid.folder>/<name>/``::

    config.yaml                          the grid's resolved config
    cells/<combination>-k<k>[-seed<s>]/  one run folder per cell and seed (msd_triplet.training.fit) with
                                         metrics.json, per_query.npz and, once done, cell.json; the folder
                                         name carries the seed when grid.seeds holds several
    untrained/seed<s>/                   the untrained model of seed s: metrics.json, metrics.md, per_query.npz
    results.csv                          one row per cell and seed (rewritten atomically after each)
    table2.md                            the paper's Table II layout (best k per combination, and k = 20)
    claims.md                            the paper's claims, each holds / fails / not separable (msd_triplet.claims)
    compare.md                           with ``paper``: ours beside the paper's numbers
    plots/p_at_k_<facet>.png             P@k against the number of topics, one line per combination

Every cell uses the same splits, model and training settings; only
``lsi.tag_sets``, ``lsi.k`` and the seed change. Per combination and seed one
LSI is fitted at the largest k and every smaller k is its prefix
(``LsiModel.truncate``). The untrained model depends only on the seed and the
architecture, so it is evaluated once per seed, and every cell's row carries the
paired interval of trained − untrained on the same test queries. A cell is
done when its ``cell.json`` (which names its seed) exists: a rerun skips it, so
a killed grid loses only the running cell (and that cell's run resumes from its
last epoch).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from msd_triplet.config import Config, save_config, with_overrides
from msd_triplet.errors import ConfigError
from msd_triplet.fileio import atomic_write_json, atomic_write_text
from msd_triplet.gridreport import FACETS, RESULT_COLUMNS  # the results.csv layout
from msd_triplet.runfolder import RunFolder
from msd_triplet.splits import split_positions
from msd_triplet.uncertainty import BootstrapSettings, paired_differences


@dataclass
class SweepReport:
    """What a grid or an ablation run did: its folder and results table, the cells trained now and
    those already done, and the report files written."""

    folder: Path
    results: pd.DataFrame
    trained_now: int
    skipped: int
    written: list[Path] = field(default_factory=list)


GridReport = SweepReport


def sweep_folder(section, config: Config) -> Path:
    """``<section.folder>/<name>``: where a grid or an ablation (``section``: config.grid or config.ablation) writes."""
    return Path(section.folder) / config.name


def sweep_seeds(section, config: Config) -> tuple[int, ...]:
    """The training seeds of a grid or an ablation: ``section.seeds``, or the config's ``seed`` alone."""
    return tuple(section.seeds) or (config.seed,)


def grid_folder(config: Config) -> Path:
    return sweep_folder(config.grid, config)


def grid_seeds(config: Config) -> tuple[int, ...]:
    return sweep_seeds(config.grid, config)


def cell_name(combination: str, k: int, seed: Optional[int] = None) -> str:
    """``genres-moods-k160``, or ``genres-moods-k160-seed3`` with a seed."""
    return f"{combination}-k{k}" + (f"-seed{seed}" if seed is not None else "")


def untrained_folder(folder: Path, seed: int) -> Path:
    return Path(folder) / "untrained" / f"seed{seed}"


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
        raise ConfigError(
            f"grid.combinations use {missing}, which data.tag_sets {list(config.data.tag_sets)} does not prepare"
        )
    cells = [(n, k) for n in names for k in sorted(config.grid.ks)]
    if only is not None:
        if only not in cells:
            raise ConfigError(
                f"--only {only[0]}:{only[1]} is not a cell of this grid "
                f"(combinations {', '.join(names)}; k {', '.join(map(str, sorted(config.grid.ks)))})"
            )
        cells = [only]
    return cells


def cell_config(config: Config, combination: str, k: int, seed: Optional[int] = None) -> Config:
    """The config of one cell: the grid's, with its tag sets, k and seed (a cell is a one-seed experiment)."""
    from msd_triplet.lsi import parse_combination

    seed = config.seed if seed is None else seed
    name = cell_name(combination, k, seed if len(grid_seeds(config)) > 1 else None)
    return with_overrides(
        config,
        {
            "lsi.tag_sets": list(parse_combination(combination)),
            "lsi.k": k,
            "seed": seed,
            "grid.seeds": [],
            "name": f"{config.name}-{name}",
        },
    )


def _collect(folder: Path) -> tuple[pd.DataFrame, dict[tuple[str, int, int], Path]]:
    """results.csv rows of every done cell (paper order, k, seed) and {(combination, k, seed): run folder}.

    A cell.json without a seed (written before seeds were recorded) is not done: the
    next run resumes that cell (its training is finished) and evaluates it again.
    """
    rows, where = [], {}
    for path in sorted((folder / "cells").glob("*/cell.json")):
        row = json.loads(path.read_text(encoding="utf-8"))
        if "seed" in row:
            rows.append(row)
            where[(row["combination"], int(row["k"]), int(row["seed"]))] = path.parent
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    if len(frame):
        from msd_triplet.lsi import combinations

        order = {name: i for i, name in enumerate(combinations())}
        frame = frame.drop_duplicates(["combination", "k", "seed"], keep="last")
        frame = frame.sort_values(
            ["combination", "k", "seed"], key=lambda c: c.map(order) if c.name == "combination" else c
        )
    return frame.reset_index(drop=True), where


def untrained_baseline(config: Config, folder: Path, seed: int, say: Callable[[str], None]):
    """(facet results, PerQuery) of the untrained model of ``seed``, evaluated now unless done."""
    from msd_triplet import runs

    where = untrained_folder(folder, seed)
    split = config.evaluation.split
    metrics_path = RunFolder(where).metrics(split)  # the evaluation files of a run, in a folder that is not one
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        return metrics["facets"], runs.PerQuery.load(RunFolder(where).per_query(split))
    say(f"untrained model, seed {seed}: evaluating → {where}")
    report = runs.evaluate_untrained(with_overrides(config, {"seed": seed, "grid.seeds": []}), where, say=say)
    return report.results, report.per_query


def facet_columns(cell: Config, evaluation, untrained) -> dict:
    """Per facet f of a finished cell: ``p_f``, ``ci_low_f``, ``ci_high_f``, ``chance_f``, ``untrained_p_f``
    and the paired interval of trained − untrained, ``diff_ci_low_f``, ``diff_ci_high_f`` (NaN where unknown).

    ``evaluation``: the cell's :class:`msd_triplet.runs.RunEvaluation`; ``untrained``: (facet results,
    PerQuery) of the untrained model of the cell's seed (:func:`untrained_baseline`).
    """
    baseline, baseline_queries = untrained
    evaluation.per_query.require_same_queries(baseline_queries, f"{evaluation.run_dir} and the untrained model")
    settings = BootstrapSettings.from_config(cell)
    difference = paired_differences(
        evaluation.per_query.models["trained"],
        baseline_queries.models["untrained"],
        settings,
        evaluation.per_query.clusters(settings),
    )
    columns = {}
    nan = float("nan")
    for facet in FACETS:
        figures, diff = evaluation.results.get(facet, {}), difference.get(facet, {})
        columns.update(
            {
                f"p_{facet}": figures.get("precision", nan),
                f"ci_low_{facet}": figures.get("ci_low", nan),
                f"ci_high_{facet}": figures.get("ci_high", nan),
                f"chance_{facet}": figures.get("chance", nan),
                f"untrained_p_{facet}": baseline.get(facet, {}).get("precision", nan),
                f"diff_ci_low_{facet}": diff.get("ci_low", nan),
                f"diff_ci_high_{facet}": diff.get("ci_high", nan),
            }
        )
    return columns


def _cell_row(cell: Config, combination: str, k: int, evaluation, result, seconds: float, untrained) -> dict:
    """The results.csv row of a finished cell: its figures, and the paired difference to the untrained model."""
    return {
        "combination": combination,
        "k": k,
        "seed": cell.seed,
        "eval_k": evaluation.k,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "seconds": round(seconds, 1),
        **facet_columns(cell, evaluation, untrained),
    }


def run_grid(
    config: Config,
    *,
    only: Optional[tuple[str, int]] = None,
    paper: Optional[pd.DataFrame] = None,
    say: Callable[[str], None] = print,
    verbose: int = 0,
) -> GridReport:
    """Train and evaluate every cell and seed not done yet; rewrite results.csv and the reports.

    ``only`` restricts the run to one (combination, k), for every seed; ``paper``
    (:func:`msd_triplet.gridreport.read_paper`) adds compare.md.
    """
    from msd_triplet import lsi, runs, training
    from msd_triplet.featurecache import FeatureCache, cache_dir
    from msd_triplet.prepare import load_prepared

    folder = grid_folder(config)
    cells = grid_cells(config, only)
    seeds = grid_seeds(config)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(config, folder / "config.yaml")
    prepared = load_prepared(config)
    FeatureCache(cache_dir(config))  # a clear error now, not after the first LSI fit
    # an LSI of a combination has at most min(tags, training tracks) - 1 topics (e.g. 20 or so for genres)
    n_train = len(split_positions(prepared.tracks, "train"))
    limit = {
        c: min(sum(len(prepared.matrices[s].vocabulary) for s in lsi.parse_combination(c)), n_train) - 1
        for c in {c for c, _ in cells}
    }
    too_large = [(c, k) for c, k in cells if k > limit[c]]
    if too_large:
        say(
            f"skipping {len(too_large)} cells whose k exceeds what the combination allows: "
            + ", ".join(f"{c} k > {limit[c]}" for c in dict.fromkeys(c for c, _ in too_large))
        )
    cells = [(c, k) for c, k in cells if k <= limit[c]]
    _, done = _collect(folder)
    todo = [(c, k, s) for c, k in cells for s in seeds if (c, k, s) not in done]
    total = len(cells) * len(seeds)
    say(
        f"grid {folder}: {len(cells)} cells × {len(seeds)} seed{'s' * (len(seeds) > 1)}, "
        f"{total - len(todo)} done, {len(todo)} to train"
    )
    untrained = {s: untrained_baseline(config, folder, s, say) for s in seeds}
    fitted: dict[tuple[str, int], object] = {}
    for number, (combination, k, seed) in enumerate(todo, start=1):
        if (combination, seed) not in fitted:  # one SVD per combination and seed, at the largest k still to train
            largest = max(kk for c, kk, s in todo if (c, s) == (combination, seed))
            lsi_config = cell_config(config, combination, largest, seed)
            fitted[combination, seed] = lsi.fit_prepared(prepared, lsi_config.lsi, seed, largest)[0]
        cell = cell_config(config, combination, k, seed)
        run = folder / "cells" / cell_name(combination, k, seed if len(seeds) > 1 else None)
        say(f"cell {number}/{len(todo)}: {combination}, k = {k}" + (f", seed {seed}" if len(seeds) > 1 else ""))
        started = time.perf_counter()
        data = training.load_training_data(cell, lsi_model=fitted[combination, seed].truncate(k))
        result = training.fit(
            cell, run_dir=run, resume=RunFolder(run).state.is_file(), data=data, verbose=verbose, say=lambda line: None
        )
        evaluation = runs.evaluate_run(run, untrained=False, say=say)
        row = _cell_row(cell, combination, k, evaluation, result, time.perf_counter() - started, untrained[seed])
        atomic_write_json(run / "cell.json", row)
        atomic_write_text(folder / "results.csv", _collect(folder)[0].to_csv(index=False))
        say(
            f"cell {number}/{len(todo)} done in {row['seconds']:.0f} s: "
            + ", ".join(f"{f} {row[f'p_{f}']:.3f}" for f in FACETS)
        )
    results, done = _collect(folder)
    atomic_write_text(folder / "results.csv", results.to_csv(index=False))
    written = write_reports(folder, results, config, done, paper) if len(results) else []
    return GridReport(folder, results, len(todo), total - len(todo), written)


def write_reports(
    folder: Path,
    results: pd.DataFrame,
    config: Config,
    cells: Optional[dict[tuple[str, int, int], Path]] = None,
    paper: Optional[pd.DataFrame] = None,
) -> list[Path]:
    """table2.md, claims.md, the per-facet plots and (with ``paper``) compare.md, from a grid's results.

    ``cells`` : {(combination, k, seed): run folder} of the rows (default: found in
    ``folder``); their per_query.npz and those of ``untrained/seed<s>/`` give the
    intervals of seed-averaged cells and the claims.
    """
    from msd_triplet import claims, gridreport
    from msd_triplet.gridqueries import GridQueries, pooled_intervals

    cells = _collect(folder)[1] if cells is None else cells
    settings = BootstrapSettings.from_config(config)
    queries = GridQueries(
        cells, {s: untrained_folder(folder, s) for s in {seed for _, _, seed in cells}}, split=config.evaluation.split
    )
    intervals = pooled_intervals(queries, settings)
    written = [
        atomic_write_text(
            folder / "table2.md", gridreport.table2(results, intervals=intervals, settings=settings) + "\n"
        )
    ]
    best = gridreport.best_ks(results)
    untrained = queries.untrained()
    found = claims.check_claims(queries, best, untrained, settings=settings, clusters=queries.clusters(settings))
    labelled = claims.labelled_in_all(queries[next(iter(queries))])
    written.append(
        atomic_write_text(
            folder / "claims.md",
            claims.format_claims(
                found,
                settings=settings,
                queries=queries.queries,
                mean_queries=labelled,
                seeds=queries.seeds(),
                best_k=best,
            ),
        )
    )
    written += gridreport.plot_curves(results, folder / "plots", intervals=intervals)
    if paper is not None:
        written.append(
            atomic_write_text(folder / "compare.md", gridreport.compare(results, paper, intervals=intervals) + "\n")
        )
    return written
