"""Batch-hard collapse and its remedies: train variants of a config, print the collapse signals and P@k.

Each variant is the config with a few keys replaced (dotted, as in
:func:`msd_triplet.config.with_overrides`); it trains into ``<--runs>/<variant>``
(resumed / skipped when done) and is evaluated beside the untrained model of the
same architecture. The table gives, per variant: the embedding spread and the
share of hard batch-hard triplets (nearest negative nearer than the farthest
positive) of the first and the last epoch, the active share of the last epoch,
and P@k of the tag facets with 95 % intervals, then the paired difference of
each variant to the untrained model and to ``--baseline``.

Usage (the demo's data must be prepared: ``msd-triplet demo`` does it)::

    python benchmarks/mining_remedies.py --config experiments/demo.yaml --runs runs/remedies
    python benchmarks/mining_remedies.py --variants batch_hard batch_hard+warmup5 sct

Measured on 2 cores, 2026-11-29 (experiments/demo.yaml, seed 42, 20 epochs, P@20 on 322 test tracks):
see the README section "Batch-hard mining: the collapse and the remedy".
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: name -> overrides of the config
VARIANTS = {
    "batch_hard": {"loss.mining": "batch_hard"},
    "batch_all": {"loss.mining": "batch_all"},
    "batch_hard+warmup5": {"loss.mining": "batch_hard", "training.warmup_epochs": 5},
    "batch_hard+warmup2": {"loss.mining": "batch_hard", "training.warmup_epochs": 2},
    "sct": {"loss.mining": "sct"},
    "batch_hard+soft_margin": {"loss.mining": "batch_hard", "loss.soft_margin": True},
    "batch_hard+related_batches": {"loss.mining": "batch_hard", "training.batch_composition": "related"},
    "batch_hard+unnormalised": {"loss.mining": "batch_hard", "model.l2_normalize": False},
    "batch_hard+lr1e-4": {"loss.mining": "batch_hard", "training.learning_rate": 1e-4},
    "batch_hard+batch256": {"loss.mining": "batch_hard", "training.batch_size": 256},
    "batch_hard+batch256+warmup5": {
        "loss.mining": "batch_hard",
        "training.batch_size": 256,
        "training.warmup_epochs": 5,
    },
}
TAG_FACETS = ("genre", "style", "mood", "theme")
#: what every variant resets, so that the config's own remedy settings do not leak into the variants
PLAIN = {
    "loss.soft_margin": False,
    "training.warmup_epochs": 0,
    "training.batch_composition": "random",
    "model.l2_normalize": True,
}


def run_variant(config, name: str, overrides: dict, runs: Path) -> Path:
    """Train (or resume) and evaluate one variant; returns its run folder."""
    from msd_triplet import runs as run_module
    from msd_triplet import training
    from msd_triplet.config import with_overrides

    cell = with_overrides(config, {**PLAIN, **overrides, "name": name})
    folder = runs / name
    if not (folder / "metrics.json").is_file():
        started = time.perf_counter()
        training.fit(
            cell,
            run_dir=folder,
            resume=(folder / "state.json").is_file(),
            verbose=0,
            say=lambda line: print(f"{name}: {line}", flush=True),
        )
        print(f"{name}: trained in {time.perf_counter() - started:.0f} s", flush=True)
        run_module.evaluate_run(folder, say=lambda line: None)
    return folder


def _log(folder: Path) -> list[dict]:
    with (folder / "log.csv").open(newline="", encoding="utf-8") as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def _pair(a: Path, b: Path, settings) -> dict:
    from msd_triplet.runs import PerQuery
    from msd_triplet.uncertainty import paired_differences

    x, y = PerQuery.load(a / "per_query.npz"), PerQuery.load(b / "per_query.npz")
    x.require_same_queries(y, f"{a} and {b}")
    return paired_differences(x.models["trained"], y.models["trained"], settings)


def table(folders: dict[str, Path], baseline: str, settings) -> str:
    """The Markdown tables of the variants in ``folders``."""

    def fig(v, lo, hi, signed=False) -> str:
        return f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]" if signed else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"

    head = "| variant | spread first → last | hard first → last | active last | " + " | ".join(TAG_FACETS) + " |"
    lines = [head, "|---|---|---|---|" + "---|" * len(TAG_FACETS)]
    diffs = [
        "| variant | "
        + " | ".join(f"{f}: − untrained" for f in TAG_FACETS)
        + " | "
        + " | ".join(f"{f}: − {baseline}" for f in TAG_FACETS)
        + " |",
        "|---|" + "---|" * 2 * len(TAG_FACETS),
    ]
    for name, folder in folders.items():
        log, metrics = _log(folder), json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        first, last = log[0], log[-1]
        hard = f"{first['hard_triplets']:.2f} → {last['hard_triplets']:.2f}" if "hard_triplets" in first else "–"
        spread = (
            f"{first['embedding_spread']:.4f} → {last['embedding_spread']:.4f} "
            f"({last['embedding_spread'] / first['embedding_spread']:.0%})"
        )
        cells = [
            fig(metrics["facets"][f]["precision"], metrics["facets"][f]["ci_low"], metrics["facets"][f]["ci_high"])
            for f in TAG_FACETS
        ]
        lines.append(
            f"| {name} ({len(log)} ep.) | {spread} | {hard} | {last['active_triplets']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
        untrained = [
            fig(
                metrics["difference"][f]["difference"],
                metrics["difference"][f]["ci_low"],
                metrics["difference"][f]["ci_high"],
                True,
            )
            for f in TAG_FACETS
        ]
        if name != baseline and baseline in folders:
            versus = _pair(folder, folders[baseline], settings)
            against = [
                fig(versus[f]["difference"], versus[f]["ci_low"], versus[f]["ci_high"], True) for f in TAG_FACETS
            ]
        else:
            against = ["–"] * len(TAG_FACETS)
        diffs.append(f"| {name} | " + " | ".join(untrained + against) + " |")
    any_metrics = json.loads((next(iter(folders.values())) / "metrics.json").read_text(encoding="utf-8"))
    untrained_row = (
        "| untrained | – | – | – | "
        + " | ".join(
            fig(
                any_metrics["untrained"][f]["precision"],
                any_metrics["untrained"][f]["ci_low"],
                any_metrics["untrained"][f]["ci_high"],
            )
            for f in TAG_FACETS
        )
        + " |"
    )
    chance_row = (
        "| chance | – | – | – | " + " | ".join(f"{any_metrics['facets'][f]['chance']:.3f}" for f in TAG_FACETS) + " |"
    )
    return "\n".join(lines + [untrained_row, chance_row, ""] + diffs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "experiments" / "demo.yaml")
    parser.add_argument("--runs", type=Path, default=Path("runs/remedies"))
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--baseline", default="batch_hard", help="the variant every other one is compared to")
    args = parser.parse_args(argv)

    from msd_triplet.config import load_config
    from msd_triplet.uncertainty import BootstrapSettings

    config = load_config(args.config)
    folders = {name: run_variant(config, name, VARIANTS[name], args.runs) for name in args.variants}
    print(table(folders, args.baseline, BootstrapSettings.from_config(config)))


if __name__ == "__main__":
    sys.exit(main())
