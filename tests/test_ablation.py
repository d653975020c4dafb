"""The triplet-selection ablation: calibrated sources, every cell once, resumable, reports with intervals."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_until_killed, write_run_config

from msd_triplet.config import load_config
from msd_triplet.errors import ConfigError

ABLATION = """\
ablation:
  sources: [lsi, jaccard, artist]
  minings: [batch_hard, semi_hard]
  folder: {folder}
"""

KILL_AFTER_FIRST_CELL = textwrap.dedent("""
    import os, signal, sys
    from msd_triplet.config import load_config
    from msd_triplet.ablation import run_ablation

    def say(line):
        print(line, flush=True)
        if line.startswith("cell 1/") and " done in " in line:
            os.kill(os.getpid(), signal.SIGKILL)

    run_ablation(load_config(sys.argv[1]), say=say)
""")


def _ablation_config(root: Path, folder: Path, section: str = ABLATION) -> Path:
    path = write_run_config(root, folder / "runs", epochs=1, name="ablation.yaml")
    path.write_text(path.read_text() + section.format(folder=folder))
    return path


@pytest.mark.slow
def test_ablation_killed_after_a_cell_resumes_with_every_cell_once_and_reports(prepared_root, tmp_path):
    from msd_triplet import runs
    from msd_triplet.ablation import RESULT_COLUMNS, run_ablation
    from msd_triplet.training import _flat
    from msd_triplet.uncertainty import paired_bootstrap_interval

    config_path = _ablation_config(prepared_root, tmp_path)
    done = run_until_killed(KILL_AFTER_FIRST_CELL, str(config_path))
    assert "3 sources × 2 minings × 1 seed, 0 done, 6 to train" in done.stdout
    # the reference cell (the paper's rule) is trained first
    assert "cell 1/6: lsi relatedness, batch_hard mining" in done.stdout
    folder = tmp_path / "experiment"
    assert len(pd.read_csv(folder / "results.csv")) == 1

    lines = []
    report = run_ablation(load_config(config_path), say=lines.append)
    assert (report.trained_now, report.skipped) == (5, 1)
    results = pd.read_csv(folder / "results.csv")
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert sorted(zip(results["source"], results["mining"])) == sorted(
        (s, m) for s in ("lsi", "jaccard", "artist") for m in ("batch_hard", "semi_hard")
    )
    # every cell's config differs from the reference only in source, mining, thresholds and name
    reference = _flat(load_config(folder / "cells" / "lsi-batch_hard" / "config.yaml").to_dict())
    for path in (folder / "cells").glob("*/config.yaml"):
        cell = _flat(load_config(path).to_dict())
        differ = {key for key in cell if cell[key] != reference[key]}
        assert differ <= {
            "loss.relatedness",
            "loss.mining",
            "loss.positive_threshold",
            "loss.negative_threshold",
            "name",
        }, (path, differ)
    # Jaccard thresholds come from the calibration; its shares are stored beside LSI's
    calibration = json.loads((folder / "calibration.json").read_text())["0"]
    assert set(calibration) == {"lsi", "jaccard", "artist"}
    jaccard = results[results["source"] == "jaccard"].iloc[0]
    assert jaccard["positive_threshold"] == calibration["jaccard"]["positive_threshold"]
    assert jaccard["negative_threshold"] <= jaccard["positive_threshold"]
    # artist relatedness: positives are tracks of one artist, so same-artist P@k has a source that names it
    assert calibration["artist"]["positive_share"] > 0
    # the paired difference to the untrained model in a row equals one computed from the per-query files
    row = results[(results["source"] == "artist") & (results["mining"] == "semi_hard")].iloc[0]
    trained = runs.PerQuery.load(folder / "cells" / "artist-semi_hard" / "per_query.npz").models["trained"]["genre"]
    untrained = runs.PerQuery.load(folder / "untrained" / "seed0" / "per_query.npz").models["untrained"]["genre"]
    assert [row["diff_ci_low_genre"], row["diff_ci_high_genre"]] == list(
        paired_bootstrap_interval(trained, untrained, seed=0)
    )
    # collapse signals from the run's log
    log = pd.read_csv(folder / "cells" / "artist-semi_hard" / "log.csv")
    assert row["spread_last"] == pytest.approx(log["embedding_spread"].iloc[-1])
    assert row["spread_ratio"] == pytest.approx(1.0)  # one epoch: last = first
    table = (folder / "ablation.md").read_text()
    assert "| lsi / batch_hard | " in table and "| untrained | " in table and "| chance | " in table
    assert "## Difference to lsi / batch_hard (the paper's rule), paired" in table
    assert "- **genre**: " in table
    summary = json.loads((folder / "summary.json").read_text())
    assert (
        summary["cells"]["jaccard-semi_hard"]["facets"]["genre"]["vs_reference"]["ci_low"]
        <= summary["cells"]["jaccard-semi_hard"]["facets"]["genre"]["vs_reference"]["difference"]
    )
    assert (folder / "plots" / "ablation.png").stat().st_size > 10_000
    again = run_ablation(load_config(config_path), say=lines.append)
    assert again.trained_now == 0 and len(again.results) == 6


def test_reference_difference_is_the_paired_bootstrap_of_the_per_query_files(tmp_path):
    from msd_triplet.ablation import _Pooled, summarise
    from msd_triplet.config import Config
    from msd_triplet.uncertainty import BootstrapSettings, paired_bootstrap_interval

    rng = np.random.default_rng(0)
    facets = ("genre", "mood")
    a = {f: rng.random(50) for f in facets}
    b = {f: a[f] - 0.2 + 0.01 * rng.standard_normal(50) for f in facets}  # clearly worse than a
    c = {f: a[f] + 0.002 * rng.standard_normal(50) for f in facets}  # indistinguishable from a
    cells = {("lsi", "batch_hard"): a, ("genre", "batch_all"): b, ("jaccard", "batch_hard"): c}
    rows = pd.DataFrame(
        [
            {
                "source": s,
                "mining": m,
                "seed": 0,
                **{
                    x: 0.5
                    for x in ("spread_first", "spread_last", "spread_ratio", "active_last", "valid_last", "loss_last")
                },
                **{f"p_{f}": float(np.mean(v[f])) for f in facets},
            }
            for (s, m), v in cells.items()
        ]
    )
    config = Config()
    settings = BootstrapSettings(seed=3)
    pooled = _Pooled(cells, {f: np.zeros(50) for f in facets}, None, {c: [0] for c in cells})
    summary = summarise(rows, pooled, config, settings)
    diff = summary["cells"][("genre", "batch_all")]["facets"]["genre"]["vs_reference"]
    assert [diff["ci_low"], diff["ci_high"]] == list(paired_bootstrap_interval(b["genre"], a["genre"], seed=3))
    assert diff["ci_high"] < 0
    assert summary["cells"][("lsi", "batch_hard")]["facets"]["genre"]["vs_reference"] is None
    winner = summary["winners"]["genre"]
    best = max(cells, key=lambda cell: np.mean(cells[cell]["genre"]))
    assert tuple(winner["best"]) == best
    assert ("genre", "batch_all") not in winner["not_separable"]
    other = ({("lsi", "batch_hard"), ("jaccard", "batch_hard")} - {best}).pop()
    assert other in winner["not_separable"]


@pytest.mark.parametrize(
    "section, message",
    [
        ("ablation:\n  sources: [lsi, tfidf]\n", "ablation.sources: unknown source 'tfidf'"),
        ("ablation:\n  minings: [batch_hard, hardest]\n", "ablation.minings: unknown mining .hardest."),
        ("ablation:\n  minings: [batch_hard+warmup0]\n", "ablation.minings: unknown mining .batch_hard.warmup0."),
        ("ablation:\n  minings: [batch_hard+soft]\n", "each optionally with .warmupN"),
        ("ablation:\n  minings: []\n", "ablation.minings: give at least one"),
        ("ablation:\n  sources: [lsi, lsi]\n", "repeated entries"),
        ("ablation:\n  reference: lsi\n", "ablation.reference: expected SOURCE:MINING"),
        ("ablation:\n  seeds: [1, 1]\n", "ablation.seeds"),
    ],
)
def test_bad_ablation_sections_are_clear_errors(tmp_path, section, message):
    path = tmp_path / "bad.yaml"
    path.write_text(section)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(path)


def test_only_names_a_cell_of_the_ablation(tmp_path):
    from msd_triplet.ablation import ablation_cells, parse_only

    path = tmp_path / "a.yaml"
    path.write_text("ablation:\n  sources: [genre, lsi]\n  minings: [batch_all, batch_hard]\n")
    config = load_config(path)
    assert ablation_cells(config)[0] == ("lsi", "batch_hard")
    assert len(ablation_cells(config)) == 4
    assert parse_only("genre:batch_all", config) == ("genre", "batch_all")
    with pytest.raises(ConfigError, match="--only 'artist:batch_all'"):
        parse_only("artist:batch_all", config)


def test_a_warm_up_variant_is_a_cell_with_batch_all_epochs_first(tmp_path):
    from msd_triplet.ablation import cell_config
    from msd_triplet.config import mining_variant

    assert mining_variant("semi_hard") == ("semi_hard", 0)
    assert mining_variant("batch_hard+warmup3") == ("batch_hard", 3)
    path = tmp_path / "a.yaml"
    path.write_text("training:\n  warmup_epochs: 2\nablation:\n  minings: [batch_hard, batch_hard+warmup3]\n")
    config = load_config(path)
    thresholds = {"positive_threshold": 0.5, "negative_threshold": 0.1}
    warm = cell_config(config, "jaccard", "batch_hard+warmup3", 7, thresholds)
    plain = cell_config(config, "jaccard", "batch_hard", 7, thresholds)
    assert (warm.loss.mining, warm.training.warmup_epochs) == ("batch_hard", 3)
    assert (plain.loss.mining, plain.training.warmup_epochs) == ("batch_hard", 0)  # the variant decides, not the base
    assert (warm.seed, warm.loss.relatedness, warm.loss.positive_threshold) == (7, "jaccard", 0.5)
