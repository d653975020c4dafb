"""Related-batch composition: related lists, composed epoch orders, and feature_dataset(order=)."""

from __future__ import annotations

import numpy as np
import pytest

from msd_triplet import batches, features
from msd_triplet.errors import ArgumentError
from msd_triplet.relatedness import relatedness_numpy


def clustered(n: int = 600, clusters: int = 40, albums_of: int = 3, seed: int = 0):
    """LSI-like vectors of ``clusters`` topics (about 1/clusters of the pairs are positives at 0.8); albums of 3."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, 12))
    topic = rng.integers(0, clusters, n)
    vectors = (centres[topic] + 0.25 * rng.standard_normal((n, 12))).astype(np.float32)
    vectors[::50] = 0.0  # a few tracks without tags: no positives, fillers
    return vectors, rng.permutation(np.arange(n) // albums_of)


def brute_force_lists(vectors, kind, albums, threshold) -> list[list[int]]:
    r = relatedness_numpy(vectors, kind)
    n = len(vectors)
    return [[j for j in range(n) if j != i and albums[i] != albums[j] and r[i, j] >= threshold] for i in range(n)]


def positive_coverage(order: np.ndarray, vectors, albums, batch_size: int, threshold: float = 0.8) -> float:
    """Share of the tracks in full batches that have >= 1 positive (another album) in their batch."""
    covered, total = 0, 0
    for start in range(0, len(order) - batch_size + 1, batch_size):
        b = order[start : start + batch_size]
        positive = (relatedness_numpy(vectors[b], "cosine") >= threshold) & (albums[b][:, None] != albums[b][None, :])
        covered += int(positive.any(axis=1).sum())
        total += len(b)
    return covered / total


@pytest.mark.parametrize("kind", ["cosine", "jaccard", "label"])
def test_related_lists_equal_brute_force(kind):
    rng = np.random.default_rng(1)
    n = 70
    if kind == "cosine":
        vectors, threshold = clustered(n, clusters=6)[0], 0.8
    elif kind == "jaccard":
        vectors, threshold = (rng.random((n, 5)) < 0.4).astype(np.float32), 0.5
    else:
        vectors, threshold = rng.integers(-1, 6, n).astype(np.float32)[:, None], 1.0
    albums = rng.integers(0, 30, n)
    expected = brute_force_lists(vectors, kind, albums, threshold)
    for chunk in (1, 16, n):
        got = batches.related_lists(vectors, kind, albums, threshold, max_related=n, chunk_size=chunk)
        assert [got.of(i).tolist() for i in range(n)] == expected
        assert got.counts.tolist() == [len(e) for e in expected]


def test_related_lists_cap_is_a_seeded_subset_independent_of_chunks():
    vectors, albums = clustered(300, clusters=4)
    full = batches.related_lists(vectors, "cosine", albums, 0.8, max_related=300)
    assert full.counts.max() > 10
    capped = [
        batches.related_lists(vectors, "cosine", albums, 0.8, max_related=10, chunk_size=c, seed=5)
        for c in (7, 64, 300)
    ]
    for other in capped[1:]:
        np.testing.assert_array_equal(other.indptr, capped[0].indptr)
        np.testing.assert_array_equal(other.indices, capped[0].indices)
    cap = capped[0]
    np.testing.assert_array_equal(cap.counts, full.counts)
    np.testing.assert_array_equal(np.diff(cap.indptr), np.minimum(full.counts, 10))
    for i in range(300):
        assert set(cap.of(i)) <= set(full.of(i)) and np.all(np.diff(cap.of(i)) > 0)
    reseeded = batches.related_lists(vectors, "cosine", albums, 0.8, max_related=10, seed=6)
    assert not np.array_equal(reseeded.indices, cap.indices)


def test_composed_orders_are_seeded_permutations_with_positives_in_every_batch():
    vectors, albums = clustered()
    related = batches.related_lists(vectors, "cosine", albums, 0.8)
    n, batch_size = len(vectors), 32
    orders = [batches.composed_order(related, albums, batch_size, 4, seed=3, epoch=e) for e in range(3)]
    for order in orders:
        assert order.dtype == np.int64 and np.array_equal(np.sort(order), np.arange(n))
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    np.testing.assert_array_equal(orders[1], batches.composed_order(related, albums, batch_size, 4, seed=3, epoch=1))
    assert not np.array_equal(orders[1], batches.composed_order(related, albums, batch_size, 4, seed=4, epoch=1))
    order_fn = batches.related_order_fn(vectors, "cosine", albums, 0.8, batch_size, 4, seed=3)
    np.testing.assert_array_equal(order_fn(2), orders[2])

    rng = np.random.default_rng(0)
    random = np.mean([positive_coverage(rng.permutation(n), vectors, albums, batch_size) for _ in range(3)])
    composed = np.mean([positive_coverage(o, vectors, albums, batch_size) for o in orders])
    assert random < 0.6 and composed > random + 0.3, (random, composed)
    # group size 1 is a plain seeded shuffle
    single = batches.composed_order(related, albums, batch_size, 1, seed=3, epoch=0)
    assert np.array_equal(np.sort(single), np.arange(n))


def test_groups_stay_in_one_batch():
    # 20 disjoint cliques of 4 tracks (one album each), 20 loners: groups of 4 fit batches of 8 exactly
    labels = np.concatenate([np.repeat(np.arange(20), 4), -1 - np.arange(20)]).astype(np.float32)[:, None]
    albums = np.arange(len(labels))
    related = batches.related_lists(labels, "label", albums, 1.0)
    for epoch in range(3):
        order = batches.composed_order(related, albums, 8, 4, seed=0, epoch=epoch)
        batch_of = np.empty(len(order), int)
        batch_of[order] = np.arange(len(order)) // 8
        for clique in range(20):
            assert len(set(batch_of[clique * 4 : clique * 4 + 4])) == 1
        # the loners are spread: 20 fillers over 12.5 batches, never a batch of loners only
        loners = np.bincount(batch_of[80:], minlength=13)
        assert loners[:12].max() <= 4


def test_bad_arguments():
    vectors, albums = clustered(40)
    related = batches.related_lists(vectors, "cosine", albums, 0.8)
    with pytest.raises(ArgumentError, match="group_size 9"):
        batches.composed_order(related, albums, 8, 9, seed=0, epoch=0)
    with pytest.raises(ArgumentError, match="albums has 3 entries, expected 40"):
        batches.composed_order(related, albums[:3], 8, 4, seed=0, epoch=0)
    with pytest.raises(ArgumentError, match="relatedness kind 'dot'"):
        batches.related_lists(vectors, "dot", albums, 0.8)


# --------------------------------------------------------------------------- feature_dataset(order=)


class MemoryCache:
    """What feature_dataset needs of a FeatureCache: ``shape`` and ``read(rows)``; row r is filled with r."""

    shape = (2, 3)

    def __init__(self, n: int) -> None:
        self.n = n

    def read(self, rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(rows, np.float32)[:, None, None], (len(rows), *self.shape)).copy()


def test_feature_dataset_follows_the_given_order_and_resumes():
    n, batch_size = 23, 5
    rows = np.arange(100, 100 + n)  # cache rows differ from example positions
    targets = np.arange(n) * 10

    def order(epoch: int) -> np.ndarray:
        return np.random.default_rng([7, epoch]).permutation(n)

    def batches_of(**kwargs) -> list[list[int]]:
        ds = features.feature_dataset(
            MemoryCache(200), rows, targets, batch_size=batch_size, order=order, drop_remainder=True, **kwargs
        )
        out = []
        for x, t in ds.as_numpy_iterator():
            np.testing.assert_array_equal(x[:, 0, 0, 0], rows[t // 10])  # features aligned with targets
            out.append((t // 10).tolist())
        return out

    three = batches_of(epochs=3)
    expected = [order(e)[k : k + batch_size].tolist() for e in range(3) for k in range(0, 20, batch_size)]
    assert three == expected
    assert batches_of(epochs=2, first_epoch=1) == three[4:]
    assert batches_of(epochs=3, seed=99) == three  # the order replaces the seeded shuffle
    bad = features.feature_dataset(MemoryCache(200), rows, batch_size=batch_size, order=lambda e: np.zeros(n))
    with pytest.raises(Exception, match="not a permutation of range"):
        list(bad.as_numpy_iterator())
