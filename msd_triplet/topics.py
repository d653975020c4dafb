"""Looking into an LSI model: strongest tags per topic (paper Fig. 3) and the similarity histogram.

The paper chose its positive/negative thresholds (0.8 / 0.2) from the
distribution of pairwise LSI cosine similarities; :func:`similarity_histogram`
draws that distribution for a sample of training tracks, with the thresholds
and the share of pairs beyond each, so users can choose theirs the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from msd_triplet.errors import ArgumentError
from msd_triplet.fileio import atomic_path
from msd_triplet.lsi import LsiModel, cosine_similarity
from msd_triplet.relatedness import ZERO_NORM

#: Colour per tag set, for the terminal (click) and the plot.
SET_COLOURS = {"genres": "blue", "styles": "cyan", "moods": "magenta", "themes": "yellow"}


def format_topics(model: LsiModel, topics: Sequence[int], n: int = 8, colour: bool = False) -> str:
    """Text: for each topic, its singular value and the ``n`` strongest positive and negative tags.

    Each tag is labelled with its set (``[moods] Sad``); with ``colour`` the
    label is also coloured (ANSI, via click).
    """
    import click

    def label(tagset: str, tag: str, weight: float) -> str:
        text = f"[{tagset}] {tag} {weight:+.2f}"
        return click.style(text, fg=SET_COLOURS.get(tagset)) if colour else text

    lines = [
        f"LSI of {model.name}: {model.k} topics over {len(model.vocabulary)} tags "
        f"({model.weighting}, {model.solver}, {model.n_train:,} training tracks)"
    ]
    for topic in topics:
        pos, neg = model.topic_terms(topic, n)
        lines.append(f"topic {topic} (σ = {model.singular_values[topic]:.2f})")
        lines.append("  + " + ", ".join(label(*t) for t in pos) if pos else "  + (none)")
        lines.append("  − " + ", ".join(label(*t) for t in neg) if neg else "  − (none)")
    return "\n".join(lines)


@dataclass
class SimilarityStats:
    """Pairwise cosine similarities of a sample of tracks, against the loss thresholds."""

    pairs: int
    positive_threshold: float
    negative_threshold: float
    share_positive: float  # pairs with cosine >= positive_threshold
    share_negative: float  # pairs with cosine < negative_threshold
    zero_vectors: int  # tracks whose LSI vector is zero (cosine 0 with everyone)
    # the same two shares over pairs from different albums only (what the album filter leaves)
    share_positive_other_album: Optional[float] = None
    share_negative_other_album: Optional[float] = None


def pair_similarities(
    vectors: np.ndarray, sample: int = 2_000, seed: int = 0, albums: Optional[np.ndarray] = None
) -> tuple[np.ndarray, int, Optional[np.ndarray]]:
    """Cosine similarities of the pairs among up to ``sample`` random rows (upper triangle).

    Pairs with a zero row (a track without a topic) are left out, as the loss leaves them out
    of every pair. Returns (similarities [pairs], number of zero rows in the sample, and for
    ``albums`` [rows] a bool [pairs] mask of pairs from one album, else None).
    """
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False))
    chosen = np.asarray(vectors)[rows]
    has_topic = np.linalg.norm(chosen, axis=1) > ZERO_NORM
    i, j = np.triu_indices(len(rows), k=1)
    keep = has_topic[i] & has_topic[j]
    i, j = i[keep], j[keep]
    same = None
    if albums is not None:
        picked = np.asarray(albums)[rows]
        same = picked[i] == picked[j]
    return cosine_similarity(chosen)[i, j], int(np.count_nonzero(~has_topic)), same


def similarity_histogram(
    vectors: np.ndarray,
    out: str | os.PathLike,
    *,
    positive: float = 0.8,
    negative: float = 0.2,
    sample: int = 2_000,
    seed: int = 0,
    albums: Optional[np.ndarray] = None,
    title: Optional[str] = None,
) -> SimilarityStats:
    """Write a PNG histogram of pairwise LSI cosine similarities with both thresholds drawn.

    With ``albums`` the pairs from one album (never used by the loss) are
    drawn separately and the shares are also given without them.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cos, zeros, same = pair_similarities(vectors, sample, seed, albums)
    stats = SimilarityStats(
        len(cos), positive, negative, float(np.mean(cos >= positive)), float(np.mean(cos < negative)), zeros
    )
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    bins = np.linspace(-1, 1, 81)
    if same is None:
        ax.hist(cos, bins=bins, color="0.55")
    else:
        other = cos[~same]
        stats.share_positive_other_album = float(np.mean(other >= positive)) if len(other) else 0.0
        stats.share_negative_other_album = float(np.mean(other < negative)) if len(other) else 0.0
        ax.hist(
            [other, cos[same]],
            bins=bins,
            stacked=True,
            color=["0.55", "tab:orange"],
            label=["different albums", "same album (not used)"],
        )
    ax.set_yscale("log")
    ax.axvline(positive, color="tab:green", lw=1.5, label=f"positive ≥ {positive:g}: {stats.share_positive:.1%}")
    ax.axvline(negative, color="tab:red", lw=1.5, label=f"negative < {negative:g}: {stats.share_negative:.1%}")
    ax.set_xlabel("cosine similarity of LSI vectors")
    ax.set_ylabel("track pairs")
    ax.set_title(title or f"{stats.pairs:,} pairs of training tracks")
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    with atomic_path(Path(out), suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return stats


def parse_topics(text: Optional[str], k: int, default: int = 5) -> list[int]:
    """``"0,2,5"`` → [0, 2, 5]; None → the first ``default`` topics; ArgumentError naming bad values."""
    if not text:
        return list(range(min(default, k)))
    try:
        topics = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ArgumentError(f"topics {text!r}: expected comma-separated topic numbers, e.g. 0,1,5") from None
    bad = [t for t in topics if not 0 <= t < k]
    if bad:
        raise ArgumentError(f"topics {bad}: the model has topics 0..{k - 1}")
    return topics


__all__ = [
    "SET_COLOURS",
    "SimilarityStats",
    "format_topics",
    "pair_similarities",
    "parse_topics",
    "similarity_histogram",
]
