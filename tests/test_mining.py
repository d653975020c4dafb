"""Triplet mining in B × B memory against a brute-force loop, finite differences and the old dense code.

The brute-force reference is written from the definitions (module docstring
of :mod:`msd_triplet.mining`), in float64 over explicit loops; the TF code
is float32, so values are compared to 1e-6 relative to their scale.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from msd_triplet import losses, mining

MODES = mining.MINING
CASES = [(m, s) for m in MODES for s in (False, True)]
TOL = 1e-6


def _margin(mode):
    """0.2, but 1.5 for paper_literal: with 0.2 its nearest positive / farthest negative is never active here."""
    return 1.5 if mode == "paper_literal" else 0.2


# --------------------------------------------------------------------------- references


def brute_force(d, positive, negative, margin=0.2, mode="batch_hard", soft_margin=False):
    """(loss, valid share, active share) by loops over anchors, positives and negatives (float64)."""
    d = np.asarray(d, np.float64)
    b = len(d)

    def term(d_ap, d_an):
        return float(np.logaddexp(0.0, d_ap - d_an)) if soft_margin else max(0.0, d_ap - d_an + margin)

    def is_active(d_ap, d_an):
        return d_ap - d_an + margin > 0

    valid = [a for a in range(b) if any(positive[a]) and any(negative[a])]
    terms, active = [], []
    for a in valid:
        pos = [d[a][p] for p in range(b) if positive[a][p]]
        neg = [d[a][n] for n in range(b) if negative[a][n]]
        if mode in ("batch_hard", "sct"):
            d_ap, d_an = max(pos), min(neg)
            if mode == "sct" and d_an < d_ap:  # hard: only the similarity of anchor and negative
                terms.append(1.0 - d_an / 2.0)
                active.append(True)
            else:
                terms.append(term(d_ap, d_an))
                active.append(is_active(d_ap, d_an))
        elif mode == "paper_literal":
            terms.append(term(min(pos), max(neg)))
            active.append(is_active(min(pos), max(neg)))
        elif mode == "batch_all":
            for d_ap in pos:
                for d_an in neg:
                    terms.append(term(d_ap, d_an))
                    active.append(is_active(d_ap, d_an))
        else:  # semi_hard
            for d_ap in pos:
                farther = [x for x in neg if x > d_ap]
                d_an = min(farther) if farther else max(neg)
                terms.append(term(d_ap, d_an))
                active.append(is_active(d_ap, d_an))
    if mode == "batch_all" and not soft_margin:
        kept = [t for t, on in zip(terms, active) if on]  # the mean over the active triplets
    else:
        kept = terms
    loss = sum(kept) / len(kept) if kept else 0.0
    return loss, len(valid) / b, (sum(active) / len(active) if active else 0.0)


def _dense_masked_max(values, mask, fill):
    import tensorflow as tf

    return tf.reduce_max(tf.where(mask, values, tf.fill(tf.shape(values), fill)), axis=-1)


def _dense_masked_min(values, mask, fill):
    import tensorflow as tf

    return tf.reduce_min(tf.where(mask, values, tf.fill(tf.shape(values), fill)), axis=-1)


def _dense_safe_mean(values, weights):
    import tensorflow as tf

    return tf.reduce_sum(values * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def _dense_reference(distances, positive, negative, margin=0.2, mining="batch_hard"):
    """``losses.triplet_terms`` as of commit 4026136: [B, B, B] tensors for batch_all and semi_hard."""
    import tensorflow as tf

    d = tf.convert_to_tensor(distances, tf.float32)
    has_pos = tf.reduce_any(positive, axis=1)
    has_neg = tf.reduce_any(negative, axis=1)
    valid = tf.cast(tf.logical_and(has_pos, has_neg), tf.float32)
    valid_share = tf.reduce_mean(valid)
    big = tf.reduce_max(d) + 1.0  # finite fill larger than any distance
    if mining in ("batch_hard", "paper_literal"):
        if mining == "batch_hard":
            d_ap, d_an = _dense_masked_max(d, positive, -1.0), _dense_masked_min(d, negative, big)
        else:
            d_ap, d_an = _dense_masked_min(d, positive, big), _dense_masked_max(d, negative, -1.0)
        hinge = tf.nn.relu(d_ap - d_an + margin) * valid
        active = tf.cast(hinge > 0, tf.float32)
        return _dense_safe_mean(hinge, valid), valid_share, _dense_safe_mean(active, valid)
    pos_pairs = tf.cast(positive, tf.float32) * valid[:, None]  # [a, p]
    if mining == "batch_all":
        triplets = pos_pairs[:, :, None] * tf.cast(negative, tf.float32)[:, None, :]  # [a, p, n]
        hinge = tf.nn.relu(d[:, :, None] - d[:, None, :] + margin) * triplets
        active = tf.cast(hinge > 0, tf.float32)
        return _dense_safe_mean(hinge, active), valid_share, _dense_safe_mean(active, triplets)
    # semi_hard: per (a, p), the nearest negative farther than p; if there is none, the farthest negative
    farther = tf.logical_and(negative[:, None, :], d[:, None, :] > d[:, :, None])  # [a, p, n]
    nearest_farther = _dense_masked_min(tf.broadcast_to(d[:, None, :], tf.shape(farther)), farther, big)
    farthest = _dense_masked_max(d, negative, -1.0)[:, None]
    d_an = tf.where(tf.reduce_any(farther, axis=-1), nearest_farther, farthest)
    hinge = tf.nn.relu(d - d_an + margin) * pos_pairs
    active = tf.cast(hinge > 0, tf.float32)
    return _dense_safe_mean(hinge, pos_pairs), valid_share, _dense_safe_mean(active, pos_pairs)


# --------------------------------------------------------------------------- inputs


def random_case(seed, b=9, p_pos=0.3, p_neg=0.5, levels=None, pull=0.5):
    """Distances in [0, 4) with a zero diagonal and random disjoint masks without diagonal.

    Positive pairs' distances are multiplied by ``pull`` (positives nearer,
    as after some training). ``levels``: distances rounded to multiples of
    1 / levels (exact in float32), to force ties.
    """
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.0, 4.0, (b, b))
    if levels:
        d = np.round(d * levels) / levels
    d = np.triu(d, 1) + np.triu(d, 1).T
    positive = rng.random((b, b)) < p_pos
    negative = ~positive & (rng.random((b, b)) < p_neg)
    np.fill_diagonal(positive, False)
    np.fill_diagonal(negative, False)
    d = np.where(positive, d * pull, d)
    if levels:
        d = np.round(d * levels) / levels
    return d.astype(np.float32), positive, negative


def special_cases():
    """Named (distances, positive, negative, margin): the edge cases of the definitions."""
    d, positive, negative = random_case(50)
    none = np.zeros_like(positive)
    one_valid_pos, one_valid_neg = none.copy(), none.copy()
    one_valid_pos[2, [0, 5]] = True
    one_valid_neg[2, [1, 3, 7]] = True
    no_negatives = positive.copy(), np.zeros_like(negative)
    only_some = positive.copy(), negative.copy()
    only_some[1][:4] = False  # anchors 0-3 have positives but no negatives
    tied, tied_pos, tied_neg = random_case(51, b=10, levels=2)  # distances in steps of 0.5, margin 0.5
    # all inactive: positives at distance < 0.1, negatives beyond 3
    near_far = np.where(positive, 0.1 * d / 4, 3.0 + d / 4).astype(np.float32)
    # every triplet active (and hard): positives beyond 3, negatives nearer than 1
    far_near = np.where(positive, 3.0 + d / 4, d / 4).astype(np.float32)
    two = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    return {
        "no_valid_anchor": (d, none, negative, 0.2),
        "no_mask_at_all": (d, none, none, 0.2),
        "one_valid_anchor": (d, one_valid_pos, one_valid_neg, 0.2),
        "positives_without_negatives": (d, *no_negatives, 0.2),
        "some_anchors_without_negatives": (d, *only_some, 0.2),
        "ties": (tied, tied_pos, tied_neg, 0.5),
        "all_inactive": (near_far, positive, negative, 0.2),
        "all_active": (far_near, positive, negative, 0.2),
        "identical_points": (np.zeros_like(d), positive, negative, 0.2),
        "batch_of_two": (
            two,
            np.array([[False, True], [False, False]]),
            np.array([[False, False], [True, False]]),
            0.2,
        ),
        "batch_of_three": (
            d[:3, :3],
            np.array([[0, 1, 0], [0, 0, 0], [0, 0, 0]], bool),
            np.array([[0, 0, 1], [0, 0, 0], [0, 0, 0]], bool),
            0.2,
        ),
    }


def _run(d, positive, negative, margin=0.2, mode="batch_hard", soft_margin=False, block_size=None):
    """Values (loss, valid, active) and the gradient of the loss w.r.t. the distances, as numpy."""
    import tensorflow as tf

    variable = tf.Variable(np.asarray(d, np.float32))
    with tf.GradientTape() as tape:
        out = mining.triplet_terms(variable, positive, negative, margin, mode, soft_margin, block_size)
    grad = tape.gradient(out[0], variable)
    grad = np.zeros(variable.shape, np.float32) if grad is None else grad.numpy()
    return np.array([float(v) for v in out]), grad


def _assert_close(got, want, scale=1.0):
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL * scale)


# --------------------------------------------------------------------------- brute force


@pytest.mark.parametrize("mode,soft_margin", CASES)
def test_matches_brute_force_on_random_cases(mode, soft_margin):
    active_shares, hard = [], []
    for seed, (b, p_pos, p_neg) in enumerate([(9, 0.3, 0.5), (12, 0.15, 0.7), (7, 0.5, 0.4), (16, 0.1, 0.9)]):
        d, positive, negative = random_case(seed, b, p_pos, p_neg)
        want = brute_force(d, positive, negative, 0.2, mode, soft_margin)
        got, grad = _run(d, positive, negative, 0.2, mode, soft_margin)
        _assert_close(got, want, scale=4.0)
        assert want[1] > 0 and np.all(np.isfinite(grad))
        active_shares.append(want[2])
        hard += [
            d[a][positive[a]].max() > d[a][negative[a]].min()
            for a in range(b)
            if positive[a].any() and negative[a].any()
        ]
    assert any(0 < share < 1 for share in active_shares)  # neither all active nor none
    assert 0 < np.mean(hard) < 1  # batch-hard triplets of both kinds (sct treats them differently)


@pytest.mark.parametrize("mode,soft_margin", CASES)
@pytest.mark.parametrize("case", list(special_cases()))
def test_edge_cases_match_brute_force(mode, soft_margin, case):
    d, positive, negative, margin = special_cases()[case]
    want = brute_force(d, positive, negative, margin, mode, soft_margin)
    got, grad = _run(d, positive, negative, margin, mode, soft_margin)
    _assert_close(got, want, scale=4.0)
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(grad))
    if want[1] == 0:  # nothing valid: exactly zero, with a zero gradient
        assert got[0] == 0.0 and got[2] == 0.0 and not np.any(grad)
    if case == "all_inactive":
        assert want[2] == 0.0 and (soft_margin or want[0] == 0.0)
    if case == "all_active":
        assert want[2] == 1.0


def test_edge_cases_are_what_their_names_say():
    cases = special_cases()
    assert brute_force(*cases["one_valid_anchor"][:3])[1] == pytest.approx(1 / 9)
    assert brute_force(*cases["batch_of_three"][:3])[1] == pytest.approx(1 / 3)
    d, pos, neg, margin = cases["ties"]
    gaps = (d[:, :, None] - d[:, None, :] + margin)[pos[:, :, None] & neg[:, None, :]]
    assert np.any(gaps == 0) and np.any(d[pos][:, None] == d[neg][None, :])  # ties at the hinge and between pairs
    for case in ("no_valid_anchor", "no_mask_at_all", "positives_without_negatives", "batch_of_two"):
        assert brute_force(*cases[case][:3])[1] == 0.0


def test_hand_computed_cases():
    d = np.array([[0.0, 2.0, 1.0, 1.5], [2.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0], [1.5, 1.0, 1.0, 0.0]], np.float32)
    positive = np.zeros((4, 4), bool)
    negative = np.zeros((4, 4), bool)
    positive[0, 1] = True  # d_ap = 2
    negative[0, [2, 3]] = True  # d_an = 1, 1.5
    margin = 0.25
    # batch_hard: 2 − 1 + 0.25; paper_literal: the same pair set, nearest p = 2, farthest n = 1.5
    assert _run(d, positive, negative, margin, "batch_hard")[0][0] == pytest.approx(1.25)
    assert _run(d, positive, negative, margin, "paper_literal")[0][0] == pytest.approx(0.75)
    # batch_all: (1.25 + 0.75) / 2; semi_hard: no negative farther than 2, so the farthest (1.5)
    assert _run(d, positive, negative, margin, "batch_all")[0][0] == pytest.approx(1.0)
    assert _run(d, positive, negative, margin, "semi_hard")[0][0] == pytest.approx(0.75)
    # sct: the batch-hard triplet is hard (1 < 2): term 1 − 1/2, gradient on d_an only
    values, grad = _run(d, positive, negative, margin, "sct")
    assert values.tolist() == [0.5, 0.25, 1.0]
    assert grad[0, 2] == pytest.approx(-0.5) and np.count_nonzero(grad) == 1
    # a hard triplet is active even where its hinge would not be (margin −1.5: 2 − 1 − 1.5 < 0)
    assert _run(d, positive, negative, -1.5, "sct")[0].tolist() == [0.5, 0.25, 1.0]
    assert _run(d, positive, negative, -1.5, "batch_hard")[0].tolist() == [0.0, 0.25, 0.0]
    # soft margin: softplus(2 − 1)
    assert _run(d, positive, negative, margin, "batch_hard", True)[0][0] == pytest.approx(np.log1p(np.e))


def test_sct_easy_triplets_are_plain_hinges():
    d = np.array([[0.0, 1.0, 1.1], [1.0, 0.0, 1.0], [1.1, 1.0, 0.0]], np.float32)
    positive = np.array([[0, 1, 0], [0, 0, 0], [0, 0, 0]], bool)
    negative = np.array([[0, 0, 1], [0, 0, 0], [0, 0, 0]], bool)
    values, grad = _run(d, positive, negative, 0.2, "sct")
    assert values[0] == pytest.approx(0.1, abs=1e-6) and values[2] == 1.0
    assert grad[0, 1] == pytest.approx(1.0) and grad[0, 2] == pytest.approx(-1.0)


# --------------------------------------------------------------------------- gradients


def _embedding_case(seed=0, b=8, dim=3, margin=0.2, min_gap=2e-3):
    """Embeddings [b, dim] (float64) whose distances are away from every tie and hinge kink."""
    for s in range(seed, seed + 200):
        rng = np.random.default_rng(s)
        e = 0.8 * rng.standard_normal((b, dim))
        d = ((e[:, None] - e[None]) ** 2).sum(-1)
        positive = rng.random((b, b)) < 0.3
        negative = ~positive & (rng.random((b, b)) < 0.6)
        np.fill_diagonal(positive, False)
        np.fill_diagonal(negative, False)
        rows = [np.sort(d[a][np.arange(b) != a]) for a in range(b)]
        kinks = (d[:, :, None] - d[:, None, :] + margin)[positive[:, :, None] & negative[:, None, :]]
        valid = positive.any(1) & negative.any(1)
        if min(np.diff(r).min() for r in rows) > min_gap and np.abs(kinks).min() > min_gap and valid.sum() >= b // 2:
            return e, positive, negative
    raise AssertionError("no tie-free case found")


def _numpy_distances(e):
    return ((e[:, None] - e[None]) ** 2).sum(-1)


@pytest.mark.parametrize("mode,soft_margin", CASES)
def test_gradient_matches_finite_differences(mode, soft_margin):
    import tensorflow as tf

    margin = _margin(mode)
    e, positive, negative = _embedding_case(margin=margin)
    variable = tf.Variable(e.astype(np.float32))
    with tf.GradientTape() as tape:
        loss = mining.triplet_terms(losses.squared_distances(variable), positive, negative, margin, mode, soft_margin)[
            0
        ]
    grad = tape.gradient(loss, variable).numpy()
    h = 1e-6
    numeric = np.zeros_like(e)
    for index in np.ndindex(e.shape):
        step = np.zeros_like(e)
        step[index] = h
        plus = brute_force(_numpy_distances(e + step), positive, negative, margin, mode, soft_margin)[0]
        minus = brute_force(_numpy_distances(e - step), positive, negative, margin, mode, soft_margin)[0]
        numeric[index] = (plus - minus) / (2 * h)
    assert np.abs(numeric).max() > 0.05  # the loss depends on the embeddings
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=2e-5)


# --------------------------------------------------------------------------- the old dense code


def _realistic_batch(b=64, dim=32, seed=0):
    """Unit-norm embeddings and the masks of clustered LSI vectors with albums of four (as in training)."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((8, 16))
    lsi = (topics[rng.integers(0, 8, b)] + 0.3 * rng.standard_normal((b, 16))).astype(np.float32)
    positive, negative = losses.pair_masks(lsi, np.arange(b) // 4)
    e = rng.standard_normal((b, dim))
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32), positive, negative


@pytest.mark.parametrize("mode", ["batch_all", "semi_hard", "batch_hard", "paper_literal"])
@pytest.mark.parametrize("block_size", [None, 5])
def test_equals_the_dense_implementation(mode, block_size):
    import tensorflow as tf

    e, positive, negative = _realistic_batch()
    assert 0.05 < np.mean(positive.numpy()) < 0.3 and np.mean(negative.numpy()) > 0.5
    results = []
    margin = _margin(mode)
    for fn in (
        lambda d: mining.triplet_terms(d, positive, negative, margin, mode, block_size=block_size),
        lambda d: _dense_reference(d, positive, negative, margin, mode),
    ):
        variable = tf.Variable(e)
        with tf.GradientTape() as tape:
            out = fn(losses.squared_distances(variable))
        results.append(([float(v) for v in out], tape.gradient(out[0], variable).numpy()))
    (got, got_grad), (want, want_grad) = results
    assert want[0] > 0 and (0 < want[2] < 1 or mode == "batch_hard")
    _assert_close(got, want)
    np.testing.assert_allclose(got_grad, want_grad, atol=TOL * np.abs(want_grad).max(), rtol=0)


@pytest.mark.parametrize("mode", ["batch_all", "semi_hard", "batch_hard", "paper_literal"])
@pytest.mark.parametrize("block_size", [None, 3])
def test_ties_share_the_gradient_as_the_dense_implementation(mode, block_size):
    """At exactly tied distances the gradient is not unique: ours is the dense one (shared equally)."""
    import tensorflow as tf

    d, positive, negative, margin = special_cases()["ties"]
    d = np.where(np.eye(len(d), dtype=bool), 0.0, d + 0.25).astype(np.float32)  # no zero distances off the diagonal
    margin = 2.0 if mode == "paper_literal" else 0.75  # not the step of 0.5: tied negatives with active hinges
    got_values, got_grad = _run(d, positive, negative, margin, mode, block_size=block_size)
    variable = tf.Variable(d)
    with tf.GradientTape() as tape:
        want = _dense_reference(variable, positive, negative, margin, mode)
    want_grad = tape.gradient(want[0], variable).numpy()
    _assert_close(got_values, [float(v) for v in want])
    np.testing.assert_allclose(got_grad, want_grad, rtol=TOL, atol=TOL * np.abs(want_grad).max())
    assert np.any((want_grad != 0) & (np.abs(want_grad) < np.abs(want_grad).max()))  # shares, not only one weight


# --------------------------------------------------------------------------- blocks, XLA, graphs, replicas


@pytest.mark.parametrize(
    "mode,soft_margin", [("batch_all", False), ("batch_all", True), ("semi_hard", False), ("semi_hard", True)]
)
@pytest.mark.parametrize("levels,margin", [(None, 0.2), (2, 0.5)])  # random; ties in steps of 0.5
def test_block_sizes_agree(mode, soft_margin, levels, margin):
    d, positive, negative = random_case(7, b=11, p_pos=0.3, p_neg=0.5, levels=levels)
    base_values, base_grad = _run(d, positive, negative, margin, mode, soft_margin)
    _assert_close(base_values, brute_force(d, positive, negative, margin, mode, soft_margin), scale=4.0)
    for block_size in (1, 3, 11, 40):
        values, grad = _run(d, positive, negative, margin, mode, soft_margin, block_size)
        _assert_close(values, base_values)
        np.testing.assert_allclose(grad, base_grad, rtol=TOL, atol=TOL * np.abs(base_grad).max())
    assert np.count_nonzero(base_grad) > 2


@pytest.mark.parametrize("pairs_per_chunk", [1, 3, 7, 1000])
def test_soft_batch_all_chunks_of_positive_pairs(monkeypatch, pairs_per_chunk):
    """Several chunks (the last one partly padding) give the same as blocks of anchors and the loops."""
    cases = [
        random_case(8, b=12, p_pos=0.3, p_neg=0.5),
        special_cases()["no_valid_anchor"][:3],
        special_cases()["one_valid_anchor"][:3],
    ]
    want = [_run(*case, 0.2, "batch_all", True, 4) for case in cases]
    monkeypatch.setattr(mining, "_CHUNK_ELEMENTS", pairs_per_chunk * 12)
    for case, (want_values, want_grad) in zip(cases, want):
        values, grad = _run(*case, 0.2, "batch_all", True)
        _assert_close(values, want_values)
        _assert_close(values, brute_force(*case, 0.2, "batch_all", True), scale=4.0)
        np.testing.assert_allclose(grad, want_grad, rtol=TOL, atol=TOL * max(np.abs(want_grad).max(), 1e-3))
    assert np.sum(cases[0][1][cases[0][2].any(1)]) > 20  # the random case has many positive pairs: many chunks


def _loss_and_gradient(mode, soft_margin, block_size=None, of="embeddings"):
    """fn(x, positive, negative) -> ((loss, valid, active), ∂ loss / ∂ x); x: embeddings or distances."""
    import tensorflow as tf

    def fn(x, positive, negative):
        with tf.GradientTape() as tape:
            tape.watch(x)
            d = losses.squared_distances(x) if of == "embeddings" else x
            out = mining.triplet_terms(d, positive, negative, _margin(mode), mode, soft_margin, block_size)
        return out, tape.gradient(out[0], x)

    return fn


@pytest.mark.parametrize("mode,soft_margin", CASES)
def test_xla_equals_eager(mode, soft_margin):
    import tensorflow as tf

    e, positive, negative = _realistic_batch(b=24, dim=8, seed=3)
    fn = _loss_and_gradient(mode, soft_margin)
    eager_out, eager_grad = fn(tf.constant(e), positive, negative)
    out, grad = tf.function(fn, jit_compile=True)(tf.constant(e), positive, negative)
    _assert_close([float(v) for v in out], [float(v) for v in eager_out])
    assert float(eager_out[0]) > 0
    np.testing.assert_allclose(grad.numpy(), eager_grad.numpy(), rtol=TOL, atol=TOL * np.abs(eager_grad.numpy()).max())


@pytest.mark.parametrize("jit_compile", [False, True])
def test_dynamic_batch_dimension_and_blocks_in_graphs(jit_compile):
    """Traced once for [None, None] inputs, then run at two batch sizes.

    The input is the distances: the gradient of ``losses.squared_distances``
    (its ``set_diag``) does not compile with XLA at a dynamic batch size.
    """
    import tensorflow as tf

    signature = [
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None, None], tf.bool),
        tf.TensorSpec([None, None], tf.bool),
    ]
    for mode, soft_margin, block_size in [
        ("batch_all", False, None),
        ("semi_hard", False, None),
        ("batch_all", True, None),
        ("batch_all", False, 5),
        ("semi_hard", True, 5),
        ("sct", False, None),
    ]:
        fn = _loss_and_gradient(mode, soft_margin, block_size, of="distances")
        graph = tf.function(fn, input_signature=signature, jit_compile=jit_compile)
        for b in (13, 24):
            e, positive, negative = _realistic_batch(b=b, dim=8, seed=b)
            d = losses.squared_distances(e)
            eager_out, eager_grad = fn(d, positive, negative)
            out, grad = graph(d, positive, negative)
            _assert_close([float(v) for v in out], [float(v) for v in eager_out])
            np.testing.assert_allclose(
                grad.numpy(), eager_grad.numpy(), rtol=TOL, atol=TOL * np.abs(eager_grad.numpy()).max()
            )
            assert np.abs(eager_grad.numpy()).max() > 0
        assert graph.experimental_get_tracing_count() == 1


def test_runs_in_a_replica_context():
    import tensorflow as tf

    e, positive, negative = _realistic_batch(b=16, dim=8, seed=4)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    fn = _loss_and_gradient("semi_hard", False)
    seen = []

    def replica_fn(*args):
        seen.append(tf.distribute.get_strategy() is strategy and not tf.distribute.in_cross_replica_context())
        return fn(*args)

    @tf.function
    def step():
        return strategy.run(replica_fn, args=(tf.constant(e), positive, negative))

    with strategy.scope():
        (loss, _, _), grad = step()
    want, want_grad = fn(tf.constant(e), positive, negative)
    assert seen == [True]
    assert float(loss) == pytest.approx(float(want[0]), rel=TOL)
    np.testing.assert_allclose(grad.numpy(), want_grad.numpy(), atol=TOL)


# --------------------------------------------------------------------------- arguments, import


def test_rejects_bad_arguments():
    from msd_triplet.errors import ArgumentError

    d, positive, negative = random_case(0, b=4)
    with pytest.raises(ArgumentError, match="mining 'hardest': expected one of batch_hard"):
        mining.triplet_terms(d, positive, negative, mining="hardest")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"block_size {bad!r}: expected None or a positive integer"):
            mining.triplet_terms(d, positive, negative, mining="batch_all", block_size=bad)


def test_import_has_no_side_effects():
    code = "import sys, msd_triplet.mining as m; print(sorted({'tensorflow', 'keras'} & set(sys.modules)), m.MINING)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"[] {mining.MINING}"
