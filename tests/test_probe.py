"""Linear probe: the head and metrics on embeddings with known labels, labels per facet, a tiny run, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from msd_triplet import probe
from msd_triplet.errors import DataError
from msd_triplet.prepare import PreparedData, TagMatrix


def linear_task(n: int = 600, d: int = 8, classes: int = 4, seed: int = 0):
    """Embeddings [n, d] and labels that are a linear function of them: argmax and sign of x @ W + b."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w, b = rng.standard_normal((d, classes)), 0.3 * rng.standard_normal(classes)
    logits = x @ w + b
    return x, logits.argmax(axis=1), (logits > 0).astype(np.float32)


def halves(x, y):
    return (x[:400], y[:400]), (x[400:], y[400:])


@pytest.mark.parametrize("scale", [1.0, 1e-3])  # 1e-3: as little spread as a collapsed embedding
def test_head_learns_labels_that_are_linear_in_the_embeddings(scale):
    x, single, multi = linear_task()
    x = 1.0 + scale * x  # an offset and scale the standardisation must undo
    fast = dict(epochs=20, batch_size=32, learning_rate=0.05)
    result = probe.probe_embeddings(*halves(x, single), multilabel=False, classes=4, **fast)
    assert result["accuracy"] > 0.93 and result["macro_f1"] > 0.93 and result["epochs"] == 20
    result = probe.probe_embeddings(*halves(x, multi), multilabel=True, classes=4, **fast)
    assert result["macro_auc"] > 0.99 and result["micro_f1"] > 0.93 and result["auc_tags"] == 4


def test_head_does_not_learn_shuffled_labels():
    x, single, _ = linear_task(n=700, seed=1)
    y = np.random.default_rng(0).permutation(single)
    result = probe.probe_embeddings(
        (x[:400], y[:400]),
        (x[400:600], y[400:600]),
        (x[600:], y[600:]),
        multilabel=False,
        classes=4,
        epochs=40,
        patience=5,
    )
    assert result["accuracy"] < 0.45 and result["epochs"] < 40  # near the majority share; stopped early


def test_metrics_against_hand_computed_values():
    scores = np.eye(3)[[0, 1, 2, 2]]
    # class 0: F1 1; class 1: P 1, R 1/2 → 2/3; class 2: P 1/2, R 1 → 2/3
    assert probe.score(np.array([0, 1, 1, 2]), scores, multilabel=False) == pytest.approx(
        {"accuracy": 0.75, "macro_f1": (1 + 2 / 3 + 2 / 3) / 3}
    )
    y = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 0]], np.float32)  # tags 1 and 2 have one class only
    s = np.array([[0.9, 0.8, 0.1], [0.2, 0.7, 0.6], [0.4, 0.3, 0.2]])
    # tag 0: positives 0.9, 0.4 against negative 0.2 → AUC 1; micro-F1: TP 3, FP 1, FN 2 → 6 / 9
    assert probe.score(y, s, multilabel=True) == pytest.approx({"macro_auc": 1.0, "auc_tags": 1, "micro_f1": 6 / 9})
    assert np.isnan(probe.score(y[:, 1:], s[:, 1:], multilabel=True)["macro_auc"])
    assert probe.trivial_scores(np.array([2, 0, 2]), 2, False, 3).tolist() == [[0, 0, 1], [0, 0, 1]]
    prior = probe.trivial_scores(y, 1, True, 3)
    assert prior[0] == pytest.approx([2 / 3, 1, 0])
    assert probe.score(y, np.tile(prior, (3, 1)), multilabel=True)["macro_auc"] == 0.5


def hand_prepared(genres: list[list[str]], splits: list[str], sets=("genres",)) -> PreparedData:
    """PreparedData of len(genres) tracks; every set in ``sets`` holds the given tags."""
    n = len(genres)
    ids = np.array([f"TR{i:016X}" for i in range(n)])
    vocabulary = tuple(sorted({g for gs in genres for g in gs}))
    rows = [i for i, gs in enumerate(genres) for _ in gs]
    cols = [vocabulary.index(g) for gs in genres for g in gs]
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, len(vocabulary)))
    tracks = pd.DataFrame({"track_id": ids, "artist_id": "AR", "album_id": "AL", "split": splits, "audio_path": ""})
    return PreparedData(tracks, {s: TagMatrix(s, ids, vocabulary, matrix) for s in sets}, {}, {})


def test_labels_use_the_main_genre_and_frequent_tags():
    # train: 6 × Rock, 5 × Jazz, 1 × Blues (below min_positives); test: Jazz+Rock, Blues only, Jazz
    genres = [["Rock"]] * 6 + [["Jazz"]] * 5 + [["Blues"]] * 1 + [["Jazz", "Rock"], ["Blues"], ["Jazz"]]
    prepared = hand_prepared(genres, ["train"] * 12 + ["test"] * 3, sets=("genres", "moods"))
    classes, labels = probe.facet_labels(prepared, "genre", min_positives=5)
    assert classes == ("Jazz", "Rock") and set(labels) == {"train", "test"}
    positions, y = labels["test"]
    assert positions.tolist() == [12, 14] and y.tolist() == [1, 0]  # Jazz+Rock → Rock (6 > 5); Blues dropped
    classes, labels = probe.facet_labels(prepared, "mood", min_positives=5)
    assert classes == ("Jazz", "Rock") and labels["test"][0].tolist() == [12, 13, 14]  # rows kept, all-negative
    assert labels["test"][1].tolist() == [[1, 1], [0, 0], [1, 0]]


def test_bad_facets_and_small_splits_are_clear_errors():
    prepared = hand_prepared([["Rock"]] * 6 + [["Jazz"]] * 6, ["train"] * 11 + ["test"])
    with pytest.raises(DataError, match="'genres!'.*allowed are genre, style, mood, theme"):
        probe.facet_labels(prepared, "genres!")
    with pytest.raises(DataError, match="'moods', which was not prepared.*prepared: genres"):
        probe.facet_labels(prepared, "mood")
    with pytest.raises(DataError, match="test split has 1 track.*at least 2"):
        probe.facet_labels(prepared, "genre")
    with pytest.raises(DataError, match="0 genres tag.*at least 2"):
        probe.facet_labels(prepared, "genre", min_positives=50)


@pytest.mark.slow
@pytest.mark.parametrize("facet", ["genre", "mood"])
def test_probe_run_reports_writes_and_repeats(tiny_run, facet):
    said = []
    report = probe.probe_run(tiny_run, facet, epochs=20, say=said.append)
    assert set(report.results) == {"trained", "untrained", "trivial"}
    assert report.seed == 0 and not report.early_stopping and "without early stopping" in said[0]
    assert report.tracks["test"] >= 2 and "validation" not in report.tracks
    metric = "macro_auc" if facet == "mood" else "accuracy"
    assert all(np.isfinite(r[metric]) and 0 <= r[metric] <= 1 for r in report.results.values())
    assert report.results["trained"]["epochs"] == 20
    saved = json.loads((tiny_run / f"probe-{facet}.json").read_text())
    assert saved["results"] == report.results and saved["classes"] == list(report.classes)
    assert "| trained (best) |" in report.table and "| untrained |" in report.table
    again = probe.probe_run(tiny_run, facet, epochs=20, say=lambda _: None)
    assert again.results == report.results  # same seed, same figures
    if facet == "genre":
        alone = probe.probe_run(tiny_run, facet, epochs=20, untrained=False, say=lambda _: None)
        assert set(alone.results) == {"trained", "trivial"} and alone.results["trained"] == report.results["trained"]


def test_probe_run_errors(tmp_path):
    with pytest.raises(DataError, match="allowed are genre, style, mood, theme"):
        probe.probe_run(tmp_path, "artist", say=lambda _: None)  # checked before anything is read
    with pytest.raises(DataError, match="not a run folder"):
        probe.probe_run(tmp_path, "genre", say=lambda _: None)


@pytest.mark.slow
def test_keras_example_runs_on_a_run(tiny_run):
    example = Path(__file__).parents[1] / "examples" / "probe_keras.py"
    done = subprocess.run(
        [sys.executable, str(example), "--run", str(tiny_run), "--epochs", "3"],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test accuracy" in done.stdout and "always the most common genre" in done.stdout
