"""Evaluating a run folder: embed a split with its checkpoint, P@k per facet with intervals, beside an untrained model.

:func:`evaluate_run` reads everything from the run folder written by
:func:`msd_triplet.training.fit` (its resolved ``config.yaml`` names the
prepared data and the feature cache) and writes into it:

``metrics.json``
    per facet the trained P@k with its bootstrap interval, the untrained one with
    its interval, and ``difference`` = trained − untrained with its *paired*
    interval (the same resampled queries for both), plus the bootstrap settings;
``metrics.md``
    the same as a table (:func:`msd_triplet.evaluation.format_results`);
``per_query.npz``
    the per-query precisions of both models (:class:`PerQuery`), so that later
    comparisons can be paired without embedding again.

These names are the test split's; an evaluation of another split writes
``metrics-<split>.json``, ``metrics-<split>.md`` and ``per_query-<split>.npz``
(:func:`split_file`), so evaluating the validation split leaves the test
figures alone.

:func:`evaluate_untrained` does the same for a freshly initialised model alone
(the grid evaluates it once per seed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np

from msd_triplet.config import Config, load_config
from msd_triplet.errors import DataError
from msd_triplet.fileio import atomic_path, atomic_write_json, atomic_write_text
from msd_triplet.runfolder import METRICS_FILE, METRICS_TABLE_FILE, PER_QUERY_FILE, RunFolder, split_file  # noqa: F401
from msd_triplet.uncertainty import BootstrapSettings, paired_differences

# METRICS_FILE, METRICS_TABLE_FILE, PER_QUERY_FILE and split_file (their per-split names) are runfolder's, kept here
# for the callers that import them from runs


@dataclass
class PerQuery:
    """Per-query precisions of one or more models on the N tracks of one split.

    track_ids, artist_ids, album_ids : str [N], the tracks in the order evaluated (the ids
        give the clusters of an album or artist bootstrap)
    k : the k of P@k
    models : {model name ("trained", "untrained"): {facet: float64 [N]}}, NaN where a
        track is not a query of the facet

    Saved as ``per_query.npz``: arrays ``track_id``, ``artist_id``, ``album_id``, ``k``,
    ``models``, ``facets`` and one ``<model>_<facet>`` per model and facet.
    """

    track_ids: np.ndarray
    artist_ids: np.ndarray
    album_ids: np.ndarray
    k: int
    models: dict[str, dict[str, np.ndarray]]

    def clusters(self, settings: BootstrapSettings) -> Optional[np.ndarray]:
        """Cluster labels [N] for ``settings.unit`` (None for "query")."""
        return settings.clusters(self.artist_ids, self.album_ids)

    def save(self, path: Path) -> Path:
        """Write the arrays to ``path`` (.npz) atomically; returns ``path``."""
        facets = list(dict.fromkeys(f for model in self.models.values() for f in model))
        arrays = {
            "track_id": np.asarray(self.track_ids, str),
            "artist_id": np.asarray(self.artist_ids, str),
            "album_id": np.asarray(self.album_ids, str),
            "k": np.int64(self.k),
            "models": np.array(list(self.models), str),
            "facets": np.array(facets, str),
        }
        for name, model in self.models.items():
            arrays.update({f"{name}_{facet}": np.asarray(values, np.float64) for facet, values in model.items()})
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> "PerQuery":
        """Read a ``per_query.npz``; DataError naming the file if it is missing or not one."""
        try:
            with np.load(path, allow_pickle=False) as data:
                models = {
                    str(m): {str(f): data[f"{m}_{f}"] for f in data["facets"] if f"{m}_{f}" in data.files}
                    for m in data["models"]
                }
                return cls(data["track_id"], data["artist_id"], data["album_id"], int(data["k"]), models)
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(
                f"{path}: cannot read per-query precisions ({exc}); evaluate the run again (`msd-triplet evaluate RUN`)"
            ) from None

    def require_same_queries(self, other: "PerQuery", what: str) -> None:
        """DataError unless ``other`` holds the same tracks in the same order (``what`` names the two)."""
        if len(self.track_ids) != len(other.track_ids) or not np.array_equal(self.track_ids, other.track_ids):
            raise DataError(
                f"{what}: the per-query precisions are not of the same tracks "
                f"({len(self.track_ids)} and {len(other.track_ids)} queries); compare runs "
                "evaluated on the same split of the same prepared data"
            )


@dataclass
class RunEvaluation:
    run_dir: Path
    model: str  # whose figures ``results`` are: "trained", or "untrained" alone
    split: str
    k: int
    match: str
    checkpoint: str
    tracks: int
    results: dict  # facet → {precision, ci_low, ci_high, chance, queries, k}
    untrained: Optional[dict]  # the same for a freshly initialised model of the same config
    difference: Optional[dict]  # facet → {difference, ci_low, ci_high, queries}: trained − untrained, paired
    bootstrap: BootstrapSettings
    per_query: PerQuery
    table: str  # Markdown

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "split": self.split,
            "k": self.k,
            "match": self.match,
            "checkpoint": self.checkpoint,
            "tracks": self.tracks,
            "bootstrap": self.bootstrap.to_json(),
            "facets": self.results,
            "untrained": self.untrained,
            "difference": self.difference,
        }

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        """(metrics.json, metrics.md, per_query.npz) of this split in the run folder (see :func:`split_file`)."""
        folder = RunFolder(self.run_dir)
        return folder.metrics(self.split), folder.metrics_md(self.split), folder.per_query(self.split)

    def write(self) -> None:
        """per_query.npz, metrics.md, then metrics.json (last: it marks the evaluation as done); the
        names of another split than test carry it (metrics-validation.json, ...)."""
        metrics, table, per_query = self.paths
        self.per_query.save(per_query)
        atomic_write_text(
            table,
            f"P@{self.k} on the {self.split} split ({self.tracks} tracks, {self.match} tag sets, "
            f"{self.checkpoint}); {self.bootstrap.describe()}\n\n{self.table}\n",
        )
        atomic_write_json(metrics, self.to_json())


def run_config(run: Path) -> Config:
    folder = RunFolder(run)
    if not folder.is_run():
        raise DataError(f"{run}: not a run folder ({folder.config.name} missing); train one with `msd-triplet fit`")
    return load_config(folder.config)


def split_tracks(config: Config, split: str):
    """(prepared data, positions in ``prepared.tracks``, feature cache, cache rows) of ``split``.

    ``split`` is train, validation, test, or ``"all"`` for every prepared track.
    """
    from msd_triplet.evaluation import split_rows
    from msd_triplet.featurecache import FeatureCache, cache_dir
    from msd_triplet.prepare import load_prepared

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


def evaluate_models(
    config: Config,
    networks: Mapping[str, Callable[[], object]],
    *,
    split: Optional[str] = None,
    match: Optional[str] = None,
    say: Callable[[str], None] = print,
) -> tuple[dict, dict[str, dict], PerQuery]:
    """Embed ``split`` with each network; P@k with bootstrap intervals per facet for each.

    ``networks`` : {name: function returning a Keras model}, built one after the other.
    Returns (``{"split", "k", "match", "tracks"}``, {name: results as from
    :func:`msd_triplet.evaluation.evaluate_embeddings`}, their :class:`PerQuery`).
    """
    from msd_triplet import evaluation, training

    split = split or config.evaluation.split
    match = match or config.evaluation.facet_match
    prepared, positions, cache, rows = split_tracks(config, split)
    n = len(positions)
    if n < 2:
        raise DataError(f"split {split!r} has {n} track(s); P@k needs at least 2")
    k = min(config.evaluation.k, n - 1)
    if k < config.evaluation.k:
        say(f"evaluation.k {config.evaluation.k} > {n - 1} other tracks in the {split} split: using k = {k}")
    facets = evaluation.facets_from_prepared(prepared, positions, match)
    tracks = prepared.tracks.iloc[positions]
    settings = BootstrapSettings.from_config(config)
    per_query = PerQuery(
        tracks["track_id"].to_numpy(str), tracks["artist_id"].to_numpy(str), tracks["album_id"].to_numpy(str), k, {}
    )
    results = {}
    for name, build in networks.items():
        embeddings = training.embed_rows(build(), cache, rows)
        results[name], per_query.models[name] = evaluation.evaluate_embeddings(
            embeddings,
            facets,
            k=k,
            chunk_size=config.evaluation.chunk_size,
            bootstrap=settings,
            clusters=per_query.clusters(settings),
            return_per_query=True,
        )
    return {"split": split, "k": k, "match": match, "tracks": n}, results, per_query


def evaluate_run(
    run: Path,
    *,
    split: Optional[str] = None,
    checkpoint: str = "best",
    match: Optional[str] = None,
    untrained: bool = True,
    say: Callable[[str], None] = print,
) -> RunEvaluation:
    """P@k per facet with bootstrap intervals of a run's model on ``split`` (default: ``evaluation.split``).

    With ``untrained`` the same figures for the run's architecture with its
    seeded initial weights, the baseline that shows what training added, and
    the paired interval of trained − untrained per facet. Intervals follow
    ``evaluation.bootstrap_resamples``, ``confidence`` and ``bootstrap_unit`` of
    the run's config, seeded with its ``seed``. Writes ``metrics.json``,
    ``metrics.md`` and ``per_query.npz`` into the run folder (``metrics-<split>.json``
    and so on for a split other than test, :attr:`RunEvaluation.paths`).
    """
    from msd_triplet import evaluation, training

    run = Path(run)
    config = run_config(run)
    model = training.load_run_model(run, checkpoint)
    networks = {"trained": lambda: model}
    if untrained:
        networks["untrained"] = lambda: training.compile_model(config)
    meta, results, per_query = evaluate_models(config, networks, split=split, match=match, say=say)
    settings = BootstrapSettings.from_config(config)
    difference = None
    if untrained:
        difference = paired_differences(
            per_query.models["trained"], per_query.models["untrained"], settings, per_query.clusters(settings)
        )
    table = evaluation.format_results(results["trained"], results.get("untrained"), difference, settings.level)
    report = RunEvaluation(
        run,
        "trained",
        meta["split"],
        meta["k"],
        meta["match"],
        f"{checkpoint} checkpoint",
        meta["tracks"],
        results["trained"],
        results.get("untrained"),
        difference,
        settings,
        per_query,
        table,
    )
    report.write()
    return report


def evaluate_untrained(
    config: Config,
    folder: Path,
    *,
    split: Optional[str] = None,
    match: Optional[str] = None,
    say: Callable[[str], None] = print,
) -> RunEvaluation:
    """P@k with intervals of the untrained model of ``config`` (its architecture, initialised from its seed).

    Writes ``metrics.json`` (``"model": "untrained"``), ``metrics.md`` and
    ``per_query.npz`` (model ``untrained``; names as :func:`split_file`) into ``folder``. The model depends
    only on the seed and ``config.model``, so one evaluation serves every LSI
    setting trained with that seed.
    """
    from msd_triplet import evaluation, training

    folder = Path(folder)
    meta, results, per_query = evaluate_models(
        config, {"untrained": lambda: training.compile_model(config)}, split=split, match=match, say=say
    )
    settings = BootstrapSettings.from_config(config)
    table = evaluation.format_results(results["untrained"], level=settings.level)
    report = RunEvaluation(
        folder,
        "untrained",
        meta["split"],
        meta["k"],
        meta["match"],
        f"untrained model, seed {config.seed}",
        meta["tracks"],
        results["untrained"],
        None,
        None,
        settings,
        per_query,
        table,
    )
    report.write()
    return report
