"""Downstream classification on frozen embeddings: a linear probe per tag facet.

:func:`probe_run` embeds the train, validation and test splits with a run's
model (frozen), trains a small Keras head on the training embeddings and
reports on the test split, beside the same head on the embeddings of an
untrained model of the same architecture (the run's seeded initial weights)
and a trivial baseline that never looks at the audio. It writes
``probe-<facet>.json`` into the run folder.

Facets and labels
-----------------
genre
    Single label, softmax over the genres. AllMusic gives most tracks one
    genre (82 % of the demo tracks); a track with several is labelled with
    its *main* genre, the one most frequent among the training tracks (ties:
    the first in the vocabulary). Metrics: accuracy and macro-F1 over the
    classes present in the test split. Trivial baseline: the majority class.
style, mood, theme
    Multi-label, one sigmoid per tag. Metrics: macro ROC-AUC over the tags
    with both classes in the test split, and micro-F1 at a 0.5 threshold.
    Trivial baseline: every track scored with the tags' training priors
    (ROC-AUC 0.5 by construction).

Only classes (tags) with at least ``min_positives`` training tracks are
used; a genre track with none of them is dropped, a multi-label track keeps
its row (all-negative for the rare tags' absence).

The head
--------
Standardisation (per dimension, from the training embeddings; a trained
embedding may vary little in absolute terms) → one Dense layer, trained with
Adam. Early stopping on the run's validation split (artist-disjoint from
train, so the stopping point is not flattered by album mates) restores the
best weights; with fewer than :data:`MIN_VALIDATION` labelled validation
tracks the head trains for a fixed ``epochs``. Everything is seeded
(``config.seed`` by default), so a probe repeats exactly on one machine.

Example
-------
>>> report = probe_run("runs/demo", "genre")      # doctest: +SKIP
>>> print(report.table)                             # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from msd_triplet.errors import DataError
from msd_triplet.evaluation import FACET_TAG_SETS
from msd_triplet.fileio import atomic_write_json
from msd_triplet.runfolder import RunFolder
from msd_triplet.splits import SPLIT_NAMES, split_positions

__all__ = [
    "FACETS",
    "ProbeReport",
    "facet_labels",
    "format_probe",
    "probe_embeddings",
    "probe_run",
    "score",
    "train_head",
]

#: the facets a probe can be trained on
FACETS = tuple(FACET_TAG_SETS)
MIN_TRAIN = 10  # labelled training tracks a head needs
MIN_TEST = 2  # labelled test tracks a report needs
MIN_VALIDATION = 8  # labelled validation tracks for early stopping (else fixed epochs)


@dataclass
class ProbeReport:
    run_dir: Path
    facet: str
    checkpoint: str
    seed: int
    multilabel: bool
    classes: tuple[str, ...]  # the head's outputs, in order
    tracks: dict[str, int]  # labelled tracks used per split
    early_stopping: bool  # on the validation split; else fixed epochs
    results: dict[str, dict]  # "trained", "untrained" (optional), "trivial" → metrics
    table: str = field(default="", repr=False)  # Markdown, from format_probe

    def to_json(self) -> dict:
        return {
            "facet": self.facet,
            "checkpoint": self.checkpoint,
            "seed": self.seed,
            "multilabel": self.multilabel,
            "classes": list(self.classes),
            "tracks": self.tracks,
            "early_stopping": self.early_stopping,
            "results": self.results,
        }


# --------------------------------------------------------------------------- labels


def facet_labels(prepared, facet: str, min_positives: int = 5) -> tuple[tuple[str, ...], dict]:
    """Classes and labels of one facet per split.

    Parameters
    ----------
    prepared : :class:`~msd_triplet.prepare.PreparedData`
    facet : one of :data:`FACETS`
    min_positives : a class (tag) is used if at least this many training tracks have it

    Returns
    -------
    classes : tag names [C]
    labels : {split: (positions in ``prepared.tracks`` int64 [n], y)} for every split present;
        y is int64 [n] class indices (genre) or float32 [n, C] 0/1 (multi-label)
    """
    if facet not in FACET_TAG_SETS:
        raise DataError(f"probe facet {facet!r}: allowed are {', '.join(FACETS)}")
    tagset = FACET_TAG_SETS[facet]
    if tagset not in prepared.matrices:
        raise DataError(
            f"probe facet {facet!r} needs the tag set {tagset!r}, which was not prepared "
            f"(prepared: {', '.join(prepared.matrices) or 'none'}); add it to data.tag_sets "
            "and run `msd-triplet prepare` again"
        )
    matrix = (prepared.matrices[tagset].matrix > 0).tocsr()
    vocabulary = prepared.matrices[tagset].vocabulary
    counts = np.asarray(matrix[split_positions(prepared.tracks, "train")].sum(axis=0)).ravel()
    keep = np.flatnonzero(counts >= min_positives)
    needed = 2 if facet == "genre" else 1
    if len(keep) < needed:
        raise DataError(
            f"probe facet {facet!r}: {len(keep)} {tagset} tag(s) have >= {min_positives} training "
            f"tracks, the probe needs at least {needed}; lower min_positives or add data"
        )
    sub = matrix[:, keep]
    if facet == "genre":
        # main genre: of the track's usable genres, the most frequent in training
        weighted = sub.multiply(counts[keep][None, :].astype(np.float64)).toarray()
        usable = sub.getnnz(axis=1) > 0
        y_all = weighted.argmax(axis=1).astype(np.int64)
    else:
        usable = matrix.getnnz(axis=1) > 0  # labelled in the set (possibly only by rare tags)
        y_all = None
    labels = {}
    for name in SPLIT_NAMES:
        positions = split_positions(prepared.tracks, name)
        positions = positions[usable[positions]]
        if len(positions):
            y = y_all[positions] if y_all is not None else sub[positions].toarray().astype(np.float32)
            labels[name] = (positions, y)
    for name, least in (("train", MIN_TRAIN), ("test", MIN_TEST)):
        n = len(labels[name][0]) if name in labels else 0
        if n < least:
            raise DataError(
                f"probe facet {facet!r}: the {name} split has {n} track(s) with a usable "
                f"{facet} label, the probe needs at least {least}"
            )
    return tuple(vocabulary[i] for i in keep), labels


# --------------------------------------------------------------------------- head and metrics


def train_head(
    x: np.ndarray,
    y: np.ndarray,
    *,
    multilabel: bool,
    classes: int,
    validation: Optional[tuple[np.ndarray, np.ndarray]] = None,
    epochs: int = 100,
    patience: int = 10,
    batch_size: int = 64,
    learning_rate: float = 1e-2,
    seed: int = 0,
):
    """A standardise → Dense head trained on frozen embeddings; returns (model, epochs trained).

    Parameters
    ----------
    x : float [n, d] training embeddings
    y : int [n] class indices (single label) or float [n, classes] 0/1 (multi-label)
    validation : (x, y) for early stopping on the validation loss (best weights restored);
        None trains for ``epochs``
    """
    import keras

    x = np.asarray(x, np.float32)
    keras.utils.set_random_seed(seed)  # the per-epoch shuffle (sets Keras' global seed, as fit does)
    variance = x.var(axis=0)
    variance = np.maximum(variance, 1e-6 * variance.max() + 1e-30)  # no blow-up on constant dimensions
    head = keras.Sequential(
        [
            keras.Input((x.shape[1],), name="embedding"),
            keras.layers.Normalization(mean=x.mean(axis=0), variance=variance, name="standardise"),
            keras.layers.Dense(
                classes,
                activation="sigmoid" if multilabel else "softmax",
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                name="probe",
            ),
        ],
        name="probe_head",
    )
    head.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy" if multilabel else "sparse_categorical_crossentropy",
    )
    callbacks = []
    if validation is not None:
        callbacks.append(keras.callbacks.EarlyStopping("val_loss", patience=patience, restore_best_weights=True))
    history = head.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=validation,
        callbacks=callbacks,
        shuffle=True,
        verbose=0,
    )
    return head, len(history.history["loss"])


def score(y: np.ndarray, scores: np.ndarray, multilabel: bool) -> dict:
    """Test metrics of class scores [n, C] against labels (int [n] or 0/1 [n, C]); plain floats.

    Single label: ``accuracy``, ``macro_f1`` (over the classes present in ``y``).
    Multi-label: ``macro_auc`` over the ``auc_tags`` tags with both classes in ``y``
    (NaN if none), ``micro_f1`` at ``scores >= 0.5``.
    """
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    scores = np.asarray(scores)
    if not multilabel:
        predicted = scores.argmax(axis=1)
        return {
            "accuracy": float(accuracy_score(y, predicted)),
            "macro_f1": float(f1_score(y, predicted, labels=np.unique(y), average="macro", zero_division=0)),
        }
    y = np.asarray(y) > 0.5
    both = y.any(axis=0) & ~y.all(axis=0)
    auc = roc_auc_score(y[:, both], scores[:, both], average="macro") if both.any() else float("nan")
    return {
        "macro_auc": float(auc),
        "auc_tags": int(both.sum()),
        "micro_f1": float(f1_score(y, scores >= 0.5, average="micro", zero_division=0)),
    }


def trivial_scores(y_train: np.ndarray, n: int, multilabel: bool, classes: int) -> np.ndarray:
    """Scores [n, C] that ignore the input: majority class (one-hot) or the training tag priors."""
    if multilabel:
        prior = np.asarray(y_train, np.float64).mean(axis=0)
    else:
        prior = np.eye(classes)[np.bincount(y_train, minlength=classes).argmax()]
    return np.tile(prior, (n, 1))


def probe_embeddings(
    train: tuple,
    test: tuple,
    validation: Optional[tuple] = None,
    *,
    multilabel: bool,
    classes: int,
    seed: int = 0,
    **head_options,
) -> dict:
    """Train a head on ``train = (x, y)``, score it on ``test``: metrics plus ``epochs``.

    ``validation`` enables early stopping; ``head_options`` go to :func:`train_head`.
    """
    head, epochs = train_head(
        *train, multilabel=multilabel, classes=classes, validation=validation, seed=seed, **head_options
    )
    scores = np.asarray(head(np.asarray(test[0], np.float32), training=False))
    return {**score(test[1], scores, multilabel), "epochs": epochs}


# --------------------------------------------------------------------------- a run


def probe_run(
    run,
    facet: str = "genre",
    *,
    checkpoint: str = "best",
    epochs: int = 100,
    patience: int = 10,
    seed: Optional[int] = None,
    untrained: bool = True,
    min_positives: int = 5,
    say: Callable[[str], None] = print,
    **head_options,
) -> ProbeReport:
    """Linear probe of a run's frozen embeddings on ``facet``; writes ``probe-<facet>.json``.

    Parameters
    ----------
    run : a run folder (``msd-triplet fit``)
    facet : genre (single label) or style, mood, theme (multi-label); see the module docstring
    checkpoint : ``best`` or ``last``
    epochs, patience : epochs of the head (the most, with early stopping), and the patience of
        early stopping on the validation split
    seed : seeds the head (default: the run's ``config.seed``); the untrained model always has the
        run's own initial weights (``config.seed``)
    untrained : also probe an untrained model of the same architecture
    head_options : ``batch_size``, ``learning_rate`` of :func:`train_head`

    Raises DataError for an unknown facet, an unprepared tag set, too few labelled tracks,
    or a folder that is not a run.
    """
    from msd_triplet import training
    from msd_triplet.featurecache import FeatureCache, cache_dir
    from msd_triplet.prepare import load_prepared
    from msd_triplet.runs import run_config

    if facet not in FACET_TAG_SETS:  # before any loading
        raise DataError(f"probe facet {facet!r}: allowed are {', '.join(FACETS)}")
    run = Path(run)
    config = run_config(run)
    seed = config.seed if seed is None else int(seed)
    prepared = load_prepared(config)
    classes, labels = facet_labels(prepared, facet, min_positives)
    multilabel = facet != "genre"
    if "validation" in labels and len(labels["validation"][0]) < MIN_VALIDATION:
        labels.pop("validation")
    if "validation" not in labels:
        say(
            f"the validation split has fewer than {MIN_VALIDATION} labelled tracks: "
            f"training the head for {epochs} epochs, without early stopping"
        )
    cache = FeatureCache(cache_dir(config))
    track_ids = prepared.tracks["track_id"].to_numpy()
    rows = {s: cache.rows(track_ids[positions]) for s, (positions, _) in labels.items()}

    def probe(model) -> dict:
        x = {s: training.embed_rows(model, cache, r) for s, r in rows.items()}
        validation = (x["validation"], labels["validation"][1]) if "validation" in x else None
        return probe_embeddings(
            (x["train"], labels["train"][1]),
            (x["test"], labels["test"][1]),
            validation,
            multilabel=multilabel,
            classes=len(classes),
            seed=seed,
            epochs=epochs,
            patience=patience,
            **head_options,
        )

    results = {"trained": probe(training.load_run_model(run, checkpoint))}
    if untrained:
        results["untrained"] = probe(training.compile_model(config))
    y_test = labels["test"][1]
    results["trivial"] = score(
        y_test, trivial_scores(labels["train"][1], len(y_test), multilabel, len(classes)), multilabel
    )
    report = ProbeReport(
        run,
        facet,
        checkpoint,
        seed,
        multilabel,
        classes,
        {s: int(len(p)) for s, (p, _) in labels.items()},
        "validation" in labels,
        results,
    )
    report.table = format_probe(report)
    atomic_write_json(RunFolder(run).probe(facet), {**report.to_json(), "table": report.table})
    return report


def format_probe(report: ProbeReport) -> str:
    """A caption line and a Markdown table: one row per head (trained, untrained, trivial)."""
    if report.multilabel:
        some = next(iter(report.results.values()))
        columns = {"macro_auc": f"macro ROC-AUC ({some['auc_tags']} tags)", "micro_f1": "micro-F1@0.5"}
        trivial = "tag priors"
    else:
        columns, trivial = {"accuracy": "accuracy", "macro_f1": "macro-F1"}, "majority class"
    names = {"trained": f"trained ({report.checkpoint})", "untrained": "untrained", "trivial": trivial}
    kind = "multi-label" if report.multilabel else "single label"
    stopping = "early stopping on validation" if report.early_stopping else "fixed epochs"
    caption = (
        f"Linear probe, {report.facet} ({kind}, {len(report.classes)} classes): "
        f"{report.tracks['train']} train / {report.tracks['test']} test tracks, {stopping}, seed {report.seed}"
    )
    head = ["embeddings", *columns.values(), "epochs"]
    lines = [caption, "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for key, metrics in report.results.items():
        cells = [names[key], *(f"{metrics[c]:.4f}" for c in columns), str(metrics.get("epochs", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
