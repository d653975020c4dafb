"""Train-step time of the DPNN with the LSI triplet loss, the loss's share of it, and peak memory.

Each (model, batch size, precision, XLA) cell runs in a fresh child process so
that its peak resident set is its own:

* **model**: ``paper`` (``experiments/paper.yaml``: widths 16-32-64-128,
  embedding 256, 2.91 M parameters) and ``demo`` (``experiments/demo.yaml``:
  widths 8-16-32-64, embedding 128, 0.73 M parameters).
* **precision**: ``float32`` and what ``training.precision: auto`` picks on
  this machine (:mod:`msd_triplet.devices`): ``mixed_bfloat16`` on a CPU with
  bfloat16 instructions, ``mixed_float16`` with a GPU, so the first run on a
  GPU prints the float16 and XLA figures without new code. ``--precisions``
  names others. The ratios at the end compare samples/s with float32 without
  XLA, per model and batch; "others' CPU" is the share of all cores the rest
  of the machine used during the timed steps.
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
  batch 600). The statistics the metrics report are timed the same way
  (forward only; each metric evaluates the masks again).
* **peak memory**: ``VmHWM`` of the child after the last step, and after
  importing TensorFlow and building the batch (the baseline). ``ru_maxrss``
  is not used: Linux carries the parent's high-water mark across fork+exec.

With ``--mining-loss`` it times the loss alone instead, every mining mode
of :mod:`msd_triplet.mining` against the dense implementation it replaced:

* **cells**: every mode of :data:`msd_triplet.mining.MINING` with the hard
  margin, ``batch_hard`` and ``batch_all`` also with the soft margin, and
  ``dense_triplet_terms`` (``losses.triplet_terms`` up to commit 4026136,
  [B, B, B] tensors) for ``batch_all`` and ``semi_hard``; XLA off and on;
  each cell in a fresh child process.
* **input**: random unit-norm embeddings [B, d] (B = 600, d = 256 by
  default) and the masks of clustered LSI-like targets (the targets of
  :func:`msd_triplet.training.random_batch`: 8 topics, albums of four,
  :func:`msd_triplet.losses.pair_masks`).
* **time**: one ``tf.function`` computing the squared distances, the loss
  and its gradient with respect to the embeddings; the first call (tracing,
  compilation) apart, then the median of ``--repeats`` calls or more, as
  many as fill one second (at most 200). "others' CPU" is the CPU time the
  rest of the machine used during the timed calls, as a share of all cores:
  the timings are only as quiet as the machine was.
* **memory**: the child's ``VmHWM`` after the last call, and after
  importing TensorFlow and building the inputs (the baseline).
* **agreement**: loss, valid share and active share of every cell, and for
  the dense cells the largest difference of the gradients relative to the
  largest gradient entry.

Measured on 2 cores, 2026-11-29 (``--mining-loss``; Intel Xeon, TensorFlow 2.21.0, B = 600, d = 256,
12.1 % of pairs positive; baseline 635 MiB after importing TensorFlow). Another process kept one of
the two cores busy throughout (others' CPU ~50 %), so the times are upper bounds:

| mining | margin | implementation | loss+grad ms, XLA off / on | peak MiB, XLA off / on |
|---|---|---|---|---|
| batch_hard | hard | mining | 8.2 / 6.4 | 655 / 756 |
| paper_literal | hard | mining | 8.3 / 6.6 | 654 / 753 |
| batch_all | hard | mining | 115.7 / 101.3 | 687 / 797 |
| semi_hard | hard | mining | 131.6 / 118.1 | 693 / 844 |
| sct | hard | mining | 8.3 / 6.1 | 656 / 754 |
| batch_hard | soft | mining | 6.5 / 6.5 | 656 / 759 |
| batch_all | soft | mining | 347.6 / 258.9 | 762 / 897 |
| batch_all | hard | dense [B, B, B] | 1,899.3 / 1,498.6 | 6,062 / 4,170 |
| semi_hard | hard | dense [B, B, B] | 1,848.6 / 978.1 | 4,093 / 2,484 |

Dense / mining, XLA off / on: ``batch_all`` 16x / 15x the time and 8.8x / 5.2x the peak,
``semi_hard`` 14x / 8x and 5.9x / 2.9x. Losses agree to 5e-8 and gradients to 9e-7 of their
largest entry, except dense ``batch_all`` under XLA: its float32 sums over 18 M triplets are
6.5e-6 off in the loss and count the active ones beyond 2**24 inexactly (share 2.4e-7 off).

Usage::

    python benchmarks/train_step.py                  # paper at 64, 150, 600, demo at 128; float32/auto; XLA off/on
    python benchmarks/train_step.py --quick          # demo model at batch 32 only, a smoke run
    python benchmarks/train_step.py --models paper --batches 600 --xla on
    python benchmarks/train_step.py --mining-loss    # the loss alone, every mining mode vs the dense one
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

from _common import _vm_hwm_mib, cpu_model, machine_cpu_seconds, own_cpu_seconds, run_json

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"paper": REPO / "experiments" / "paper.yaml", "demo": REPO / "experiments" / "demo.yaml"}


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(
    model_name: str, batch: int, xla: bool, steps: int, k: int, seed: int = 0, precision: str = "float32"
) -> dict:
    """One cell, in this process: times in seconds, memory in MiB."""
    import keras
    import numpy as np
    import tensorflow as tf

    from msd_triplet import losses, training
    from msd_triplet.config import load_config

    config = load_config(CONFIGS[model_name])
    config = dataclasses.replace(
        config, training=dataclasses.replace(config.training, batch_size=batch, jit_compile=xla, precision=precision)
    )
    keras.utils.set_random_seed(seed)
    x, y = training.random_batch(config, k=k, seed=seed)
    baseline = _vm_hwm_mib()

    model = training.compile_model(config, seed=seed)
    started = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - started
    machine, own, wall = machine_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    step = _median_seconds(lambda: model.train_on_batch(x, y), steps)
    others = (machine_cpu_seconds() - machine - (own_cpu_seconds() - own)) / (
        (time.perf_counter() - wall) * (os.cpu_count() or 1)
    )
    first_loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])

    embeddings = tf.constant(model.predict_on_batch(x))
    lsi, albums = (tf.constant(t) for t in losses.unpack_targets(y))
    settings = dict(
        positive_threshold=config.loss.positive_threshold,
        negative_threshold=config.loss.negative_threshold,
        margin=config.loss.margin,
        mining=config.loss.mining,
        album_filter=config.loss.album_filter,
    )

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
    positive, _ = losses.pair_masks(
        lsi, albums, **{k_: settings[k_] for k_ in ("positive_threshold", "negative_threshold", "album_filter")}
    )
    return dict(
        model=model_name,
        parameters=int(model.count_params()),
        batch=batch,
        xla=xla,
        precision=training.model_compute(model)["precision"],
        others_cpu=min(max(others, 0.0), 1.0),
        train_loss=first_loss,
        gpus=len(tf.config.list_physical_devices("GPU")),
        first_step=first,
        step=step,
        loss=loss_seconds,
        statistics=stats_seconds,
        positive_share=float(np.mean(positive.numpy())),
        baseline_mib=baseline,
        peak_mib=_vm_hwm_mib(),
    )


# --------------------------------------------------------------------------- the loss alone (--mining-loss)

DENSE_MODES = ("batch_all", "semi_hard")


def dense_triplet_terms(distances, positive, negative, margin: float = 0.2, mining: str = "batch_hard"):
    """``losses.triplet_terms`` up to commit 4026136: [B, B, B] tensors for batch_all and semi_hard."""
    import tensorflow as tf

    def masked_max(values, mask, fill):
        return tf.reduce_max(tf.where(mask, values, tf.fill(tf.shape(values), fill)), axis=-1)

    def masked_min(values, mask, fill):
        return tf.reduce_min(tf.where(mask, values, tf.fill(tf.shape(values), fill)), axis=-1)

    def safe_mean(values, weights):
        return tf.reduce_sum(values * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)

    d = tf.convert_to_tensor(distances, tf.float32)
    valid = tf.cast(tf.logical_and(tf.reduce_any(positive, axis=1), tf.reduce_any(negative, axis=1)), tf.float32)
    valid_share = tf.reduce_mean(valid)
    big = tf.reduce_max(d) + 1.0
    if mining in ("batch_hard", "paper_literal"):
        if mining == "batch_hard":
            d_ap, d_an = masked_max(d, positive, -1.0), masked_min(d, negative, big)
        else:
            d_ap, d_an = masked_min(d, positive, big), masked_max(d, negative, -1.0)
        hinge = tf.nn.relu(d_ap - d_an + margin) * valid
        return safe_mean(hinge, valid), valid_share, safe_mean(tf.cast(hinge > 0, tf.float32), valid)
    pos_pairs = tf.cast(positive, tf.float32) * valid[:, None]
    if mining == "batch_all":
        triplets = pos_pairs[:, :, None] * tf.cast(negative, tf.float32)[:, None, :]
        hinge = tf.nn.relu(d[:, :, None] - d[:, None, :] + margin) * triplets
        active = tf.cast(hinge > 0, tf.float32)
        return safe_mean(hinge, active), valid_share, safe_mean(active, triplets)
    farther = tf.logical_and(negative[:, None, :], d[:, None, :] > d[:, :, None])
    nearest_farther = masked_min(tf.broadcast_to(d[:, None, :], tf.shape(farther)), farther, big)
    farthest = masked_max(d, negative, -1.0)[:, None]
    d_an = tf.where(tf.reduce_any(farther, axis=-1), nearest_farther, farthest)
    hinge = tf.nn.relu(d - d_an + margin) * pos_pairs
    return safe_mean(hinge, pos_pairs), valid_share, safe_mean(tf.cast(hinge > 0, tf.float32), pos_pairs)


def measure_mining(
    mode: str,
    soft_margin: bool,
    dense: bool,
    batch: int,
    xla: bool,
    repeats: int,
    dim: int,
    k: int,
    gradient_path: str | None = None,
    seed: int = 0,
) -> dict:
    """One loss cell, in this process: times in seconds, memory in MiB; saves the gradient if asked."""
    import numpy as np
    import tensorflow as tf

    from msd_triplet import losses, mining

    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((8, k))  # the targets of training.random_batch
    lsi = (topics[rng.integers(0, 8, batch)] + 0.3 * rng.standard_normal((batch, k))).astype(np.float32)
    positive, negative = losses.pair_masks(lsi, np.arange(batch) // 4)
    e = rng.standard_normal((batch, dim))
    embeddings = tf.constant((e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32))
    baseline = _vm_hwm_mib()

    @tf.function(jit_compile=xla)
    def loss_and_gradient(e):
        with tf.GradientTape() as tape:
            tape.watch(e)
            d = losses.squared_distances(e)
            if dense:
                out = dense_triplet_terms(d, positive, negative, 0.2, mode)
            else:
                out = mining.triplet_terms(d, positive, negative, 0.2, mode, soft_margin)
        return out, tape.gradient(out[0], e)

    def run():
        out, grad = loss_and_gradient(embeddings)
        return [float(v) for v in out], grad.numpy()

    started = time.perf_counter()
    run()
    first = time.perf_counter() - started
    machine, own, wall = machine_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    times = []
    while len(times) < repeats or (sum(times) < 1.0 and len(times) < 200):  # >= 1 s: CPU clocks tick at 10 ms
        started = time.perf_counter()
        values, grad = run()
        times.append(time.perf_counter() - started)
    others = (machine_cpu_seconds() - machine - (own_cpu_seconds() - own)) / (
        (time.perf_counter() - wall) * (os.cpu_count() or 1)
    )
    if gradient_path:
        np.save(gradient_path, grad)
    return dict(
        mode=mode,
        soft_margin=soft_margin,
        dense=dense,
        batch=batch,
        dim=dim,
        xla=xla,
        first=first,
        seconds=statistics.median(times),
        calls=len(times),
        others_cpu=min(max(others, 0.0), 1.0),
        baseline_mib=baseline,
        peak_mib=_vm_hwm_mib(),
        loss=values[0],
        valid=values[1],
        active=values[2],
        positive_share=float(np.mean(positive.numpy())),
        tensorflow=tf.__version__,
    )


def _mining_cells() -> list[tuple[str, bool, bool]]:
    """(mode, soft margin, dense) of every loss cell."""
    from msd_triplet.mining import MINING

    cells = [(mode, False, False) for mode in MINING]
    cells += [("batch_hard", True, False), ("batch_all", True, False)]
    return cells + [(mode, False, True) for mode in DENSE_MODES]


def _mining_table(rows: list[dict]) -> str:
    lines = [
        "| mining | margin | implementation | XLA | first call s | loss+grad ms | peak MiB | baseline MiB "
        "| others' CPU | loss | valid | active |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {'soft' if r['soft_margin'] else 'hard'} | {'dense [B,B,B]' if r['dense'] else 'mining'} "
            f"| {'on' if r['xla'] else 'off'} | {r['first']:.2f} | {1e3 * r['seconds']:,.1f} | {r['peak_mib']:,.0f} "
            f"| {r['baseline_mib']:,.0f} | {100 * r['others_cpu']:.0f} % | {r['loss']:.7f} | {r['valid']:.4f} "
            f"| {r['active']:.7f} |"
        )
    return "\n".join(lines)


def mining_loss(batches: list[int], jit: list[bool], repeats: int, dim: int, k: int) -> None:
    """Every loss cell in its own child, then the table and the dense/new ratios."""
    import tempfile

    import numpy as np

    rows, gradients = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for batch in batches:
            for xla in jit:
                for mode, soft, dense in _mining_cells():
                    path = os.path.join(folder, f"{mode}-{soft}-{dense}-{batch}-{xla}.npy")
                    command = [
                        sys.executable,
                        __file__,
                        "--mining-child",
                        mode,
                        str(int(soft)),
                        str(int(dense)),
                        str(batch),
                        str(int(xla)),
                        "--repeats",
                        str(repeats),
                        "--dim",
                        str(dim),
                        "--k",
                        str(k),
                        "--gradient",
                        path,
                    ]
                    row = run_json(
                        command, f"loss child {mode} soft {soft} dense {dense} batch {batch} xla {xla}", cwd=REPO
                    )
                    gradients[mode, soft, dense, batch, xla] = np.load(path)
                    rows.append(row)
                    print(
                        f"{mode} {'soft' if soft else 'hard'} {'dense' if dense else 'mining'} batch {batch} "
                        f"XLA {'on' if xla else 'off'}: {1e3 * row['seconds']:,.1f} ms, "
                        f"peak {row['peak_mib']:,.0f} MiB (baseline {row['baseline_mib']:,.0f}), "
                        f"loss {row['loss']:.7f}",
                        flush=True,
                    )
    print()
    print(
        f"{os.cpu_count()} CPUs ({cpu_model()}), TensorFlow {rows[0]['tensorflow']}; d = {dim}; "
        f"positive pairs {100 * rows[0]['positive_share']:.1f} %; median of >= {repeats} calls after the first "
        "(as many as fill 1 s, at most 200)"
    )
    print(_mining_table(rows))
    print()
    for batch in batches:
        for xla in jit:
            for mode in DENSE_MODES:
                new, old = (
                    {
                        r["dense"]: r
                        for r in rows
                        if r["mode"] == mode and not r["soft_margin"] and r["batch"] == batch and r["xla"] == xla
                    }[key]
                    for key in (False, True)
                )
                a, b = gradients[mode, False, False, batch, xla], gradients[mode, False, True, batch, xla]
                print(
                    f"{mode} batch {batch} XLA {'on' if xla else 'off'}: dense/new time "
                    f"{old['seconds'] / new['seconds']:,.0f}x, peak {old['peak_mib']:,.0f} / {new['peak_mib']:,.0f}"
                    f" MiB; |loss difference| {abs(old['loss'] - new['loss']):.1e}, active "
                    f"{abs(old['active'] - new['active']):.1e}, gradient {np.abs(a - b).max() / np.abs(b).max():.1e}"
                    " of its largest entry"
                )


def _child(model_name: str, batch: int, xla: bool, steps: int, k: int, precision: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        model_name,
        str(batch),
        str(int(xla)),
        "--steps",
        str(steps),
        "--k",
        str(k),
        "--child-precision",
        precision,
    ]
    return run_json(command, f"child {model_name} batch {batch} xla {xla} {precision}", cwd=REPO)


def _table(rows: list[dict]) -> str:
    lines = [
        "| model | params | batch | precision | XLA | first step s | step s | samples/s | loss+grad ms "
        "| loss share | statistics ms | peak MiB | others' CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e6:.2f} M | {r['batch']} | {r['precision']} "
            f"| {'on' if r['xla'] else 'off'} | {r['first_step']:.1f} | {r['step']:.2f} | {r['batch'] / r['step']:.0f} "
            f"| {1e3 * r['loss']:.1f} | {100 * r['loss'] / r['step']:.2f} % | {1e3 * r['statistics']:.1f} "
            f"| {r['peak_mib']:,.0f} | {100 * r['others_cpu']:.0f} % |"
        )
    return "\n".join(lines)


def default_precisions() -> list[str]:
    """float32 and what ``training.precision: auto`` picks on this machine (bfloat16 CPU, float16 GPU)."""
    from msd_triplet.devices import resolve_precision

    return list(dict.fromkeys(["float32", resolve_precision("auto")]))


def _ratios(rows: list[dict]) -> list[str]:
    """Samples/s of every precision and XLA cell against float32 without XLA, per model and batch."""
    lines = []
    for model_name in dict.fromkeys(r["model"] for r in rows):
        for batch in sorted({r["batch"] for r in rows if r["model"] == model_name}):
            cells = {(r["precision"], r["xla"]): r for r in rows if r["model"] == model_name and r["batch"] == batch}
            base = cells.get(("float32", False))
            if base is None:
                continue
            for (precision, xla), r in cells.items():
                if (precision, xla) != ("float32", False):
                    lines.append(
                        f"{model_name} batch {batch}: {precision}{' + XLA' if xla else ''} "
                        f"{base['step'] / r['step']:.2f}x the samples/s of float32 "
                        f"(peak {r['peak_mib']:,.0f} vs {base['peak_mib']:,.0f} MiB; first-step loss "
                        f"{r['train_loss']:.5f} vs {base['train_loss']:.5f})"
                    )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "BATCH", "XLA"), help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=["paper", "demo"])
    parser.add_argument(
        "--batches",
        nargs="+",
        type=int,
        default=None,
        help="batch sizes (default: 64 and 600 for paper, the config's 128 for demo)",
    )
    parser.add_argument("--xla", choices=["off", "on", "both"], default="both")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=None,
        choices=["float32", "mixed_bfloat16", "mixed_float16"],
        help="default: float32 and what training.precision: auto picks here",
    )
    parser.add_argument("--child-precision", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per cell after the first (median)")
    parser.add_argument("--k", type=int, default=16, help="LSI size of the random targets")
    parser.add_argument("--quick", action="store_true", help="demo model, batch 32, XLA off: a smoke run")
    parser.add_argument(
        "--mining-loss",
        action="store_true",
        help="time the loss + gradient of every mining mode against the dense one (batch 600)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="--mining-loss: timed calls after the first (median)")
    parser.add_argument("--dim", type=int, default=256, help="--mining-loss: embedding size")
    parser.add_argument(
        "--mining-child", nargs=5, metavar=("MODE", "SOFT", "DENSE", "BATCH", "XLA"), help=argparse.SUPPRESS
    )
    parser.add_argument("--gradient", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.mining_child:
        mode, soft, dense, batch, xla = args.mining_child
        print(
            json.dumps(
                measure_mining(
                    mode,
                    bool(int(soft)),
                    bool(int(dense)),
                    int(batch),
                    bool(int(xla)),
                    args.repeats,
                    args.dim,
                    args.k,
                    args.gradient,
                )
            )
        )
        return
    if args.mining_loss:
        jit = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
        mining_loss(args.batches or [600], jit, args.repeats, args.dim, args.k)
        return
    if args.child:
        model_name, batch, xla = args.child
        print(
            json.dumps(
                measure(model_name, int(batch), bool(int(xla)), args.steps, args.k, precision=args.child_precision)
            )
        )
        return
    if args.quick:
        args.models, args.batches, args.xla, args.steps = ["demo"], [32], "off", 2
    jit = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    precisions = args.precisions or default_precisions()
    rows = []
    for model_name in args.models:
        batches = args.batches or ([64, 150, 600] if model_name == "paper" else [128])
        for batch in batches:
            for precision in precisions:
                for xla in jit:
                    row = _child(model_name, batch, xla, args.steps, args.k, precision)
                    rows.append(row)
                    print(
                        f"{model_name} batch {batch} {precision} XLA {'on' if xla else 'off'}: "
                        f"step {row['step']:.2f} s "
                        f"({batch / row['step']:.0f} samples/s), "
                        f"loss {1e3 * row['loss']:.1f} ms ({100 * row['loss'] / row['step']:.2f} %), "
                        f"peak {row['peak_mib']:,.0f} MiB (baseline {row['baseline_mib']:,.0f}); "
                        f"others' CPU {100 * row['others_cpu']:.0f} %",
                        flush=True,
                    )
    print()
    gpus = rows[0]["gpus"] if rows else 0
    print(
        f"{os.cpu_count()} CPUs ({cpu_model()}), {gpus} GPU(s); median of {args.steps} steps after the first; "
        "loss timed as loss + gradient w.r.t. the embeddings on the same batch"
    )
    print(_table(rows))
    print()
    print("\n".join(_ratios(rows)))


if __name__ == "__main__":
    main()
