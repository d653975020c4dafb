"""Grid reports: Table II layout (best k by the facet mean, the k = 20 row, chance), curves, the paper table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from msd_triplet import gridreport, lsi
from msd_triplet.errors import DataError
from msd_triplet.uncertainty import BootstrapSettings

PAPER = Path(__file__).resolve().parents[1] / "experiments" / "paper_table2.csv"
CHANCE = {"genre": 0.31, "style": 0.004, "mood": 0.003, "theme": 0.0035, "artist": 0.0002, "album": 0.0001}


def cell(combination: str, k: int, genre: float, rest: float, seed: int = 42, **chance: float) -> dict:
    """A results row: ``genre`` for the genre facet, ``rest`` for the other five; intervals ± 0.01."""
    row = {
        "combination": combination,
        "k": k,
        "seed": seed,
        "eval_k": 100,
        "epochs": 10,
        "best_epoch": 7,
        "seconds": 12.5,
    }
    for f in gridreport.FACETS:
        p = genre if f == "genre" else rest
        row.update(
            {
                f"p_{f}": p,
                f"ci_low_{f}": p - 0.01,
                f"ci_high_{f}": p + 0.01,
                f"chance_{f}": chance.get(f, CHANCE[f]),
                f"untrained_p_{f}": (0.2 if f == "genre" else 0.004) + seed / 1000,
                f"diff_ci_low_{f}": p / 2 - 0.02,
                f"diff_ci_high_{f}": p / 2 + 0.02,
            }
        )
    return row


def legacy(row: dict) -> dict:
    """The same row in the layout before seeds and intervals."""
    return {c: row[c] for c in gridreport.LEGACY_COLUMNS}


@pytest.fixture
def results() -> pd.DataFrame:
    """3 combinations × 2-3 k, out of order, one spelled non-canonically; one seed.

    genres: k=3 has the best genre precision, k=10 the best mean (the one to pick), k=20 the fixed row.
    moods: best k=160, fixed row k=20. styles-moods: k=20 is both best and fixed (one row).
    """
    return pd.DataFrame(
        [
            cell("moods", 20, 0.30, 0.010),
            cell("genres", 3, 0.40, 0.005),
            cell("moods-styles", 100, 0.33, 0.011),
            cell("genres", 10, 0.39, 0.009),
            cell("moods", 160, 0.36, 0.015),
            cell("genres", 20, 0.37, 0.008),
            cell("styles-moods", 20, 0.34, 0.012),
        ]
    )


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of the first Markdown table, as lists of stripped cells."""
    rows = [line for line in markdown.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in rows]


def test_table2_best_k_by_facet_mean_and_fixed_row(results):
    text = gridreport.table2(results)
    rows = table_rows(text)
    assert [(r[0], r[1]) for r in rows] == [
        ("genres", "10"),
        ("genres", "20"),  # best by mean (not k=3, the genre-only winner), then k=20
        ("moods", "160"),
        ("moods", "20"),
        ("styles-moods", "20"),  # best is k=20: no second row
        ("untrained model", ""),
        ("chance", ""),
    ]
    # one seed: no sd; the interval is the cell's own
    assert rows[0][2:] == ["0.3900 [0.3800, 0.4000]"] + ["0.0090 [-0.0010, 0.0190]"] * 5
    assert rows[2][2:4] == ["0.3600 [0.3500, 0.3700]", "0.0150 [0.0050, 0.0250]"]
    assert rows[5][2:4] == ["0.2420", "0.0460"]  # the untrained model of seed 42 (no interval without its files)
    assert text.splitlines()[0] == "| tag set | topics | genre | style | mood | theme | artist | album |"
    assert "differ" not in text and "±" not in text


def test_table2_fixed_k_and_facets_are_parameters(results):
    rows = table_rows(gridreport.table2(results, fixed_k=None))
    assert [(r[0], r[1]) for r in rows[:-2]] == [("genres", "10"), ("moods", "160"), ("styles-moods", "20")]
    # by genre alone the best genres row is k=3
    rows = table_rows(gridreport.table2(results, facets=("genre",), fixed_k=100))
    assert [(r[0], r[1]) for r in rows[:-2]] == [
        ("genres", "3"),
        ("moods", "160"),
        ("styles-moods", "20"),
        ("styles-moods", "100"),
    ]
    assert len(rows[0]) == 3
    assert gridreport.best_ks(results) == {"genres": 10, "moods": 160, "styles-moods": 20}
    assert gridreport.best_ks(results, ("genre",)) == {"genres": 3, "moods": 160, "styles-moods": 20}


def two_seeds(results: pd.DataFrame) -> pd.DataFrame:
    """Each cell again with seed 7 and every precision 0.02 higher."""
    other = results.copy()
    other["seed"] = 7
    for column in [c for c in other.columns if c.startswith(("p_", "ci_low_", "ci_high_"))]:
        other[column] += 0.02
    other["untrained_p_genre"] += 0.1
    return pd.concat([results, other], ignore_index=True)


def test_table2_mean_and_sd_over_seeds_with_pooled_intervals(results):
    both = two_seeds(results)
    text = gridreport.table2(both)
    rows = table_rows(text)
    assert rows[0][:3] == ["genres", "10", "0.4000 ± 0.0141"]  # mean 0.39/0.41, sd 0.02/√2; no pooled interval
    assert "mean ± sd over the 2 training seeds 7, 42" in text and "not shown" in text
    assert rows[-2][:3] == ["untrained model", "", "0.2920 ± 0.0707"]  # 0.242 and 0.342 (seeds 42 and 7)
    intervals = pd.DataFrame(
        [
            {"combination": "genres", "k": 10, "ci_low_genre": 0.385, "ci_high_genre": 0.415},
            {"combination": "untrained", "k": 0, "ci_low_genre": 0.25, "ci_high_genre": 0.35},
        ]
    )
    settings = BootstrapSettings(n_resamples=500, seed=3, unit="album")
    text = gridreport.table2(both, intervals=intervals, settings=settings)
    rows = table_rows(text)
    assert rows[0][2] == "0.4000 ± 0.0141 [0.3850, 0.4150]" and rows[0][3] == "0.0190 ± 0.0141"
    assert rows[-2][2] == "0.2920 ± 0.0707 [0.2500, 0.3500]"
    assert (
        "[low, high]: 95 % percentile bootstrap intervals (500 resamples of albums, seed 3) of the "
        "seed-averaged per-query precision"
    ) in text
    # the best k is chosen by the seed-averaged mean: a seed that favours k = 3 does not flip it alone
    both.loc[(both["combination"] == "genres") & (both["k"] == 3) & (both["seed"] == 7), "p_style"] = 0.1
    assert gridreport.best_ks(both)["genres"] == 3
    # a rerun cell and seed counts once, with its last row
    rerun = pd.concat([both, both.iloc[[0]].assign(p_genre=0.9)], ignore_index=True)
    moods = next(r for r in table_rows(gridreport.table2(rerun)) if r[0] == "moods")
    assert moods[1:3] == ["20", "0.6100 ± 0.4101"]  # seeds 42 and 7: (0.9 + 0.32) / 2, now the best moods k


def test_table2_chance_row_and_footnote_when_chance_differs(results):
    rows = table_rows(gridreport.table2(results))
    assert rows[-1] == ["chance", ""] + [f"{CHANCE[f]:.4f}" for f in gridreport.FACETS]
    results.loc[3, "chance_mood"] = 0.005
    text = gridreport.table2(results)
    assert table_rows(text)[-1][4] == "0.0030"  # the first cell's
    assert "Chance levels differ across cells (mood 0.0030–0.0050)" in text


def test_table2_rejects_mixed_eval_k(results):
    results.loc[0, "eval_k"] = 10
    with pytest.raises(ValueError, match="several P@k"):
        gridreport.table2(results)


def test_plot_curves_one_png_per_facet(results, tmp_path):
    plain = gridreport.plot_curves(pd.DataFrame([legacy(r) for r in results.to_dict("records")]), tmp_path / "old")
    paths = gridreport.plot_curves(results, tmp_path / "plots")
    ink = [(imread(path)[..., :3] < 0.9).any(axis=2).sum() for path in (plain[0], paths[0])]
    assert ink[1] > ink[0]  # the error bars add ink
    assert [p.name for p in paths] == [f"p_at_k_{f}.png" for f in gridreport.FACETS]
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in paths)  # no temp files


def test_compare_pairs_same_k_else_our_best(results):
    paper = gridreport.read_paper(PAPER)
    text = gridreport.compare(results, paper)
    rows = table_rows(text)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("genres", "10", "10", "same k"),
        ("genres", "3", "3", "same k"),
        ("moods", "160", "160", "same k"),
        ("moods", "20", "20", "same k"),
        ("styles-moods", "320", "20", "our best"),  # the paper's best k we did not run → our best
        ("styles-moods", "20", "20", "same k"),
    ]
    assert rows[1][4] == "0.4000 [0.3900, 0.4100] (paper .3971)"
    assert rows[2][9] == "0.0150 [0.0050, 0.0250] (paper .0078)"
    assert "6 of 30 paper rows paired" in text and "not directly comparable" not in text


def test_compare_without_row_column_and_other_eval_k(results):
    paper = pd.DataFrame(
        [
            {"combination": "genres", "k": 3, **dict.fromkeys(gridreport.FACETS, 0.1)},
            {"combination": "moods", "k": 200, **dict.fromkeys(gridreport.FACETS, 0.2)},
            {"combination": "themes", "k": 20, **dict.fromkeys(gridreport.FACETS, 0.3)},
        ]
    )
    results["eval_k"] = 10
    text = gridreport.compare(results, paper)
    assert [(r[0], r[2], r[3]) for r in table_rows(text)] == [("genres", "3", "same k"), ("moods", "160", "our best")]
    assert "Ours is P@10, the paper's P@100" in text


def test_read_results_round_trip_and_canonical_names(results, tmp_path):
    path = tmp_path / "results.csv"
    results.to_csv(path, index=False)
    frame = gridreport.read_results(path)
    assert len(frame) == 7 and "moods-styles" not in set(frame["combination"])
    assert frame["k"].dtype.kind == "i" and frame["p_genre"].dtype.kind == "f"


def test_read_results_names_missing_column_and_file(results, tmp_path):
    path = tmp_path / "results.csv"
    results.drop(columns=["chance_album", "best_epoch"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"results\.csv: missing columns best_epoch, chance_album") as info:
        gridreport.read_results(path)
    assert isinstance(info.value, DataError)
    results.drop(columns=["diff_ci_high_theme"]).to_csv(path, index=False)  # the new layout, one column short
    with pytest.raises(ValueError, match=r"results\.csv: missing column diff_ci_high_theme; has combination"):
        gridreport.read_results(path)
    results.assign(seed=1.5).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"column seed must hold integers, found 1.5"):
        gridreport.read_results(path)


def test_read_results_of_the_layout_before_seeds(results, tmp_path):
    path = tmp_path / "results.csv"
    pd.DataFrame([legacy(row) for row in results.to_dict("records")]).to_csv(path, index=False)
    frame = gridreport.read_results(path)
    assert list(frame.columns[: len(gridreport.LEGACY_COLUMNS)]) == list(gridreport.LEGACY_COLUMNS)
    assert set(gridreport.RESULT_COLUMNS) <= set(frame.columns) and frame["seed"].isna().all()
    text = gridreport.table2(frame)
    rows = table_rows(text)
    assert rows[0][2:4] == ["0.3900", "0.0090"] and rows[-1][0] == "chance"  # no interval, no untrained row
    assert "untrained model" not in text
    assert "0.4000 (paper .3971)" in gridreport.compare(frame, gridreport.read_paper(PAPER))


def test_read_results_rejects_unknown_combination(results, tmp_path):
    path = tmp_path / "results.csv"
    results.assign(combination="genres-jazz").to_csv(path, index=False)
    with pytest.raises(ValueError, match="results.csv: .*genres-jazz"):
        gridreport.read_results(path)


def test_paper_table():
    paper = gridreport.read_paper(PAPER)
    assert len(paper) == 30 and set(paper["combination"]) == set(lsi.combinations())
    assert list(paper.columns) == ["combination", "k", "row", *gridreport.FACETS]
    assert all(sorted(rows) == ["best", "fixed"] for _, rows in paper.groupby("combination")["row"])
    fixed = paper[paper["row"] == "fixed"].set_index("combination")["k"]
    assert fixed.drop("genres").eq(20).all() and fixed["genres"] == 10
    values = paper[list(gridreport.FACETS)].to_numpy()
    assert ((values > 0) & (values < 1)).all()
    assert (values[:, 0] > values[:, 1:].max(axis=1)).all()  # genre precision is the largest in every row
    # spot checks against SPEC section 10 (the best rows)
    best = paper[paper["row"] == "best"].set_index("combination")
    assert best.loc["genres", "k"] == 3 and best.loc["genres", "genre"] == pytest.approx(0.3971)
    assert best.loc["genres-styles-moods", "k"] == 400 and best.loc["genres-styles-moods", "album"] == 0.0094
    assert best.loc["genres-styles-moods-themes", list(gridreport.FACETS)].tolist() == pytest.approx(
        [0.3652, 0.0173, 0.0125, 0.0147, 0.0173, 0.0097]
    )
    assert np.isclose(paper.loc[(paper["combination"] == "themes") & (paper["k"] == 20), "theme"], 0.0064).all()
