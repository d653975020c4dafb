"""The Apache Beam transforms of :mod:`msd_triplet.pipelines` (this module needs ``apache_beam``).

Workers import it by name, so every DoFn and function here is defined at
module level and holds only small, picklable settings (a
:class:`~msd_triplet.config.FeatureConfig`, folder names), never the track list.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any, Iterable, Iterator, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from msd_triplet import shardfiles
from msd_triplet.config import FeatureConfig

NAMESPACE = "msd_triplet"


def decode_paths(paths: Sequence[str], features: FeatureConfig, batch_size: int, threads: int = 1):
    """:func:`msd_triplet.features.decoded_batches` over ``paths`` (rows 0…n-1), URLs included.

    Files behind a URL (``gs://…``) are copied into a temporary folder one
    batch at a time, decoded there and deleted; their messages name the URL.
    """
    from msd_triplet.features import decoded_batches

    if not any(shardfiles.is_url(p) for p in paths):
        yield from decoded_batches(paths, np.arange(len(paths)), features, threads, batch_size)
        return
    for start in range(0, len(paths), batch_size):
        group = list(paths[start : start + batch_size])
        with _local_copies(group) as local:
            for batch in decoded_batches(local, np.arange(start, start + len(group)), features, threads, batch_size):
                batch.messages = np.array(
                    [_rename(m, lp, p) for m, lp, p in zip(batch.messages, local, group)], dtype=object
                )
                yield batch


def _rename(message: str, local: str, url: str) -> str:
    return message.replace(local, url) if message else message


@contextlib.contextmanager
def _local_copies(paths: list[str]) -> Iterator[list[str]]:
    """Local files with the contents of ``paths`` (URLs copied, local paths as they are)."""
    folder = tempfile.mkdtemp(prefix="msd-triplet-audio-")
    try:
        local = []
        for n, path in enumerate(paths):
            if not shardfiles.is_url(path):
                local.append(path)
                continue
            target = os.path.join(folder, f"{n}{os.path.splitext(path)[1]}")
            try:
                data = shardfiles.read_bytes(path)
            except Exception:  # noqa: BLE001 - an unreadable URL is a missing file, listed with the rest
                local.append(os.path.join(folder, f"missing-{n}"))
                continue
            with open(target, "wb") as f:
                f.write(data)
            local.append(target)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class ExtractChunk(beam.DoFn):
    """(chunk number, (track ids, audio paths)) → ``chunk-<c>.npz`` in ``staging``; yields the number."""

    def __init__(self, features: FeatureConfig, key: str, staging: str, batch_size: int = 16) -> None:
        self.features, self.key, self.staging, self.batch_size = features, key, staging, batch_size
        self.extracted = beam.metrics.Metrics.counter(NAMESPACE, "tracks_extracted")
        self.skipped = beam.metrics.Metrics.counter(NAMESPACE, "tracks_skipped")

    def process(self, element) -> Iterable[int]:
        from msd_triplet import audio
        from msd_triplet.pipelines import chunk_name

        c, (track_ids, paths) = element
        n = len(track_ids)
        log_mel = np.zeros((n, *audio.feature_shape(self.features)), np.float32)
        kinds = np.full(n, "", dtype=object)
        messages = np.full(n, "", dtype=object)
        silent = np.zeros(n, bool)
        for batch in decode_paths(paths, self.features, self.batch_size):
            log_mel[batch.rows] = batch.log_mel
            kinds[batch.rows], messages[batch.rows], silent[batch.rows] = batch.kinds, batch.messages, batch.silent
        shardfiles.write_npz(
            shardfiles.join(self.staging, chunk_name(c)),
            {
                "key": np.array(self.key),
                "track_ids": np.array(track_ids, dtype=str),
                "log_mel": log_mel,
                "kinds": kinds.astype(str),
                "messages": messages.astype(str),
                "silent": silent,
            },
        )
        bad = int(np.count_nonzero(kinds != ""))
        self.extracted.inc(n - bad)
        self.skipped.inc(bad)
        yield c


class DecodeShard(beam.DoFn):
    """(shard, files) → ((shard, kept paths, skipped (path, kind, message)), log-mel [m, bands, frames, 1]).

    One element per shard: RunInference embeds it whole and :class:`WriteShard`
    writes it in the same fused stage, with no grouping step in between, so
    each shard is on disk as soon as it is embedded (a GroupByKey would hold
    every shard back until all of them were embedded).
    """

    def __init__(self, features: FeatureConfig, batch_size: int) -> None:
        self.features, self.batch_size = features, batch_size
        self.skipped = beam.metrics.Metrics.counter(NAMESPACE, "files_skipped")
        self.decoded = beam.metrics.Metrics.counter(NAMESPACE, "files_decoded")

    def process(self, element):
        from msd_triplet import audio
        from msd_triplet.embed import split_batch

        shard, files = element
        kept, skipped, values = [], [], []
        for batch in decode_paths(files, self.features, self.batch_size):
            good, batch_kept, batch_skipped = split_batch(batch, files)
            values.append(batch.log_mel[good])
            kept.extend(batch_kept)
            skipped.extend(batch_skipped)
        self.decoded.inc(len(kept))
        self.skipped.inc(len(skipped))
        shape = audio.feature_shape(self.features)
        stack = np.concatenate(values) if values else np.zeros((0, *shape), np.float32)
        yield (shard, tuple(kept), tuple(skipped)), stack[..., None]


class WriteShard(beam.DoFn):
    """((shard, kept paths, skipped), RunInference's result) → the shard's ``.npz``; yields the shard number."""

    def __init__(self, folder: str, n_shards: int) -> None:
        self.folder, self.n_shards = folder, n_shards

    def process(self, element):
        from msd_triplet.embed import shard_path, write_embed_shard

        (shard, kept, skipped), result = element
        embeddings = np.asarray(result.inference, np.float32)
        write_embed_shard(shard_path(self.folder, shard, self.n_shards), list(kept), embeddings, list(skipped))
        yield shard


class SavedModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """RunInference's handler for a SavedModel of ``msd-triplet export-savedmodel``.

    An example is the log-mel stack of one shard, float32 [m, bands, frames, 1];
    its inference is the embeddings [m, d], computed ``batch_size`` rows at a
    time by the serving signature, the same function the local ``embed`` calls
    for a SavedModel. Beam's own ``TFModelHandlerNumpy`` loads with
    ``tf.keras.models.load_model``, which Keras 3 refuses for SavedModel
    folders, and needs tensorflow_hub; this handler uses ``tf.saved_model.load``.
    """

    def __init__(self, model_uri: str, batch_size: int = 32, signature: str = "serving_default") -> None:
        super().__init__(min_batch_size=1, max_batch_size=1)  # an example is already a whole shard
        self.model_uri, self.signature, self.batch_size = model_uri, signature, batch_size

    def load_model(self) -> Any:
        import tensorflow as tf

        return tf.saved_model.load(self.model_uri)

    def run_inference(
        self, batch: Sequence[np.ndarray], model: Any, inference_args: Optional[dict[str, Any]] = None
    ) -> Iterable[PredictionResult]:
        import tensorflow as tf

        function = model.signatures[self.signature]
        results = []
        for example in batch:
            parts = []
            for start in range(0, len(example), self.batch_size):
                outputs = function(tf.constant(example[start : start + self.batch_size], tf.float32))
                parts.append(
                    next(iter(outputs.values())).numpy() if len(outputs) == 1 else outputs["embedding"].numpy()
                )
            vectors = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
            results.append(PredictionResult(example, vectors))
        return results

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return int(sum(x.nbytes for x in batch))

    def get_metrics_namespace(self) -> str:
        return "msd_triplet_savedmodel"
