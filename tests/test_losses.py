"""The LSI triplet loss against a brute-force numpy loop; XLA; Keras round trip; a tiny training run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from msd_triplet import losses
from msd_triplet.config import ModelConfig

MODES = losses.MINING


def reference(e, lsi, albums, mining, pos_th=0.8, neg_th=0.2, margin=0.2, album_filter=True):
    """Explicit loops over anchors, positives and negatives (float64)."""
    b = len(e)
    e = np.asarray(e, np.float64)
    lsi = np.asarray(lsi, np.float64)
    norms = np.linalg.norm(lsi, axis=1)
    unit = [lsi[i] / norms[i] if norms[i] > 1e-12 else np.zeros_like(lsi[i]) for i in range(b)]

    def allowed(i, j):  # a zero LSI row (no topic) is in no pair
        return i != j and (not album_filter or albums[i] != albums[j]) and norms[i] > 1e-12 and norms[j] > 1e-12

    cos = [[float(unit[i] @ unit[j]) for j in range(b)] for i in range(b)]
    pos = [[j for j in range(b) if allowed(i, j) and cos[i][j] >= pos_th] for i in range(b)]
    neg = [[j for j in range(b) if allowed(i, j) and cos[i][j] < neg_th] for i in range(b)]
    d = [[float(np.sum((e[i] - e[j]) ** 2)) for j in range(b)] for i in range(b)]
    valid = [a for a in range(b) if pos[a] and neg[a]]
    terms, hard = [], []  # hard: sct triplets whose negative is nearer than the positive (always active)
    for a in valid:
        if mining == "batch_hard":
            terms.append(max(0.0, max(d[a][p] for p in pos[a]) - min(d[a][n] for n in neg[a]) + margin))
        elif mining == "paper_literal":
            terms.append(max(0.0, min(d[a][p] for p in pos[a]) - max(d[a][n] for n in neg[a]) + margin))
        elif mining == "batch_all":
            terms.extend(max(0.0, d[a][p] - d[a][n] + margin) for p in pos[a] for n in neg[a])
        elif mining == "sct":  # a hard triplet (negative nearer than the positive) only pushes the negative
            d_ap, d_an = max(d[a][p] for p in pos[a]), min(d[a][n] for n in neg[a])
            terms.append(1.0 - d_an / 2.0 if d_an < d_ap else max(0.0, d_ap - d_an + margin))
            hard.append(d_an < d_ap)
        else:  # semi_hard
            for p in pos[a]:
                farther = [d[a][n] for n in neg[a] if d[a][n] > d[a][p]]
                d_an = min(farther) if farther else max(d[a][n] for n in neg[a])
                terms.append(max(0.0, d[a][p] - d_an + margin))
    if mining == "batch_all":
        active = [t for t in terms if t > 0]
        loss = float(np.mean(active)) if active else 0.0
    else:
        loss = float(np.mean(terms)) if terms else 0.0
    actives = [t > 0 or (hard[i] if hard else False) for i, t in enumerate(terms)]
    active_share = float(np.mean(actives)) if terms else 0.0
    return loss, len(valid) / b, active_share


def random_batch(seed, b=14, k=6, d=5, album_size=3):
    """LSI vectors near a few topic directions (so positives exist) and random embeddings."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((3, k))
    lsi = topics[rng.integers(0, 3, b)] + 0.3 * rng.standard_normal((b, k))
    albums = np.arange(b) // album_size
    return rng.standard_normal((b, d)).astype(np.float32), lsi.astype(np.float32), albums.astype(np.float32)


def special_batches():
    e, lsi, albums = random_batch(100)
    k = lsi.shape[1]
    orthogonal = np.eye(len(e), k * 3)[:, : k * 3].astype(np.float32)  # every pair cosine 0: no positive
    zero_rows = lsi.copy()
    zero_rows[[0, 4, 5]] = 0.0
    return {
        "random": (e, lsi, albums),
        "no_positive": (e, orthogonal, albums),
        "one_album": (e, lsi, np.zeros_like(albums)),
        "identical_embeddings": (np.ones_like(e), lsi, albums),
        "zero_lsi_rows": (e, zero_rows, albums),
        "batch_of_two": (e[:2], np.stack([lsi[0], lsi[0] * 2]), np.array([0.0, 1.0], np.float32)),
    }


@pytest.mark.parametrize("mining", MODES)
@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_on_random_batches(mining, seed):
    e, lsi, albums = random_batch(seed)
    loss, stats = losses.lsi_triplet_loss(e, lsi, albums, mining=mining, return_statistics=True)
    ref_loss, ref_valid, ref_active = reference(e, lsi, albums, mining)
    assert ref_valid > 0  # the batch is not trivial
    assert float(loss) == pytest.approx(ref_loss, abs=1e-5, rel=1e-5)
    assert float(stats["valid_anchors"]) == pytest.approx(ref_valid)
    assert float(stats["active_triplets"]) == pytest.approx(ref_active, abs=1e-6)


@pytest.mark.parametrize("mining", MODES)
@pytest.mark.parametrize("case", list(special_batches()))
def test_edge_cases_match_brute_force_with_finite_gradients(mining, case):
    import tensorflow as tf

    e, lsi, albums = special_batches()[case]
    variable = tf.Variable(e)
    with tf.GradientTape() as tape:
        loss = losses.lsi_triplet_loss(variable, lsi, albums, mining=mining)
    grad = tape.gradient(loss, variable)
    ref_loss, ref_valid, _ = reference(e, lsi, albums, mining)
    assert float(loss) == pytest.approx(ref_loss, abs=1e-5)
    assert np.all(np.isfinite(grad.numpy()))
    if ref_valid == 0:
        assert float(loss) == 0.0 and not np.any(grad.numpy())
    if case in ("no_positive", "one_album"):
        assert ref_valid == 0


def test_album_filter_and_thresholds_are_configurable():
    e, lsi, albums = random_batch(7)
    for kwargs in [dict(album_filter=False), dict(pos_th=0.5, neg_th=0.0), dict(margin=1.5)]:
        ours = dict(
            album_filter=kwargs.get("album_filter", True),
            margin=kwargs.get("margin", 0.2),
            positive_threshold=kwargs.get("pos_th", 0.8),
            negative_threshold=kwargs.get("neg_th", 0.2),
        )
        got = losses.lsi_triplet_loss(e, lsi, albums, **ours)
        assert float(got) == pytest.approx(reference(e, lsi, albums, "batch_hard", **kwargs)[0], abs=1e-5)


def test_masks_and_distances():
    e, lsi, albums = random_batch(3)
    pos, neg = losses.pair_masks(lsi, albums)
    pos, neg = pos.numpy(), neg.numpy()
    assert not np.any(np.diag(pos)) and not np.any(pos & neg) and np.array_equal(pos, pos.T)
    same = albums[:, None] == albums[None, :]
    assert not np.any(pos[same]) and not np.any(neg[same])
    d = losses.squared_distances(e).numpy()
    brute = ((e[:, None, :].astype(np.float64) - e[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(d, brute, atol=1e-5)
    assert np.all(d >= 0) and not np.any(np.diag(d))


def test_a_zero_lsi_row_is_in_no_pair():
    # Rows 2 and 5 have no topic. Before, cosine 0 made them every track's negative (and anchors with
    # negatives only); now they are neither positive nor negative, as anchor or as partner.
    e, lsi, albums = random_batch(11)
    lsi[[2, 5]] = 0.0
    pos, neg = (m.numpy() for m in losses.pair_masks(lsi, albums))
    for zero in (2, 5):
        assert not pos[zero].any() and not neg[zero].any() and not pos[:, zero].any() and not neg[:, zero].any()
    live = np.setdiff1d(np.arange(len(e)), [2, 5])
    assert neg[np.ix_(live, live)].any() and pos[np.ix_(live, live)].any()  # the others still have pairs
    for mining in MODES:  # and the loss equals the brute-force loop, which never pairs a zero row
        loss, stats = losses.lsi_triplet_loss(e, lsi, albums, mining=mining, return_statistics=True)
        ref_loss, ref_valid, _ = reference(e, lsi, albums, mining)
        assert float(loss) == pytest.approx(ref_loss, abs=1e-5) and float(stats["valid_anchors"]) == pytest.approx(
            ref_valid
        )
    # the loss does not depend on the embedding of a zero row: it is in no triplet
    moved = e.copy()
    moved[[2, 5]] += 10.0
    assert float(losses.lsi_triplet_loss(moved, lsi, albums, mining="batch_all")) == pytest.approx(
        float(losses.lsi_triplet_loss(e, lsi, albums, mining="batch_all")), abs=1e-6
    )


def test_tracks_zeroed_by_lsi_get_no_pair():
    # LsiModel.transform zeroes a track without a topic exactly; the loss then leaves it out of every pair
    import scipy.sparse as sp

    from msd_triplet.lsi import LsiModel

    comps = np.array([[1.0, 0.0, 1e-17], [0.0, 1.0, 1e-17]])  # tag c: round-off only
    model = LsiModel(("genres",), ("genres:a", "genres:b", "genres:c"), np.array([3.0, 2.0]), comps)
    tags = sp.csr_matrix(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], np.float64))
    lsi = model.transform(tags)
    assert not lsi[3:].any()
    pos, neg = (m.numpy() for m in losses.pair_masks(lsi, np.arange(5)))
    assert pos.tolist() == [[False, True, False, False, False], [True, False, False, False, False]] + [[False] * 5] * 3
    assert neg[:3, :3].tolist() == [[False, False, True], [False, False, True], [True, True, False]]
    assert not neg[3:].any() and not neg[:, 3:].any()


def test_argument_errors_are_package_errors():
    from msd_triplet.errors import ArgumentError, MsdTripletError

    for make, match in [
        (lambda: losses.LsiTripletLoss(mining="hardest"), "mining 'hardest'.*batch_hard"),
        (lambda: losses.LsiTripletLoss(relatedness="dot"), "relatedness 'dot'.*cosine"),
        (lambda: losses.TripletStatistic("spread"), "statistic 'spread'.*valid_anchors"),
    ]:
        with pytest.raises(ArgumentError, match=match) as info:
            make()
        assert isinstance(info.value, MsdTripletError) and isinstance(info.value, ValueError)


def test_statistics_signal_collapse():
    e, lsi, albums = random_batch(5)
    _, stats = losses.lsi_triplet_loss(np.ones_like(e), lsi, albums, return_statistics=True)
    assert float(stats["embedding_spread"]) == 0.0 and float(stats["positive_distance"]) == 0.0
    assert float(stats["active_triplets"]) == 1.0  # every hinge is the margin
    _, stats = losses.lsi_triplet_loss(e, lsi, albums, return_statistics=True)
    pos, neg = (m.numpy() for m in losses.pair_masks(lsi, albums))
    d = ((e[:, None, :] - e[None, :, :]) ** 2).sum(-1)
    assert float(stats["positive_distance"]) == pytest.approx(d[pos].mean(), rel=1e-5)
    assert float(stats["negative_distance"]) == pytest.approx(d[neg].mean(), rel=1e-5)
    assert float(stats["embedding_spread"]) == pytest.approx(np.sqrt(e.var(axis=0).mean()), rel=1e-5)
    # hard triplets: the nearest negative nearer than the farthest positive; embeddings that half follow the tags
    e = np.concatenate([lsi, 2.0 * e], axis=1)
    _, stats = losses.lsi_triplet_loss(e, lsi, albums, return_statistics=True)
    d = ((e[:, None, :] - e[None, :, :]) ** 2).sum(-1)
    valid = [a for a in range(len(e)) if pos[a].any() and neg[a].any()]
    hard = [d[a][pos[a]].max() > d[a][neg[a]].min() for a in valid]
    assert 0 < np.mean(hard) < 1 and float(stats["hard_triplets"]) == pytest.approx(np.mean(hard), rel=1e-6)


@pytest.mark.parametrize("mining", MODES)
def test_xla_gives_the_same_loss(mining):
    import tensorflow as tf

    e, lsi, albums = random_batch(11, b=24)
    eager = losses.lsi_triplet_loss(e, lsi, albums, mining=mining)
    compiled = tf.function(lambda *a: losses.lsi_triplet_loss(*a, mining=mining), jit_compile=True)(e, lsi, albums)
    assert float(compiled) == pytest.approx(float(eager), rel=1e-6, abs=1e-6)


def test_pack_targets_round_trip():
    lsi = np.arange(6, dtype=np.float32).reshape(3, 2)
    packed = losses.pack_targets(lsi, np.array(["b", "a", "b"]))
    assert packed.shape == (3, 3) and packed[:, -1].tolist() == [1.0, 0.0, 1.0]
    got_lsi, got_albums = losses.unpack_targets(packed)
    np.testing.assert_array_equal(got_lsi, lsi)


def _tiny_model(seed=0):
    from msd_triplet.model import build_dpnn

    return build_dpnn(ModelConfig(widths=(2, 2, 2, 4), embedding_dim=8), input_shape=(16, 24), seed=seed)


def _clustered_data(n=96, seed=0):
    """Inputs from 4 clusters of spectro-temporal patterns; LSI targets = a noisy one-hot of the cluster."""
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((4, 16, 24, 1)).astype(np.float32)
    cluster = rng.integers(0, 4, n)
    x = patterns[cluster] + 0.5 * rng.standard_normal((n, 16, 24, 1)).astype(np.float32)
    lsi = np.eye(4, dtype=np.float32)[cluster] + 0.05 * rng.standard_normal((n, 4)).astype(np.float32)
    return x, losses.pack_targets(lsi, np.arange(n) // 2)


def test_keras_round_trip_of_a_compiled_model(tmp_path):
    import keras

    model = _tiny_model()
    loss = losses.LsiTripletLoss(mining="semi_hard", margin=0.3)
    model.compile(optimizer="adam", loss=loss, metrics=losses.triplet_metrics(loss))
    x, y = _clustered_data(32)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert isinstance(loaded.loss, losses.LsiTripletLoss) and loaded.loss.mining == "semi_hard"
    assert loaded.loss.margin == pytest.approx(0.3)
    before = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    after = loaded.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert after["loss"] == pytest.approx(before["loss"], abs=1e-6)
    assert set(losses.STATISTICS) <= set(after)


def test_a_few_steps_of_training_learn_the_lsi_structure():
    import keras

    keras.utils.set_random_seed(0)
    model = _tiny_model(seed=0)
    loss = losses.LsiTripletLoss()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss, metrics=losses.triplet_metrics(loss))
    x, y = _clustered_data(96)
    start = model.evaluate(x, y, batch_size=96, verbose=0, return_dict=True)
    model.fit(x, y, batch_size=32, epochs=15, verbose=0, shuffle=True)
    end = model.evaluate(x, y, batch_size=96, verbose=0, return_dict=True)
    assert start["valid_anchors"] > 0.9
    assert end["loss"] < 0.5 * start["loss"]
    assert end["active_triplets"] < start["active_triplets"]  # more triplets satisfied
    assert end["negative_distance"] > end["positive_distance"]


def test_loss_rejects_unknown_mining():
    with pytest.raises(ValueError, match="mining 'hardest'"):
        losses.LsiTripletLoss(mining="hardest")
    with pytest.raises(ValueError, match="statistic 'x'"):
        losses.TripletStatistic("x")


def test_dpnn_shapes_names_and_seeding():
    from msd_triplet.model import build_dpnn, embedding_model

    model = build_dpnn(seed=1)
    assert model.output_shape == (None, 256) and model.input_shape == (None, 80, 130, 1)
    names = {layer.name for layer in model.layers}
    for stack, i in itertools.product(("timbre", "rhythm"), range(1, 5)):
        assert {f"{stack}_conv{i}", f"{stack}_bn{i}", f"{stack}_elu{i}", f"{stack}_pool{i}"} <= names
    assert model.get_layer("timbre_conv1").kernel_size == (10, 23)
    assert model.get_layer("rhythm_conv4").kernel_size == (4, 2)
    assert model.get_layer("timbre_pool4").pool_size == (1, 8) and model.get_layer("rhythm_pool4").pool_size == (4, 1)
    assert model.get_layer("timbre_flatten").output.shape[-1] == 128 * 10 * 3
    assert model.get_layer("rhythm_flatten").output.shape[-1] == 128 * 3 * 17
    x = np.random.default_rng(0).standard_normal((3, 80, 130, 1)).astype(np.float32)
    out = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(build_dpnn(seed=1).predict(x, verbose=0), out)
    assert embedding_model(model).output_shape == (None, 256)
    unnormalised = build_dpnn(ModelConfig(l2_normalize=False, embedding_dim=32), seed=1)
    assert "l2_normalize" not in {layer.name for layer in unnormalised.layers}


@pytest.mark.parametrize("mining", MODES)
def test_xla_loss_and_gradient_with_a_dynamic_batch_size(mining):
    import tensorflow as tf

    e, lsi, albums = random_batch(11)
    spec = [tf.TensorSpec([None, e.shape[1]]), tf.TensorSpec([None, lsi.shape[1]]), tf.TensorSpec([None])]

    def loss_and_gradient(e, lsi, albums):
        with tf.GradientTape() as tape:
            tape.watch(e)
            value = losses.lsi_triplet_loss(e, lsi, albums, mining=mining)
        return value, tape.gradient(value, e)

    compiled = tf.function(loss_and_gradient, jit_compile=True, input_signature=spec)
    for b in (len(e), len(e) - 3):  # one compiled function, two batch sizes
        value, gradient = compiled(e[:b], lsi[:b], albums[:b])
        eager_value, eager_gradient = loss_and_gradient(tf.constant(e[:b]), lsi[:b], albums[:b])
        assert float(value) == pytest.approx(float(eager_value), rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(gradient.numpy(), eager_gradient.numpy(), rtol=1e-4, atol=1e-5)
