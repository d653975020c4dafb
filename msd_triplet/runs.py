"""Evaluating a run folder: embed a split with its checkpoint, P@k per facet, beside an untrained model.

:func:`evaluate_run` reads everything from the run folder written by
:func:`msd_triplet.training.fit` (its resolved ``config.yaml`` names the
prepared data and the feature cache) and writes ``metrics.json`` and
``metrics.md`` into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from msd_triplet.config import Config, load_config
from msd_triplet.errors import DataError
from msd_triplet.fileio import atomic_write_json, atomic_write_text


@dataclass
class RunEvaluation:
    run_dir: Path
    split: str
    k: int
    match: str
    checkpoint: str
    tracks: int
    results: dict                      # facet → {precision, chance, queries, k}
    untrained: Optional[dict]          # the same for a freshly initialised model of the same config
    table: str                         # Markdown

    def to_json(self) -> dict:
        return {"split": self.split, "k": self.k, "match": self.match, "checkpoint": self.checkpoint,
                "tracks": self.tracks, "facets": self.results, "untrained": self.untrained}


def run_config(run: Path) -> Config:
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise DataError(f"{run}: not a run folder (config.yaml missing); train one with `msd-triplet fit`")
    return load_config(path)


def split_tracks(config: Config, split: str):
    """(prepared data, positions in ``prepared.tracks``, feature cache, cache rows) of ``split``.

    ``split`` is train, validation, test, or ``"all"`` for every prepared track.
    """
    from msd_triplet.evaluation import split_rows
    from msd_triplet.featurecache import FeatureCache, cache_dir
    from msd_triplet.tagsets import load_prepared

    prepared = load_prepared(config)
    if split == "all":
        positions = np.arange(len(prepared.tracks))
    else:
        try:
            positions = split_rows(prepared, split)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    cache = FeatureCache(cache_dir(config))
    return prepared, positions, cache, cache.rows(prepared.tracks["track_id"].to_numpy()[positions])


def split_embeddings(model, config: Config, split: str):
    """(embeddings [N, d], positions in prepared.tracks, prepared data) of one split."""
    from msd_triplet.training import embed_rows

    prepared, positions, cache, rows = split_tracks(config, split)
    return embed_rows(model, cache, rows), positions, prepared


def evaluate_run(run: Path, *, split: Optional[str] = None, checkpoint: str = "best", match: Optional[str] = None,
                 untrained: bool = True, say: Callable[[str], None] = print) -> RunEvaluation:
    """P@k per facet of a run's model on ``split`` (default: ``evaluation.split`` of its config).

    With ``untrained`` the same figures for the run's architecture with its
    seeded initial weights, the baseline that shows what training added.
    Writes ``metrics.json`` and ``metrics.md`` into the run folder.
    """
    from msd_triplet import evaluation, training

    run = Path(run)
    config = run_config(run)
    split = split or config.evaluation.split
    match = match or config.evaluation.facet_match
    model = training.load_run_model(run, checkpoint)
    prepared, positions, cache, rows = split_tracks(config, split)
    n = len(positions)
    if n < 2:
        raise DataError(f"split {split!r} has {n} track(s); P@k needs at least 2")
    k = min(config.evaluation.k, n - 1)
    if k < config.evaluation.k:
        say(f"evaluation.k {config.evaluation.k} > {n - 1} other tracks in the {split} split: using k = {k}")
    facets = evaluation.facets_from_prepared(prepared, positions, match)

    def evaluate(network) -> dict:
        return evaluation.evaluate_embeddings(training.embed_rows(network, cache, rows), facets, k=k,
                                              chunk_size=config.evaluation.chunk_size)

    results = evaluate(model)
    baseline = evaluate(training.compile_model(config)) if untrained else None
    table = evaluation.format_results(results, {"untrained": baseline} if baseline else None)
    report = RunEvaluation(run, split, k, match, checkpoint, n, results, baseline, table)
    atomic_write_json(run / "metrics.json", report.to_json())
    atomic_write_text(run / "metrics.md", f"P@{k} on the {split} split ({n} tracks, {match} tag sets, "
                                          f"{checkpoint} checkpoint)\n\n{table}\n")
    return report

