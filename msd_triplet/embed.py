"""Embed any audio with a trained model, and find similar tracks.

A *model source* is a run folder (``msd-triplet fit``), an exported SavedModel
folder (``msd-triplet export-savedmodel``) or a ``.keras`` file. Audio is read
exactly as for training (the configured segment, mono, 22,050 Hz, log-mel), in
a thread pool and in batches; files that cannot be read are skipped, counted
and listed with their reason, never a stop (unless none could be read).
"""

from __future__ import annotations

import csv
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from msd_triplet import shardfiles
from msd_triplet.config import FeatureConfig, load_config
from msd_triplet.errors import DataError, MsdTripletError
from msd_triplet.fileio import atomic_path, atomic_write_text, sibling_temp
from msd_triplet.runfolder import RunFolder

#: The audio files we read, by extension, with their media type (``serve`` plays them with it).
AUDIO_TYPES = {
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".aif": "audio/aiff",
    ".aiff": "audio/aiff",
}
#: Extensions collected when a folder is given (files given by name are read whatever their extension).
AUDIO_EXTENSIONS = tuple(AUDIO_TYPES)


@dataclass
class Embedder:
    """log-mel batch [B, bands, frames, 1] → embeddings [B, d], and the features it expects."""

    embed: Callable[[np.ndarray], np.ndarray]
    features: FeatureConfig
    source: str


def load_embedder(source: str | Path, checkpoint: str = "best") -> Embedder:
    """An :class:`Embedder` from a run folder, an exported SavedModel folder or a ``.keras`` file.

    A ``.keras`` file holds no feature settings: one in a run's ``checkpoints/``
    folder uses the run's ``config.yaml``; any other is assumed to take the
    default features, with a :class:`UserWarning` saying so (give the run
    folder or the exported SavedModel to avoid it).
    """
    source = Path(source)
    if source.is_dir() and RunFolder(source).is_run():
        from msd_triplet.training import load_run_model

        model = load_run_model(source, checkpoint)
        features = load_config(RunFolder(source).config).features
        return Embedder(lambda x: np.asarray(model.predict_on_batch(x)), features, f"run {source}")
    if source.is_dir() and (source / "saved_model.pb").is_file():
        import tensorflow as tf

        loaded = tf.saved_model.load(str(source))
        features = savedmodel_features(source)
        function = loaded.signatures["serving_default"]
        return Embedder(
            lambda x: next(iter(function(tf.constant(x)).values())).numpy(), features, f"SavedModel {source}"
        )
    if source.suffix == ".keras" and source.is_file():
        import keras  # importing msd_triplet registered the custom objects

        model = keras.models.load_model(source, compile=False)
        return Embedder(
            lambda x: np.asarray(model.predict_on_batch(x)), _keras_file_features(source, model), f"model {source}"
        )
    raise MsdTripletError(
        f"{source}: not a model; give a run folder (with config.yaml), an exported SavedModel "
        "folder (with saved_model.pb) or a .keras file"
    )


def savedmodel_features(folder: Path) -> FeatureConfig:
    """The features an exported SavedModel takes: its ``msd_triplet_config.yaml``, else the defaults."""
    config_path = folder / "msd_triplet_config.yaml"
    return load_config(config_path).features if config_path.is_file() else FeatureConfig()


def _keras_file_features(source: Path, model) -> FeatureConfig:
    """The features a bare ``.keras`` model takes: its run's (``<run>/checkpoints/x.keras``), else the defaults."""
    from msd_triplet import audio

    run = RunFolder(source.parent.parent)
    if source.parent == run.checkpoints and run.is_run():
        return load_config(run.config).features
    features = FeatureConfig()
    expected = tuple(audio.feature_shape(features))
    if tuple(model.input_shape[1:3]) != expected:
        raise MsdTripletError(
            f"{source}: the model takes log-mel input {tuple(model.input_shape[1:3])}, the default "
            f"features give {expected}; give the run folder or the exported SavedModel, which "
            "hold the feature settings"
        )
    warnings.warn(
        f"{source}: a .keras file holds no feature settings; assuming the defaults (features: of "
        "msd_triplet.config.FeatureConfig). Give the run folder or the exported SavedModel instead to "
        "use the settings the model was trained with",
        UserWarning,
        stacklevel=3,
    )
    return features


def find_audio(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, plus every entry with an audio extension under given folders (sorted).

    A path that does not exist but holds ``*``, ``?`` or ``[`` is a glob
    pattern (``**`` spans folders), e.g. ``"audio/**/*.mp3"``; what it
    matches is taken as if given (sorted). Missing paths, patterns that match
    nothing, and entries with an audio extension that are not regular files
    (a directory ``x.mp3``, a FIFO, a link to a device), are kept: the decoder
    skips them with kind ``missing`` / ``not_a_file`` so they are listed in the
    skip manifest rather than silently left out.
    """
    import glob

    found: list[Path] = []
    for path in map(Path, paths):
        matches = [path]
        if not path.exists() and glob.has_magic(str(path)):
            matches = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))] or [path]
        for match in matches:
            if match.is_dir():
                found.extend(sorted(p for p in match.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS))
            else:
                found.append(match)
    return list(dict.fromkeys(found))


def read_file_list(path: str | Path) -> list[str]:
    """The paths listed in a text file, one per line (blank lines and lines starting with ``#`` left out)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start}); list one path per line"
        ) from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class EmbedReport:
    out: Path
    tracks: Path  # the list of embedded files, in row order
    skipped_manifest: Path
    embedded: int
    skipped: int
    seconds: float
    shards: int = 0  # shards of the job
    shards_resumed: int = 0  # shards found finished from an earlier, interrupted run (not redone)


#: Files per shard of an embedding job: a crash loses at most the shards in progress.
DEFAULT_SHARD_SIZE = 1000
SHARD_FORMAT = 1


def shards_folder(out: str | Path) -> Path:
    """Where the shards of the job writing ``out`` live while it runs: ``<out without suffix>.shards``."""
    return Path(f"{Path(out).with_suffix('')}.shards")


def model_fingerprint(source: str | Path, checkpoint: str = "best") -> str:
    """SHA-256 (16 hex digits) of the files that hold a model source's weights and graph.

    Shards written with another model are never mixed into a job: the
    fingerprint is part of the job's identity (:func:`open_embed_job`).
    """
    import hashlib

    source = Path(source)
    if source.is_dir() and RunFolder(source).is_run():
        files = [RunFolder(source).loaded_checkpoint(checkpoint)]
    elif source.is_dir():
        files = [source / "saved_model.pb", source / "variables" / "variables.index"]
    else:
        files = [source]
    digest = hashlib.sha256()
    for path in files:
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}.npz"


def shard_path(folder: str, i: int, n: int) -> str:
    """The file of shard ``i`` of ``n`` of an embedding job in ``folder`` (local or a URL)."""
    return shardfiles.join(folder, _shard_name(i, n))


@dataclass(frozen=True)
class EmbedJob:
    """Files to embed, cut into shards of ``shard_size`` in order; each finished shard is one ``.npz``.

    A shard file holds ``paths`` (str [m], the embedded files), ``embeddings``
    (float32 [m, d]) and ``skipped_paths`` / ``skipped_kinds`` /
    ``skipped_messages`` for the files that could not be read. Written under a
    temporary name and renamed (:mod:`msd_triplet.shardfiles`), so a shard
    file is finished work; a rerun does the missing shards only.
    """

    files: tuple[str, ...]
    shard_size: int
    folder: str

    @property
    def n_shards(self) -> int:
        return -(-len(self.files) // self.shard_size)

    def shard_files(self, i: int) -> list[str]:
        return list(self.files[i * self.shard_size : (i + 1) * self.shard_size])

    def shard_path(self, i: int) -> str:
        return shard_path(self.folder, i, self.n_shards)

    def finished(self) -> set[int]:
        names = set(shardfiles.list_names(self.folder, f"shard-*-of-{self.n_shards:05d}.npz"))
        return {i for i in range(self.n_shards) if _shard_name(i, self.n_shards) in names}

    def missing(self) -> list[int]:
        done = self.finished()
        return [i for i in range(self.n_shards) if i not in done]


def open_embed_job(
    files: Sequence[str | Path], folder: str | Path, shard_size: int, model: str, features: FeatureConfig
) -> EmbedJob:
    """The job of embedding ``files`` with ``model`` into shards under ``folder`` (local or a URL).

    ``folder/job.json`` records what the shards hold (model fingerprint,
    feature parameters, the file list's SHA-256, shard size). Shards of
    another job found there (an interrupted run with other inputs) are
    deleted with a warning, never mixed in.
    """
    import hashlib
    import json

    from msd_triplet.errors import ArgumentError
    from msd_triplet.featurecache import feature_params

    if shard_size < 1:
        raise ArgumentError(f"shard_size: {shard_size}; must be at least 1")
    files = tuple(map(str, files))
    identity = {
        "format": SHARD_FORMAT,
        "model": model,
        "features": feature_params(features),
        "files": len(files),
        "files_sha256": hashlib.sha256("\n".join(files).encode("utf-8")).hexdigest(),
        "shard_size": shard_size,
    }
    folder = str(folder)
    shardfiles.make_folder(folder)
    job_file = shardfiles.join(folder, "job.json")
    if shardfiles.list_names(folder, "job.json"):
        try:
            existing = json.loads(shardfiles.read_bytes(job_file))
        except ValueError:
            existing = None
        if existing == identity:
            return EmbedJob(files, shard_size, folder)
        stale = shardfiles.list_names(folder, "shard-*.npz")
        warnings.warn(
            f"{folder}: {len(stale)} shard(s) of an earlier job with another model, files, features or "
            "shard size; deleted, starting anew",
            UserWarning,
            stacklevel=2,
        )
        shardfiles.delete([shardfiles.join(folder, name) for name in stale] + [job_file])
    shardfiles.write_bytes(job_file, (json.dumps(identity, indent=2) + "\n").encode("utf-8"))
    return EmbedJob(files, shard_size, folder)


def write_embed_shard(
    path: str, paths: Sequence[str], embeddings: np.ndarray, skipped: Sequence[tuple[str, str, str]]
) -> None:
    """One finished shard (see :class:`EmbedJob`)."""
    shardfiles.write_npz(
        path,
        {
            "paths": np.array(list(paths), dtype=str),
            "embeddings": np.asarray(embeddings, dtype=np.float32),
            "skipped_paths": np.array([p for p, _, _ in skipped], dtype=str),
            "skipped_kinds": np.array([k for _, k, _ in skipped], dtype=str),
            "skipped_messages": np.array([m for _, _, m in skipped], dtype=str),
        },
    )


def split_batch(batch, files: Sequence[str]) -> tuple[np.ndarray, list[str], list[tuple[str, str, str]]]:
    """A decoded batch (:class:`msd_triplet.features.DecodedBatch`, rows indexing ``files``) → the mask of
    its readable rows, their files, and (file, kind, message) of the others."""
    good = batch.kinds == ""
    kept = [files[int(j)] for j in batch.rows[good]]
    skipped = [
        (files[int(j)], str(k), str(m)) for j, k, m in zip(batch.rows[~good], batch.kinds[~good], batch.messages[~good])
    ]
    return good, kept, skipped


def _embed_shard(job: EmbedJob, i: int, embedder: Embedder, workers: int, batch_size: int, progress) -> None:
    from msd_triplet.features import decoded_batches

    files = job.shard_files(i)
    vectors, kept, skipped = [], [], []
    for batch in decoded_batches(files, np.arange(len(files)), embedder.features, workers, batch_size):
        good, batch_kept, batch_skipped = split_batch(batch, files)
        if good.any():
            vectors.append(embedder.embed(batch.log_mel[good][..., None]))
        kept.extend(batch_kept)
        skipped.extend(batch_skipped)
        if progress:
            progress(len(batch.rows))
    embeddings = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)
    write_embed_shard(job.shard_path(i), kept, embeddings, skipped)


def finish_embed_job(job: EmbedJob, out: Path, started: float, resumed: int, keep_shards: bool = False) -> EmbedReport:
    """Join the shards of a finished job into ``out`` (see :func:`embed_files`); delete them unless asked not to."""
    missing = job.missing()
    if missing:
        raise DataError(f"{job.folder}: {len(missing)} of {job.n_shards} shards are not finished; run the job again")
    vectors, kept, skipped = [], [], []
    for i in range(job.n_shards):
        shard = shardfiles.read_npz(job.shard_path(i))
        if shard["embeddings"].size:
            vectors.append(shard["embeddings"])
        kept.extend(shard["paths"].tolist())
        skipped.extend(
            zip(shard["skipped_paths"].tolist(), shard["skipped_kinds"].tolist(), shard["skipped_messages"].tolist())
        )
    stem = out.with_suffix("")
    tracks = Path(f"{stem}.tracks.csv")
    manifest = Path(f"{stem}.skipped.csv")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "kind", "message"])
    writer.writerows(skipped)
    atomic_write_text(manifest, text.getvalue())
    if not kept:
        _delete_job(job)
        kinds = pd.Series([k for _, k, _ in skipped]).value_counts()
        raise DataError(
            f"nothing embedded: {len(job.files)} file{'s' * (len(job.files) != 1)} given, none readable "
            f"({', '.join(f'{n} {k}' for k, n in kinds.items())}); see {manifest}"
        )
    embeddings = np.concatenate(vectors).astype(np.float32)
    if out.suffix == ".npy":
        with atomic_path(out, ".npy") as tmp:
            np.save(tmp, embeddings)
        atomic_write_text(tracks, pd.DataFrame({"row": range(len(kept)), "path": kept}).to_csv(index=False))
    else:
        frame = pd.DataFrame(embeddings, columns=[f"e{j}" for j in range(embeddings.shape[1])])
        frame.insert(0, "path", kept)
        atomic_write_text(out, frame.to_csv(index=False, float_format="%.7g"))
        tracks = out
    if not keep_shards:
        _delete_job(job)
    return EmbedReport(
        out, tracks, manifest, len(kept), len(skipped), time.perf_counter() - started, job.n_shards, resumed
    )


def _delete_job(job: EmbedJob) -> None:
    shardfiles.delete([job.shard_path(i) for i in range(job.n_shards)] + [shardfiles.join(job.folder, "job.json")])
    shardfiles.remove_folder(job.folder, "shard-")


def embed_files(
    paths: Sequence[str | Path],
    source: str | Path,
    out: str | Path,
    *,
    batch_size: int = 32,
    workers: Optional[int] = None,
    checkpoint: str = "best",
    shard_size: int = DEFAULT_SHARD_SIZE,
    keep_shards: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
) -> EmbedReport:
    """Embed audio files (and folders) with a model source; write ``out`` (.npy or .csv).

    ``.npy``: float32 [N, d], and ``<out>.tracks.csv`` (row, path) beside it.
    ``.csv``: one row per file: path, e0 … e(d-1). Always ``<out>.skipped.csv``
    (path, kind, message) listing the files that could not be read.

    The files are embedded in shards of ``shard_size`` (:class:`EmbedJob`),
    each written to ``<out>.shards/`` when finished: after a crash, the same
    call does only the shards that are missing and the result equals an
    uninterrupted run. The shards are deleted once ``out`` is written (kept
    with ``keep_shards``).

    Raises
    ------
    DataError
        The output's folder cannot be created or written (checked before any
        decoding), no audio file was found, ``<out>.shards`` holds another
        job, or none could be embedded (the skip manifest is written first and
        named in the message).
    """
    from msd_triplet.features import default_workers

    out = Path(out)
    check_output(out)
    urls = [str(p) for p in paths if shardfiles.is_url(p)]
    if urls:
        raise MsdTripletError(
            f"{urls[0]}: a URL; the local embed reads files on this machine: copy them here, mount the bucket, "
            "or run it on Apache Beam (--runner), whose workers read URLs"
        )
    files = find_audio(paths)
    if not files:
        raise DataError(f"no audio files in {', '.join(map(str, paths))} (looked for {', '.join(AUDIO_EXTENSIONS)})")
    started = time.perf_counter()
    embedder = load_embedder(source, checkpoint)
    job = open_embed_job(
        files, shards_folder(out), shard_size, model_fingerprint(source, checkpoint), embedder.features
    )
    todo = job.missing()
    done = len(files) - sum(len(job.shard_files(i)) for i in todo)
    if progress:
        progress(done, len(files))

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, len(files))

    for i in todo:
        _embed_shard(job, i, embedder, workers or default_workers(), batch_size, advance)
    return finish_embed_job(job, out, started, job.n_shards - len(todo), keep_shards)


def check_output(out: Path) -> None:
    """``out`` ends in .npy or .csv, and its folder can be created and written (a probe file); else an error
    naming it. Called before anything is decoded."""
    if out.suffix not in (".npy", ".csv"):
        raise MsdTripletError(f"{out}: output must end in .npy or .csv")
    if out.is_dir():
        raise DataError(f"{out}: is a folder; give a file name ending in .npy or .csv")
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        sibling_temp(out).unlink()
    except OSError as exc:
        raise DataError(
            f"{folder}: cannot write the output there ({exc.strerror or exc}); choose another --out"
        ) from None


# --------------------------------------------------------------------------- similar


def split_index(run: Path, split: str, checkpoint: str):
    """(track ids, embeddings, prepared data) of ``split`` ("all" for every track), cached in the run folder."""
    from msd_triplet import runs
    from msd_triplet.training import embed_rows, load_run_model

    config = runs.run_config(run)
    prepared, positions, cache, rows = runs.split_tracks(config, split)
    folder = RunFolder(run)
    model_path, cached = folder.loaded_checkpoint(checkpoint), folder.index(split, checkpoint)
    ids = prepared.tracks["track_id"].to_numpy()[positions].astype(str)
    if cached.is_file() and model_path.is_file() and cached.stat().st_mtime >= model_path.stat().st_mtime:
        with np.load(cached, allow_pickle=False) as stored:
            if np.array_equal(stored["track_ids"], ids):
                return stored["track_ids"], stored["embeddings"], prepared, config
    embeddings = embed_rows(load_run_model(run, checkpoint), cache, rows)
    with atomic_path(cached, ".npz") as tmp:
        np.savez(tmp, track_ids=ids, embeddings=embeddings)
    return ids, embeddings, prepared, config


def _tags_of(prepared, position: int, tagset: str) -> str:
    matrix = prepared.matrices.get(tagset)
    if matrix is None:
        return ""
    row = matrix.matrix[position]
    return ", ".join(matrix.vocabulary[j] for j in row.indices)


def similar(query: str, run: str | Path, *, n: int = 10, split: str = "test", checkpoint: str = "best") -> pd.DataFrame:
    """The ``n`` tracks of the run's ``split`` nearest to ``query`` (a prepared track id or an audio file).

    Exact squared Euclidean distances between the model's embeddings; the query
    track itself is left out. Columns: rank, track_id, distance, artist_id,
    album_id, genres, styles, moods.
    """
    run = Path(run)
    ids, embeddings, prepared, config = split_index(run, split, checkpoint)
    all_ids = prepared.tracks["track_id"].to_numpy().astype(str)
    where = {t: i for i, t in enumerate(all_ids)}
    if query in where:
        hit = np.flatnonzero(ids == query)
        if len(hit):
            vector = embeddings[hit[0]]
        else:
            from msd_triplet.featurecache import FeatureCache, cache_dir
            from msd_triplet.training import embed_rows, load_run_model

            cache = FeatureCache(cache_dir(config))
            vector = embed_rows(load_run_model(run, checkpoint), cache, cache.rows([query]))[0]
    elif Path(query).is_file():
        from msd_triplet.features import decoded_batches

        embedder = load_embedder(run, checkpoint)
        batch = next(decoded_batches([query], [0], embedder.features, workers=1, batch_size=1))
        if batch.kinds[0]:
            raise DataError(batch.messages[0])
        vector = embedder.embed(batch.log_mel[..., None])[0]
    else:
        raise DataError(f"{query}: neither a track id of the prepared data nor an audio file")
    distances = np.sum((embeddings - vector) ** 2, axis=1)
    distances[ids == query] = np.inf
    n = min(n, int(np.isfinite(distances).sum()))
    order = np.argsort(distances, kind="stable")[:n]
    rows = []
    for rank, i in enumerate(order, start=1):
        position = where[ids[i]]
        track = prepared.tracks.iloc[position]
        rows.append(
            {
                "rank": rank,
                "track_id": ids[i],
                "distance": float(distances[i]),
                "artist_id": track["artist_id"],
                "album_id": track["album_id"],
                **{s: _tags_of(prepared, position, s) for s in ("genres", "styles", "moods")},
            }
        )
    return pd.DataFrame(rows)
