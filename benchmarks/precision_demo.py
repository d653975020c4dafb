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
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _run(command: list[str], log: Path) -> tuple[float, float]:
    """Run ``command`` with its output in ``log``; (wall seconds, peak MiB of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}); see {log}")
    # ru_maxrss of children is the largest of any waited-for child so far: exact for the first
    # and for any child larger than the ones before; otherwise a lower bound is not known
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, (peak / 1024 if peak > before else float("nan"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "experiments" / "demo.yaml")
    parser.add_argument("--work", type=Path, required=True, help="folder for the data, configs and runs")
    parser.add_argument("--precisions", nargs="+", default=["float32", "auto"])
    args = parser.parse_args(argv)

    from msd_triplet.config import load_config
    from msd_triplet.runs import PerQuery
    from msd_triplet.uncertainty import BootstrapSettings, format_figure, paired_differences

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(args.config.read_text())
    cli = [sys.executable, "-m", "msd_triplet.cli"]
    rows = {}
    for i, precision in enumerate(args.precisions):
        config = dict(base, name=f"{base.get('name', 'run')}-{precision}")
        config["data"] = dict(base.get("data", {}), root=str(work / "data" / "demo"))
        config["training"] = dict(base.get("training", {}), precision=precision, runs=str(work / "runs"))
        path = work / f"{precision}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        run = work / "runs" / config["name"]
        if (run / "metrics.json").is_file():
            print(f"{precision}: {run} is evaluated; reusing it (delete it to measure again)")
            rows[precision] = json.loads((work / f"{precision}.timing.json").read_text())
            continue
        if i == 0 and not (work / "data" / "demo" / "prepared").is_dir():
            seconds, _ = _run(cli + ["make-demo-data", "--out", str(work / "data" / "demo")], work / "data.log")
            prepare, _ = _run(cli + ["prepare", "--config", str(path)], work / "prepare.log")
            print(f"data {seconds:.0f} s, prepare {prepare:.0f} s", flush=True)
        fit_seconds, fit_peak = _run(cli + ["fit", "--config", str(path)], work / f"{precision}.fit.log")
        eval_seconds, _ = _run(cli + ["evaluate", str(run)], work / f"{precision}.evaluate.log")
        timing = {"fit_seconds": fit_seconds, "fit_peak_mib": fit_peak, "evaluate_seconds": eval_seconds}
        print(f"{precision}: fit {fit_seconds:.0f} s (peak {fit_peak:,.0f} MiB), evaluate {eval_seconds:.0f} s",
              flush=True)
        log = (run / "log.csv").read_text().splitlines()
        timing.update(epochs=len(log) - 1, compute=json.loads((run / "run.json").read_text())["compute"])
        (work / f"{precision}.timing.json").write_text(json.dumps(timing))
        rows[precision] = timing

    reference, other = args.precisions[0], args.precisions[-1]
    runs = {p: work / "runs" / f"{base.get('name', 'run')}-{p}" for p in (reference, other)}
    metrics = {p: json.loads((r / "metrics.json").read_text()) for p, r in runs.items()}
    queries = {p: PerQuery.load(r / "per_query.npz") for p, r in runs.items()}
    settings = BootstrapSettings.from_config(load_config(runs[reference] / "config.yaml"))
    diff = paired_differences(queries[other].models["trained"], queries[reference].models["trained"], settings,
                              queries[reference].clusters(settings))
    k = metrics[reference]["k"]
    print()
    print(f"| facet | {reference} P@{k} | {other} P@{k} | {other} − {reference} (paired) | inside {reference}'s "
          f"interval | untrained | chance |")
    print("|---|---|---|---|---|---|---|")
    for facet, m in metrics[reference]["facets"].items():
        o = metrics[other]["facets"][facet]
        d = diff[facet]
        inside = m["ci_low"] <= o["precision"] <= m["ci_high"]
        u = metrics[reference]["untrained"][facet]
        print(f"| {facet} | {format_figure(m['precision'], m['ci_low'], m['ci_high'])} "
              f"| {format_figure(o['precision'], o['ci_low'], o['ci_high'])} "
              f"| {format_figure(d['difference'], d['ci_low'], d['ci_high'], signed=True)} | {'yes' if inside else 'no'} "
              f"| {u['precision']:.3f} | {m['chance']:.3f} |")
    print()
    for p in (reference, other):
        t = rows[p]
        print(f"{p} ({t['compute']['precision']}): {t['epochs']} epochs, fit {t['fit_seconds']:.0f} s "
              f"({t['fit_seconds'] / t['epochs']:.1f} s per epoch, training and validation), peak "
              f"{t['fit_peak_mib']:,.0f} MiB; evaluate {t['evaluate_seconds']:.0f} s")
    a, b = (rows[p]["fit_seconds"] / rows[p]["epochs"] for p in (reference, other))
    print(f"seconds per epoch: {other} / {reference} = {b / a:.2f}")

if __name__ == "__main__":
    main()
