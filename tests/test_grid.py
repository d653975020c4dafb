"""The experiment grid: one LSI per combination, every cell once, resumable after a kill."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_until_killed, write_run_config

from msd_triplet.config import load_config
from msd_triplet.errors import ConfigError

GRID = """\
grid:
  combinations: [genres, moods, genres-moods]
  ks: [2, 3, 9]
  folder: {folder}
"""
SEEDS = """\
grid:
  combinations: [genres, moods]
  ks: [2, 3, 9]
  seeds: [0, 1]
  folder: {folder}
"""


def _grid_config(root: Path, folder: Path, grid: str = GRID):
    path = write_run_config(root, folder / "runs", epochs=1, name="grid.yaml")
    path.write_text(path.read_text() + grid.format(folder=folder))
    return path


KILL_AFTER_FIRST_CELL = textwrap.dedent("""
    import os, signal, sys
    from msd_triplet.config import load_config
    from msd_triplet.grid import run_grid

    def say(line):
        print(line, flush=True)
        if line.startswith("cell 1/") and " done in " in line:
            os.kill(os.getpid(), signal.SIGKILL)

    run_grid(load_config(sys.argv[1]), say=say)
""")


@pytest.mark.slow
def test_grid_with_two_seeds_killed_after_a_cell_resumes_and_has_every_cell_once(prepared_root, tmp_path):
    from msd_triplet import runs
    from msd_triplet.grid import RESULT_COLUMNS, run_grid
    from msd_triplet.uncertainty import paired_bootstrap_interval

    config_path = _grid_config(prepared_root, tmp_path, SEEDS)
    done = run_until_killed(KILL_AFTER_FIRST_CELL, str(config_path))
    # genres has 5 tags and moods 4: k = 9 fits neither (at most 4 and 3 topics) -> skipped
    assert "skipping 2 cells" in done.stdout and "4 cells × 2 seeds, 0 done, 8 to train" in done.stdout
    folder = tmp_path / "experiment"
    assert len(pd.read_csv(folder / "results.csv")) == 1
    untrained = {seed: folder / "untrained" / f"seed{seed}" for seed in (0, 1)}
    stamps = {seed: (path / "metrics.json").stat().st_mtime_ns for seed, path in untrained.items()}

    lines = []
    report = run_grid(load_config(config_path), say=lines.append)
    assert (report.trained_now, report.skipped) == (7, 1)
    assert not any(line.startswith("untrained model") for line in lines)  # evaluated once per seed, before the kill
    assert {seed: (path / "metrics.json").stat().st_mtime_ns for seed, path in untrained.items()} == stamps
    results = pd.read_csv(folder / "results.csv")
    assert list(results.columns) == list(RESULT_COLUMNS)
    cells = list(zip(results["combination"], results["k"], results["seed"]))
    assert sorted(cells) == sorted((c, k, s) for c in ("genres", "moods") for k in (2, 3) for s in (0, 1))
    assert (
        results[[c for c in results.columns if c.split("_")[0] in ("p", "ci", "untrained", "diff")]].notna().all().all()
    )
    assert (results["ci_low_genre"] <= results["p_genre"]).all()
    assert (results["p_genre"] <= results["ci_high_genre"]).all()
    assert sorted(p.name for p in (folder / "cells").iterdir()) == sorted(
        f"{c}-k{k}-seed{s}" for c in ("genres", "moods") for k in (2, 3) for s in (0, 1)
    )
    # the untrained figures and the paired difference of a row come from the seed's untrained folder
    row = results[(results["combination"] == "moods") & (results["k"] == 3) & (results["seed"] == 1)].iloc[0]
    baseline = json.loads((untrained[1] / "metrics.json").read_text())
    assert baseline["model"] == "untrained" and row["untrained_p_mood"] == baseline["facets"]["mood"]["precision"]
    trained = runs.PerQuery.load(folder / "cells" / "moods-k3-seed1" / "per_query.npz").models["trained"]["mood"]
    reference = runs.PerQuery.load(untrained[1] / "per_query.npz").models["untrained"]["mood"]
    assert [row["diff_ci_low_mood"], row["diff_ci_high_mood"]] == list(
        paired_bootstrap_interval(trained, reference, seed=1)
    )
    # reports: mean ± sd over the two seeds with intervals, the untrained row, the claims
    table = (folder / "table2.md").read_text()
    assert "| genres | " in table and " ± " in table and "| untrained model | |" in table
    assert "mean ± sd over the 2 training seeds 0, 1" in table
    claims = (folder / "claims.md").read_text()
    assert "## (5) " in claims and "not tested (needs moods and styles)" in claims
    assert "averaged over the training seeds 0, 1" in claims
    assert list((folder / "plots").glob("*.png"))
    again = run_grid(load_config(config_path), say=lines.append)
    assert again.trained_now == 0 and len(again.results) == 8


@pytest.mark.slow
def test_grid_command_with_one_seed_keeps_folder_names_and_prints_the_reports(prepared_root, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from msd_triplet import gridreport
    from msd_triplet.cli import main

    calls = []
    for name in ("table2", "plot_curves", "compare"):

        def counted(*args, _real=getattr(gridreport, name), _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(gridreport, name, counted)
    paper = Path(__file__).resolve().parents[1] / "experiments" / "paper_table2.csv"
    result = CliRunner().invoke(
        main,
        [
            "grid",
            "--config",
            str(_grid_config(prepared_root, tmp_path)),
            "--only",
            "moods-genres:3",
            "--compare",
            str(paper),
        ],
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "experiment"
    assert [p.name for p in (folder / "cells").iterdir()] == ["genres-moods-k3"]
    assert [p.name for p in (folder / "untrained").iterdir()] == ["seed0"]
    assert pd.read_csv(folder / "results.csv")["seed"].tolist() == [0]
    table = (folder / "table2.md").read_text()
    assert "±" not in table and "| genres-moods | 3 | " in table and "[" in table  # one seed: no sd
    for text in (table, (folder / "claims.md").read_text(), (folder / "compare.md").read_text()):
        assert text.strip() in result.output
    assert "| (5) The trained network beats an untrained one" in result.output
    assert result.output.strip().endswith(f"1 cells trained now, 0 were done; wrote {folder}")
    # --compare writes table2.md, compare.md and the plots once each
    assert sorted(calls) == ["compare", "plot_curves", "table2"]


def test_lsi_of_a_cell_is_a_prefix_of_the_largest_fit(prepared_root, tmp_path):
    from msd_triplet import lsi
    from msd_triplet.grid import cell_config
    from msd_triplet.prepare import load_prepared

    config = load_config(_grid_config(prepared_root, tmp_path))
    prepared = load_prepared(config)
    large = lsi.fit_prepared(prepared, cell_config(config, "genres-moods", 8).lsi, config.seed, 8)[0]
    small = lsi.fit_prepared(prepared, cell_config(config, "genres-moods", 3).lsi, config.seed, 3)[0]
    assert abs(large.truncate(3).components - small.components).max() < 1e-10


def test_only_and_bad_cells_are_clear_errors(prepared_root, tmp_path):
    from msd_triplet.grid import grid_cells, parse_only

    config = load_config(_grid_config(prepared_root, tmp_path))
    assert parse_only("moods-genres:3") == ("genres-moods", 3)
    assert grid_cells(config, ("genres-moods", 3)) == [("genres-moods", 3)]
    with pytest.raises(ConfigError, match="not a cell of this grid"):
        grid_cells(config, ("genres", 7))
    with pytest.raises(ConfigError, match="expected COMBINATION:K"):
        parse_only("genres")
    with pytest.raises(ConfigError, match="unknown: rock"):
        parse_only("genres-rock:3")


def test_cell_names_and_configs_carry_the_seed(prepared_root, tmp_path):
    from msd_triplet.grid import cell_config, cell_name, grid_seeds

    config = load_config(_grid_config(prepared_root, tmp_path, SEEDS))
    assert grid_seeds(config) == (0, 1) and cell_name("genres", 3, 1) == "genres-k3-seed1"
    cell = cell_config(config, "genres", 3, 1)
    assert (cell.seed, cell.lsi.k, cell.grid.seeds, cell.name) == (1, 3, (), "experiment-genres-k3-seed1")
    single = load_config(_grid_config(prepared_root, tmp_path / "single"))
    assert grid_seeds(single) == (0,) and cell_config(single, "genres", 3).name == "experiment-genres-k3"
