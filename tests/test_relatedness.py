"""Relatedness sources: TF matrices against brute-force loops, source vectors, pair shares, calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import tensorflow as tf

from msd_triplet import relatedness as rel
from msd_triplet.errors import ArgumentError, DataError
from msd_triplet.prepare import PreparedData, TagMatrix


def brute_force(vectors: np.ndarray, kind: str) -> np.ndarray:
    """The definition of each kind, one pair at a time, in float64."""
    v = np.asarray(vectors, np.float64)
    n = len(v)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            if kind == "cosine":
                ni, nj = np.linalg.norm(v[i]), np.linalg.norm(v[j])
                out[i, j] = 0.0 if ni == 0 or nj == 0 else v[i] @ v[j] / (ni * nj)
            elif kind == "jaccard":
                a, b = set(np.flatnonzero(v[i])), set(np.flatnonzero(v[j]))
                out[i, j] = len(a & b) / len(a | b) if a | b else 0.0
            else:
                out[i, j] = float(v[i, 0] == v[j, 0] and v[i, 0] >= 0)
    return out


def example(kind: str, n: int = 9, seed: int = 0) -> np.ndarray:
    """Small random vectors of a kind, with its edge cases: zero rows, empty unions, label -1."""
    rng = np.random.default_rng(seed)
    if kind == "cosine":
        v = rng.standard_normal((n, 5))
        v[[2, 6]] = 0.0  # zero rows relate 0 to all
        v[4] = v[3] * 2.5  # cosine 1
        return v.astype(np.float32)
    if kind == "jaccard":
        v = (rng.random((n, 6)) < 0.35).astype(np.float32)
        v[[1, 5]] = 0.0  # two empty tag sets: empty union between them
        v[7] = v[8]  # identical sets: 1
        return v
    labels = rng.integers(0, 3, n).astype(np.float32)
    labels[[0, 4]] = -1  # unknown: relates 0 even to each other
    return labels[:, None]


@pytest.mark.parametrize("kind", rel.KINDS)
def test_tf_numpy_and_xla_agree_with_brute_force(kind):
    v = example(kind)
    expected = brute_force(v, kind)
    eager = rel.relatedness_matrix(v, kind).numpy()
    assert eager.dtype == np.float32 and eager.shape == (len(v), len(v))
    np.testing.assert_allclose(eager, expected, atol=1e-6)
    np.testing.assert_allclose(rel.relatedness_numpy(v, kind), eager, atol=1e-6)
    xla = tf.function(
        lambda x: rel.relatedness_matrix(x, kind),
        jit_compile=True,
        input_signature=[tf.TensorSpec([None, v.shape[1]], tf.float32)],
    )
    np.testing.assert_allclose(xla(v).numpy(), eager, atol=1e-6)
    np.testing.assert_allclose(xla(v[:4]).numpy(), expected[:4, :4], atol=1e-6)  # another batch size
    block = rel.relatedness_block(v[:3], v, kind)
    off_diagonal = ~np.eye(len(v), dtype=bool)[:3]
    np.testing.assert_allclose(block[off_diagonal], expected[:3][off_diagonal], atol=1e-6)
    i, j = np.triu_indices(len(v), 1)
    np.testing.assert_allclose(rel.pair_values(v, kind, i, j), expected[i, j], atol=1e-6)


def test_zero_norm_is_the_loss_one():
    from msd_triplet import losses

    assert rel.ZERO_NORM == losses._ZERO_NORM


def test_hand_computed_cases():
    tags = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]], np.float32)
    np.testing.assert_allclose(
        rel.relatedness_matrix(tags, "jaccard").numpy(), [[0, 0.5, 0, 0], [0.5, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    )
    labels = np.array([[3], [3], [-1], [-1], [0]], np.float32)
    assert rel.relatedness_matrix(labels, "label").numpy().tolist() == [
        [0, 1, 0, 0, 0],
        [1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ]
    with pytest.raises(ArgumentError, match="relatedness kind 'dot'"):
        rel.relatedness_matrix(labels, "dot")


# --------------------------------------------------------------------------- source vectors


def tiny_prepared(with_genres: bool = True) -> PreparedData:
    """Five tracks: genre counts Rock 3, Blues 2, Jazz 2 (a tie, Blues first), one track without a genre."""
    ids = np.array([f"TR{i}" for i in range(5)])
    tracks = pd.DataFrame(
        {
            "track_id": ids,
            "artist_id": ["ARz", "ARa", "ARz", "ARm", "ARa"],
            "album_id": ["a1", "a2", "a3", "a4", "a5"],
            "split": ["train", "train", "test", "train", "test"],
            "audio_path": ids,
        }
    )
    genres = sp.csr_matrix(
        np.array(
            [
                [1, 1, 0],  # Blues, Jazz (tie 2-2) -> Blues
                [0, 1, 1],  # Jazz, Rock -> Rock (3)
                [0, 0, 1],  # Rock
                [1, 0, 1],  # Blues, Rock -> Rock
                [0, 0, 0],
            ],  # none -> -1
            np.float32,
        )
    )
    moods = sp.csr_matrix(np.array([[1, 0], [0, 0], [1, 1], [0, 1], [1, 0]], np.float32))
    matrices = {"moods": TagMatrix("moods", ids, ("Calm", "Sad"), moods)}
    if with_genres:
        matrices["genres"] = TagMatrix("genres", ids, ("Blues", "Jazz", "Rock"), genres)
    return PreparedData(tracks, matrices, {}, {})


def test_source_vectors_of_each_source():
    prepared = tiny_prepared()
    positions = np.array([4, 0, 3])
    assert rel.main_genre_labels(prepared).tolist() == [0, 2, 2, 2, -1]
    np.testing.assert_array_equal(rel.source_vectors("genre", prepared, positions), [[-1], [0], [2]])
    # artists sorted ARa, ARm, ARz: indices over all tracks, so a split alone gives the same ones
    np.testing.assert_array_equal(rel.source_vectors("artist", prepared, positions), [[0], [2], [1]])
    jac = rel.source_vectors("jaccard", prepared, positions, tag_sets=("genres", "moods"))
    assert jac.dtype == np.float32
    np.testing.assert_array_equal(jac, [[0, 0, 0, 1, 0], [1, 1, 0, 1, 0], [1, 0, 1, 0, 1]])
    lsi = np.arange(6, dtype=np.float64).reshape(3, 2)
    got = rel.source_vectors("lsi", prepared, positions, lsi)
    assert got.dtype == np.float32 and got.tolist() == lsi.tolist()
    for source in rel.SOURCES:
        assert rel.SOURCE_KIND[source] in rel.KINDS


def test_source_vectors_errors_name_the_value():
    prepared = tiny_prepared(with_genres=False)
    with pytest.raises(ArgumentError, match="source 'tags'.*lsi, jaccard, genre, artist"):
        rel.source_vectors("tags", prepared, [0])
    with pytest.raises(DataError, match="'genres'.*has only moods"):
        rel.source_vectors("genre", prepared, [0])
    with pytest.raises(DataError, match="themes not in the prepared data"):
        rel.source_vectors("jaccard", prepared, [0], tag_sets=("moods", "themes"))
    with pytest.raises(ArgumentError, match=r"expected \[2, k\]"):
        rel.source_vectors("lsi", prepared, [0, 1], np.zeros((3, 4)))
    with pytest.raises(ArgumentError, match=r"positions must lie in \[0, 5\)"):
        rel.source_vectors("artist", prepared, [5])


# --------------------------------------------------------------------------- shares and calibration


def test_pair_shares_exact_and_sampled():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((300, 4)).astype(np.float32)
    albums = np.arange(300) // 3
    full = brute_force(v, "cosine")
    i, j = np.triu_indices(300, 1)
    other = albums[i] != albums[j]
    values = full[i[other], j[other]]
    expected = (np.mean(values >= 0.5), np.mean(values < -0.2))
    exact = rel.pair_shares(v, "cosine", albums, 0.5, -0.2)
    np.testing.assert_allclose(exact, expected, atol=1e-12)
    sampled = rel.pair_shares(v, "cosine", albums, 0.5, -0.2, max_pairs=20_000, seed=3)
    np.testing.assert_allclose(sampled, expected, atol=0.015)
    assert sampled == rel.pair_shares(v, "cosine", albums, 0.5, -0.2, max_pairs=20_000, seed=3)
    i, j, is_exact = rel.sample_pairs(300, max_pairs=1000, seed=0)
    assert not is_exact and np.all(i < j) and len(i) > 990


def test_pair_shares_leave_out_tracks_without_a_topic():
    """A zero LSI row is in no pair, as in the loss: not counted as everyone's negative."""
    rng = np.random.default_rng(2)
    v = rng.standard_normal((60, 4)).astype(np.float32)
    v[[3, 40]] = 0.0
    albums = np.arange(60) // 3
    full = brute_force(v, "cosine")
    pairs = [
        (i, j) for i in range(60) for j in range(i + 1, 60) if albums[i] != albums[j] and {i, j}.isdisjoint({3, 40})
    ]
    values = np.array([full[i, j] for i, j in pairs])
    expected = (np.mean(values >= 0.5), np.mean(values < -0.2))
    np.testing.assert_allclose(rel.pair_shares(v, "cosine", albums, 0.5, -0.2), expected, atol=1e-12)
    with_zero_as_negative = np.mean(
        [
            full[i, j] < -0.2 or 0 in (np.abs(v[i]).sum(), np.abs(v[j]).sum())
            for i in range(60)
            for j in range(i + 1, 60)
            if albums[i] != albums[j]
        ]
    )
    assert rel.pair_shares(v, "cosine", albums, 0.5, -0.2)[1] != pytest.approx(with_zero_as_negative)


def test_calibration_on_a_known_jaccard_case():
    # E has A's tags and album: AE is not a pair; the other 9: AB EB 1, AC BC EC .5, AD BD CD ED 0
    tags = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]], np.float32)
    albums = ["a", "b", "c", "d", "a"]
    assert rel.pair_shares(tags, "jaccard", albums, 1.0, 0.5) == (2 / 9, 4 / 9)
    c = rel.calibrate_thresholds(tags, "jaccard", albums, positive_share=0.2, negative_share=0.4)
    assert (c.positive_threshold, c.negative_threshold) == (1.0, 0.5)  # values that occur
    assert (c.positive_share, c.negative_share) == (2 / 9, 4 / 9) and c.exact
    assert (c.target_positive_share, c.target_negative_share) == (0.2, 0.4)
    # targets adding up to more than all pairs: the closest thresholds cross (positive 0, negative
    # above 1); on the diagonal t = .5 (shares 5/9, 4/9) and t = 1 (2/9, 7/9) miss by the same sum,
    # t = .5 misses both targets more evenly
    c = rel.calibrate_thresholds(tags, "jaccard", albums, positive_share=0.9, negative_share=0.9)
    assert c.positive_threshold == c.negative_threshold == 0.5
    assert (c.positive_share, c.negative_share) == (5 / 9, 4 / 9)
    # labels: 5 + 5 tracks, each its own album: 20 of 45 pairs equal
    labels = np.repeat([0.0, 1.0], 5)[:, None]
    c = rel.calibrate_thresholds(labels, "label", np.arange(10), 0.4, 0.5)
    assert (c.positive_threshold, c.positive_share) == (1.0, 20 / 45)
    # a 1 % target: share 0 (threshold above 1) would be closer, but no positive at all is no answer
    c = rel.calibrate_thresholds(labels, "label", np.arange(10), 0.01, 0.01)
    assert (c.positive_threshold, c.negative_threshold) == (1.0, 1.0)
    assert (c.positive_share, c.negative_share) == (20 / 45, 25 / 45)
    c = rel.calibrate_thresholds(labels, "label", np.arange(10), 0.0, 0.0)
    assert c.positive_share == 0.0 and c.negative_share == 0.0
    assert c.negative_threshold <= c.positive_threshold
    with pytest.raises(ArgumentError, match="positive_share 1.5"):
        rel.calibrate_thresholds(labels, "label", np.arange(10), 1.5, 0.5)


def test_calibration_hits_continuous_targets_and_never_crosses():
    rng = np.random.default_rng(2)
    v = rng.standard_normal((120, 6)).astype(np.float32)
    albums = np.arange(120) // 2
    n_pairs = 120 * 119 // 2 - 60
    for pos, neg in [(0.01, 0.8), (0.05, 0.2), (0.3, 0.3), (0.0, 1.0), (0.7, 0.6), (1.0, 1.0), (0.5, 0.0)]:
        c = rel.calibrate_thresholds(v, "cosine", albums, pos, neg)
        assert c.negative_threshold <= c.positive_threshold
        achieved = rel.pair_shares(v, "cosine", albums, c.positive_threshold, c.negative_threshold)
        assert achieved == (c.positive_share, c.negative_share)
        if pos + neg <= 1.0:  # feasible targets: hit to one pair (no ties among continuous values)
            assert abs(c.positive_share - pos) <= 1 / n_pairs + 1e-12
            assert abs(c.negative_share - neg) <= 1 / n_pairs + 1e-12
    for seed in range(20):  # discrete values and random targets: still never crossing
        tags = (np.random.default_rng(seed).random((30, 4)) < 0.4).astype(np.float32)
        pos, neg = np.random.default_rng(100 + seed).random(2)
        c = rel.calibrate_thresholds(tags, "jaccard", np.arange(30), pos, neg)
        assert c.negative_threshold <= c.positive_threshold
