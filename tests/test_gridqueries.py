"""Seed-averaged per-query precisions of a grid, read from per_query.npz files written for the test."""

from __future__ import annotations

import numpy as np
import pytest

from msd_triplet.errors import DataError
from msd_triplet.gridqueries import GridQueries, pooled_intervals
from msd_triplet.runs import PerQuery
from msd_triplet.uncertainty import BootstrapSettings

N = 40
IDS = np.array([f"TR{i:016d}" for i in range(N)])
ARTISTS = np.repeat([f"AR{i}" for i in range(8)], 5)
ALBUMS = np.repeat([f"AL{i}" for i in range(20)], 2)
FACETS = ("genre", "mood", "album")


def values(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {f: rng.random(N) for f in FACETS}
    out["genre"][:3] = np.nan  # not genre queries, in every file alike
    return out


def write(folder, model: str, seed: int, track_ids=IDS):
    PerQuery(track_ids, ARTISTS, ALBUMS, 5, {model: values(seed)}).save(folder / "per_query.npz")
    return folder


@pytest.fixture
def grid(tmp_path):
    cells = {
        ("genres", 3, 0): write(tmp_path / "g3s0", "trained", 1),
        ("genres", 3, 1): write(tmp_path / "g3s1", "trained", 2),
        ("moods", 5, 0): write(tmp_path / "m5s0", "trained", 3),
    }
    untrained = {0: write(tmp_path / "u0", "untrained", 10), 1: write(tmp_path / "u1", "untrained", 11)}
    return cells, untrained


def test_cells_are_averaged_over_their_seeds(grid):
    cells, untrained = grid
    queries = GridQueries(cells, untrained)
    assert sorted(queries) == [("genres", 3), ("moods", 5)] and len(queries) == 2 and queries.queries == N
    assert queries.seeds(("genres", 3)) == [0, 1] and queries.seeds(("moods", 5)) == [0] and queries.seeds() == [0, 1]
    for facet in FACETS:
        np.testing.assert_array_equal(queries["genres", 3][facet], (values(1)[facet] + values(2)[facet]) / 2)
        np.testing.assert_array_equal(queries["moods", 5][facet], values(3)[facet])
        np.testing.assert_array_equal(queries.untrained()[facet], (values(10)[facet] + values(11)[facet]) / 2)
        np.testing.assert_array_equal(queries.untrained([1])[facet], values(11)[facet])
    assert np.isnan(queries["genres", 3]["genre"][:3]).all()
    assert queries.untrained([7]) is None
    assert queries.clusters(BootstrapSettings(unit="artist")).tolist() == np.repeat(np.arange(8), 5).tolist()
    with pytest.raises(KeyError):
        queries["themes", 3]


def test_a_small_cache_still_gives_the_same_arrays(grid):
    cells, untrained = grid
    queries = GridQueries(cells, untrained, cache_size=1)
    first = queries["genres", 3]["mood"].copy()
    queries["moods", 5]
    np.testing.assert_array_equal(queries["genres", 3]["mood"], first)


def test_files_of_other_queries_or_models_are_clear_errors(grid, tmp_path):
    cells, untrained = grid
    cells["moods", 5, 1] = write(tmp_path / "other", "trained", 4, track_ids=IDS[::-1])
    with pytest.raises(DataError, match="not of the same tracks"):
        GridQueries(cells, untrained)["moods", 5]
    cells["moods", 5, 1] = write(tmp_path / "wrong", "untrained", 4)
    with pytest.raises(DataError, match="holds no per-query precisions of the trained model"):
        GridQueries(cells, untrained)["moods", 5]
    with pytest.raises(DataError, match="cannot read per-query precisions"):
        GridQueries({("genres", 3, 0): tmp_path / "missing"}, {})
    with pytest.raises(DataError, match="no finished cell"):
        GridQueries({}, {})


def test_pooled_intervals_of_cells_with_several_seeds_and_of_the_untrained_model(grid):
    cells, untrained = grid
    queries = GridQueries(cells, untrained)
    settings = BootstrapSettings(n_resamples=200, seed=5, unit="album")
    frame = pooled_intervals(queries, settings, facets=("genre", "mood", "style"))
    assert frame[["combination", "k"]].values.tolist() == [["genres", 3], ["untrained", 0]]  # moods has one seed
    albums = queries.clusters(settings)
    assert (frame.loc[0, "ci_low_genre"], frame.loc[0, "ci_high_genre"]) == settings.interval(
        queries["genres", 3]["genre"], albums
    )
    assert (frame.loc[1, "ci_low_mood"], frame.loc[1, "ci_high_mood"]) == settings.interval(
        queries.untrained()["mood"], albums
    )
    assert frame["ci_low_style"].isna().all()  # a facet the files do not hold
