"""The experiment grid: one LSI per combination, every cell once, resumable after a kill."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_run_config
from msd_triplet.config import load_config
from msd_triplet.errors import ConfigError

GRID = """\
grid:
  combinations: [genres, moods, genres-moods]
  ks: [2, 3, 9]
  folder: {folder}
"""


def _grid_config(root: Path, folder: Path):
    path = write_run_config(root, folder / "runs", epochs=1, name="grid.yaml")
    path.write_text(path.read_text() + GRID.format(folder=folder))
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
def test_grid_killed_after_a_cell_resumes_and_has_every_cell_once(prepared_root, tmp_path):
    from msd_triplet.grid import RESULT_COLUMNS, run_grid

    config_path = _grid_config(prepared_root, tmp_path)
    done = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_CELL, str(config_path)], capture_output=True,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), cwd=Path(__file__).parent)
    assert done.returncode == -9, done.stderr[-2000:]
    # genres has 5 tags and moods 4: k = 9 only fits genres-moods (9 tags... at most 8 topics) -> skipped
    assert "skipping 3 cells" in done.stdout
    folder = tmp_path / "experiment"
    assert len(pd.read_csv(folder / "results.csv")) == 1

    lines = []
    report = run_grid(load_config(config_path), say=lines.append)
    assert (report.trained_now, report.skipped) == (5, 1)
    results = pd.read_csv(folder / "results.csv")
    assert list(results.columns) == list(RESULT_COLUMNS)
    cells = list(zip(results["combination"], results["k"]))
    assert sorted(cells) == sorted([(c, k) for c in ("genres", "moods", "genres-moods") for k in (2, 3)])
    assert len(set(cells)) == len(cells)
    assert results[[c for c in results.columns if c.startswith("p_")]].notna().all().all()
    # every cell of one combination used prefixes of one LSI: the k = 2 targets are the k = 3 ones, cut
    small = pd.read_csv(folder / "cells" / "genres-k2" / "log.csv")
    assert len(small) == 1 and (folder / "cells" / "genres-k3" / "lsi.npz").is_file()
    again = run_grid(load_config(config_path), say=lines.append)
    assert again.trained_now == 0 and len(again.results) == 6
    assert (folder / "table2.md").is_file() and list((folder / "plots").glob("*.png"))


def test_lsi_of_a_cell_is_a_prefix_of_the_largest_fit(prepared_root, tmp_path):
    from msd_triplet import lsi
    from msd_triplet.grid import cell_config
    from msd_triplet.tagsets import load_prepared

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
