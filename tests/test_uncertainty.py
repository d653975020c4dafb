"""Bootstrap intervals: bit for bit against scipy.stats.bootstrap, the cluster bootstrap against a loop, coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from msd_triplet import uncertainty
from msd_triplet.config import Config
from msd_triplet.errors import ArgumentError, MsdTripletError
from msd_triplet.uncertainty import (
    BootstrapSettings,
    bootstrap_interval,
    cluster_labels,
    interval_sign,
    paired_bootstrap_interval,
    paired_differences,
)


def scipy_interval(values, seed, n_resamples=1000, level=0.95, batch=None):
    res = stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=level,
        batch=batch,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def scipy_paired(a, b, seed, n_resamples=1000, level=0.95):
    res = stats.bootstrap(
        (a, b),
        lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
        paired=True,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


# --------------------------------------------------------------------------- against scipy


@pytest.mark.parametrize("n", [2, 7, 60, 501])
@pytest.mark.parametrize("seed, level, n_resamples", [(0, 0.95, 1000), (7, 0.9, 333), (123, 0.5, 2)])
def test_plain_interval_equals_scipy_bit_for_bit(n, seed, level, n_resamples):
    x = np.random.default_rng(n).beta(2, 5, n)  # skewed, like per-query precisions
    ours = bootstrap_interval(x, n_resamples=n_resamples, level=level, seed=seed)
    assert ours == scipy_interval(x, seed, n_resamples, level)


def test_chunked_resamples_draw_what_scipy_draws(monkeypatch):
    x = np.random.default_rng(1).random(57)
    whole = bootstrap_interval(x, seed=3)
    monkeypatch.setattr(uncertainty, "_RESAMPLE_BYTES", 8 * 57 * 3 * 7)  # 7 resamples per chunk
    assert bootstrap_interval(x, seed=3) == whole == scipy_interval(x, 3) == scipy_interval(x, 3, batch=10)


@pytest.mark.parametrize("seed, level", [(0, 0.95), (4, 0.8)])
def test_paired_interval_equals_scipy_paired(seed, level):
    rng = np.random.default_rng(2)
    a = rng.random(80)
    b = np.clip(a + rng.normal(0.05, 0.1, 80), 0, 1)
    ours = paired_bootstrap_interval(a, b, seed=seed, level=level)
    assert ours == scipy_paired(a, b, seed, level=level)
    # pairing matters: the unpaired intervals of a and b overlap, the paired one of a − b excludes 0
    assert ours[1] < 0
    assert bootstrap_interval(a, seed=seed)[1] > bootstrap_interval(b, seed=seed)[0]


def test_nan_queries_are_dropped():
    x = np.random.default_rng(3).random(30)
    with_nan = np.insert(x, [0, 10, 30], np.nan)
    assert bootstrap_interval(with_nan, seed=1) == scipy_interval(x, 1)
    y = np.random.default_rng(4).random(30)
    assert paired_bootstrap_interval(with_nan, np.insert(y, [0, 10, 30], np.nan), seed=1) == scipy_paired(x, y, 1)


# --------------------------------------------------------------------------- cluster bootstrap


def brute_cluster_interval(values, clusters, seed, n_resamples, level, b=None):
    """Loop: per resample, draw as many clusters as there are, concatenate their values, take the mean."""
    keep = ~np.isnan(values)
    values, clusters = values[keep], clusters[keep]
    other = None if b is None else b[keep]
    order = list(dict.fromkeys(clusters.tolist()))  # clusters in order of first appearance
    members = [np.flatnonzero(clusters == c) for c in order]
    draws = np.random.default_rng(seed).integers(0, len(order), (n_resamples, len(order)))
    means = []
    for row in draws:
        rows = np.concatenate([members[c] for c in row])
        means.append(values[rows].mean() - (0.0 if other is None else other[rows].mean()))
    return tuple(np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))


@pytest.mark.parametrize("seed", [0, 9])
def test_cluster_interval_equals_a_loop(seed):
    rng = np.random.default_rng(5)
    clusters = rng.choice([40, 3, 17, 8, 25, 99, 1], size=50)  # labels in no order, unequal sizes
    values = rng.random(50) + clusters / 100
    values[[4, 20]] = np.nan
    ours = bootstrap_interval(values, seed=seed, n_resamples=400, clusters=clusters)
    assert ours == pytest.approx(brute_cluster_interval(values, clusters, seed, 400, 0.95), abs=1e-12)
    other = np.where(np.isnan(values), np.nan, rng.random(50))
    ours = paired_bootstrap_interval(values, other, seed=seed, n_resamples=400, level=0.9, clusters=clusters)
    assert ours == pytest.approx(brute_cluster_interval(values, clusters, seed, 400, 0.9, b=other), abs=1e-12)


def test_singleton_clusters_give_the_plain_bootstrap():
    x = np.random.default_rng(6).random(40)
    labels = np.random.default_rng(7).permutation(1000)[:40]  # one distinct label per value
    assert bootstrap_interval(x, seed=2, clusters=labels) == bootstrap_interval(x, seed=2)
    y = np.random.default_rng(8).random(40)
    assert paired_bootstrap_interval(x, y, seed=2, clusters=labels) == paired_bootstrap_interval(x, y, seed=2)


def test_cluster_interval_is_wider_when_queries_come_in_albums():
    rng = np.random.default_rng(10)
    albums = np.repeat(np.arange(20), 5)
    x = rng.normal(0, 1, 20)[albums] + rng.normal(0, 0.3, 100)
    plain, cluster = bootstrap_interval(x, seed=0), bootstrap_interval(x, seed=0, clusters=albums)
    assert (cluster[1] - cluster[0]) > 1.8 * (plain[1] - plain[0])


def test_coverage_on_normal_and_on_clustered_data():
    """95 % intervals hold the true mean in about 95 % of 200 seeded repetitions; queries that come in
    albums break the plain bootstrap (far too narrow) and not the cluster bootstrap."""
    hits = sum(
        lo <= 0.3 <= hi
        for lo, hi in (
            bootstrap_interval(np.random.default_rng(1000 + r).normal(0.3, 1, 40), seed=r) for r in range(200)
        )
    )
    assert 0.90 <= hits / 200 <= 0.99
    albums = np.repeat(np.arange(20), 5)
    plain = cluster = 0
    for r in range(200):
        rng = np.random.default_rng(5000 + r)
        x = rng.normal(0, 1, 20)[albums] + rng.normal(0, 0.5, 100)
        lo, hi = bootstrap_interval(x, seed=r)
        plain += lo <= 0 <= hi
        lo, hi = bootstrap_interval(x, seed=r, clusters=albums)
        cluster += lo <= 0 <= hi
    assert plain / 200 < 0.8 and 0.88 <= cluster / 200 <= 0.99


# --------------------------------------------------------------------------- seeds, edges, errors


def test_seed_fixes_the_interval():
    x = np.random.default_rng(11).random(25)
    assert bootstrap_interval(x, seed=5) == bootstrap_interval(x.copy(), seed=5)
    assert bootstrap_interval(x, seed=5) != bootstrap_interval(x, seed=6)


def test_no_query_gives_nan_and_one_query_a_point():
    assert all(np.isnan(bootstrap_interval([np.nan, np.nan], seed=0)))
    assert all(np.isnan(bootstrap_interval([], seed=0)))
    assert bootstrap_interval([np.nan, 0.25], seed=0) == (0.25, 0.25)
    assert all(np.isnan(paired_bootstrap_interval([np.nan], [np.nan], seed=0)))


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (([[0.1, 0.2]],), {}, r"values: expected a 1-D array of per-query values, got shape \(1, 2\)"),
        ((["a", "b"],), {}, r"values: expected real numbers, got dtype <U1"),
        (([0.1, np.inf, 0.2],), {}, r"values: 1 value\(s\) infinite \(e.g. position 1 = inf\); allowed are finite"),
        (([0.1, 0.2],), {"n_resamples": 0}, r"n_resamples = 0: allowed is an integer >= 1"),
        (([0.1, 0.2],), {"n_resamples": 10.0}, r"n_resamples = 10.0: allowed is an integer >= 1"),
        (([0.1, 0.2],), {"level": 95}, r"level = 95: allowed is a number strictly between 0 and 1"),
        (([0.1, 0.2],), {"level": 0.0}, r"level = 0.0: allowed"),
        (([0.1, 0.2],), {"seed": -1}, r"seed = -1: allowed is an integer >= 0"),
        (([0.1, 0.2],), {"seed": None}, r"seed = None: allowed is an integer >= 0"),
        (([0.1, 0.2],), {"clusters": [1]}, r"clusters: expected one integer label per value \(2\), got shape \(1,\)"),
        (([0.1, 0.2],), {"clusters": [0.5, 1.5]}, r"clusters: .* dtype float64"),
    ],
)
def test_bad_input_is_a_clear_error(args, kwargs, message):
    kwargs.setdefault("seed", 0)
    with pytest.raises(ArgumentError, match=message) as info:
        bootstrap_interval(*args, **kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, MsdTripletError)


def test_paired_input_must_describe_the_same_queries():
    with pytest.raises(ValueError, match=r"a and b: lengths 3 and 2 differ; a paired interval needs"):
        paired_bootstrap_interval([0.1, 0.2, 0.3], [0.1, 0.2], seed=0)
    with pytest.raises(
        ValueError,
        match=r"a and b: 1 position\(s\) are a query in one and NaN in the other "
        r"\(e.g. position 1: a = nan, b = 0.2\)",
    ):
        paired_bootstrap_interval([0.1, np.nan, 0.3], [0.1, 0.2, 0.3], seed=0)


# --------------------------------------------------------------------------- helpers


def test_cluster_labels_number_ids_in_order_and_keep_missing_apart():
    labels = cluster_labels(["b", "a", "b", None, "", np.nan, "a", "c"])
    assert labels.tolist() == [0, 1, 0, 2, 3, 4, 1, 5]


def test_settings_from_config_and_their_intervals():
    config = Config(seed=4)
    settings = BootstrapSettings.from_config(config)
    assert settings == BootstrapSettings(1000, 0.95, 4, "query")
    assert settings.to_json() == {"resamples": 1000, "level": 0.95, "unit": "query", "seed": 4}
    x = np.random.default_rng(12).random(20)
    assert settings.interval(x) == bootstrap_interval(x, seed=4)
    artists, albums = np.repeat(["A", "B"], 10), np.repeat(["A/1", "A/2", "B/1", "B/2"], 5)
    assert settings.clusters(artists, albums) is None
    album = BootstrapSettings(unit="album")
    assert album.clusters(artists, albums).tolist() == np.repeat([0, 1, 2, 3], 5).tolist()
    assert BootstrapSettings(unit="artist").clusters(artists, albums).tolist() == np.repeat([0, 1], 10).tolist()
    with pytest.raises(ArgumentError, match="unit = 'track': allowed are query, album, artist"):
        BootstrapSettings(unit="track")
    with pytest.raises(ArgumentError, match="n_resamples = 0"):
        BootstrapSettings(n_resamples=0)


def test_paired_differences_per_facet():
    rng = np.random.default_rng(13)
    a = {"genre": rng.random(30), "album": np.r_[np.nan, rng.random(29)], "style": rng.random(30)}
    b = {"genre": a["genre"] - 0.1, "album": a["album"] * 0.5}
    settings = BootstrapSettings(n_resamples=200, seed=1)
    out = paired_differences(a, b, settings)
    assert list(out) == ["genre", "album"]  # style has no partner
    assert out["genre"]["difference"] == pytest.approx(0.1) and out["genre"]["ci_low"] == pytest.approx(0.1)
    assert out["album"]["queries"] == 29
    assert (out["album"]["ci_low"], out["album"]["ci_high"]) == settings.paired_interval(a["album"], b["album"])
    assert out["album"]["ci_low"] > 0


def test_interval_sign():
    assert [interval_sign(*iv) for iv in [(0.1, 0.2), (-0.2, -0.1), (-0.1, 0.1), (0.0, 0.1), (np.nan, np.nan)]] == [
        1,
        -1,
        0,
        0,
        0,
    ]
