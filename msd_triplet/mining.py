"""Triplet mining over one batch's [B, B] distances, in B × B memory (no [B, B, B] tensor).

Input: squared distances ``d`` [B, B] and boolean masks ``positive`` and
``negative`` [B, B] (see :mod:`msd_triplet.losses`). An anchor is *valid*
when it has at least one positive and one negative; only valid anchors
contribute. Per triplet (a, p, n) the term is the hinge
max(0, d_ap − d_an + margin), or with ``soft_margin`` softplus(d_ap − d_an)
(Hermans, Beyer & Leibe 2017, "In defense of the triplet loss"); a triplet
is *active* when d_ap − d_an + margin > 0, with or without soft margin, so
the statistic means the same in both.

Modes (:data:`MINING`), each a mean of its terms:

* ``batch_hard`` — per valid anchor the farthest positive and the nearest negative.
* ``paper_literal`` — per valid anchor the nearest positive and the farthest negative.
* ``batch_all`` — every (a, p, n) of a valid anchor. Hard margin: mean over the
  *active* triplets. Soft margin: mean over *all* triplets of valid anchors
  (softplus is never exactly 0, so "the active ones" would be all of them).
* ``semi_hard`` — per positive pair (a, p) of a valid anchor the nearest
  negative farther than p, else the farthest negative.
* ``sct`` — selectively contrastive triplets (Xuan, Stylianou, Liu & Pless,
  ECCV 2020, "Hard negative examples are hard, but useful") on the
  batch-hard triplet of each valid anchor: a *hard* triplet (d_an < d_ap)
  contributes S_an = 1 − d_an / 2 (the cosine of anchor and negative when
  the embeddings have unit norm), whose gradient pushes the negative away and
  never pulls the positive in; any other triplet contributes the usual term.
  Hard triplets count as active (also when d_an >= 2, where S_an <= 0).

The share of active triplets is over the triplets of the mode: one per valid
anchor (``batch_hard``, ``paper_literal``, ``sct``), one per positive pair
of a valid anchor (``semi_hard``), every (a, p, n) of a valid anchor
(``batch_all``). A batch without a valid anchor gives loss 0 with a zero
gradient; masked reductions use finite fill values, so nothing is inf or NaN.
Where distances tie exactly, the gradient is shared equally among the tied
entries (as ``tf.reduce_min`` / ``reduce_max`` share it), and a hinge at
exactly 0 is inactive with a zero gradient: the gradient equals that of the
dense [B, B, B] implementation these functions replace.

How ``batch_all`` and ``semi_hard`` avoid [B, B, B]
---------------------------------------------------
Each anchor's row of negative distances is sorted once (O(B² log B) time, B²
memory). ``semi_hard``: the nearest negative farther than d_ap is the
``searchsorted`` (side right) of d_ap in that row; its gradient is shared
among the negatives tied at that distance (prefix sums over the sorted row),
as ``tf.reduce_min`` shares it.
``batch_all`` with a hard margin is piecewise linear in ``d``: with
c_ap = #{n: d_an < d_ap + margin} and c_an = #{p: d_ap + margin > d_an}
(two ``searchsorted``), the sum of the active hinges is
Σ c_ap (d_ap + margin) − Σ c_an d_an, summed in float64 (the two sums nearly
cancel when few triplets are active), and its gradient is c_ap and −c_an.
The searches are binary searches written as a ``tf.while_loop`` of gathers
(``tf.searchsorted`` compiles under XLA into a [B, B, B] comparison).

``batch_all`` with a soft margin is not piecewise linear, so every triplet
is evaluated, but only those of positive pairs: the K positive pairs of
valid anchors are taken in chunks of c = min(2**22 // B, B²) pairs, each a
[c, B] computation against the anchors' negatives (K·B work, about B³/8 for
realistic masks, 16 MB per chunk tensor) that adds the softplus sum and the
sigmoid weights that form the gradient.

An explicit ``block_size`` runs ``batch_all`` and ``semi_hard`` (hard or
soft) by blocks of ``block_size`` anchors instead, each block comparing
every (a, p, n) of its anchors in [b, B, B] tensors (O(B³) time): the direct
computation the fast paths are tested against. Loops run one iteration at a
time (``parallel_iterations=1``) on ``tf.stop_gradient`` inputs and return
counts, indices or gradient weights, so the gradient tape keeps nothing of
them: the gradient is a [B, B] computation in every mode.
"""

from __future__ import annotations

from msd_triplet.errors import ArgumentError

MINING = ("batch_hard", "paper_literal", "batch_all", "semi_hard", "sct")
_CHUNK_ELEMENTS = 2**22  # elements of one [c, B] float32 chunk of positive pairs: 16 MB


def _tf():
    import tensorflow as tf

    return tf


def triplet_terms(
    distances,
    positive,
    negative,
    margin: float = 0.2,
    mining: str = "batch_hard",
    soft_margin: bool = False,
    block_size: int | None = None,
):
    """The mined triplet terms: (loss scalar, share of valid anchors, share of active triplets).

    Parameters
    ----------
    distances : float32 [B, B]
        Squared embedding distances, d[a, j] = ‖e_a − e_j‖² (>= 0).
    positive, negative : bool [B, B]
        Which j are positives / negatives of anchor a (no diagonal).
    margin : float
        Of the hinge; with ``soft_margin`` it only defines "active".
    mining : str
        One of :data:`MINING` (see the module docstring).
    soft_margin : bool
        softplus(d_ap − d_an) instead of max(0, d_ap − d_an + margin).
    block_size : int or None
        None (default): the fast paths, the sorted B × B one for hard
        ``batch_all`` and ``semi_hard``, chunks of positive pairs for soft
        ``batch_all``. An int: ``batch_all`` and ``semi_hard`` compare every
        triplet directly, by blocks of that many anchors ([b, B, B] tensors,
        O(B³) time; a cross-check, not for training). Ignored by the
        per-anchor modes.

    Returns
    -------
    loss, valid_share, active_share : float32 scalars
    """
    if mining not in MINING:
        raise ArgumentError(f"mining {mining!r}: expected one of {', '.join(MINING)}")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
        raise ArgumentError(f"block_size {block_size!r}: expected None or a positive integer")
    tf = _tf()
    d = tf.convert_to_tensor(distances, tf.float32)
    positive = tf.convert_to_tensor(positive, tf.bool)
    negative = tf.convert_to_tensor(negative, tf.bool)
    valid = tf.logical_and(tf.reduce_any(positive, axis=1), tf.reduce_any(negative, axis=1))
    valid_share = tf.reduce_mean(tf.cast(valid, tf.float32))
    pos_pairs = tf.logical_and(positive, valid[:, None])  # [a, p] of valid anchors
    if mining == "batch_all":
        loss, active_share = _batch_all(d, pos_pairs, negative, valid, margin, soft_margin, block_size)
        return loss, valid_share, active_share
    if mining == "semi_hard":
        d_an = _semi_hard(d, negative, block_size)
        term, active = _terms(d, d_an, margin, soft_margin)
        weights = tf.cast(pos_pairs, tf.float32)
        return safe_mean(term, weights), valid_share, safe_mean(tf.cast(active, tf.float32), weights)
    high, low = _fills(d)
    if mining == "paper_literal":
        d_ap, d_an = masked_min(d, positive, high), masked_max(d, negative, low)
    else:
        d_ap, d_an = masked_max(d, positive, low), masked_min(d, negative, high)
    term, active = _terms(d_ap, d_an, margin, soft_margin)
    if mining == "sct":
        hard = d_an < d_ap
        term = tf.where(hard, 1.0 - 0.5 * d_an, term)
        active = tf.logical_or(hard, active)
    weights = tf.cast(valid, tf.float32)
    return safe_mean(term, weights), valid_share, safe_mean(tf.cast(active, tf.float32), weights)


# --------------------------------------------------------------------------- shared pieces


def _fills(d):
    """Finite fill values (above, below) every distance, outside the gradient."""
    tf = _tf()
    d = tf.stop_gradient(d)
    return tf.reduce_max(d) + 1.0, tf.reduce_min(d) - 1.0


def masked_max(values, mask, fill):
    tf = _tf()
    return tf.reduce_max(tf.where(mask, values, tf.fill(tf.shape(values), fill)), axis=-1)


def masked_min(values, mask, fill):
    tf = _tf()
    return tf.reduce_min(tf.where(mask, values, tf.fill(tf.shape(values), fill)), axis=-1)


def safe_mean(values, weights):
    """Σ values·weights / max(Σ weights, 1): 0 (and zero gradient) when nothing is weighted."""
    tf = _tf()
    return tf.reduce_sum(values * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def _terms(d_ap, d_an, margin, soft_margin):
    """(term, active) of triplets with distances d_ap, d_an (same shape)."""
    tf = _tf()
    gap = d_ap - d_an
    active = gap + margin > 0
    term = tf.nn.softplus(gap) if soft_margin else tf.nn.relu(gap + margin)
    return term, active


def _counts(mask):
    tf = _tf()
    return tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)


def _searchsorted(rows, queries, side):
    """Per row, the insertion index of each query in the ascending ``rows`` [B, n] (``tf.searchsorted``).

    A binary search of ~log2(n) steps over [B, Q] tensors: ``tf.searchsorted``
    compiles under XLA into a comparison of every query with every value,
    a [B, Q, n] tensor (2.5 GB at B = 600).
    """
    tf = _tf()
    size = tf.shape(rows)[1]
    low = tf.zeros(tf.shape(queries), tf.int32)
    high = tf.fill(tf.shape(queries), size)

    def step(low, high):
        middle = (low + high) // 2
        value = tf.gather(rows, tf.minimum(middle, size - 1), batch_dims=1)
        right = value < queries if side == "left" else value <= queries
        searching = low < high
        return (tf.where(searching & right, middle + 1, low), tf.where(searching & tf.logical_not(right), middle, high))

    low, _ = tf.while_loop(lambda low, high: tf.reduce_any(low < high), step, (low, high))
    return low


def _by_anchor_blocks(body, rows, block_size, output_dtypes):
    """``body`` over blocks of anchor rows: [B, B] inputs → [B, B] outputs, one block at a time.

    ``rows`` are [B, B] tensors cut into [b, B] blocks (the last one padded
    with zeros / False, and the padding cut off the outputs); ``body`` maps
    the blocks of ``rows`` to a tuple of [b, B] tensors of ``output_dtypes``.
    """
    tf = _tf()
    size = tf.shape(rows[0])[0]
    block = tf.minimum(tf.constant(block_size, tf.int32), tf.maximum(size, 1))
    blocks = (size + block - 1) // block
    padding = [[0, blocks * block - size], [0, 0]]
    stacked = tuple(tf.reshape(tf.pad(r, padding), [blocks, block, size]) for r in rows)
    outputs = tf.map_fn(
        lambda xs: body(*xs),
        stacked,
        parallel_iterations=1,
        fn_output_signature=tuple(tf.TensorSpec(None, t) for t in output_dtypes),
    )
    return tuple(tf.reshape(o, [blocks * block, size])[:size] for o in outputs)


# --------------------------------------------------------------------------- semi_hard


def _semi_hard(d, negative, block_size):
    """d_an [a, p]: the nearest negative of a farther than p, else the farthest negative of a.

    The gradient of d_an is shared equally among the negatives at exactly
    that distance, as that of ``tf.reduce_min`` / ``reduce_max`` is (and so
    that of the dense implementation).
    """
    tf = _tf()
    high, low = _fills(d)
    masked = tf.where(negative, tf.stop_gradient(d), tf.fill(tf.shape(d), high))
    order = tf.argsort(masked, axis=1, stable=True)
    ascending = tf.gather(masked, order, batch_dims=1)  # a's negatives first, then the fills
    n_neg = _counts(negative)[:, None]
    if block_size is None:
        first_farther = _searchsorted(ascending, tf.stop_gradient(d), "right")  # #{values <= d_ap}
        nearest = tf.gather(ascending, tf.minimum(first_farther, tf.shape(d)[1] - 1), batch_dims=1)
        farthest = tf.gather(ascending, tf.maximum(n_neg - 1, 0), batch_dims=1)
        value = tf.where(first_farther < n_neg, nearest, farthest)
    else:
        value = _semi_hard_blocked(tf.stop_gradient(d), negative, block_size, high, low)
    # value + Σ over the t tied negatives of (d − stop_gradient(d)) / t: the value exactly, the shared gradient
    first, end = _searchsorted(ascending, value, "left"), _searchsorted(ascending, value, "right")
    zeros = tf.gather(d, order, batch_dims=1)
    zeros = zeros - tf.stop_gradient(zeros)
    prefix = tf.concat([tf.zeros_like(zeros[:, :1]), tf.cumsum(zeros, axis=1)], axis=1)  # [B, B + 1]
    tied = tf.gather(prefix, end, batch_dims=1) - tf.gather(prefix, first, batch_dims=1)
    return value + tied / tf.cast(tf.maximum(end - first, 1), tf.float32)


def _semi_hard_blocked(d, negative, block_size, high, low):
    """The d_an values of :func:`_semi_hard` by comparing every (a, p, n) of a block of anchors."""
    tf = _tf()

    def body(d_rows, negative_rows):
        farther = tf.logical_and(negative_rows[:, None, :], d_rows[:, None, :] > d_rows[:, :, None])  # [a, p, n]
        nearest = masked_min(tf.broadcast_to(d_rows[:, None, :], tf.shape(farther)), farther, high)
        farthest = masked_max(d_rows, negative_rows, low)
        return (tf.where(tf.reduce_any(farther, axis=-1), nearest, farthest[:, None]),)

    return _by_anchor_blocks(body, (d, negative), block_size, (tf.float32,))[0]


# --------------------------------------------------------------------------- batch_all


def _batch_all(d, pos_pairs, negative, valid, margin, soft_margin, block_size):
    """(loss, active share) of every triplet of the valid anchors."""
    tf = _tf()
    n_triplets = tf.reduce_sum(
        tf.cast(valid, tf.float64) * tf.cast(_counts(pos_pairs), tf.float64) * tf.cast(_counts(negative), tf.float64)
    )
    if soft_margin:
        if block_size is None:
            total, weights, n_active = _batch_all_soft_pairs(d, pos_pairs, negative, margin)
        else:
            total, weights, n_active = _batch_all_soft_blocked(d, pos_pairs, negative, margin, block_size)
        # value: the softplus sum; gradient: the sigmoid weights (the surrogate's value is exactly 0)
        surrogate = tf.reduce_sum(weights * d)
        total = tf.cast(total, tf.float32) + (surrogate - tf.stop_gradient(surrogate))
        denominator = tf.cast(tf.maximum(n_triplets, 1.0), tf.float32)
        return total / denominator, tf.cast(n_active / tf.maximum(n_triplets, 1.0), tf.float32)
    if block_size is None:
        per_positive, per_negative = _batch_all_counts_sorted(d, pos_pairs, negative, margin)
    else:
        per_positive, per_negative = _batch_all_counts_blocked(d, pos_pairs, negative, margin, block_size)
    per_positive = tf.cast(per_positive, tf.float64)
    # Σ over active triplets of d_ap + margin − d_an = Σ c_ap·d_ap − Σ c_an·d_an + margin·#active
    weights = per_positive - tf.cast(per_negative, tf.float64)
    n_active = tf.reduce_sum(per_positive)
    total = tf.reduce_sum(weights * tf.cast(d, tf.float64)) + margin * n_active
    loss = tf.cast(total / tf.maximum(n_active, 1.0), tf.float32)
    return loss, tf.cast(n_active / tf.maximum(n_triplets, 1.0), tf.float32)


def _batch_all_counts_sorted(d, pos_pairs, negative, margin):
    """Active triplets per positive pair, c_ap [a, p], and per negative pair, c_an [a, n] (int32)."""
    tf = _tf()
    d = tf.stop_gradient(d)
    high, low = _fills(d)
    size = tf.shape(d)[1]
    query = d + margin  # (a, p, n) is active when d_an < d_ap + margin
    negatives = tf.sort(tf.where(negative, d, tf.fill(tf.shape(d), high)), axis=1)  # fills last
    below = _searchsorted(negatives, query, "left")  # #{sorted values < d_ap + margin}
    per_positive = tf.minimum(below, _counts(negative)[:, None]) * tf.cast(pos_pairs, tf.int32)
    queries = tf.sort(tf.where(pos_pairs, query, tf.fill(tf.shape(d), low)), axis=1)  # fills first
    at_most = _searchsorted(queries, d, "right")  # fills + #{d_ap + margin <= d_an}
    per_negative = (size - at_most) * tf.cast(negative, tf.int32)
    return per_positive, per_negative


def _batch_all_counts_blocked(d, pos_pairs, negative, margin, block_size):
    """Same as :func:`_batch_all_counts_sorted` by comparing every (a, p, n) of a block of anchors."""
    tf = _tf()

    def body(d_rows, positive_rows, negative_rows):
        pos, neg = tf.cast(positive_rows, tf.float32), tf.cast(negative_rows, tf.float32)
        hinge_positive = tf.cast(d_rows[:, :, None] - d_rows[:, None, :] + margin > 0, tf.float32)  # [a, p, n]
        per_positive = tf.einsum("apn,an->ap", hinge_positive, neg) * pos
        per_negative = tf.einsum("apn,ap->an", hinge_positive, pos) * neg
        return tf.cast(per_positive, tf.int32), tf.cast(per_negative, tf.int32)

    return _by_anchor_blocks(body, (tf.stop_gradient(d), pos_pairs, negative), block_size, (tf.int32, tf.int32))


def _batch_all_soft_pairs(d, pos_pairs, negative, margin):
    """(Σ softplus (float64), its gradient w.r.t. d [B, B], #active (float64)) over chunks of positive pairs.

    The K positive pairs (a, p) of valid anchors are listed first in a [B²]
    index (a stable argsort), then taken c = max(1, min(2**22 // B, B²)) at a time:
    each chunk is a [c, B] computation against the anchors' rows of
    distances and negatives; K·B work instead of B³, static shapes for XLA.
    """
    tf = _tf()
    d = tf.stop_gradient(d)
    size = tf.shape(d)[0]
    flat = tf.reshape(pos_pairs, [-1])
    n_pairs = tf.reduce_sum(tf.cast(flat, tf.int32))
    chunk = tf.maximum(1, tf.minimum(_CHUNK_ELEMENTS // tf.maximum(size, 1), size * size))
    most_chunks = (size * size + chunk - 1) // chunk
    order = tf.argsort(tf.cast(tf.logical_not(flat), tf.int32), stable=True)  # positive pairs first
    order = tf.reshape(tf.pad(order, [[0, most_chunks * chunk - size * size]]), [most_chunks, chunk])
    negative = tf.cast(negative, tf.float32)

    def body(i, total, n_active, weights):
        index = tf.gather(order, i)  # [c] flat indices a·B + p
        anchor, other = index // size, index % size
        live = tf.cast(tf.range(chunk) + i * chunk < n_pairs, tf.float32)
        rows = tf.gather(d, anchor)  # [c, B]: d_a·
        negatives = tf.gather(negative, anchor) * live[:, None]
        gap = tf.gather(rows, other, batch_dims=1)[:, None] - rows  # d_ap − d_an
        slope = tf.sigmoid(gap) * negatives  # ∂ softplus(d_ap − d_an) / ∂ d_ap = −∂ / ∂ d_an
        total += tf.reduce_sum(tf.cast(tf.reduce_sum(tf.nn.softplus(gap) * negatives, 1), tf.float64))
        n_active += tf.reduce_sum(
            tf.cast(tf.reduce_sum(tf.cast(gap + margin > 0, tf.float32) * negatives, 1), tf.float64)
        )
        weights = tf.tensor_scatter_nd_add(weights, tf.stack([anchor, other], 1), tf.reduce_sum(slope, 1))
        weights = tf.tensor_scatter_nd_add(weights, anchor[:, None], -slope)
        return i + 1, total, n_active, weights

    zero = tf.constant(0.0, tf.float64)
    _, total, n_active, weights = tf.while_loop(
        lambda i, *_: i < (n_pairs + chunk - 1) // chunk,
        body,
        (tf.constant(0), zero, zero, tf.zeros_like(d)),
        parallel_iterations=1,
    )
    return total, weights, n_active


def _batch_all_soft_blocked(d, pos_pairs, negative, margin, block_size):
    """Same as :func:`_batch_all_soft_pairs` by blocks of anchors, every (a, p, n) of a block."""
    tf = _tf()

    def body(d_rows, positive_rows, negative_rows):
        pos, neg = tf.cast(positive_rows, tf.float32), tf.cast(negative_rows, tf.float32)
        gap = d_rows[:, :, None] - d_rows[:, None, :]  # [a, p, n]: d_ap − d_an
        softplus_sums = tf.einsum("apn,an->ap", tf.nn.softplus(gap), neg) * pos
        slope = tf.sigmoid(gap)  # ∂ softplus(d_ap − d_an) / ∂ d_ap = −∂ / ∂ d_an
        weights = tf.einsum("apn,an->ap", slope, neg) * pos - tf.einsum("apn,ap->an", slope, pos) * neg
        active = tf.einsum("apn,an->ap", tf.cast(gap + margin > 0, tf.float32), neg) * pos
        return softplus_sums, weights, active

    softplus_sums, weights, active = _by_anchor_blocks(
        body, (tf.stop_gradient(d), pos_pairs, negative), block_size, (tf.float32, tf.float32, tf.float32)
    )
    return (tf.reduce_sum(tf.cast(softplus_sums, tf.float64)), weights, tf.reduce_sum(tf.cast(active, tf.float64)))
