"""Batch composition: random batches against related-batch composition, positives per anchor and time.

On the training split of a prepared data set (``--config``, default
``experiments/demo.yaml``), with the LSI fitted as training fits it
(:func:`msd_triplet.training.load_training_data`; it needs the feature cache),
one epoch's order is built by

* **random**: :func:`msd_triplet.features.epoch_order`, what training uses;
* **related, group size g** (2, 4, 8): :func:`msd_triplet.batches.composed_order`
  over the related lists of :func:`msd_triplet.batches.related_lists`
  (``max_related`` 64, built once; its time is printed separately),

and cut into full batches of ``training.batch_size`` (``drop_remainder`` as
in training). Per batch, each anchor's positives (relatedness >=
``loss.positive_threshold``, another album) and negatives (< ``loss.negative_threshold``,
another album) are counted with :func:`msd_triplet.relatedness.relatedness_numpy`,
as the loss would see them. Printed per contender: mean positives per anchor,
share of anchors with >= 1 positive, with >= 1 negative, valid anchors (both),
and the time to compute one epoch's order (median of 3 epochs). Everything is
for one epoch (epoch 0, seed = the config's). ``--source`` compares another
relatedness source (:data:`msd_triplet.relatedness.SOURCES`) at the config's
thresholds or ``--positive-threshold`` / ``--negative-threshold``.

If the data is not prepared, the script says how to make it::

    msd-triplet make-demo-data --out data/demo
    msd-triplet prepare --config experiments/demo.yaml

Run (``data.root`` is relative to the working directory)::

    python benchmarks/batch_composition.py --config experiments/demo.yaml

Measured on 2026-11-29 (the demo data of ``make-demo-data``, prepared; 2 CPU cores shared with
other jobs, so the times are rough)::

    experiments/demo.yaml: 1,151 training tracks, 190 albums; source lsi (cosine), positives >= 0.8,
      negatives < 0.2; batch size 128, seed 42   (one line in the output)
    pairs of different albums: 0.98% positives, 58.95% negatives
    related lists (max 64): 0.009 s; tracks with >= 1 positive 70.0%, positives per track mean 11.2, median 7, max 62
    one epoch, 8 full batches of 128:
    order               positives/anchor  >= 1 positive  >= 1 negative  valid anchors  order time
    random                          1.21          49.5%         100.0%          49.5%       4.5 ms
    related, g = 2                  2.04          69.6%         100.0%          69.6%       9.3 ms
    related, g = 4                  2.69          68.9%         100.0%          68.9%       9.0 ms
    related, g = 8                  3.98          69.6%         100.0%          69.6%       4.3 ms
    valid anchors, related, g = 2 / random: 1.4x
    2026-11-29, python 3.11.7, numpy 2.4.6, x86_64

30 % of the demo's training tracks have no positive of another album (tags are per album,
so album mates have equal LSI vectors; counting them, every track has a positive), so
70 % is the ceiling; composed batches reach it at every
group size (random batches: 49.5 %), and larger groups give more positives per anchor.
Other sources at the same 0.8 / 0.2 (``--source``): ``artist`` random 61.2 % → related
85.7-86.5 % (ceiling 86.5 %); ``genre`` has 19.8 % positive pairs, so random batches
already give every anchor 25 positives; ``jaccard`` has only 0.05 % positive pairs at 0.8
(7.3 % of tracks have one) — calibrated to the LSI's shares
(:func:`msd_triplet.relatedness.calibrate_thresholds`) its thresholds are 0.444 / 0.091.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time

import numpy as np


def batch_statistics(
    order: np.ndarray,
    vectors: np.ndarray,
    kind: str,
    albums: np.ndarray,
    batch_size: int,
    positive_threshold: float,
    negative_threshold: float,
) -> dict[str, float]:
    """Means over the anchors of the full batches of ``order``: positives, has positive/negative, valid."""
    from msd_triplet.relatedness import relatedness_numpy

    positives, has_pos, has_neg, valid = [], [], [], []
    for start in range(0, len(order) - batch_size + 1, batch_size):
        b = order[start : start + batch_size]
        r = relatedness_numpy(vectors[b], kind)
        allowed = (albums[b][:, None] != albums[b][None, :]) & ~np.eye(len(b), dtype=bool)
        pos = allowed & (r >= positive_threshold)
        neg = allowed & (r < negative_threshold)
        positives.append(pos.sum(axis=1))
        has_pos.append(pos.any(axis=1))
        has_neg.append(neg.any(axis=1))
        valid.append(pos.any(axis=1) & neg.any(axis=1))
    return {
        "positives": float(np.mean(np.concatenate(positives))),
        "has_positive": float(np.mean(np.concatenate(has_pos))),
        "has_negative": float(np.mean(np.concatenate(has_neg))),
        "valid": float(np.mean(np.concatenate(valid))),
    }


def timed(fn, repeats: int = 3):
    """(result of the first call, median seconds of ``repeats`` calls of fn(epoch) for epochs 0..)."""
    times, first = [], None
    for epoch in range(repeats):
        started = time.perf_counter()
        out = fn(epoch)
        times.append(time.perf_counter() - started)
        first = out if first is None else first
    return first, float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="experiments/demo.yaml")
    ap.add_argument("--source", default="lsi", help="relatedness source: lsi, jaccard, genre, artist")
    ap.add_argument("--positive-threshold", type=float, default=None)
    ap.add_argument("--negative-threshold", type=float, default=None)
    ap.add_argument("--group-sizes", default="2,4,8")
    args = ap.parse_args(argv)

    from msd_triplet import batches, features, losses
    from msd_triplet.config import load_config
    from msd_triplet.errors import MsdTripletError
    from msd_triplet.relatedness import SOURCE_KIND, check_source, pair_shares, source_vectors
    from msd_triplet.training import load_training_data

    try:
        config = load_config(args.config)
        check_source(args.source)
        data = load_training_data(config, splits=("train",))
    except MsdTripletError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(
            "make the demo data with\n    msd-triplet make-demo-data --out data/demo\n"
            "    msd-triplet prepare --config experiments/demo.yaml\n"
            "(data.root is relative to the working directory)",
            file=sys.stderr,
        )
        return 1
    lsi_vectors, album_ids = losses.unpack_targets(data.targets["train"])
    positions = data.positions["train"]
    vectors = source_vectors(args.source, data.prepared, positions, lsi_vectors, config.lsi.tag_sets)
    kind = SOURCE_KIND[args.source]
    albums = np.asarray(album_ids)
    pos_thr = config.loss.positive_threshold if args.positive_threshold is None else args.positive_threshold
    neg_thr = config.loss.negative_threshold if args.negative_threshold is None else args.negative_threshold
    batch_size, seed, n = config.training.batch_size, config.seed, len(vectors)

    pos_share, neg_share = pair_shares(vectors, kind, albums, pos_thr, neg_thr)
    print(
        f"{args.config}: {n:,} training tracks, {len(np.unique(albums)):,} albums; source {args.source} "
        f"({kind}), positives >= {pos_thr:g}, negatives < {neg_thr:g}; batch size {batch_size}, seed {seed}"
    )
    print(f"pairs of different albums: {pos_share:.2%} positives, {neg_share:.2%} negatives")
    started = time.perf_counter()
    related = batches.related_lists(vectors, kind, albums, pos_thr, max_related=64, seed=seed)
    related_seconds = time.perf_counter() - started
    counts = related.counts
    print(
        f"related lists (max 64): {related_seconds:.3f} s; tracks with >= 1 positive {np.mean(counts > 0):.1%}, "
        f"positives per track mean {counts.mean():.1f}, median {np.median(counts):.0f}, max {counts.max()}"
    )

    rows = []
    order, seconds = timed(lambda e: features.epoch_order(n, seed, e).numpy())
    rows.append(("random", seconds, batch_statistics(order, vectors, kind, albums, batch_size, pos_thr, neg_thr)))
    for g in (int(x) for x in args.group_sizes.split(",")):
        order, seconds = timed(lambda e, g=g: batches.composed_order(related, albums, batch_size, g, seed, e))
        rows.append(
            (f"related, g = {g}", seconds, batch_statistics(order, vectors, kind, albums, batch_size, pos_thr, neg_thr))
        )

    print(f"one epoch, {n // batch_size} full batches of {batch_size}:")
    print(
        f"{'order':<18}{'positives/anchor':>18}{'>= 1 positive':>15}{'>= 1 negative':>15}"
        f"{'valid anchors':>15}{'order time':>12}"
    )
    for name, seconds, s in rows:
        print(
            f"{name:<18}{s['positives']:>18.2f}{s['has_positive']:>15.1%}{s['has_negative']:>15.1%}"
            f"{s['valid']:>15.1%}{seconds * 1000:>10.1f} ms"
        )
    base = rows[0][2]["valid"]
    best = max(rows[1:], key=lambda r: r[2]["valid"]) if len(rows) > 1 else None
    if best is not None and base > 0:
        print(f"valid anchors, {best[0]} / random: {best[2]['valid'] / base:.1f}x")
    print(f"{datetime.date.today()}, python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
