"""Feature extraction and embedding on Apache Beam: Dataflow, Flink, Spark, or the DirectRunner.

Both pipelines cut their work into numbered pieces and write each finished
piece as one file (:mod:`msd_triplet.shardfiles`), so a killed pipeline loses
only the pieces in progress and a rerun does the missing ones only.

**Features** (:func:`extract_tracks_beam`, ``msd-triplet prepare --runner …``):
the launcher reads and filters the track list as ``prepare`` does and opens the
feature cache (:mod:`msd_triplet.featurecache`); every ``chunk_size`` rows of
the cache that still need features are one work item. A worker decodes and
transforms them with the same functions as the local path
(:func:`msd_triplet.features.decoded_batches`) and writes
``chunk-<c>.npz`` (log-mel rows, track ids, skip kinds and messages) to the
staging folder, which may be a URL the workers share (``gs://…``). The
launcher stores the chunks into the cache by track id
(:func:`msd_triplet.featurecache.store_rows`), so the cache and its skip
manifest are those a local run writes, and deletes each chunk once stored.
A rerun first stores the chunks a killed run left behind, then sends out only
the rows still missing.

**Embeddings** (:func:`embed_files_beam`, ``msd-triplet embed … --runner …``):
the files are cut into the shards of an :class:`msd_triplet.embed.EmbedJob`;
workers decode a shard's files, RunInference applies the exported SavedModel
(:class:`msd_triplet.beamjobs.SavedModelHandler`), and each shard's vectors are
written as one ``.npz``; the launcher joins the shards into the same files
the local ``embed`` writes.

Apache Beam is an optional extra (``pip install -e .[beam]``); this module
imports it only when a pipeline is built.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from msd_triplet.errors import ConfigError, MsdTripletError

#: The runners the command line offers; any other Beam runner works through the Python API.
RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner")
#: Rows of the feature cache per work item of the extraction pipeline.
DEFAULT_CHUNK_SIZE = 500
CHUNK_FORMAT = 1

Say = Callable[[str], None]


def require_beam() -> None:
    """MsdTripletError saying how to install Apache Beam when it is missing."""
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        raise MsdTripletError(
            "Apache Beam is not installed; install the extra with `pip install -r requirements-beam.txt -e .[beam]`"
        ) from None


@dataclass(frozen=True)
class BeamRun:
    """How to run a pipeline: the runner, its pipeline options and where the workers' results go.

    Attributes
    ----------
    runner : a Beam runner name, e.g. "DirectRunner", "DataflowRunner"
    args : Beam pipeline options as on a command line, e.g. ``("--project=p", "--region=r")``
    workers : DirectRunner only: worker processes (``--direct_num_workers``; default: usable CPUs)
    staging : where workers write finished pieces (local folder or URL); None for the default of
        each pipeline (beside the feature cache, or beside the embedding output)
    chunk_size : rows of the feature cache per work item of the extraction pipeline
    audio_root : where the workers find ``data.root``'s audio files, when not at the same path
        (e.g. ``gs://bucket/msd-audio``); None reads the launcher's paths
    """

    runner: str = "DirectRunner"
    args: tuple[str, ...] = ()
    workers: Optional[int] = None
    staging: Optional[str] = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    audio_root: Optional[str] = None

    def options(self):
        """The ``PipelineOptions``; ConfigError for options Beam does not know (it would only warn)."""
        require_beam()
        from apache_beam.options.pipeline_options import PipelineOptions

        if self.chunk_size < 1:
            raise ConfigError(f"chunk size {self.chunk_size}: must be at least 1")
        args = list(self.args)
        if self.runner == "DirectRunner":
            from msd_triplet.features import default_workers

            if not any(a.startswith("--direct_num_workers") for a in args):
                args.append(f"--direct_num_workers={self.workers or default_workers()}")
            if not any(a.startswith("--direct_running_mode") for a in args):
                args.append("--direct_running_mode=multi_processing")
        elif self.workers is not None:
            raise ConfigError(
                f"--workers is for the DirectRunner; give {self.runner} its own option "
                "(Dataflow: --num_workers=N / --max_num_workers=N, Flink: --parallelism=N, "
                "Spark: the cluster's executors)"
            )
        if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
            args.append("--default_sdk_harness_log_level=WARNING")  # the workers' INFO lines drown the progress
        options = PipelineOptions(args, runner=self.runner)
        unknown = _unparseable(options)
        if unknown:
            raise ConfigError(
                f"pipeline options not known to Apache Beam: {' '.join(unknown)} "
                "(write them as --name=value; see `python -m apache_beam.examples.wordcount --help`)"
            )
        return options


def _unparseable(options) -> list[str]:
    """The arguments Beam would drop with a warning ("Discarding unparseable args")."""
    found: list[str] = []

    class _Catch(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if "unparseable args" in record.getMessage():
                found.extend(map(str, record.args[0]) if record.args else [record.getMessage()])
                return False
            return True

    logger = logging.getLogger("apache_beam.options.pipeline_options")
    catch, level = _Catch(), logger.level
    logger.addFilter(catch)
    logger.setLevel(logging.WARNING)  # even when the command line quietened Beam's loggers
    try:
        options.get_all_options()
    finally:
        logger.removeFilter(catch)
        logger.setLevel(level)
    return found


# --------------------------------------------------------------------------- features


def chunk_name(c: int) -> str:
    return f"chunk-{c:07d}.npz"


def store_chunks(cache, staging: str, say: Say = lambda _m: None) -> tuple[list[int], int, int, int]:
    """Store every finished chunk file in ``staging`` into ``cache``, then delete it.

    Returns (chunk numbers, rows stored, rows skipped, silent rows). Chunks made
    for other feature parameters are left where they are, with a warning.
    """
    import numpy as np

    from msd_triplet import shardfiles
    from msd_triplet.featurecache import store_rows

    done: list[int] = []
    stored = skipped = silent = 0
    for name in shardfiles.list_names(staging, "chunk-*.npz"):
        path = shardfiles.join(staging, name)
        data = shardfiles.read_npz(path)
        if str(data["key"]) != cache.meta.get("key"):
            say(f"warning: {path}: made for other feature parameters (key {data['key']}); left alone")
            continue
        n_ok, n_skipped = store_rows(cache, data["track_ids"], data["log_mel"], data["kinds"], data["messages"])
        stored, skipped = stored + n_ok, skipped + n_skipped
        silent += int(np.count_nonzero(data["silent"] & (data["kinds"] == "")))
        shardfiles.delete([path])
        done.append(int(name[len("chunk-") : -len(".npz")]))
    return done, stored, skipped, silent


def extract_tracks_beam(config, tracks, beam: BeamRun, say: Say = lambda _m: None):
    """Extract the features of a track table (``track_id``, ``audio_path`` under ``data.root``) on Beam.

    Writes the cache of ``config`` (:func:`msd_triplet.featurecache.cache_dir`)
    exactly as :func:`msd_triplet.features.extract_tracks` would; see the
    module docstring for the steps. Resumable: rows already in the cache and
    chunks a killed run finished are not computed again. Returns the
    :class:`~msd_triplet.features.ExtractionReport` (``chunks_run``,
    ``chunks_resumed`` say which work items were computed now and which were
    stored from an interrupted run).
    """
    import numpy as np

    from msd_triplet import features as ft
    from msd_triplet import shardfiles
    from msd_triplet.featurecache import TODO, cache_dir, open_or_create

    options = beam.options()
    started = time.perf_counter()
    ids = [str(t) for t in tracks["track_id"]]
    relative = [str(p) for p in tracks["audio_path"]]
    cache = open_or_create(cache_dir(config), ids, [str(config.data.path(p)) for p in relative], config.features, None)
    staging = beam.staging or str(cache.directory / "beam-chunks")
    shardfiles.make_folder(staging)
    resumed, n_ok, n_skipped, n_silent = store_chunks(cache, staging, say)
    if resumed:
        say(f"features: stored {len(resumed)} chunk(s) an earlier run had finished ({n_ok + n_skipped:,} rows)")
    todo = np.flatnonzero(cache.status() == TODO)
    worker_paths = _worker_paths(config, cache, beam.audio_root)
    chunks = {}
    numbers = todo // beam.chunk_size  # todo is sorted: each chunk's rows are one run
    for rows in np.split(todo, np.flatnonzero(np.diff(numbers)) + 1) if len(todo) else []:
        chunks[int(rows[0] // beam.chunk_size)] = (cache.track_ids[rows].tolist(), worker_paths[rows].tolist())
    report = ft.ExtractionReport(cache.directory, len(cache), list(range(len(cache.shards))))
    report.chunks_resumed = sorted(resumed)
    if chunks:
        say(f"features: {len(todo):,} tracks in {len(chunks)} chunk(s) on {beam.runner}; staging {staging}")
        _run_extraction(options, chunks, config.features, ft.cache_key(config.features), staging)
        run, report.extracted, report.skipped_now, report.silent_now = store_chunks(cache, staging, say)
        report.chunks_run = sorted(run)
    report.seconds = time.perf_counter() - started
    ft.close_report(cache, report)
    if not report.todo:
        shardfiles.remove_folder(staging, "chunk-")
    else:
        raise MsdTripletError(
            f"{cache.directory}: {report.todo:,} rows still have no features after the pipeline; "
            f"chunks may be missing from {staging}; run the same command again"
        )
    return report


def _worker_paths(config, cache, audio_root: Optional[str]):
    """The audio path of every cache row as the workers see it (``audio_root`` replaces ``data.root``)."""
    import numpy as np

    paths = np.asarray(cache.audio_paths, dtype=object)
    if audio_root is None:
        return paths
    root = str(config.data.root).rstrip("/") + "/"
    moved = [audio_root.rstrip("/") + "/" + p[len(root) :] if p.startswith(root) else p for p in paths]
    return np.asarray(moved, dtype=object)


def _run_extraction(options, chunks: dict, features, key: str, staging: str) -> None:
    require_beam()
    import apache_beam as beam

    from msd_triplet.beamjobs import ExtractChunk

    with beam.Pipeline(options=options) as pipeline:
        (
            pipeline
            | "Chunks" >> beam.Create(sorted(chunks.items()))
            | "Spread" >> beam.Reshuffle()
            | "Extract" >> beam.ParDo(ExtractChunk(features, key, staging))
        )


# --------------------------------------------------------------------------- embeddings


def embed_files_beam(
    paths: Sequence[str | Path],
    savedmodel: str | Path,
    out: str | Path,
    beam: BeamRun,
    *,
    batch_size: int = 32,
    shard_size: Optional[int] = None,
    keep_shards: bool = False,
    say: Say = lambda _m: None,
):
    """:func:`msd_triplet.embed.embed_files` on Beam, with an exported SavedModel through RunInference.

    ``paths`` may also be URLs the workers can read (``gs://…``, globs
    included; :func:`find_inputs`). Writes the same ``out`` (.npy + .tracks.csv,
    or .csv) and ``.skipped.csv`` as the local path; shards go to ``beam.staging`` (default
    ``<out>.shards``), which the workers must be able to write (a URL on a
    cluster). A rerun after a crash computes only the missing shards.
    Returns an :class:`msd_triplet.embed.EmbedReport`.
    """
    from msd_triplet import embed
    from msd_triplet.errors import DataError

    options = beam.options()
    savedmodel = Path(savedmodel)
    if not (savedmodel / "saved_model.pb").is_file():
        raise MsdTripletError(
            f"{savedmodel}: not an exported SavedModel (no saved_model.pb); the Beam pipeline serves "
            "SavedModels: run `msd-triplet export-savedmodel RUN OUT` first"
        )
    out = Path(out)
    embed.check_output(out)
    files = find_inputs(paths)
    if not files:
        raise DataError(f"no audio files in {', '.join(map(str, paths))}")
    features = embed.savedmodel_features(savedmodel)
    started = time.perf_counter()
    job = embed.open_embed_job(
        files,
        beam.staging or embed.shards_folder(out),
        shard_size or embed.DEFAULT_SHARD_SIZE,
        embed.model_fingerprint(savedmodel),
        features,
    )
    todo = job.missing()
    if todo:
        say(f"embedding {len(files):,} files in {len(todo)} of {job.n_shards} shard(s) on {beam.runner}")
        _run_embedding(options, job, todo, str(savedmodel.resolve()), features, batch_size)
    return embed.finish_embed_job(job, out, started, job.n_shards - len(todo), keep_shards)


def find_inputs(paths: Sequence[str | Path]) -> list[str]:
    """:func:`msd_triplet.embed.find_audio` for local paths, plus URLs (``gs://bucket/audio/*.mp3``).

    A URL with ``*``, ``?`` or ``[`` is matched through Beam's file systems
    (sorted; one that matches nothing is kept, to be listed as missing); any
    other URL is taken as a file. Local and URL inputs keep the order given.
    """
    import glob

    from msd_triplet import embed, shardfiles

    found: list[str] = []
    for path in paths:
        text = str(path)
        if not shardfiles.is_url(text):
            found.extend(map(str, embed.find_audio([text])))
        elif glob.has_magic(text):
            found.extend(shardfiles.match(text) or [text])
        else:
            found.append(text)
    return list(dict.fromkeys(found))


def _run_embedding(options, job, todo: list[int], model_uri: str, features, batch_size: int) -> None:
    require_beam()
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

    from msd_triplet import beamjobs

    with beam.Pipeline(options=options) as pipeline:
        (
            pipeline
            | "Shards" >> beam.Create([(i, job.shard_files(i)) for i in todo])
            | "Spread" >> beam.Reshuffle()
            | "Decode" >> beam.ParDo(beamjobs.DecodeShard(features, batch_size))
            | "Embed" >> RunInference(KeyedModelHandler(beamjobs.SavedModelHandler(model_uri, batch_size)))
            | "Write" >> beam.ParDo(beamjobs.WriteShard(job.folder, job.n_shards))
        )
