"""Per-query precisions of a grid's cells, averaged over training seeds: what its intervals and claims pair.

Each cell (combination, k) of a grid is trained once per seed, and each run
folder holds the per-query precisions of its test queries
(``per_query.npz``, :class:`msd_triplet.runs.PerQuery`); the untrained model
of each seed has a folder of its own. :class:`GridQueries` reads them on
demand and averages each query's precision over the seeds of a cell, so that
two cells (or a cell and the untrained model) can be compared on the same
queries with a paired bootstrap. :func:`pooled_intervals` gives the interval
of every seed-averaged cell, for ``table2.md`` and the plots.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from msd_triplet.errors import DataError
from msd_triplet.uncertainty import BootstrapSettings

__all__ = ["GridQueries", "pooled_intervals"]

Cell = tuple[str, int]  # (combination, k)


class GridQueries(Mapping):
    """(combination, k) → {facet: float64 [N]}: per-query precisions averaged over the cell's seeds.

    Parameters
    ----------
    cells : {(combination, k, seed): run folder holding per_query.npz with model "trained"}
    untrained : {seed: folder holding per_query.npz with model "untrained"}
    cache_size : cells kept in memory (each is 6 × N float64)

    Every file must hold the same queries in the same order (DataError otherwise);
    a query unlabelled in a facet is NaN in every seed, so it stays NaN.
    """

    def __init__(
        self,
        cells: Mapping[tuple[str, int, int], Path],
        untrained: Mapping[int, Path],
        cache_size: int = 32,
        split: str = "test",
    ) -> None:
        from msd_triplet.runs import PER_QUERY_FILE, PerQuery, split_file

        if not cells:
            raise DataError("grid: no finished cell with per-query precisions")
        self._folders: dict[Cell, list[tuple[int, Path]]] = {}
        for (combination, k, seed), folder in sorted(cells.items(), key=lambda item: item[0][2]):
            self._folders.setdefault((combination, int(k)), []).append((int(seed), Path(folder)))
        self._untrained = {int(seed): Path(folder) for seed, folder in untrained.items()}
        self._file = split_file(PER_QUERY_FILE, split)  # per_query.npz, or per_query-<split>.npz
        self._reference_path = next(iter(self._folders.values()))[0][1] / self._file
        self.reference: PerQuery = PerQuery.load(self._reference_path)
        self._cache: OrderedDict[Cell, dict[str, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size

    def __getitem__(self, cell: Cell) -> dict[str, np.ndarray]:
        if cell not in self._cache:
            if cell not in self._folders:
                raise KeyError(cell)
            self._cache[cell] = self._average(self._folders[cell], "trained")
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(cell)
        return self._cache[cell]

    def __iter__(self) -> Iterator[Cell]:
        return iter(self._folders)

    def __len__(self) -> int:
        return len(self._folders)

    @property
    def queries(self) -> int:
        """N, the number of test tracks (labelled in some facet or not)."""
        return len(self.reference.track_ids)

    def seeds(self, cell: Optional[Cell] = None) -> list[int]:
        """The seeds of ``cell``, or of any cell."""
        folders = self._folders[cell] if cell is not None else [f for fs in self._folders.values() for f in fs]
        return sorted({seed for seed, _ in folders})

    def clusters(self, settings: BootstrapSettings) -> Optional[np.ndarray]:
        """Cluster labels [N] of the queries for ``settings.unit`` (None for "query")."""
        return self.reference.clusters(settings)

    def untrained(self, seeds: Optional[Sequence[int]] = None) -> Optional[dict[str, np.ndarray]]:
        """The untrained model's per-query precisions averaged over ``seeds`` (default: every cell's seed).

        None when no untrained evaluation of those seeds exists.
        """
        seeds = self.seeds() if seeds is None else seeds
        folders = [(s, self._untrained[s]) for s in seeds if s in self._untrained]
        return self._average(folders, "untrained") if folders else None

    def _average(self, folders: list[tuple[int, Path]], model: str) -> dict[str, np.ndarray]:
        from msd_triplet.runs import PerQuery

        stacks: dict[str, list[np.ndarray]] = {}
        for _seed, folder in folders:
            path = folder / self._file
            loaded = PerQuery.load(path)
            loaded.require_same_queries(self.reference, f"{path} and {self._reference_path}")
            if model not in loaded.models:
                raise DataError(
                    f"{path}: holds no per-query precisions of the {model} model "
                    f"(it has {', '.join(loaded.models) or 'none'})"
                )
            for facet, values in loaded.models[model].items():
                stacks.setdefault(facet, []).append(values)
        return {facet: np.mean(np.stack(arrays), axis=0) for facet, arrays in stacks.items()}


def pooled_intervals(
    queries: GridQueries,
    settings: BootstrapSettings,
    facets: Sequence[str] = ("genre", "style", "mood", "theme", "artist", "album"),
) -> pd.DataFrame:
    """Intervals of the seed-averaged per-query precision, for ``gridreport.table2(intervals=…)``.

    One row per cell with two or more seeds (a single seed's interval is already
    in its results row) and one for the untrained model (combination
    ``"untrained"``, k 0, over every seed): columns ``combination``, ``k``,
    ``ci_low_<f>``, ``ci_high_<f>``.
    """
    from msd_triplet.gridreport import UNTRAINED

    clusters = queries.clusters(settings)
    rows = []
    targets = [(cell, queries[cell]) for cell in queries if len(queries.seeds(cell)) > 1]
    untrained = queries.untrained()
    if untrained is not None:
        targets.append(((UNTRAINED, 0), untrained))
    for (combination, k), arrays in targets:
        row = {"combination": combination, "k": k}
        for facet in facets:
            low, high = settings.interval(arrays[facet], clusters) if facet in arrays else (math.nan, math.nan)
            row[f"ci_low_{facet}"], row[f"ci_high_{facet}"] = low, high
        rows.append(row)
    columns = ["combination", "k"] + [f"{b}_{f}" for f in facets for b in ("ci_low", "ci_high")]
    return pd.DataFrame(rows, columns=columns)
