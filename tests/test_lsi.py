"""LSI: against scikit-learn's ARPACK TruncatedSVD, solvers against each other, the prefix property."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from msd_triplet import lsi
from msd_triplet.config import LsiConfig
from msd_triplet.errors import ArgumentError, ConfigError, DataError


def random_tag_matrix(tracks: int = 400, tags: int = 60, seed: int = 0) -> tuple[sp.csr_matrix, tuple[str, ...]]:
    """Seeded binary track × tag matrix with album-like groups; every track has >= 1 tag."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, tags + 1)
    popularity /= popularity.sum()
    rows = []
    for _album in range(tracks // 4):
        album_tags = rng.choice(tags, size=rng.integers(1, 6), replace=False, p=popularity)
        for _ in range(4):
            extra = rng.choice(tags, size=rng.integers(0, 2), replace=False)
            rows.append(np.union1d(album_tags, extra))
    indptr = np.cumsum([0] + [len(r) for r in rows])
    matrix = sp.csr_matrix((np.ones(indptr[-1]), np.concatenate(rows), indptr), shape=(len(rows), tags))
    vocabulary = tuple(f"{'genres' if j < 10 else 'moods'}:tag{j}" for j in range(tags))
    return matrix, vocabulary


@pytest.fixture(scope="module")
def data():
    return random_tag_matrix()


def test_combination_names():
    names = lsi.combinations()
    assert len(names) == 15 and names[0] == "genres" and names[-1] == "genres-styles-moods-themes"
    assert "styles-moods" in names and "moods-styles" not in names
    assert lsi.parse_combination("moods-genres") == ("genres", "moods")
    assert lsi.combination_name(["themes", "styles"]) == "styles-themes"
    for bad in ["genre", "genres-genres", "", "genres-colours"]:
        with pytest.raises(ConfigError, match="tag-set combination"):
            lsi.parse_combination(bad)


@pytest.mark.parametrize("solver", ["gram", "svds"])
def test_matches_scikit_learn_arpack(data, solver):
    from sklearn.decomposition import TruncatedSVD

    matrix, vocabulary = data
    k = 20
    ours = lsi.fit_lsi(matrix, vocabulary, k, solver=solver)
    ref = TruncatedSVD(k, algorithm="arpack", random_state=0).fit(matrix)
    np.testing.assert_allclose(ours.singular_values, ref.singular_values_, rtol=1e-6)
    cos_ours = lsi.cosine_similarity(ours.transform(matrix))
    cos_ref = lsi.cosine_similarity(ref.transform(matrix))
    assert np.abs(cos_ours - cos_ref).max() < 1e-5
    # same topics up to sign
    np.testing.assert_allclose(np.abs(ours.components @ ref.components_.T), np.eye(k), atol=1e-6)


def test_lsi_vectors_are_u_transposed_w(data):
    matrix, vocabulary = data
    model = lsi.fit_lsi(matrix, vocabulary, 10)
    dense = matrix.toarray()
    u, s, vt = np.linalg.svd(dense.T, full_matrices=False)  # W = tags × tracks
    np.testing.assert_allclose(model.singular_values, s[:10], rtol=1e-9)
    expected = dense @ u[:, :10]  # row i = U_kᵀ w_i
    got = model.transform(matrix)
    signs = np.sign(np.sum(got * expected, axis=0))
    np.testing.assert_allclose(got, expected * signs, atol=1e-5)
    np.testing.assert_allclose(model.components @ model.components.T, np.eye(10), atol=1e-10)


def test_solvers_agree_and_fits_are_deterministic(data):
    matrix, vocabulary = data
    gram = lsi.fit_lsi(matrix, vocabulary, 25, solver="gram")
    svds = lsi.fit_lsi(matrix, vocabulary, 25, solver="svds", seed=3)
    np.testing.assert_allclose(gram.components, svds.components, atol=1e-8)  # signs fixed the same way
    again = lsi.fit_lsi(matrix, vocabulary, 25, solver="svds", seed=3)
    np.testing.assert_array_equal(again.components, svds.components)
    assert lsi.fit_lsi(matrix, vocabulary, 25).solver == "gram"  # auto picks gram for small vocabularies


@pytest.mark.parametrize("solver", ["gram", "svds"])
def test_smaller_k_is_a_prefix_of_larger_k(data, solver):
    matrix, vocabulary = data
    big = lsi.fit_lsi(matrix, vocabulary, 40, solver=solver)
    for k in (5, 17, 30):
        small = lsi.fit_lsi(matrix, vocabulary, k, solver=solver)
        cut = big.truncate(k)
        np.testing.assert_allclose(cut.singular_values, small.singular_values, rtol=1e-9)
        np.testing.assert_allclose(cut.components, small.components, atol=1e-8)
        np.testing.assert_allclose(cut.transform(matrix), small.transform(matrix), atol=1e-5)
    with pytest.raises(ConfigError, match="41 topics asked of a model with 40"):
        big.truncate(41)


def test_fold_in_uses_the_training_projection(data):
    matrix, vocabulary = data
    train, test = matrix[:300], matrix[300:]
    model = lsi.fit_lsi(train, vocabulary, 15)
    np.testing.assert_allclose(model.transform(test), (test @ model.components.T).astype(np.float32), atol=1e-6)


def test_near_zero_vectors_become_zero():
    comps = np.array([[1 / np.sqrt(2), 1 / np.sqrt(2), 1e-17]])
    model = lsi.LsiModel(("genres",), ("genres:a", "genres:b", "genres:c"), np.array([2.0]), comps)
    x = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]]))
    vectors = model.transform(x)
    assert vectors[0, 0] > 0.7 and vectors[2, 0] == 0.0
    cos = lsi.cosine_similarity(vectors)
    assert cos[2].tolist() == [0.0, 0.0, 0.0] and cos[0, 1] == pytest.approx(1.0)


def issue_example() -> tuple[sp.csr_matrix, tuple[str, ...]]:
    """4,000 tracks tagged only within tags 0-3 and 6,000 tracks on 60 other tags (issue 15)."""
    rng = np.random.default_rng(0)
    rows = [rng.choice(4, rng.integers(1, 3), replace=False) for _ in range(4_000)]
    rows += [4 + rng.choice(60, rng.integers(1, 4), replace=False) for _ in range(6_000)]
    indptr = np.cumsum([0] + [len(r) for r in rows])
    matrix = sp.csr_matrix((np.ones(indptr[-1]), np.concatenate(rows), indptr), shape=(10_000, 64))
    return matrix, tuple(f"genres:t{j}" for j in range(64))


@pytest.mark.parametrize("solver", ["svds", "gram"])
def test_tracks_outside_the_topics_are_zeroed_whatever_the_median(solver):
    matrix, vocabulary = issue_example()
    model = lsi.fit_lsi(matrix, vocabulary, 4, solver=solver)
    raw = np.linalg.norm(np.asarray(matrix @ model.components.T), axis=1)
    assert raw[4_000:].max() < 1e-13 and raw[:4_000].min() > 0.99  # round-off against real vectors
    if solver == "svds":  # the old rule: round-off is the majority, so the median norm is round-off too
        assert np.median(raw[raw > 0]) < 1e-13 and not np.any(
            raw[4_000:][raw[4_000:] > 0] < 1e-6 * np.median(raw[raw > 0])
        )
    vectors = model.transform(matrix)
    norms = np.linalg.norm(vectors, axis=1)
    assert not vectors[4_000:].any() and norms[:4_000].min() > 0.99
    # the bound is the model's, not the batch's: one track alone is zeroed (or kept) as in the whole set
    np.testing.assert_array_equal(model.transform(matrix[[4_000, 0]]), vectors[[4_000, 0]])


def test_zero_norm_bound_is_relative_to_the_largest_singular_value():
    # Norms 1e-3, 2e-3 and 1: the median (2e-3) bound 2e-9 keeps every track; σ₁ = 1,000 gives a bound
    # 1e-3: the first track is zeroed (at the bound), the second kept (just above it).
    comps = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    model = lsi.LsiModel(("genres",), ("genres:a", "genres:b", "genres:c"), np.array([1_000.0, 1.0]), comps)
    x = sp.csr_matrix(np.array([[1e-3, 0, 0], [0, 2e-3, 0], [1.0, 0, 0]]))
    assert model.zero_norm() == pytest.approx(1e-3)
    vectors = model.transform(x)
    assert not vectors[0].any() and vectors[1, 1] == np.float32(2e-3) and vectors[2, 0] == 1.0
    assert model.transform(x, zero_norm_rtol=1e-7)[0, 0] == np.float32(1e-3)
    assert model.transform(x, zero_norm_rtol=0.0)[0, 0] == np.float32(1e-3)  # 0: only exact zeros
    assert model.truncate(1).zero_norm() == model.zero_norm()  # σ₁ is every truncation's
    for bad in (-1e-6, float("nan")):
        with pytest.raises(ArgumentError, match="zero_norm_rtol"):
            model.transform(x, zero_norm_rtol=bad)


def test_tfidf_weighting(data):
    matrix, vocabulary = data
    model = lsi.fit_lsi(matrix, vocabulary, 10, weighting="tfidf")
    df = np.asarray(matrix.sum(axis=0)).ravel()
    np.testing.assert_allclose(model.idf, np.log(matrix.shape[0] / df))
    weighted = model.weight(matrix)
    np.testing.assert_allclose(np.linalg.norm(weighted.toarray(), axis=1), 1.0)
    from sklearn.decomposition import TruncatedSVD

    ref = TruncatedSVD(10, algorithm="arpack").fit(weighted)
    np.testing.assert_allclose(model.singular_values, ref.singular_values_, rtol=1e-6)
    binary = lsi.fit_lsi(matrix, vocabulary, 10)
    assert not np.allclose(np.abs(binary.components), np.abs(model.components), atol=1e-3)


def test_bad_inputs_are_clear_errors(data, tmp_path):
    matrix, vocabulary = data
    with pytest.raises(ConfigError, match=r"lsi.k: 60 topics for a 400 tracks × 60 tags matrix .* allowed 1..59"):
        lsi.fit_lsi(matrix, vocabulary, 60)
    with pytest.raises(DataError, match="empty"):
        lsi.fit_lsi(sp.csr_matrix((5, 4)), vocabulary[:4], 2)
    with pytest.raises(DataError, match="4 tag columns, the LSI vocabulary 60"):
        lsi.fit_lsi(matrix[:, :4], vocabulary, 2)
    with pytest.raises(ConfigError, match="lsi.solver"):
        lsi.fit_lsi(matrix, vocabulary, 2, solver="magic")
    model = lsi.fit_lsi(matrix, vocabulary, 5)
    path = model.save(tmp_path / "m.npz")
    other = vocabulary[:-1] + ("moods:new tag",)
    with pytest.raises(DataError, match="not in the data: moods:tag59; not in the model: moods:new tag"):
        lsi.LsiModel.load(path, other)
    with pytest.raises(DataError, match="not an LSI model file"):
        (tmp_path / "x.npz").write_bytes(b"nope")
        lsi.LsiModel.load(tmp_path / "x.npz")


def test_save_load_round_trip(data, tmp_path):
    matrix, vocabulary = data
    model = lsi.fit_lsi(matrix, vocabulary, 8, weighting="tfidf", sets=("moods", "genres"))
    loaded = lsi.LsiModel.load(model.save(tmp_path / "m.npz"), vocabulary)
    assert loaded.sets == ("genres", "moods") and loaded.weighting == "tfidf" and loaded.n_train == 400
    np.testing.assert_array_equal(loaded.components, model.components)
    np.testing.assert_array_equal(loaded.transform(matrix), model.transform(matrix))


def test_topic_terms_are_labelled_by_set(data):
    from msd_triplet.topics import format_topics, parse_topics

    matrix, vocabulary = data
    model = lsi.fit_lsi(matrix, vocabulary, 6)
    pos, neg = model.topic_terms(1, 3)
    assert len(pos) == 3 and all(w > 0 for _, _, w in pos) and all(w < 0 for _, _, w in neg)
    assert [w for _, _, w in pos] == sorted((w for _, _, w in pos), reverse=True)
    weights = dict(zip(vocabulary, model.components[1]))
    assert weights[f"{pos[0][0]}:{pos[0][1]}"] == max(weights.values())
    text = format_topics(model, [0, 1], n=3)
    assert "topic 1 (σ = " in text and "[genres] tag" in text
    assert parse_topics("0,2", 6) == [0, 2] and parse_topics(None, 3) == [0, 1, 2]
    with pytest.raises(ArgumentError, match="topics 0..5"):  # an ArgumentError: one error line in the CLI
        parse_topics("7", 6)


def test_stacked_matrix_and_fit_prepared(tiny_dataset):
    from msd_triplet.prepare import prepare_dataset

    prepared = prepare_dataset(tiny_dataset.config, extract=False)
    matrix, vocabulary = lsi.stacked_matrix(prepared.matrices, ["moods", "genres"])
    n_genres = len(prepared.matrices["genres"].vocabulary)
    assert vocabulary[0].startswith("genres:") and vocabulary[n_genres].startswith("moods:")
    model, vectors = lsi.fit_prepared(prepared, LsiConfig(tag_sets=("genres", "moods"), k=4), seed=0)
    assert vectors.shape == (len(prepared.tracks), 4) and model.n_train == (prepared.tracks["split"] == "train").sum()
    train = np.flatnonzero(prepared.tracks["split"] == "train")
    refit = lsi.fit_lsi(matrix[train], vocabulary, 4)
    np.testing.assert_allclose(vectors, refit.transform(matrix), atol=1e-6)
    broken = dict(prepared.matrices)
    tm = broken["moods"]
    emptied = tm.matrix.tolil()
    emptied[3, :] = 0
    broken["moods"] = type(tm)(tm.tagset, tm.track_ids, tm.vocabulary, emptied.tocsr())
    with pytest.raises(DataError, match=f"1 track\\(s\\) have no tag in moods \\(e.g. {tm.track_ids[3]}\\)"):
        lsi.stacked_matrix(broken, ["genres", "moods"])
    with pytest.raises(DataError, match="tag set styles is not in the prepared data"):
        lsi.stacked_matrix({"genres": prepared.matrices["genres"]}, ["styles"])


def test_similarity_histogram_counts_pairs(tmp_path):
    from msd_triplet.topics import similarity_histogram

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((60, 5))
    vectors[7] = 0.0
    albums = np.repeat(np.arange(20), 3)
    stats = similarity_histogram(vectors, tmp_path / "h.png", positive=0.5, negative=-0.1, albums=albums)
    cos = lsi.cosine_similarity(vectors)
    # a track without a topic (row 7) is in no pair, as in the loss
    pairs = [(i, j) for i in range(60) for j in range(i + 1, 60) if 7 not in (i, j)]
    other = [(i, j) for i, j in pairs if albums[i] != albums[j]]
    assert stats.pairs == len(pairs) == 59 * 58 // 2 and stats.zero_vectors == 1
    assert stats.share_positive == pytest.approx(np.mean([cos[i, j] >= 0.5 for i, j in pairs]))
    assert stats.share_negative == pytest.approx(np.mean([cos[i, j] < -0.1 for i, j in pairs]))
    assert stats.share_positive_other_album == pytest.approx(np.mean([cos[i, j] >= 0.5 for i, j in other]))
    assert (tmp_path / "h.png").stat().st_size > 1000
