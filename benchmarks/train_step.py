"""Train-step time of the DPNN with the LSI triplet loss, the loss's share of it, and peak memory.

Each (model, batch size, XLA) cell runs in a fresh child process so that its
peak resident set is its own:

* **model**: ``paper`` (``experiments/paper.yaml``: widths 16-32-64-128,
  embedding 256, 2.91 M parameters) and ``demo`` (``experiments/demo.yaml``:
  widths 8-16-32-64, embedding 128, 0.73 M parameters).
* **batch**: random log-mel-shaped inputs [B, 80, 130, 1] and clustered
  random LSI vectors (k = ``--k``) with albums of four tracks
  (:func:`msd_triplet.training.random_batch`), so that about one pair in
  eight is a positive and most are negatives, as in training.
* **step**: ``model.train_on_batch`` of the model compiled exactly as
  ``msd-triplet fit`` compiles it (Adam, :class:`LsiTripletLoss` and its five
  :class:`TripletStatistic` metrics), ``jit_compile`` off or on. The first
  call (tracing, and XLA compilation when on) is reported apart; the step
  time is the median of ``--steps`` further calls.
* **loss**: on the same batch, the embeddings the model produces, and the
  same jit setting, the median time of one ``tf.function`` that computes the
  loss and its gradient with respect to the embeddings - what the loss adds to
  a step. Its share of the step is the figure of merit (goal: <= 5 % at
  batch 600). The five statistics the metrics report are timed the same way
  (forward only; each metric evaluates the masks again).
* **peak memory**: ``VmHWM`` of the child after the last step, and after
  importing TensorFlow and building the batch (the baseline). ``ru_maxrss``
  is not used: Linux carries the parent's high-water mark across fork+exec.

Usage::

    python benchmarks/train_step.py                  # paper model at 64 and 600, demo at 128, XLA off/on
    python benchmarks/train_step.py --quick          # demo model at batch 32 only, a smoke run
    python benchmarks/train_step.py --models paper --batches 600 --xla on
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

from _common import _vm_hwm_mib, run_json

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"paper": REPO / "experiments" / "paper.yaml", "demo": REPO / "experiments" / "demo.yaml"}


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(model_name: str, batch: int, xla: bool, steps: int, k: int, seed: int = 0) -> dict:
    """One cell, in this process: times in seconds, memory in MiB."""
    import keras
    import numpy as np
    import tensorflow as tf

    from msd_triplet import losses, training
    from msd_triplet.config import load_config

    config = load_config(CONFIGS[model_name])
    config = dataclasses.replace(
        config, training=dataclasses.replace(config.training, batch_size=batch, jit_compile=xla))
    keras.utils.set_random_seed(seed)
    x, y = training.random_batch(config, k=k, seed=seed)
    baseline = _vm_hwm_mib()

    model = training.compile_model(config, seed=seed)
    started = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - started
    step = _median_seconds(lambda: model.train_on_batch(x, y), steps)

    embeddings = tf.constant(model.predict_on_batch(x))
    lsi, albums = (tf.constant(t) for t in losses.unpack_targets(y))
    settings = dict(positive_threshold=config.loss.positive_threshold,
                    negative_threshold=config.loss.negative_threshold, margin=config.loss.margin,
                    mining=config.loss.mining, album_filter=config.loss.album_filter)

    @tf.function(jit_compile=xla)
    def loss_and_gradient(e):
        with tf.GradientTape() as tape:
            tape.watch(e)
            value = losses.lsi_triplet_loss(e, lsi, albums, **settings)
        return value, tape.gradient(value, e)

    @tf.function(jit_compile=xla)
    def statistics_only(e):
        return losses.lsi_triplet_loss(e, lsi, albums, return_statistics=True, **settings)[1]

    def run(fn):
        return lambda: tf.nest.map_structure(lambda t: t.numpy(), fn(embeddings))

    run(loss_and_gradient)()
    run(statistics_only)()
    repeats = max(steps, 20)
    loss_seconds = _median_seconds(run(loss_and_gradient), repeats)
    stats_seconds = _median_seconds(run(statistics_only), repeats)
    positive, _ = losses.pair_masks(lsi, albums, **{k_: settings[k_] for k_ in
                                                    ("positive_threshold", "negative_threshold", "album_filter")})
    return dict(model=model_name, parameters=int(model.count_params()), batch=batch, xla=xla,
                first_step=first, step=step, loss=loss_seconds, statistics=stats_seconds,
                positive_share=float(np.mean(positive.numpy())), baseline_mib=baseline, peak_mib=_vm_hwm_mib())


def _child(model_name: str, batch: int, xla: bool, steps: int, k: int) -> dict:
    command = [sys.executable, __file__, "--child", model_name, str(batch), str(int(xla)),
               "--steps", str(steps), "--k", str(k)]
    return run_json(command, f"child {model_name} batch {batch} xla {xla}", cwd=REPO)


def _table(rows: list[dict]) -> str:
    lines = ["| model | params | batch | XLA | first step s | step s | samples/s | loss+grad ms | loss share "
             "| 5 statistics ms | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e6:.2f} M | {r['batch']} | {'on' if r['xla'] else 'off'} "
            f"| {r['first_step']:.1f} | {r['step']:.2f} | {r['batch'] / r['step']:.0f} | {1e3 * r['loss']:.1f} "
            f"| {100 * r['loss'] / r['step']:.2f} % | {1e3 * r['statistics']:.1f} | {r['peak_mib']:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "BATCH", "XLA"), help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=["paper", "demo"])
    parser.add_argument("--batches", nargs="+", type=int, default=None,
                        help="batch sizes (default: 64 and 600 for paper, the config's 128 for demo)")
    parser.add_argument("--xla", choices=["off", "on", "both"], default="both")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per cell after the first (median)")
    parser.add_argument("--k", type=int, default=16, help="LSI size of the random targets")
    parser.add_argument("--quick", action="store_true", help="demo model, batch 32, XLA off: a smoke run")
    args = parser.parse_args(argv)

    if args.child:
        model_name, batch, xla = args.child
        print(json.dumps(measure(model_name, int(batch), bool(int(xla)), args.steps, args.k)))
        return
    if args.quick:
        args.models, args.batches, args.xla, args.steps = ["demo"], [32], "off", 2
    jit = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    rows = []
    for model_name in args.models:
        batches = args.batches or ([64, 600] if model_name == "paper" else [128])
        for batch in batches:
            for xla in jit:
                row = _child(model_name, batch, xla, args.steps, args.k)
                rows.append(row)
                print(f"{model_name} batch {batch} XLA {'on' if xla else 'off'}: step {row['step']:.2f} s, "
                      f"loss {1e3 * row['loss']:.1f} ms ({100 * row['loss'] / row['step']:.2f} %), "
                      f"peak {row['peak_mib']:,.0f} MiB (baseline {row['baseline_mib']:,.0f}); "
                      f"positive pairs {100 * row['positive_share']:.1f} %", flush=True)
    print()
    print(f"{os.cpu_count()} CPUs; median of {args.steps} steps after the first; loss timed "
          "as loss + gradient w.r.t. the embeddings on the same batch")
    print(_table(rows))
    for model_name in args.models:
        for batch in sorted({r["batch"] for r in rows if r["model"] == model_name}):
            cells = {r["xla"]: r for r in rows if r["model"] == model_name and r["batch"] == batch}
            if len(cells) == 2:
                print(f"{model_name} batch {batch}: XLA speed-up {cells[False]['step'] / cells[True]['step']:.2f}x")


if __name__ == "__main__":
    main()
