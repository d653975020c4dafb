"""The paper's claims on per-query arrays built so that the answer is known: holds, fails, not separable, not tested."""

from __future__ import annotations

import numpy as np
import pytest

from msd_triplet.claims import (
    FAILS,
    HOLDS,
    MEAN,
    NOT_SEPARABLE,
    Comparison,
    check_claims,
    format_claims,
    labelled_in_all,
)
from msd_triplet.uncertainty import BootstrapSettings

N = 300
FACETS = ("genre", "style", "mood", "theme", "artist", "album")
SETTINGS = BootstrapSettings(n_resamples=400, seed=0)
BASE = {f: np.random.default_rng(i).uniform(0.2, 0.6, N) for i, f in enumerate(FACETS)}
BASE["genre"][:10] = np.nan  # ten tracks without a genre: not genre queries, not in the mean over facets
WIGGLE = np.tile([0.02, -0.02], N // 2)  # per-query noise with mean exactly 0: never separable from 0


def arrays(**offsets: float) -> dict[str, np.ndarray]:
    """BASE plus an offset per facet (``all`` for every facet) and, per cell, the zero-mean wiggle."""
    every = offsets.pop("all", 0.0)
    return {f: BASE[f] + every + offsets.get(f, 0.0) + WIGGLE for f in FACETS}


def claims_of(cells, best_k, untrained=None, clusters=None):
    return {c.number: c for c in check_claims(cells, best_k, untrained, settings=SETTINGS, clusters=clusters)}


def test_claim_1_genres_help_only_genre():
    genres = arrays(genre=0.3)
    holds = {
        ("genres", 3): genres,
        ("moods", 5): arrays(),
        ("genres-moods", 5): arrays(genre=0.2, style=-0.1, mood=-0.1, theme=-0.1, artist=-0.1, album=-0.1),
    }
    claim = claims_of(holds, {"genres": 3, "moods": 5, "genres-moods": 5})[1]
    assert claim.verdict == HOLDS
    assert [(c.a, c.b, c.facet, c.expect) for c in claim.comparisons][:2] == [
        ("genres-moods (k 5)", "moods (k 5)", "genre", ">"),
        ("genres-moods (k 5)", "moods (k 5)", "style", "≯"),
    ]
    assert len(claim.comparisons) == 6 + 2  # genres-moods − moods on six facets; moods and genres-moods vs genres
    assert claim.comparisons[0].difference == pytest.approx(0.2)
    # genres-moods also lifts the style facet over moods alone: the "only genre" part fails
    fails = dict(holds)
    fails["genres-moods", 5] = arrays(genre=0.2, style=0.1)
    claim = claims_of(fails, {"genres": 3, "moods": 5, "genres-moods": 5})[1]
    assert claim.verdict == FAILS
    assert [c.verdict for c in claim.comparisons if c.facet == "style"] == [FAILS]
    # no difference at all: nothing separable
    same = {cell: arrays() for cell in holds}
    assert claims_of(same, {"genres": 3, "moods": 5, "genres-moods": 5})[1].verdict == NOT_SEPARABLE
    # without genres alone
    claim = claims_of({("moods", 5): arrays()}, {"moods": 5})[1]
    assert claim.verdict == "not tested (needs genres and another combination)" and not claim.comparisons


def test_claim_2_moods_beat_styles_by_the_mean_over_facets():
    cells = {("moods", 10): arrays(all=0.05, genre=-0.2), ("styles", 20): arrays()}
    claim = claims_of(cells, {"moods": 10, "styles": 20})[2]
    assert claim.verdict == HOLDS  # the mean decides; genre (-0.2 + 0.05) is listed, not counted
    counted = [c for c in claim.comparisons if c.counted]
    assert [(c.facet, c.verdict) for c in counted] == [(MEAN, HOLDS)]
    genre = next(c for c in claim.comparisons if c.facet == "genre")
    assert not genre.counted and genre.verdict == FAILS
    # the mean over facets: per-query mean over the six facets, on queries labelled in all
    assert counted[0].difference == pytest.approx((5 * 0.05 - 0.15) / 6)
    moods, styles = (np.mean([cells[c][f] for f in FACETS], axis=0) for c in (("moods", 10), ("styles", 20)))
    assert (counted[0].low, counted[0].high) == SETTINGS.paired_interval(moods, styles)
    assert (
        claims_of({("moods", 10): arrays(all=-0.05), ("styles", 20): arrays()}, {"moods": 10, "styles": 20})[2].verdict
        == FAILS
    )
    assert claims_of({("moods", 10): arrays()}, {"moods": 10})[2].verdict == "not tested (needs moods and styles)"


def test_claim_3_every_moods_combination_beats_every_other():
    cells = {
        ("genres", 3): arrays(),
        ("moods", 5): arrays(all=0.05),
        ("styles-moods", 5): arrays(all=0.08),
        ("styles", 5): arrays(all=0.01),
    }
    best = {"genres": 3, "moods": 5, "styles": 5, "styles-moods": 5}
    claim = claims_of(cells, best)[3]
    assert claim.verdict == HOLDS and len(claim.comparisons) == 4
    assert {(c.a, c.b) for c in claim.comparisons} == {
        (a, b) for a in ("moods (k 5)", "styles-moods (k 5)") for b in ("genres (k 3)", "styles (k 5)")
    }
    cells["styles", 5] = arrays(all=0.06)  # styles now beats moods alone, not styles-moods
    claim = claims_of(cells, best)[3]
    assert claim.verdict == FAILS
    assert sorted(c.verdict for c in claim.comparisons) == [FAILS, HOLDS, HOLDS, HOLDS]
    assert claims_of({("moods", 5): arrays()}, {"moods": 5})[3].verdict.startswith("not tested (needs a combination")


def test_claim_4_more_topics_help_up_to_a_ceiling():
    cells = {("genres", 10): arrays(), ("genres", 20): arrays(all=0.10), ("genres", 40): arrays(all=0.11)}
    claim = claims_of(cells, {"genres": 20})[4]
    assert claim.verdict == HOLDS and not claim.notes
    gain, ceiling = claim.comparisons
    assert (gain.a, gain.b, gain.difference) == ("genres (k 40)", "genres (k 10)", pytest.approx(0.11))
    assert ceiling.a == "genres: first step k 10 → 20" and ceiling.b == "last step k 20 → 40"
    assert ceiling.difference == pytest.approx(0.10 - 0.01)
    # still climbing at the end: no ceiling
    cells["genres", 40] = arrays(all=0.25)
    assert [c.verdict for c in claims_of(cells, {"genres": 20})[4].comparisons] == [HOLDS, FAILS]
    # two sizes only: the gain is tested, the ceiling is not
    two = {("moods", 10): arrays(), ("moods", 20): arrays()}
    claim = claims_of(two, {"moods": 10})[4]
    assert claim.verdict == NOT_SEPARABLE and "ceiling is not tested" in claim.notes[0]
    assert claims_of({("moods", 10): arrays()}, {"moods": 10})[4].verdict == (
        "not tested (needs a combination evaluated at two or more k)"
    )


def test_claim_5_trained_beats_untrained_on_every_tag_facet():
    cells = {
        ("genres", 3): arrays(genre=0.1, style=0.1, mood=0.1, theme=0.1),
        ("moods", 5): arrays(genre=0.1, style=0.1, mood=0.1, theme=0.1, album=-0.3),
    }
    claim = claims_of(cells, {"genres": 3, "moods": 5}, untrained=arrays())[5]
    assert claim.verdict == HOLDS and len(claim.comparisons) == 8  # two cells × four tag facets (album is no tag)
    cells["moods", 5] = arrays(genre=0.1, style=0.1, mood=0.1)  # theme: no better than untrained
    claim = claims_of(cells, {"genres": 3, "moods": 5}, untrained=arrays())[5]
    assert claim.verdict == NOT_SEPARABLE
    assert [c.verdict for c in claim.comparisons].count(NOT_SEPARABLE) == 1
    cells["moods", 5] = arrays(theme=-0.1)
    assert claims_of(cells, {"genres": 3, "moods": 5}, untrained=arrays())[5].verdict == FAILS
    assert claims_of(cells, {"genres": 3, "moods": 5})[5].verdict == (
        "not tested (needs the untrained model's per-query precisions)"
    )


def test_cluster_bootstrap_widens_the_comparisons():
    cells = {("moods", 10): arrays(all=0.002), ("styles", 20): arrays()}
    albums = np.repeat(np.arange(N // 30), 30)
    album_effect = np.random.default_rng(9).normal(0, 0.05, N // 30)[albums]
    cells["moods", 10] = {f: v + album_effect for f, v in cells["moods", 10].items()}
    plain = claims_of(cells, {"moods": 10, "styles": 20})[2].comparisons[0]
    clustered = claims_of(cells, {"moods": 10, "styles": 20}, clusters=albums)[2].comparisons[0]
    assert (clustered.high - clustered.low) > 3 * (plain.high - plain.low)


def test_comparison_verdicts_and_labelled_queries():
    assert Comparison("a", "b", "genre", ">", 0.1, 0.05, 0.15).verdict == HOLDS
    assert Comparison("a", "b", "genre", ">", -0.1, -0.15, -0.05).verdict == FAILS
    assert Comparison("a", "b", "genre", "≯", -0.1, -0.15, -0.05).verdict == HOLDS
    assert Comparison("a", "b", "genre", "≯", 0.1, 0.05, 0.15).verdict == FAILS
    assert Comparison("a", "b", "genre", "≯", 0.0, 0.0, 0.15).verdict == NOT_SEPARABLE
    assert labelled_in_all(arrays()) == N - 10 and labelled_in_all({"genre": BASE["genre"]}) == N - 10


def test_claims_markdown():
    cells = {("genres", 3): arrays(genre=0.3), ("moods", 5): arrays(all=0.05), ("moods", 10): arrays(all=0.06)}
    best = {"genres": 3, "moods": 10}
    found = check_claims(cells, best, arrays(), settings=SETTINGS)
    text = format_claims(found, settings=SETTINGS, queries=N, mean_queries=N - 10, seeds=[1, 2], best_k=best)
    lines = text.splitlines()
    assert lines[0] == "# The paper's claims on this grid"
    assert "averaged over the training seeds 1, 2" in text and "(400 resamples of queries, seed 0)" in text
    assert "on the 290 queries labelled in all of them" in text and "genres 3, moods 10" in text
    summary = [line for line in lines if line.startswith("| (")]
    assert len(summary) == 5
    assert "| **not tested (needs moods and styles)** | – |" in summary[1]
    assert summary[0].endswith("| **holds** | 1 holds |")  # moods (k 10) ≯ genres on genre
    assert "| moods (k 10) | genres (k 3) | genre | A ≯ B | -0.2400 [" in text
    assert "## Multiple comparisons" in text and "without correction for multiplicity" in text
    total = sum(len(c.comparisons) for c in found)
    assert f"{total} comparisons, each judged at 95 %" in text
