"""The triplet-selection ablation (``msd-triplet ablate``): relatedness source × mining × seed on identical data.

The paper's claim is that the LSI relatedness of expert tags selects better
triplets than simpler rules. :func:`run_ablation` trains one run per
(source, mining, seed) of ``ablation.sources`` × ``ablation.minings`` ×
``ablation.seeds`` with everything else equal: the prepared data and its
splits, the LSI fit, the model, the epochs and early stopping, the seeds.

Sources (:mod:`msd_triplet.relatedness`): ``lsi`` (cosine of LSI vectors, the
paper), ``jaccard`` (overlap of the binary tags of the same sets; thresholds
calibrated on the training split so that the shares of positive and negative
pairs equal LSI's), ``genre`` (same main genre) and ``artist`` (same artist);
the album filter holds for all. It works in ``<ablation.folder>/<name>/``::

    config.yaml                              the resolved config
    calibration.json                         per source and seed: thresholds, shares of positive / negative pairs
    cells/<source>-<mining>[-seed<s>]/       one run folder per cell (msd_triplet.training.fit) with
                                             metrics.json, per_query.npz and, once done, cell.json
    untrained/seed<s>/                       the untrained model of seed s
    results.csv                              one row per cell: P@k with intervals, vs untrained, collapse signals
    ablation.md                              the tables: P@k, differences to the reference cell and to the
                                             untrained model (paired intervals), collapse signals, the winners
    plots/ablation.png                       P@k per facet with intervals, one bar per cell

A cell is done when its ``cell.json`` exists; a rerun skips it, and a killed
run loses only the running cell's unfinished epoch (its run folder resumes).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from msd_triplet.config import Config, mining_variant, save_config, with_overrides
from msd_triplet.errors import ConfigError
from msd_triplet.fileio import atomic_path, atomic_write_json, atomic_write_text
from msd_triplet.grid import SweepReport, sweep_folder, sweep_seeds
from msd_triplet.gridreport import FACETS
from msd_triplet.runfolder import RunFolder
from msd_triplet.splits import split_positions
from msd_triplet.uncertainty import BootstrapSettings, format_figure, interval_sign, paired_differences

SIGNALS = ("spread_first", "spread_last", "spread_ratio", "active_last", "valid_last", "loss_last")
CELL_COLUMNS = (
    "source",
    "mining",
    "seed",
    "eval_k",
    "epochs",
    "best_epoch",
    "seconds",
    "positive_threshold",
    "negative_threshold",
    "positive_share",
    "negative_share",
) + SIGNALS
FACET_COLUMNS = ("p", "ci_low", "ci_high", "chance", "untrained_p", "diff_ci_low", "diff_ci_high")
RESULT_COLUMNS = CELL_COLUMNS + tuple(f"{prefix}_{f}" for f in FACETS for prefix in FACET_COLUMNS)


AblationReport = SweepReport


def cell_name(source: str, mining: str, seed: Optional[int] = None) -> str:
    """``lsi-batch_hard``, or ``lsi-batch_hard-seed3`` with a seed."""
    return f"{source}-{mining}" + (f"-seed{seed}" if seed is not None else "")


def parse_only(text: str, config: Config) -> tuple[str, str]:
    """``"jaccard:batch_all"`` → ("jaccard", "batch_all"), which must be a cell of ``config``."""
    source, _, mining = text.partition(":")
    if (source, mining) not in ablation_cells(config):
        raise ConfigError(
            f"--only {text!r}: expected SOURCE:MINING with a source of {list(config.ablation.sources)} "
            f"and a mining of {list(config.ablation.minings)}"
        )
    return source, mining


def ablation_cells(config: Config) -> list[tuple[str, str]]:
    """(source, mining) of every cell; the reference cell first, so later cells can be compared to it."""
    cells = [(s, m) for s in config.ablation.sources for m in config.ablation.minings]
    reference = reference_cell(config)
    return [reference] + [c for c in cells if c != reference] if reference in cells else cells


def reference_cell(config: Config) -> tuple[str, str]:
    """The cell every other one is compared to (``ablation.reference``, e.g. ``lsi:batch_hard``)."""
    source, _, mining = config.ablation.reference.partition(":")
    return source, mining


def calibrate(config: Config, prepared, lsi_model, seed: int) -> dict[str, dict]:
    """Per source: the loss thresholds and the shares of positive / negative pairs on the training split.

    LSI keeps ``loss.positive_threshold`` / ``negative_threshold``; Jaccard gets the
    thresholds whose shares come closest to LSI's; genre and artist are labels
    (equal: positive, different: negative), their shares are what they are.
    Pairs are those of two training tracks of different albums.
    """
    from msd_triplet import lsi, relatedness

    train = split_positions(prepared.tracks, "train")
    albums = prepared.tracks["album_id"].to_numpy()[train]
    matrix, _ = lsi.stacked_matrix(prepared.matrices, lsi_model.sets)
    lsi_vectors = lsi_model.transform(matrix, config.lsi.zero_norm_rtol)[train]
    pos_th, neg_th = config.loss.positive_threshold, config.loss.negative_threshold
    pos_share, neg_share = relatedness.pair_shares(lsi_vectors, "cosine", albums, pos_th, neg_th, seed=seed)
    out = {}
    for source in config.ablation.sources:
        kind = relatedness.SOURCE_KIND[source]
        if source == "lsi":
            out[source] = {
                "positive_threshold": pos_th,
                "negative_threshold": neg_th,
                "positive_share": pos_share,
                "negative_share": neg_share,
            }
            continue
        vectors = relatedness.source_vectors(source, prepared, train, lsi_vectors, config.lsi.tag_sets)
        if kind == "jaccard":
            found = relatedness.calibrate_thresholds(vectors, kind, albums, pos_share, neg_share, seed=seed)
            thresholds = found.positive_threshold, found.negative_threshold
        else:
            thresholds = pos_th, neg_th  # labels relate 1 or 0: any thresholds in (0, 1] split them the same
        shares = relatedness.pair_shares(vectors, kind, albums, *thresholds, seed=seed)
        out[source] = {
            "positive_threshold": float(thresholds[0]),
            "negative_threshold": float(thresholds[1]),
            "positive_share": float(shares[0]),
            "negative_share": float(shares[1]),
        }
    return out


def cell_config(config: Config, source: str, mining: str, seed: int, thresholds: dict) -> Config:
    """One cell: the ablation's config with its source, mining (and warm-up), seed and the source's thresholds."""
    several = len(sweep_seeds(config.ablation, config)) > 1
    mode, warmup = mining_variant(mining)
    return with_overrides(
        config,
        {
            "loss.relatedness": source,
            "loss.mining": mode,
            "training.warmup_epochs": warmup,
            "seed": seed,
            "ablation.seeds": [],
            "loss.positive_threshold": thresholds["positive_threshold"],
            "loss.negative_threshold": thresholds["negative_threshold"],
            "name": f"{config.name}-{cell_name(source, mining, seed if several else None)}",
        },
    )


def _collect(folder: Path) -> tuple[pd.DataFrame, dict[tuple[str, str, int], Path]]:
    rows, where = [], {}
    for path in sorted((folder / "cells").glob("*/cell.json")):
        row = json.loads(path.read_text(encoding="utf-8"))
        rows.append(row)
        where[(row["source"], row["mining"], int(row["seed"]))] = path.parent
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return frame.reset_index(drop=True), where


def _signals(history: list[dict]) -> dict:
    """The collapse signals of a run's log: embedding spread of the first and last epoch, last active share."""
    nan = float("nan")
    first, last = (history[0], history[-1]) if history else ({}, {})
    spread_first, spread_last = first.get("embedding_spread", nan), last.get("embedding_spread", nan)
    return {
        "spread_first": spread_first,
        "spread_last": spread_last,
        "spread_ratio": spread_last / spread_first if spread_first else nan,
        "active_last": last.get("active_triplets", nan),
        "valid_last": last.get("valid_anchors", nan),
        "loss_last": last.get("loss", nan),
    }


def _cell_row(
    cell: Config, source: str, mining: str, evaluation, result, seconds: float, untrained, calibration: dict
) -> dict:
    """The results.csv row of a finished cell: thresholds, collapse signals, figures against the untrained model."""
    from msd_triplet.grid import facet_columns

    return {
        "source": source,
        "mining": mining,
        "seed": cell.seed,
        "eval_k": evaluation.k,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "seconds": round(seconds, 1),
        **calibration,
        **_signals(result.history),
        **facet_columns(cell, evaluation, untrained),
    }


def run_ablation(
    config: Config, *, only: Optional[tuple[str, str]] = None, say: Callable[[str], None] = print, verbose: int = 0
) -> AblationReport:
    """Train and evaluate every cell and seed not done yet; rewrite results.csv, ablation.md and the plot."""
    from msd_triplet import lsi, runs, training
    from msd_triplet.featurecache import FeatureCache, cache_dir
    from msd_triplet.grid import untrained_baseline
    from msd_triplet.prepare import load_prepared

    folder = sweep_folder(config.ablation, config)
    cells = [only] if only is not None else ablation_cells(config)
    seeds = sweep_seeds(config.ablation, config)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(config, folder / "config.yaml")
    prepared = load_prepared(config)
    FeatureCache(cache_dir(config))  # a clear error now, not after the LSI fit
    _, done = _collect(folder)
    todo = [(s, m, seed) for seed in seeds for s, m in cells if (s, m, seed) not in done]
    total = len(cells) * len(seeds)
    say(
        f"ablation {folder}: {len(config.ablation.sources)} sources × {len(config.ablation.minings)} minings × "
        f"{len(seeds)} seed{'s' * (len(seeds) > 1)}, {total - len(todo)} done, {len(todo)} to train"
    )
    untrained = {s: untrained_baseline(config, folder, s, say) for s in seeds}
    calibration_path = folder / "calibration.json"
    calibration = json.loads(calibration_path.read_text(encoding="utf-8")) if calibration_path.is_file() else {}
    fitted: dict[int, object] = {}
    for number, (source, mining, seed) in enumerate(todo, start=1):
        if seed not in fitted:  # one LSI per seed, shared by every cell of that seed
            fitted[seed] = lsi.fit_prepared(prepared, config.lsi, seed)[0]
        if str(seed) not in calibration:
            calibration[str(seed)] = calibrate(config, prepared, fitted[seed], seed)
            atomic_write_json(calibration_path, calibration)
            say(
                f"seed {seed}: shares of positive / negative training pairs: "
                + "; ".join(
                    f"{s} {c['positive_share']:.4f} / {c['negative_share']:.3f} "
                    f"(thresholds {c['positive_threshold']:.3g} / {c['negative_threshold']:.3g})"
                    for s, c in calibration[str(seed)].items()
                )
            )
        thresholds = calibration[str(seed)][source]
        cell = cell_config(config, source, mining, seed, thresholds)
        run = folder / "cells" / cell_name(source, mining, seed if len(seeds) > 1 else None)
        say(
            f"cell {number}/{len(todo)}: {source} relatedness, {mining} mining"
            + (f", seed {seed}" if len(seeds) > 1 else "")
        )
        started = time.perf_counter()
        data = training.load_training_data(cell, lsi_model=fitted[seed])
        result = training.fit(
            cell, run_dir=run, resume=RunFolder(run).state.is_file(), data=data, verbose=verbose, say=lambda line: None
        )
        evaluation = runs.evaluate_run(run, untrained=False, say=lambda line: None)
        row = _cell_row(
            cell, source, mining, evaluation, result, time.perf_counter() - started, untrained[seed], thresholds
        )
        atomic_write_json(run / "cell.json", row)
        atomic_write_text(folder / "results.csv", _collect(folder)[0].to_csv(index=False))
        say(
            f"cell {number}/{len(todo)} done in {row['seconds']:.0f} s (spread {row['spread_ratio']:.0%} of the "
            f"first epoch's): " + ", ".join(f"{f} {row[f'p_{f}']:.3f}" for f in FACETS)
        )
    results, done = _collect(folder)
    atomic_write_text(folder / "results.csv", results.to_csv(index=False))
    written = write_reports(folder, results, config, done) if len(results) else []
    return AblationReport(folder, results, len(todo), total - len(todo), written)


# ---------------------------------------------------------------------- reports


@dataclass
class _Pooled:
    """Per-query precisions averaged over seeds: {cell: {facet: float64 [N]}} and the untrained model's."""

    cells: dict[tuple[str, str], dict[str, np.ndarray]]
    untrained: dict[str, np.ndarray]
    clusters: Optional[np.ndarray]
    seeds: dict[tuple[str, str], list[int]]


def _pooled(
    folder: Path, done: dict[tuple[str, str, int], Path], settings: BootstrapSettings, split: str = "test"
) -> _Pooled:
    """Seed-averaged per-query precisions of every cell, on the queries shared by all (of ``split``)."""
    from msd_triplet import runs

    name = runs.split_file(runs.PER_QUERY_FILE, split)
    by_cell: dict[tuple[str, str], list] = {}
    for (source, mining, seed), run in done.items():
        by_cell.setdefault((source, mining), []).append((seed, runs.PerQuery.load(run / name)))
    seeds = sorted({seed for _, _, seed in done})
    base = [runs.PerQuery.load(Path(folder) / "untrained" / f"seed{s}" / name) for s in seeds]
    first = base[0]

    def mean(models: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {f: np.mean([m[f] for m in models], axis=0) for f in models[0]}

    cells = {}
    for cell, entries in by_cell.items():
        for _, pq in entries:
            pq.require_same_queries(first, f"{folder}: cell {cell_name(*cell)} and the untrained model")
        cells[cell] = mean([pq.models["trained"] for _, pq in entries])
    untrained = mean([pq.models["untrained"] for pq in base])
    return _Pooled(cells, untrained, first.clusters(settings), {c: sorted(s for s, _ in e) for c, e in by_cell.items()})


def _cell_order(config: Config, results: pd.DataFrame) -> list[tuple[str, str]]:
    known = [(s, m) for s in config.ablation.sources for m in config.ablation.minings]
    present = set(zip(results["source"], results["mining"]))
    return [c for c in known if c in present] + sorted(present - set(known))


def summarise(results: pd.DataFrame, pooled: _Pooled, config: Config, settings: BootstrapSettings) -> dict:
    """Per cell: seed-mean figures, intervals of the seed-averaged queries, paired differences; the winners."""
    order = _cell_order(config, results)
    reference = reference_cell(config)
    summary = {"cells": {}, "winners": {}, "reference": reference}
    for cell in order:
        rows = results[(results["source"] == cell[0]) & (results["mining"] == cell[1])]
        values = pooled.cells[cell]
        entry = {"seeds": len(rows), "signals": {s: float(rows[s].mean()) for s in SIGNALS}, "facets": {}}
        vs_untrained = paired_differences(values, pooled.untrained, settings, pooled.clusters)
        vs_reference = (
            paired_differences(values, pooled.cells[reference], settings, pooled.clusters)
            if reference in pooled.cells and cell != reference
            else {}
        )
        for facet, v in values.items():
            low, high = settings.interval(v, pooled.clusters)
            entry["facets"][facet] = {
                "p": float(np.nanmean(v)),
                "ci_low": low,
                "ci_high": high,
                "sd": float(rows[f"p_{facet}"].std()) if len(rows) > 1 else float("nan"),
                "vs_untrained": vs_untrained.get(facet),
                "vs_reference": vs_reference.get(facet),
            }
        summary["cells"][cell] = entry
    for facet in FACETS:
        scored = [
            (summary["cells"][c]["facets"][facet]["p"], c) for c in order if facet in summary["cells"][c]["facets"]
        ]
        if not scored:
            continue
        best = max(scored)[1]
        tied = []
        for _, cell in scored:
            if cell != best:
                diff = paired_differences(
                    {facet: pooled.cells[best][facet]}, {facet: pooled.cells[cell][facet]}, settings, pooled.clusters
                )[facet]
                if interval_sign(diff["ci_low"], diff["ci_high"]) <= 0:
                    tied.append(cell)
        summary["winners"][facet] = {"best": best, "not_separable": tied}
    return summary


def _label(cell: tuple[str, str]) -> str:
    return f"{cell[0]} / {cell[1]}"


def format_ablation(
    results: pd.DataFrame, summary: dict, settings: BootstrapSettings, untrained: dict, chance: dict
) -> str:
    facets = [f for f in FACETS if f"p_{f}" in results and results[f"p_{f}"].notna().any()]
    eval_k = int(results["eval_k"].iloc[0])
    seeds = sorted(set(results["seed"]))
    reference = tuple(summary["reference"])
    lines = [
        "# Triplet selection: relatedness source × mining",
        "",
        f"P@{eval_k} on the test split; {len(seeds)} training seed{'s' * (len(seeds) > 1)} "
        f"({', '.join(map(str, seeds))}); {settings.describe()}. With several seeds a figure is the mean "
        "over seeds, its interval that of the seed-averaged per-query precisions. Spread: RMS standard "
        "deviation of the embeddings over a batch, last epoch / first epoch (collapse: → 0); active: share "
        "of mined triplets with a positive loss in the last epoch.",
        "",
        "## P@k",
        "",
        "| source / mining | " + " | ".join(facets) + " | spread last/first | active |",
        "|---|" + "---|" * (len(facets) + 2),
    ]
    lines.append(
        "| untrained | "
        + " | ".join(
            format_figure(untrained[f]["p"], untrained[f]["ci_low"], untrained[f]["ci_high"], digits=3) for f in facets
        )
        + " | – | – |"
    )
    lines.append("| chance | " + " | ".join(f"{chance[f]:.3f}" for f in facets) + " | – | – |")
    for cell, entry in summary["cells"].items():
        figures = [
            format_figure(
                entry["facets"][f]["p"], entry["facets"][f]["ci_low"], entry["facets"][f]["ci_high"], digits=3
            )
            for f in facets
        ]
        s = entry["signals"]
        lines.append(
            f"| {_label(cell)} | " + " | ".join(figures) + f" | {s['spread_ratio']:.0%} | {s['active_last']:.2f} |"
        )
    for title, key in (
        (f"Difference to {_label(reference)} (the paper's rule), paired", "vs_reference"),
        ("Difference to the untrained model, paired", "vs_untrained"),
    ):
        lines += [
            "",
            f"## {title}",
            "",
            "| source / mining | " + " | ".join(facets) + " |",
            "|---|" + "---|" * len(facets),
        ]
        for cell, entry in summary["cells"].items():
            diffs = [entry["facets"][f][key] for f in facets]
            if all(d is None for d in diffs):
                continue
            lines.append(
                f"| {_label(cell)} | "
                + " | ".join(
                    format_figure(d["difference"], d["ci_low"], d["ci_high"], signed=True, digits=3) if d else "–"
                    for d in diffs
                )
                + " |"
            )
    lines += [
        "",
        "## Best per facet",
        "",
        "The cell with the highest P@k, and the cells whose paired interval against it includes 0.",
        "",
    ]
    for facet in facets:
        winner = summary["winners"].get(facet)
        if winner:
            tied = ", ".join(_label(c) for c in winner["not_separable"]) or "none"
            lines.append(f"- **{facet}**: {_label(tuple(winner['best']))}; not separable from it: {tied}")
    return "\n".join(lines) + "\n"


def plot_ablation(summary: dict, untrained: dict, chance: dict, path: Path, eval_k: int) -> Path:
    """One panel per facet: a bar per cell with its interval, the untrained model and chance as lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cells = list(summary["cells"])
    facets = [f for f in FACETS if all(f in summary["cells"][c]["facets"] for c in cells)]
    sources = list(dict.fromkeys(s for s, _ in cells))
    minings = list(dict.fromkeys(m for _, m in cells))
    # one group of bars per source, one colour per mining
    where = {c: sources.index(c[0]) * (len(minings) + 1) + minings.index(c[1]) for c in cells}
    centres = [i * (len(minings) + 1) + (len(minings) - 1) / 2 for i in range(len(sources))]
    fig = Figure(figsize=(4.2 * 3, 3.6 * math.ceil(len(facets) / 3)), dpi=100)
    FigureCanvasAgg(fig)
    for i, facet in enumerate(facets):
        ax = fig.add_subplot(math.ceil(len(facets) / 3), 3, i + 1)
        for cell in cells:
            f = summary["cells"][cell]["facets"][facet]
            err = np.nan_to_num([[f["p"] - f["ci_low"]], [f["ci_high"] - f["p"]]])
            ax.bar(
                where[cell],
                f["p"],
                yerr=err,
                color=f"C{minings.index(cell[1]) % 10}",
                capsize=2,
                label=cell[1] if i == 0 and cell[0] == next(s for s, m in cells if m == cell[1]) else None,
            )
        ax.axhline(untrained[facet]["p"], color="black", lw=1, label="untrained" if i == 0 else None)
        ax.axhline(chance[facet], color="0.5", ls="--", lw=1, label="chance" if i == 0 else None)
        ax.set_xticks(centres, sources)
        ax.set_title(f"{facet}: P@{eval_k}")
        ax.grid(True, axis="y", alpha=0.3)
    fig.legend(loc="lower center", ncol=len(minings) + 2, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def write_reports(
    folder: Path, results: pd.DataFrame, config: Config, done: Optional[dict[tuple[str, str, int], Path]] = None
) -> list[Path]:
    """ablation.md, summary.json and plots/ablation.png from the done cells."""
    done = _collect(folder)[1] if done is None else done
    settings = BootstrapSettings.from_config(config)
    pooled = _pooled(folder, done, settings, config.evaluation.split)
    summary = summarise(results, pooled, config, settings)
    untrained = {}
    for facet, v in pooled.untrained.items():
        low, high = settings.interval(v, pooled.clusters)
        untrained[facet] = {"p": float(np.nanmean(v)), "ci_low": low, "ci_high": high}
    chance = {f: float(results[f"chance_{f}"].iloc[0]) for f in FACETS if f"chance_{f}" in results}
    eval_k = int(results["eval_k"].iloc[0])
    written = [
        atomic_write_text(folder / "ablation.md", format_ablation(results, summary, settings, untrained, chance))
    ]
    plain = {
        "reference": list(summary["reference"]),
        "winners": {
            f: {"best": list(w["best"]), "not_separable": [list(c) for c in w["not_separable"]]}
            for f, w in summary["winners"].items()
        },
        "cells": {cell_name(*c): e for c, e in summary["cells"].items()},
        "untrained": untrained,
        "chance": chance,
    }
    written.append(atomic_write_json(folder / "summary.json", plain))
    written.append(plot_ablation(summary, untrained, chance, folder / "plots" / "ablation.png", eval_k))
    return written
