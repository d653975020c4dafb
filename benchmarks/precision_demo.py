"""The demo trained in float32 and with ``training.precision: auto``: time, memory and P@k with intervals.

Both runs use one config (``--config``, default ``experiments/demo.yaml``)
and one seed and differ only in ``training.precision``; they share the data
set and feature cache, which the script makes and prepares first if needed
(``make-demo-data``, ``prepare``). Each run
is ``msd-triplet fit`` and ``msd-triplet evaluate`` in a child process, timed
apart; peak memory is the child's maximum resident set.

Printed per facet: P@k of both runs with their 95 % bootstrap intervals,
the paired difference auto − float32 with its interval (the same resampled
queries for both, ``per_query.npz``), whether auto's P@k lies inside
float32's interval, the untrained network and chance; then the fit time, the
epochs, seconds per epoch and the ratio.

Measured: see README "Training throughput".

Usage::

    python benchmarks/precision_demo.py --work /tmp/precision      # data in /tmp/precision/data/demo
    python benchmarks/precision_demo.py --work W --precisions float32 mixed_bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]


def _run(command: list[str], log: Path) -> tuple[float, float]:
    """Run ``command`` with its output in ``log``; (wall seconds, peak MiB of the child).

    The peak is the child's own ``ru_maxrss`` from ``wait4``. Linux carries the
    parent's high-water mark across fork + exec, so it is the child's only while
    this parent stays small: it imports neither TensorFlow nor the package before.
    """
    started = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        )
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command)} failed ({os.waitstatus_to_exitcode(status)}); see {log}")
    return seconds, usage.ru_maxrss / 1024


def _name(base: dict, precision: str, seed: int) -> str:
    name = f"{base.get('name', 'run')}-{precision}"
    return name if seed == base.get("seed", 42) else f"{name}-seed{seed}"


def train_and_evaluate(base: dict, work: Path, precision: str, seed: int) -> dict:
    """Fit and evaluate one (precision, seed) run in child processes, once; its timing record."""
    cli = [sys.executable, "-m", "msd_triplet.cli"]
    name = _name(base, precision, seed)
    config = dict(base, name=name, seed=seed)
    config["data"] = dict(base.get("data", {}), root=str(work / "data" / "demo"))
    config["training"] = dict(base.get("training", {}), precision=precision, runs=str(work / "runs"))
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run, record = work / "runs" / name, work / f"{name}.timing.json"
    if (run / "metrics.json").is_file() and record.is_file():
        print(f"{name}: evaluated before; reusing it (delete {run} to measure again)")
        return json.loads(record.read_text())
    if not (work / "data" / "demo" / "prepared").is_dir():
        seconds, _ = _run(cli + ["make-demo-data", "--out", str(work / "data" / "demo")], work / "data.log")
        prepare, _ = _run(cli + ["prepare", "--config", str(path)], work / "prepare.log")
        print(f"data {seconds:.0f} s, prepare {prepare:.0f} s", flush=True)
    fit_seconds, fit_peak = _run(cli + ["fit", "--config", str(path)], work / f"{name}.fit.log")
    eval_seconds, _ = _run(cli + ["evaluate", str(run)], work / f"{name}.evaluate.log")
    timing = {
        "fit_seconds": fit_seconds,
        "fit_peak_mib": fit_peak,
        "evaluate_seconds": eval_seconds,
        "epochs": len((run / "log.csv").read_text().splitlines()) - 1,
        "compute": json.loads((run / "run.json").read_text())["compute"],
    }
    record.write_text(json.dumps(timing))
    print(
        f"{name} ({timing['compute']['precision']}): fit {fit_seconds:.0f} s for {timing['epochs']} epochs "
        f"({fit_seconds / timing['epochs']:.1f} s per epoch with validation), peak {fit_peak:,.0f} MiB, "
        f"evaluate {eval_seconds:.0f} s",
        flush=True,
    )
    return timing


def _seed_mean(per_query: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per facet, the mean over seeds of each query's precision (the queries are the same tracks)."""
    return {facet: np.mean([q[facet] for q in per_query], axis=0) for facet in per_query[0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "experiments" / "demo.yaml")
    parser.add_argument("--work", type=Path, required=True, help="folder for the data, configs and runs")
    parser.add_argument("--precisions", nargs=2, default=["float32", "auto"], metavar=("REFERENCE", "OTHER"))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the config's seed")
    args = parser.parse_args(argv)

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(args.config.read_text())
    seeds = args.seeds or [base.get("seed", 42)]
    reference, other = args.precisions
    timing = {(p, s): train_and_evaluate(base, work, p, s) for s in seeds for p in (reference, other)}

    from msd_triplet.config import load_config  # after the children: this process stays small (see _run)
    from msd_triplet.runs import PerQuery
    from msd_triplet.uncertainty import BootstrapSettings, format_figure, paired_differences

    runs = {key: work / "runs" / _name(base, *key) for key in timing}
    metrics = {key: json.loads((r / "metrics.json").read_text()) for key, r in runs.items()}
    queries = {key: PerQuery.load(r / "per_query.npz") for key, r in runs.items()}
    first = (reference, seeds[0])
    settings = BootstrapSettings.from_config(load_config(runs[first] / "config.yaml"))
    clusters = queries[first].clusters(settings)
    k = metrics[first]["k"]

    def fig(d: dict) -> str:
        return format_figure(d["difference"], d["ci_low"], d["ci_high"], signed=True)

    for seed in seeds:
        a, b = metrics[reference, seed], metrics[other, seed]
        diff = paired_differences(
            queries[other, seed].models["trained"], queries[reference, seed].models["trained"], settings, clusters
        )
        print(f"\nseed {seed}:\n")
        print(
            f"| facet | {reference} P@{k} | {other} P@{k} | {other} − {reference} (paired) "
            f"| inside {reference}'s interval | untrained | chance |"
        )
        print("|---|---|---|---|---|---|---|")
        for facet, m in a["facets"].items():
            o = b["facets"][facet]
            print(
                f"| {facet} | {format_figure(m['precision'], m['ci_low'], m['ci_high'])} "
                f"| {format_figure(o['precision'], o['ci_low'], o['ci_high'])} | {fig(diff[facet])} "
                f"| {'yes' if m['ci_low'] <= o['precision'] <= m['ci_high'] else 'no'} "
                f"| {a['untrained'][facet]['precision']:.3f} | {m['chance']:.3f} |"
            )
    if len(seeds) > 1:
        # how far another trajectory moves P@k without any change of precision: another seed, same precision
        print(f"\nthe same precision, another seed (paired over queries): {reference} seed s − seed {seeds[0]}")
        for seed in seeds[1:]:
            diff = paired_differences(
                queries[reference, seed].models["trained"], queries[first].models["trained"], settings, clusters
            )
            print(f"  seed {seed}: " + ", ".join(f"{facet} {fig(d)}" for facet, d in diff.items()))
        means = {p: _seed_mean([queries[p, s].models["trained"] for s in seeds]) for p in (reference, other)}
        diff = paired_differences(means[other], means[reference], settings, clusters)
        print(
            f"\n{other} − {reference}, per-query precision averaged over seeds {seeds} (paired over queries; "
            "the interval holds the queries' variation, not the seeds'): "
            + ", ".join(f"{facet} {fig(d)}" for facet, d in diff.items())
        )
        # the seeds as the unit: each seed's difference of P@k, a t interval over seeds
        from scipy import stats

        per_seed = {
            facet: np.array(
                [
                    metrics[other, s]["facets"][facet]["precision"]
                    - metrics[reference, s]["facets"][facet]["precision"]
                    for s in seeds
                ]
            )
            for facet in metrics[first]["facets"]
        }
        half = {
            f: stats.t.ppf(0.975, len(seeds) - 1) * d.std(ddof=1) / np.sqrt(len(seeds)) for f, d in per_seed.items()
        }
        print(
            f"{other} − {reference} over seeds (mean, sd, 95 % t interval over {len(seeds)} seeds): "
            + ", ".join(
                f"{f} {d.mean():+.4f} sd {d.std(ddof=1):.4f} [{d.mean() - half[f]:+.4f}, {d.mean() + half[f]:+.4f}]"
                for f, d in per_seed.items()
            )
        )
    print()
    for p in (reference, other):
        per_epoch = [timing[p, s]["fit_seconds"] / timing[p, s]["epochs"] for s in seeds]
        t = timing[p, seeds[0]]
        print(
            f"{p} ({t['compute']['precision']}): seconds per epoch (training and validation) "
            + ", ".join(f"{x:.1f}" for x in per_epoch)
            + f"; peak {max(timing[p, s]['fit_peak_mib'] for s in seeds):,.0f} MiB"
        )
    ratio = [
        timing[other, s]["fit_seconds"]
        / timing[other, s]["epochs"]
        / (timing[reference, s]["fit_seconds"] / timing[reference, s]["epochs"])
        for s in seeds
    ]
    print(f"seconds per epoch, {other} / {reference}: " + ", ".join(f"{r:.2f}" for r in ratio))


if __name__ == "__main__":
    main()
