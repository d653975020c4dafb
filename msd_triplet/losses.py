"""The LSI-masked triplet loss (paper III-A, SPEC section 6): pure TF functions + one Keras loss.

Per batch of B tracks: embeddings E [B, d], LSI vectors L [B, k], album ids A [B].

1. :func:`lsi_cosine` — cosine similarity of the L2-normalised rows of L,
   diagonal 0; an all-zero LSI row (a track without a topic, see
   :meth:`msd_triplet.lsi.LsiModel.transform`) has cosine 0 with everyone,
   and :func:`pair_masks` makes it neither a positive nor a negative. Other relatedness
   kinds (Jaccard overlap of binary tags, label equality) for the ablation:
   :mod:`msd_triplet.relatedness`.
2. :func:`pair_masks` — positives: relatedness >= 0.8, negatives: < 0.2;
   never i = j, never a zero LSI row; with the album filter, pairs from one album are neither.
3. :func:`squared_distances` — ‖e_i − e_j‖², without a square root (its
   gradient at 0 is infinite), clipped at 0.
4. :func:`triplet_terms` — mining (:mod:`msd_triplet.mining`, all in B × B
   memory): ``batch_hard`` (per anchor the farthest positive and the nearest
   negative; default), ``paper_literal`` (nearest positive and farthest
   negative, as the paper's text reads), ``batch_all`` (every triplet; mean
   over the active ones), ``semi_hard`` (per positive pair the nearest
   negative farther than the positive, else the farthest) and ``sct``
   (batch-hard, where a hard triplet only pushes its negative away; Xuan et
   al. 2020); optionally with a soft margin (softplus, Hermans et al. 2017).
5. loss = mean over valid anchors (>= 1 positive and >= 1 negative) of
   max(0, d_ap − d_an + margin); 0 with a zero gradient when no anchor is
   valid. Every masked reduction uses finite fill values, so nothing is ever
   inf or NaN, whatever the batch.

:class:`LsiTripletLoss` wires them for ``model.fit``: ``y_true`` is
``float32 [B, k + 1]`` = the LSI (or relatedness) vector followed by the album id (an integer
index stored as a float; exact below 2**24), see :func:`pack_targets`.
:class:`TripletStatistic` reports the collapse signals as Keras metrics.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from msd_triplet.errors import ArgumentError
from msd_triplet.mining import MINING, masked_max, masked_min, safe_mean
from msd_triplet.relatedness import KINDS, ZERO_NORM, relatedness_matrix

STATISTICS = (
    "valid_anchors",
    "active_triplets",
    "hard_triplets",
    "positive_distance",
    "negative_distance",
    "embedding_spread",
)
_ZERO_NORM = ZERO_NORM  # a zero LSI row: in no pair (relatedness.ZERO_NORM)


def _tf():
    import tensorflow as tf

    return tf


def pack_targets(lsi_vectors: np.ndarray, album_ids: np.ndarray) -> np.ndarray:
    """``y_true`` for :class:`LsiTripletLoss`: float32 [B, k + 1] = LSI vector, then album index.

    ``album_ids`` are any labels; they are mapped to dense integer indices
    (exact in float32 up to 2**24 albums).
    """
    _, index = np.unique(np.asarray(album_ids), return_inverse=True)
    if index.max(initial=0) >= 2**24:
        raise ArgumentError(
            f"album_ids: {index.max() + 1} distinct albums; at most 2**24 can be stored exactly in float32 targets"
        )
    return np.concatenate([np.asarray(lsi_vectors, np.float32), index.astype(np.float32)[:, None]], axis=1)


def unpack_targets(y_true):
    """(LSI vectors [B, k], album ids [B]) from packed ``y_true`` [B, k + 1]."""
    return y_true[:, :-1], y_true[:, -1]


def lsi_cosine(lsi):
    """Cosine similarity [B, B] of LSI rows; zero rows give 0; diagonal 0."""
    tf = _tf()
    lsi = tf.convert_to_tensor(lsi, tf.float32)
    norms = tf.norm(lsi, axis=1, keepdims=True)
    unit = tf.where(norms > _ZERO_NORM, lsi / tf.maximum(norms, _ZERO_NORM), tf.zeros_like(lsi))
    cos = tf.matmul(unit, unit, transpose_b=True)
    return tf.linalg.set_diag(cos, tf.zeros(tf.shape(cos)[0], cos.dtype))


def pair_masks(
    lsi,
    albums,
    positive_threshold: float = 0.8,
    negative_threshold: float = 0.2,
    album_filter: bool = True,
    relatedness: str = "cosine",
):
    """Boolean [B, B] masks (positive, negative) of pairs; no diagonal, album filter.

    ``relatedness`` says how the rows of ``lsi`` relate two tracks
    (:func:`msd_triplet.relatedness.relatedness_matrix`): ``cosine`` of LSI
    vectors (the paper), ``jaccard`` of binary tag vectors, ``label`` equality.
    With ``cosine``, a track whose LSI row is zero (norm <= 1e-12: a track
    without a topic, zeroed by :meth:`msd_triplet.lsi.LsiModel.transform`) is
    in no pair, neither positive nor negative, as anchor or as partner.
    """
    tf = _tf()
    cos = relatedness_matrix(lsi, relatedness)
    size = tf.shape(cos)[0]
    allowed = tf.logical_not(tf.eye(size, dtype=tf.bool))
    if relatedness == "cosine":
        # A zero LSI row (no topic: LsiModel.transform zeroes it exactly) has cosine 0 with everyone,
        # which would make it everyone's negative; it is neither.
        has_topic = tf.norm(tf.convert_to_tensor(lsi, tf.float32), axis=1) > _ZERO_NORM
        allowed = tf.logical_and(allowed, tf.logical_and(has_topic[:, None], has_topic[None, :]))
    if album_filter:
        albums = tf.convert_to_tensor(albums)
        allowed = tf.logical_and(allowed, tf.not_equal(albums[:, None], albums[None, :]))
    positive = tf.logical_and(allowed, cos >= positive_threshold)
    negative = tf.logical_and(allowed, cos < negative_threshold)
    return positive, negative


def squared_distances(embeddings):
    """‖e_i − e_j‖² [B, B] from the Gram matrix, clipped at 0, exact 0 on the diagonal."""
    tf = _tf()
    e = tf.convert_to_tensor(embeddings, tf.float32)
    sq = tf.reduce_sum(tf.square(e), axis=1)
    d = sq[:, None] - 2.0 * tf.matmul(e, e, transpose_b=True) + sq[None, :]
    d = tf.maximum(d, 0.0)
    # tf.where, not set_diag: set_diag's gradient does not compile with XLA for a dynamic batch size
    return tf.where(tf.eye(tf.shape(d)[0], dtype=tf.bool), tf.zeros_like(d), d)


def triplet_terms(
    distances, positive, negative, margin: float = 0.2, mining: str = "batch_hard", soft_margin: bool = False
):
    """The mined hinge terms: (loss scalar, share of valid anchors, share of active triplets).

    See :func:`msd_triplet.mining.triplet_terms` (every mode in B × B memory).
    """
    from msd_triplet import mining as mining_module

    return mining_module.triplet_terms(distances, positive, negative, margin, mining, soft_margin=soft_margin)


def lsi_triplet_loss(
    embeddings,
    lsi,
    albums,
    *,
    positive_threshold: float = 0.8,
    negative_threshold: float = 0.2,
    margin: float = 0.2,
    mining: str = "batch_hard",
    album_filter: bool = True,
    soft_margin: bool = False,
    relatedness: str = "cosine",
    return_statistics: bool = False,
):
    """The whole loss on one batch; with ``return_statistics`` also a dict of :data:`STATISTICS`."""
    tf = _tf()
    positive, negative = pair_masks(lsi, albums, positive_threshold, negative_threshold, album_filter, relatedness)
    d = squared_distances(embeddings)
    loss, valid_share, active_share = triplet_terms(d, positive, negative, margin, mining, soft_margin)
    if not return_statistics:
        return loss
    e = tf.convert_to_tensor(embeddings, tf.float32)
    stats = {
        "valid_anchors": valid_share,
        "active_triplets": active_share,
        # share of valid anchors whose nearest negative is nearer than their farthest positive: for these
        # batch-hard triplets, shrinking every distance by one factor lowers the loss (the road to collapse)
        "hard_triplets": _hard_share(d, positive, negative),
        "positive_distance": safe_mean(d, tf.cast(positive, tf.float32)),
        "negative_distance": safe_mean(d, tf.cast(negative, tf.float32)),
        # root mean variance across the batch: 0 when every track maps to one point (collapse)
        "embedding_spread": tf.sqrt(tf.reduce_mean(tf.math.reduce_variance(e, axis=0))),
    }
    return loss, stats


def _hard_share(d, positive, negative):
    """Share of valid anchors whose nearest negative is strictly nearer than their farthest positive."""
    tf = _tf()
    valid = tf.logical_and(tf.reduce_any(positive, axis=1), tf.reduce_any(negative, axis=1))
    farthest_positive = masked_max(d, positive, -1.0)
    nearest_negative = masked_min(d, negative, tf.reduce_max(d) + 1.0)
    weights = tf.cast(valid, tf.float32)
    return safe_mean(tf.cast(nearest_negative < farthest_positive, tf.float32), weights)


def global_batch(y_true, y_pred):
    """``(y_true, y_pred)`` of the whole batch when called by one replica of a ``tf.distribute`` strategy.

    With several replicas each one sees only its slice of the batch; mining
    over a slice would make the loss depend on the replica count. The slices
    are gathered (the gradient of the gather sums the replicas' gradients and
    returns each replica its part), every replica computes the loss of the
    global batch divided by the replica count, and the optimizer sums the
    replicas' gradients: the result equals one device on the whole batch.
    """
    tf = _tf()
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return y_true, y_pred
    return context.all_gather(y_true, axis=0), context.all_gather(y_pred, axis=0)


#: The settings the loss and its statistics share (their keyword arguments and config keys).
LOSS_SETTINGS = (
    "positive_threshold",
    "negative_threshold",
    "margin",
    "mining",
    "album_filter",
    "soft_margin",
    "relatedness",
)


def _loss_config(obj) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in LOSS_SETTINGS}


def _set_loss_config(
    obj, positive_threshold, negative_threshold, margin, mining, album_filter, soft_margin=False, relatedness="cosine"
) -> None:
    if mining not in MINING:
        raise ArgumentError(f"mining {mining!r}: expected one of {', '.join(MINING)}")
    if relatedness not in KINDS:
        raise ArgumentError(f"relatedness {relatedness!r}: expected one of {', '.join(KINDS)}")
    obj.soft_margin = bool(soft_margin)
    obj.relatedness = relatedness
    obj.positive_threshold = float(positive_threshold)
    obj.negative_threshold = float(negative_threshold)
    obj.margin = float(margin)
    obj.mining = mining
    obj.album_filter = bool(album_filter)


@keras.saving.register_keras_serializable(package="msd_triplet")
class LsiTripletLoss(keras.losses.Loss):
    """The LSI-masked triplet loss for ``model.fit``.

    ``y_true``: float32 [B, k + 1], the LSI vector of each track followed by its
    album index (:func:`pack_targets`); ``y_pred``: embeddings [B, d]. Returns
    one scalar per batch (the mean over valid anchors).
    """

    def __init__(
        self,
        positive_threshold: float = 0.8,
        negative_threshold: float = 0.2,
        margin: float = 0.2,
        mining: str = "batch_hard",
        album_filter: bool = True,
        soft_margin: bool = False,
        relatedness: str = "cosine",
        name: str = "lsi_triplet",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        _set_loss_config(
            self, positive_threshold, negative_threshold, margin, mining, album_filter, soft_margin, relatedness
        )

    @classmethod
    def from_config_dataclass(cls, loss_config, mining: str | None = None) -> "LsiTripletLoss":
        """From a :class:`msd_triplet.config.LossConfig` (``mining`` overrides its mining, e.g. for a warm-up)."""
        from msd_triplet.relatedness import SOURCE_KIND

        return cls(
            loss_config.positive_threshold,
            loss_config.negative_threshold,
            loss_config.margin,
            mining or loss_config.mining,
            loss_config.album_filter,
            loss_config.soft_margin,
            SOURCE_KIND[loss_config.relatedness],
        )

    def call(self, y_true, y_pred):
        y_true, y_pred = global_batch(y_true, y_pred)
        lsi, albums = unpack_targets(y_true)
        loss = lsi_triplet_loss(y_pred, lsi, albums, **_loss_config(self))
        # Every replica returns the loss of the global batch. Keras divides a loss by the replica
        # count before the gradients are summed, but not a scalar one (``reduce_values`` returns
        # scalars untouched): divide here, or R replicas would take R-times larger steps.
        return loss / _tf().cast(_tf().distribute.get_strategy().num_replicas_in_sync, loss.dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(_loss_config(self))
        return config


@keras.saving.register_keras_serializable(package="msd_triplet")
class TripletStatistic(keras.metrics.Mean):
    """One of :data:`STATISTICS` per batch, averaged over an epoch (the signals of collapse)."""

    def __init__(
        self,
        statistic: str = "valid_anchors",
        positive_threshold: float = 0.8,
        negative_threshold: float = 0.2,
        margin: float = 0.2,
        mining: str = "batch_hard",
        album_filter: bool = True,
        soft_margin: bool = False,
        relatedness: str = "cosine",
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if statistic not in STATISTICS:
            raise ArgumentError(f"statistic {statistic!r}: expected one of {', '.join(STATISTICS)}")
        super().__init__(name=name or statistic, **kwargs)
        self.statistic = statistic
        _set_loss_config(
            self, positive_threshold, negative_threshold, margin, mining, album_filter, soft_margin, relatedness
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = global_batch(y_true, y_pred)
        lsi, albums = unpack_targets(y_true)
        _, stats = lsi_triplet_loss(y_pred, lsi, albums, return_statistics=True, **_loss_config(self))
        return super().update_state(stats[self.statistic])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(statistic=self.statistic, **_loss_config(self))
        return config


def triplet_metrics(loss: LsiTripletLoss) -> list[TripletStatistic]:
    """Every :data:`STATISTICS` metric for the settings of ``loss``."""
    return [TripletStatistic(s, **_loss_config(loss)) for s in STATISTICS]
