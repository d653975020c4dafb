"""A genre classifier on top of a trained msd-triplet model, in plain Keras.

Run from the repository root after `msd-triplet demo`:

    python examples/probe_keras.py --run runs/demo

The trained network is loaded from its checkpoint and frozen; a Dense softmax
layer on top is the only thing that learns. `msd_triplet.probe.probe_run`
does the same with early stopping and baselines (`msd-triplet probe`).
"""

import argparse
from pathlib import Path

import keras
import numpy as np

import msd_triplet  # noqa: F401 - registers the package's custom Keras objects for loading
from msd_triplet.featurecache import FeatureCache, cache_dir
from msd_triplet.prepare import load_prepared
from msd_triplet.probe import facet_labels
from msd_triplet.runs import run_config

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="a run folder of `msd-triplet fit`")
parser.add_argument("--epochs", type=int, default=40)
args = parser.parse_args()
keras.utils.set_random_seed(0)

# 1. The run's config names its prepared data (tracks, splits, tags) and its log-mel feature cache.
config = run_config(args.run)
prepared = load_prepared(config)
cache = FeatureCache(cache_dir(config))
# One label per track: its main genre (the most common of its genres), per split.
genres, labels = facet_labels(prepared, "genre")


def split(name):
    """log-mel features [n, 80, 130, 1] and genre indices [n] of one split."""
    positions, y = labels[name]
    rows = cache.rows(prepared.tracks["track_id"].to_numpy()[positions])
    return cache.read(rows)[..., None], y


x_train, y_train = split("train")
x_test, y_test = split("test")

# 2. The trained network without its optimizer and loss (compile=False), frozen.
base = keras.models.load_model(args.run / "checkpoints" / "best.keras", compile=False)
base.trainable = False
# Frozen weights give the same embedding every epoch: compute it once.
e_train = base.predict(x_train, batch_size=128, verbose=0)

# 3. The head: standardise each embedding dimension (a triplet-trained embedding may vary very
#    little in absolute terms; without this the Dense layer hardly learns), then softmax.
standardise = keras.layers.Normalization()
standardise.adapt(e_train)
head = keras.Sequential(
    [keras.Input(e_train.shape[1:]), standardise, keras.layers.Dense(len(genres), activation="softmax")]
)
head.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
head.fit(e_train, y_train, batch_size=64, epochs=args.epochs, verbose=0)

# 4. One model from log-mel to genre: the frozen network, then the head. Evaluate on the test split.
classifier = keras.Sequential([base, head])
classifier.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
loss, accuracy = classifier.evaluate(x_test, y_test, batch_size=128, verbose=0)
majority = np.mean(y_test == np.bincount(y_train).argmax())
print(
    f"test accuracy {accuracy:.3f} on {len(y_test)} tracks, {len(genres)} genres "
    f"(always the most common genre: {majority:.3f})"
)
