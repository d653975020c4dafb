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
        config_path = source / "msd_triplet_config.yaml"
        features = load_config(config_path).features if config_path.is_file() else FeatureConfig()
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

    Missing paths, and entries with an audio extension that are not regular
    files (a directory ``x.mp3``, a FIFO, a link to a device), are kept: the
    decoder skips them with kind ``missing`` / ``not_a_file`` so they are
    listed in the skip manifest rather than silently left out.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS))
        else:
            found.append(path)
    return list(dict.fromkeys(found))


@dataclass
class EmbedReport:
    out: Path
    tracks: Path  # the list of embedded files, in row order
    skipped_manifest: Path
    embedded: int
    skipped: int
    seconds: float


def embed_files(
    paths: Sequence[str | Path],
    source: str | Path,
    out: str | Path,
    *,
    batch_size: int = 32,
    workers: Optional[int] = None,
    checkpoint: str = "best",
    progress: Optional[Callable[[int, int], None]] = None,
) -> EmbedReport:
    """Embed audio files (and folders) with a model source; write ``out`` (.npy or .csv).

    ``.npy``: float32 [N, d], and ``<out>.tracks.csv`` (row, path) beside it.
    ``.csv``: one row per file: path, e0 … e(d-1). Always ``<out>.skipped.csv``
    (path, kind, message) listing the files that could not be read.

    Raises
    ------
    DataError
        The output's folder cannot be created or written (checked before any
        decoding), no audio file was found, or none could be embedded (the
        skip manifest is written first and named in the message).
    """
    from msd_triplet.features import decoded_batches, default_workers

    out = Path(out)
    if out.suffix not in (".npy", ".csv"):
        raise MsdTripletError(f"{out}: output must end in .npy or .csv")
    _check_writable(out)
    files = find_audio(paths)
    if not files:
        raise DataError(f"no audio files in {', '.join(map(str, paths))} (looked for {', '.join(AUDIO_EXTENSIONS)})")
    embedder = load_embedder(source, checkpoint)
    started = time.perf_counter()
    vectors, kept, skipped = [], [], []
    done = 0
    for batch in decoded_batches(
        [str(f) for f in files], np.arange(len(files)), embedder.features, workers or default_workers(), batch_size
    ):
        good = batch.kinds == ""
        if good.any():
            vectors.append(embedder.embed(batch.log_mel[good][..., None]))
            kept.extend(files[i] for i in batch.rows[good])
        skipped.extend(
            (str(files[i]), k, m) for i, k, m in zip(batch.rows[~good], batch.kinds[~good], batch.messages[~good])
        )
        done += len(batch.rows)
        if progress:
            progress(done, len(files))
    stem = out.with_suffix("")
    tracks = Path(f"{stem}.tracks.csv")
    manifest = Path(f"{stem}.skipped.csv")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "kind", "message"])
    writer.writerows(skipped)
    atomic_write_text(manifest, text.getvalue())
    if not kept:
        kinds = pd.Series([k for _, k, _ in skipped]).value_counts()
        raise DataError(
            f"nothing embedded: {len(files)} file{'s' * (len(files) != 1)} given, none readable "
            f"({', '.join(f'{n} {k}' for k, n in kinds.items())}); see {manifest}"
        )
    embeddings = np.concatenate(vectors).astype(np.float32)
    if out.suffix == ".npy":
        with atomic_path(out, ".npy") as tmp:
            np.save(tmp, embeddings)
        atomic_write_text(
            tracks, pd.DataFrame({"row": range(len(kept)), "path": list(map(str, kept))}).to_csv(index=False)
        )
    else:
        frame = pd.DataFrame(embeddings, columns=[f"e{j}" for j in range(embeddings.shape[1])])
        frame.insert(0, "path", list(map(str, kept)))
        atomic_write_text(out, frame.to_csv(index=False, float_format="%.7g"))
        tracks = out
    return EmbedReport(out, tracks, manifest, len(kept), len(skipped), time.perf_counter() - started)


def _check_writable(out: Path) -> None:
    """Create the folder of ``out`` and write a probe file in it; DataError naming the folder if either fails."""
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
