"""Exact kNN against scikit-learn and a stable-sort reference; precision@k and chance against loops; facets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from msd_triplet import evaluation, neighbours
from msd_triplet.errors import ArgumentError, MsdTripletError
from msd_triplet.evaluation import (
    Facet,
    chance_precision,
    evaluate_embeddings,
    facets_from_prepared,
    format_results,
    nearest_neighbours,
    per_query_precision,
    precision_at_k,
    split_rows,
)
from msd_triplet.prepare import PreparedData, TagMatrix
from msd_triplet.uncertainty import BootstrapSettings, bootstrap_interval


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of a few columns, so tiny inputs take the multi-tile path (tightening, growing)."""
    monkeypatch.setattr(neighbours, "_TILE_COLUMNS", 4)


def sklearn_neighbours(x: np.ndarray, k: int) -> np.ndarray:
    return NearestNeighbors(n_neighbors=k, algorithm="brute").fit(x).kneighbors(return_distance=False)


def stable_reference(x: np.ndarray, k: int) -> np.ndarray:
    """float64 distances, self excluded, stable sort: ties go to the lower index."""
    x = np.asarray(x, np.float64)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


# --------------------------------------------------------------------------- nearest neighbours


@pytest.mark.parametrize("chunk_size", [1, 7, 12, 60, 500])
@pytest.mark.parametrize("threads", [1, 2])
def test_neighbours_match_sklearn(chunk_size, threads, small_tiles):
    x = np.random.default_rng(0).standard_normal((60, 5)).astype(np.float32)  # N = 60: 12 divides, 7 does not
    for k in (1, 8, 59):
        ours = nearest_neighbours(x, k, chunk_size=chunk_size, threads=threads)
        assert ours.dtype == np.int64 and ours.shape == (60, k)
        np.testing.assert_array_equal(ours, sklearn_neighbours(x, k))


def test_neighbours_default_tiles_many_rows():
    x = np.random.default_rng(1).standard_normal((5000, 3)).astype(np.float32)  # 2 tiles of 4,096 columns
    np.testing.assert_array_equal(nearest_neighbours(x, 6, chunk_size=256), sklearn_neighbours(x, 6))


@pytest.mark.parametrize("chunk_size", [1, 5, 200])
def test_ties_go_to_the_lower_index(chunk_size, small_tiles):
    # small integer coordinates: distances are exact in float32 and tie often; duplicates too
    x = np.random.default_rng(2).integers(-2, 3, size=(90, 3)).astype(np.float32)
    for k in (1, 10, 89):
        np.testing.assert_array_equal(nearest_neighbours(x, k, chunk_size=chunk_size), stable_reference(x, k))


def test_hand_computed_line():
    x = np.array([[0.0], [1.0], [-1.0], [2.0], [-2.0]], np.float32)
    np.testing.assert_array_equal(
        nearest_neighbours(x, 4), [[1, 2, 3, 4], [0, 3, 2, 4], [0, 4, 1, 3], [1, 0, 2, 4], [2, 0, 1, 3]]
    )
    np.testing.assert_array_equal(nearest_neighbours(np.zeros((4, 2)), 3), [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])


def test_float64_and_integer_input():
    x = np.random.default_rng(3).standard_normal((40, 4))
    np.testing.assert_array_equal(nearest_neighbours(x, 5), sklearn_neighbours(x.astype(np.float32), 5))
    ints = np.arange(10)[:, None] ** 2
    assert nearest_neighbours(ints, 1)[:, 0].tolist() == [1, 0, 1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize(
    "embeddings, k, kwargs, message",
    [
        (np.zeros((5, 2)), 5, {}, r"k = 5: allowed is 1 <= k <= N - 1 = 4 \(N = 5 rows\)"),
        (np.zeros((5, 2)), 0, {}, r"k = 0: allowed is 1 <= k <= N - 1 = 4"),
        (np.zeros((5, 2)), 2.0, {}, r"k = 2.0: allowed is 1 <= k"),
        (np.zeros((5, 2)), True, {}, r"k = True"),
        (np.zeros((1, 2)), 1, {}, r"k = 1: allowed is 1 <= k <= N - 1 = 0"),
        (np.zeros(5), 1, {}, r"expected a 2-D array \[tracks, dims\], got shape \(5,\)"),
        (np.zeros((2, 2, 2)), 1, {}, r"got shape \(2, 2, 2\)"),
        (np.array([["a", "b"], ["c", "d"]]), 1, {}, r"expected real numbers, got dtype <U1"),
        (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]), 1, {}, r"1 value\(s\) not finite.*row 0 column 1 = nan"),
        (np.array([[0.0, 1.0], [np.inf, 2.0], [3.0, 4.0]]), 1, {}, r"row 1 column 0 = inf"),
        (np.array([[0.0, 1.0], [1e39, 2.0], [3.0, 4.0]]), 1, {}, r"not finite \(in float32\)"),
        (np.full((3, 2), 1e30), 1, {}, r"squared norms overflow float32"),
        (np.zeros((5, 2)), 1, {"chunk_size": 0}, r"chunk_size = 0: allowed is a positive integer"),
        (np.zeros((5, 2)), 1, {"threads": 0}, r"threads = 0: allowed is a positive integer"),
    ],
)
def test_bad_input(embeddings, k, kwargs, message):
    with pytest.raises(ValueError, match=message):
        nearest_neighbours(embeddings, k, **kwargs)


def test_sort_keys_order_like_value_then_index():
    values = np.array([-np.inf, -3.5, -0.0, 0.0, 1e-30, 2.0, 2.0, np.inf], np.float32)
    index = np.array([5, 1, 9, 0, 3, 2, 7, 4])
    keys = neighbours._sort_keys(values, index)
    assert (np.diff(keys.astype(object)) > 0).all()
    np.testing.assert_array_equal(neighbours._key_values(keys), values)


# --------------------------------------------------------------------------- precision and chance


def random_facets(rng, n):
    """An identical-match, an overlap and an id facet over n tracks, with unlabelled tracks."""
    dense = rng.random((n, 5)) < 0.3
    dense[:3] = False  # three tracks without tags
    ids = rng.choice(["a", "b", "c", "d", ""], size=n).astype(object)  # "" = no id
    ids[3] = None
    return (
        dense,
        ids,
        {
            "identical": Facet.from_tags("genre", sp.csr_matrix(dense)),
            "overlap": Facet.from_tags("genre", dense, match="overlap"),
            "id": Facet.from_ids("album", ids),
        },
    )


def relevant_by_loop(kind, dense, ids, i, j):
    if kind == "identical":
        return dense[i].any() and (dense[i] == dense[j]).all()
    if kind == "overlap":
        return bool((dense[i] & dense[j]).any())
    return ids[i] not in ("", None) and ids[i] == ids[j]


@pytest.mark.parametrize("kind", ["identical", "overlap", "id"])
def test_precision_and_chance_match_loops(kind):
    rng = np.random.default_rng(4)
    n, k = 70, 9
    dense, ids, facets = random_facets(rng, n)
    facet = facets[kind]
    x = rng.standard_normal((n, 6)).astype(np.float32)
    ref = sklearn_neighbours(x, k)
    labelled = [i for i in range(n) if (dense[i].any() if kind != "id" else ids[i] not in ("", None))]
    assert facet.labelled.tolist() == [i in labelled for i in range(n)]
    per_query = [
        np.mean([relevant_by_loop(kind, dense, ids, i, j) for j in ref[i]]) if i in labelled else np.nan
        for i in range(n)
    ]
    ours = per_query_precision(nearest_neighbours(x, k), facet)
    assert ours.dtype == np.float64 and ours.shape == (n,)
    np.testing.assert_allclose(ours, per_query, rtol=0, atol=1e-12)  # NaN where per_query is NaN
    assert precision_at_k(nearest_neighbours(x, k), facet) == pytest.approx(np.nanmean(per_query), abs=1e-12)
    chance = np.mean(
        [sum(relevant_by_loop(kind, dense, ids, i, j) for j in range(n) if j != i) / (n - 1) for i in labelled]
    )
    assert chance_precision(facet) == pytest.approx(chance, abs=1e-12)
    assert 0 < chance < 1


def test_overlap_chance_in_chunks(monkeypatch):
    rng = np.random.default_rng(5)
    dense = rng.random((200, 40)) < 0.05
    facet = Facet.from_tags("style", dense, match="overlap")
    whole = chance_precision(facet)
    monkeypatch.setattr(evaluation, "_CHANCE_WORDS", 10)  # batches of 2 or 1 tag rows (4 words each)
    assert chance_precision(facet) == pytest.approx(whole, abs=1e-12)
    brute = (dense.astype(int) @ dense.T.astype(int)) > 0
    np.fill_diagonal(brute, False)
    tagged = dense.any(axis=1)
    assert whole == pytest.approx(brute[tagged].sum() / (tagged.sum() * 199), abs=1e-12)


def test_hand_computed_facets():
    tags = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0]]))
    identical = Facet.from_tags("mood", tags)
    assert identical.groups.tolist() == [0, 0, 1, 2, -1]
    overlap = Facet.from_tags("mood", tags, match="overlap")
    neighbours = np.array([[1, 2], [2, 3], [0, 1], [4, 0], [0, 1]])
    assert identical.relevant(np.arange(5), neighbours).tolist() == [
        [True, False],
        [False, False],
        [False, False],
        [False, False],
        [False, False],
    ]
    assert overlap.relevant(np.arange(5), neighbours).tolist() == [
        [True, True],
        [True, False],
        [True, True],
        [False, False],
        [False, False],
    ]
    assert per_query_precision(neighbours, identical).tolist()[:4] == [0.5, 0.0, 0.0, 0.0]
    assert np.isnan(per_query_precision(neighbours, identical)[4])
    assert precision_at_k(neighbours, identical) == pytest.approx(0.5 / 4)
    assert precision_at_k(neighbours, overlap) == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert chance_precision(identical) == pytest.approx((1 + 1 + 0 + 0) / 4 / 4)
    assert chance_precision(overlap) == pytest.approx((2 + 2 + 2 + 0) / 4 / 4)
    nobody = Facet.from_ids("artist", ["", None, np.nan])
    assert np.isnan(precision_at_k(np.array([[1], [0], [0]]), nobody)) and np.isnan(chance_precision(nobody))


def test_facet_checks():
    with pytest.raises(ValueError, match="exactly one of groups and tags"):
        Facet("x")
    with pytest.raises(ValueError, match="facet match 'same': allowed are identical, overlap"):
        Facet.from_tags("x", np.eye(3), match="same")
    with pytest.raises(ValueError, match=r"expected shape \[3, k\]"):
        precision_at_k(np.zeros((2, 1), int), Facet.from_ids("a", ["a", "b", "c"]))


def test_many_tags_use_several_bit_words():
    dense = np.zeros((4, 130), bool)
    dense[0, [3, 129]] = dense[1, 129] = dense[2, 64] = dense[3, [3, 64]] = True
    facet = Facet.from_tags("style", dense, match="overlap")
    rel = facet.relevant(np.arange(4), np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]))
    assert rel.tolist() == [[True, False, True], [True, False, False], [False, False, True], [True, False, True]]


# --------------------------------------------------------------------------- prepared data, results


def tiny_prepared() -> PreparedData:
    tracks = pd.DataFrame(
        {
            "track_id": [f"T{i}" for i in range(6)],
            "artist_id": ["A", "A", "B", "B", "C", "C"],
            "album_id": ["A/x", "A/y", "B/x", "B/x", "C/z", "C/z"],
            "split": ["train", "test", "test", "validation", "test", "test"],
            "audio_path": [f"{i}.mp3" for i in range(6)],
        }
    )
    genres = np.array([[1, 0], [1, 0], [1, 1], [0, 1], [1, 1], [1, 0]], np.float32)
    moods = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0]], np.float32)
    ids = tracks["track_id"].to_numpy(str)
    matrices = {
        "genres": TagMatrix("genres", ids, ("g0", "g1"), sp.csr_matrix(genres)),
        "moods": TagMatrix("moods", ids, ("m0", "m1", "m2"), sp.csr_matrix(moods)),
    }
    return PreparedData(tracks, matrices, {}, {})


def test_facets_from_prepared():
    prepared = tiny_prepared()
    rows = split_rows(prepared, "test")
    assert rows.tolist() == [1, 2, 4, 5]
    facets = facets_from_prepared(prepared, rows)
    assert list(facets) == ["genre", "mood", "artist", "album"]  # no styles, no themes prepared
    same = {name: [[a == b for b in f.groups] for a in f.groups] for name, f in facets.items()}
    assert same["genre"] == [
        [True, False, False, True],
        [False, True, True, False],
        [False, True, True, False],
        [True, False, False, True],
    ]
    assert same["mood"] == [
        [True, False, True, False],
        [False, True, False, False],
        [True, False, True, False],
        [False, False, False, True],
    ]
    assert same["artist"] == [
        [True, False, False, False],
        [False, True, False, False],
        [False, False, True, True],
        [False, False, True, True],
    ]
    assert same["album"] == same["artist"]
    overlap = facets_from_prepared(prepared, rows[::-1], match="overlap")
    assert overlap["mood"].tags.toarray().tolist() == [
        [True, False, False],
        [False, True, False],
        [False, True, True],
        [False, True, False],
    ]
    assert overlap["artist"].groups is not None
    with pytest.raises(ValueError, match="facet match 'any'"):
        facets_from_prepared(prepared, rows, match="any")
    with pytest.raises(ValueError, match=r"integer positions in 0..5"):
        facets_from_prepared(prepared, [1, 6])
    with pytest.raises(
        ValueError,
        match=r"split 'dev': no track has it; the prepared data has "
        r"\['test', 'train', 'validation'\]",
    ):
        split_rows(prepared, "dev")


def test_evaluate_and_format():
    prepared = tiny_prepared()
    rows = np.arange(6)
    x = np.array([[0.0], [0.1], [1.0], [1.1], [5.0], [5.2]], np.float32)
    results = evaluate_embeddings(x, facets_from_prepared(prepared, rows), k=1)
    assert results["artist"] == {
        "precision": 1.0,
        "ci_low": 1.0,
        "ci_high": 1.0,
        "chance": pytest.approx(0.2),
        "queries": 6,
        "k": 1,
    }
    assert results["genre"]["precision"] == pytest.approx(2 / 6)  # only 0 and 1 share a genre set
    # the interval is the bootstrap of the per-query precisions [1, 1, 0, 0, 0, 0] with seed 0
    assert (results["genre"]["ci_low"], results["genre"]["ci_high"]) == bootstrap_interval([1, 1, 0, 0, 0, 0], seed=0)
    json.dumps(results)  # plain Python numbers only
    assert all(type(v) in (float, int) for r in results.values() for v in r.values())
    untrained = {name: {**r, "precision": 0.5, "ci_low": 0.25, "ci_high": 0.75} for name, r in results.items()}
    difference = {name: {"difference": -0.1, "ci_low": -0.3, "ci_high": 0.1} for name in results}
    difference["genre"] = {"difference": 0.2, "ci_low": 0.05, "ci_high": 0.35}
    table = format_results(results, untrained=untrained, difference=difference).splitlines()
    assert table[0] == (
        "| facet | P@1 [95 % CI] | untrained [95 % CI] | trained − untrained [paired 95 % CI] | chance | queries |"
    )
    assert table[1] == "|---|---|---|---|---|---|"
    genre = results["genre"]
    assert table[2] == (
        f"| genre | 0.3333 [{genre['ci_low']:.4f}, {genre['ci_high']:.4f}] | 0.5000 [0.2500, 0.7500] | "
        "+0.2000 [+0.0500, +0.3500] * | 0.2667 | 6 |"
    )
    assert table[3].startswith("| mood |") and " | -0.1000 [-0.3000, +0.1000] | " in table[3]  # not marked
    assert table[-1] == "Marked *: the paired 95 % interval of trained − untrained excludes 0."
    assert len(table) == 2 + len(results) + 2
    alone = format_results(results, level=0.9).splitlines()
    assert alone[0] == "| facet | P@1 [90 % CI] | chance | queries |" and len(alone) == 2 + len(results)
    with pytest.raises(ValueError, match="facet 'genre' has 6 tracks, embeddings have 5 rows"):
        evaluate_embeddings(x[:5], facets_from_prepared(prepared, rows), k=1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_embeddings_say_the_checkpoint_may_have_diverged(bad):
    prepared = tiny_prepared()
    x = np.array([[0.0], [0.1], [1.0], [1.1], [5.0], [5.2]], np.float32)
    x[[1, 4]] = bad
    with pytest.raises(
        ArgumentError,
        match=r"embeddings: 2 of 6 rows hold NaN or infinite values \(e.g. row 1\); "
        "the checkpoint may have diverged",
    ) as info:
        evaluate_embeddings(x, facets_from_prepared(prepared, np.arange(6)), k=1)
    assert isinstance(info.value, MsdTripletError) and isinstance(info.value, ValueError)


def test_argument_errors_are_package_errors():
    # each reaches the command line as one "error:" line; callers catching ValueError still catch them
    prepared = tiny_prepared()
    for call, match in [
        (lambda: nearest_neighbours(np.zeros((5, 2)), 5), r"k = 5: allowed is 1 <= k <= N - 1 = 4"),
        (lambda: nearest_neighbours(np.array([[np.nan], [0.0]]), 1), "not finite"),
        (lambda: split_rows(prepared, "dev"), "split 'dev': no track has it"),
        (lambda: Facet.from_tags("mood", np.eye(3), match="same"), "facet match 'same'"),
    ]:
        with pytest.raises(ArgumentError, match=match) as info:
            call()
        assert isinstance(info.value, MsdTripletError) and isinstance(info.value, ValueError)


def test_evaluate_returns_per_query_and_uses_clusters():
    prepared = tiny_prepared()
    facets = facets_from_prepared(prepared, np.arange(6))
    x = np.array([[0.0], [0.1], [1.0], [1.1], [5.0], [5.2]], np.float32)
    settings = BootstrapSettings(n_resamples=300, level=0.9, seed=3, unit="album")
    clusters = settings.clusters(prepared.tracks["artist_id"], prepared.tracks["album_id"])
    results, per_query = evaluate_embeddings(
        x, facets, k=2, bootstrap=settings, clusters=clusters, return_per_query=True
    )
    assert list(per_query) == list(results) == list(facets)
    for name, values in per_query.items():
        np.testing.assert_array_equal(values, per_query_precision(nearest_neighbours(x, 2), facets[name]))
        assert results[name]["precision"] == pytest.approx(np.nanmean(values), abs=1e-15)
        assert (results[name]["ci_low"], results[name]["ci_high"]) == bootstrap_interval(
            values, n_resamples=300, level=0.9, seed=3, clusters=clusters
        )
