"""Training: the DPNN with the LSI triplet loss, ``model.fit`` over the feature cache, one run folder.

:func:`fit` trains a config into a run folder (``<training.runs>/<name>``):
the resolved config, the run's provenance, its LSI model, its state and log, the
checkpoints of every epoch and the TensorBoard scalars; the layout, and the name
of every file, are in :mod:`msd_triplet.runfolder`.

Everything of an epoch is written once it ends, checkpoint first and
``state.json`` last (each atomically), so a run killed at any point resumes
from the last finished epoch and loses only the running one. The seed sets the
initialisers, the per-epoch order of the training tracks (a function of seed
and epoch, so a resumed run sees the same batches) and the LSI.

:func:`dry_run` builds everything for a config and runs one training step on a
random batch of the configured size (``msd-triplet fit --dry-run``).
"""

from __future__ import annotations

import csv
import io
import json
import platform
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import keras
import numpy as np

from msd_triplet import audio, devices, losses
from msd_triplet.config import Config, save_config
from msd_triplet.errors import ConfigError, DataError, MsdTripletError
from msd_triplet.fileio import atomic_path, atomic_write_json, atomic_write_text
from msd_triplet.runfolder import RunFolder
from msd_triplet.splits import split_positions

#: Tag facets whose mean validation P@k decides the best epoch and early stopping.
MONITOR = "val_precision"


@dataclass
class DryRunReport:
    parameters: int
    trainable_parameters: int
    input_shape: tuple[int, ...]
    embedding_dim: int
    batch_size: int
    compile_seconds: float  # first step: tracing (and XLA compilation)
    step_seconds: float  # second step
    loss: float
    statistics: dict[str, float]
    precision: str  # the conv stacks' dtype policy
    jit_compile: bool


@dataclass
class TrainingData:
    """What a run trains and validates on.

    ``rows[split]`` are feature-cache rows, ``positions[split]`` row positions
    in ``prepared.tracks``, ``targets[split]`` packed LSI + album targets
    (:func:`msd_triplet.losses.pack_targets`), all aligned.
    """

    prepared: object
    cache: object
    lsi: object
    rows: dict[str, np.ndarray]
    positions: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]


@dataclass
class FitResult:
    run_dir: Path
    epochs: int  # epochs finished in the run (all sessions)
    best_epoch: Optional[int]  # 1-based; None without validation
    best_value: Optional[float]
    stopped_early: bool
    history: list[dict] = field(default_factory=list)


def distribution_strategy(config: Config):
    """The ``tf.distribute`` strategy of ``training.distribution`` (:func:`msd_triplet.devices.distribution_strategy`).

    Checks that ``training.batch_size`` splits evenly over its replicas (:func:`check_batch_size`).
    """
    strategy = devices.distribution_strategy(config.training.distribution)
    check_batch_size(config.training.batch_size, strategy.num_replicas_in_sync)
    return strategy


def check_batch_size(batch_size: int, replicas: int) -> None:
    """ConfigError unless the global batch of ``batch_size`` tracks splits evenly over ``replicas``.

    Each replica embeds an equal slice; an uneven split would give the
    replicas slices of different sizes, which the gathers of the loss and of
    synchronised batch normalisation do not expect.
    """
    if replicas > 1 and batch_size % replicas:
        near = batch_size - batch_size % replicas or replicas
        raise ConfigError(
            f"training.batch_size {batch_size} does not split evenly over {replicas} replicas; "
            f"use a multiple of {replicas}, e.g. {near} or {near + replicas}"
        )


def adapt_to_workers(model, strategy) -> None:
    """Let Keras 3 ``model.fit`` train ``model`` under a several-process ``MultiWorkerMirroredStrategy``.

    Nothing happens for other strategies. Keras 3.15 with TensorFlow 2.21
    fails in three places under several workers (found by
    ``tests/test_multi_worker.py``); this patches the model instance, not Keras:

    * ``fit`` builds the model from its first batch after averaging the
      ``(x, y)`` tuple over the workers with ``strategy.reduce``, which refuses
      nested values there (keras-team/keras#20585); the build only needs the
      shapes, so it gets this worker's own slice instead.
    * The batches of a distributed dataset reach the step without a device,
      and ``ReplicaContext.all_gather`` (the loss gathers the global batch,
      :func:`msd_triplet.losses.global_batch`) refuses such a value
      ("destinations can not be empty"); ``tf.identity`` inside the step puts
      them on the replica's device.
    * Keras averages each scalar log over the workers with
      ``strategy.reduce(..., axis=0)``, which fails for a scalar; the step
      returns every log as a vector of one. The loss and the statistics are
      computed on the gathered global batch, so every replica holds the same
      value and the average is that value.
    """
    import tensorflow as tf

    if not devices.is_multi_worker(strategy):
        return
    build, step = model._maybe_symbolic_build, model.train_step

    def build_from_local_slice(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], next(batches))
                break
        return build(data_batch=data_batch)

    def train_step(data):
        logs = step(tf.nest.map_structure(tf.identity, data))
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}

    model._maybe_symbolic_build = build_from_local_slice
    model.train_step = train_step


def model_compute(model) -> dict:
    """How a compiled DPNN computes: its conv stacks' dtype policy, XLA, the replicas, and the machine's GPUs."""
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    return {
        "precision": conv.dtype_policy.name,
        "jit_compile": bool(model.jit_compile),
        "replicas": int(model.distribute_strategy.num_replicas_in_sync),
        "gpus": devices.gpu_count(),
        "cpu_bfloat16": devices.cpu_has_bfloat16(),
    }


def compile_model(config: Config, seed: int | None = None, strategy=None, mining: str | None = None):
    """The DPNN of ``config.model`` compiled with Adam, the LSI triplet loss and its statistics.

    Built under ``strategy`` (default: the current one); with several replicas
    batch normalisation is synchronised and the loss gathers the global batch.
    ``mining`` overrides ``config.loss.mining`` (the warm-up uses ``batch_all``).
    The conv stacks compute in ``training.precision`` (resolved for this
    machine, :func:`msd_triplet.devices.resolve_precision`); with ``mixed_float16`` Adam is wrapped
    in a dynamic loss scale. ``training.batch_size`` must split evenly over the
    replicas (:func:`check_batch_size`); under several workers the model is
    made ready for ``model.fit`` (:func:`adapt_to_workers`).
    """
    import tensorflow as tf

    from msd_triplet.model import build_dpnn

    strategy = strategy or tf.distribute.get_strategy()
    check_batch_size(config.training.batch_size, strategy.num_replicas_in_sync)
    precision = devices.resolve_precision(config.training.precision)
    with strategy.scope():
        model = build_dpnn(
            config.model,
            audio.feature_shape(config.features),
            seed=config.seed if seed is None else seed,
            synchronized_bn=strategy.num_replicas_in_sync > 1,
            precision=precision,
        )
        optimizer = keras.optimizers.Adam(config.training.learning_rate)
        if precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        compile_loss(model, config, optimizer, mining)
    adapt_to_workers(model, strategy)
    return model


def compile_loss(model, config: Config, optimizer, mining: str | None = None) -> None:
    """(Re)compile ``model`` with ``optimizer`` (its state kept), the loss of ``config`` and its statistics."""
    loss = losses.LsiTripletLoss.from_config_dataclass(config.loss, mining)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=losses.triplet_metrics(loss),
        jit_compile=devices.resolve_jit_compile(config.training.jit_compile),
    )


def training_phases(config: Config, initial_epoch: int) -> list[tuple[int, int, str]]:
    """(first epoch, end epoch, mining) of what is left to train: the batch_all warm-up, then ``loss.mining``."""
    warmup = min(config.training.warmup_epochs, config.training.epochs)
    phases = [(0, warmup, "batch_all"), (warmup, config.training.epochs, config.loss.mining)]
    return [
        (max(start, initial_epoch), end, mining) for start, end, mining in phases if end > max(start, initial_epoch)
    ]


def random_batch(config: Config, k: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A batch shaped like training data: log-mel-like inputs, clustered LSI vectors, albums of 4."""
    rng = np.random.default_rng(seed)
    b = config.training.batch_size
    x = rng.standard_normal((b, *audio.feature_shape(config.features), 1)).astype(np.float32)
    topics = rng.standard_normal((8, k))
    lsi = topics[rng.integers(0, 8, b)] + 0.3 * rng.standard_normal((b, k))
    return x, losses.pack_targets(lsi, np.arange(b) // 4)


def dry_run(config: Config) -> DryRunReport:
    """Build the model and loss of ``config`` and time one training step on a random batch."""

    keras.utils.set_random_seed(config.seed)
    model = compile_model(config)
    x, y = random_batch(config, seed=config.seed)
    started = time.perf_counter()
    model.train_on_batch(x, y)
    compiled = time.perf_counter() - started
    started = time.perf_counter()
    result = model.train_on_batch(x, y, return_dict=True)
    step = time.perf_counter() - started
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return DryRunReport(
        int(model.count_params()),
        trainable,
        tuple(model.input_shape[1:]),
        int(model.output_shape[-1]),
        config.training.batch_size,
        compiled,
        step,
        float(result["loss"]),
        {s: float(result[s]) for s in losses.STATISTICS if s in result},
        model_compute(model)["precision"],
        bool(model.jit_compile),
    )


# --------------------------------------------------------------------------- data


def load_training_data(config: Config, splits=("train", "validation", "test"), lsi_model=None) -> TrainingData:
    """Prepared tracks, their cached features and targets; DataError naming the command to run.

    The targets are the vectors ``loss.relatedness`` relates tracks by (LSI vectors,
    binary tags, a main-genre or artist label; :mod:`msd_triplet.relatedness`),
    followed by the album index (:func:`msd_triplet.losses.pack_targets`).

    The LSI is fitted on the training split as ``config.lsi`` says, unless
    ``lsi_model`` (an :class:`msd_triplet.lsi.LsiModel`, e.g. a truncation of a
    larger fit, as the grid does) is given.
    """
    from msd_triplet import lsi
    from msd_triplet.featurecache import FeatureCache, cache_dir
    from msd_triplet.prepare import load_prepared

    prepared = load_prepared(config)
    directory = cache_dir(config)
    if not directory.is_dir():
        raise DataError(
            f"{directory}: no feature cache for these feature settings; run "
            "`msd-triplet prepare --config <your config>` (without --no-features) first"
        )
    cache = FeatureCache(directory)
    if lsi_model is None:
        model, vectors = lsi.fit_prepared(prepared, config.lsi, config.seed)
    else:
        matrix, _ = lsi.stacked_matrix(prepared.matrices, lsi_model.sets)
        model, vectors = lsi_model, lsi_model.transform(matrix, config.lsi.zero_norm_rtol)
    if config.loss.relatedness != "lsi":
        from msd_triplet.relatedness import source_vectors

        vectors = source_vectors(
            config.loss.relatedness, prepared, np.arange(len(prepared.tracks)), vectors, config.lsi.tag_sets
        )
    targets = losses.pack_targets(vectors, prepared.tracks["album_id"].to_numpy())
    ids = prepared.tracks["track_id"].to_numpy()
    positions = {s: split_positions(prepared.tracks, s) for s in splits}
    rows = {s: cache.rows(ids[p]) if len(p) else np.zeros(0, np.int64) for s, p in positions.items()}
    return TrainingData(prepared, cache, model, rows, positions, {s: targets[p] for s, p in positions.items()})


def embed_rows(model, cache, rows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """float32 [len(rows), d]: the model's outputs for cache rows, in order."""
    from msd_triplet.features import feature_dataset

    dataset = feature_dataset(cache, rows, batch_size=batch_size)
    return np.concatenate([predict_full_batches(model, np.asarray(x), batch_size) for x in dataset], axis=0)


def predict_full_batches(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``model.predict_on_batch(x)`` with a short last batch zero-padded to ``batch_size``.

    Every call then has one input shape, so the predict function is traced once per
    model instead of again for each short batch (and TensorFlow's retracing warning
    stays away). Rows are independent in inference, so the padding changes nothing.
    """
    n = len(x)
    if 0 < n < batch_size:
        x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)])
    return np.asarray(model.predict_on_batch(x))[:n]


# --------------------------------------------------------------------------- run folder


def run_directory(config: Config, run_dir: Optional[Path] = None) -> Path:
    return Path(run_dir) if run_dir is not None else Path(config.training.runs) / config.name


def _read_state(run: Path) -> Optional[dict]:
    path = RunFolder(run).state
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the run state ({exc})") from None


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_resumable(run: Path, config: Config) -> None:
    """The saved config must equal ``config`` apart from ``training.epochs``."""
    from msd_triplet.config import load_config

    saved, current = _flat(load_config(RunFolder(run).config).to_dict()), _flat(config.to_dict())
    differ = [k for k in current if k != "training.epochs" and saved.get(k) != current[k]]
    if differ:
        raise MsdTripletError(
            f"{run}: the run was made with another config ({', '.join(differ)} differ); "
            "resume with the same config, or start a new run under another name"
        )


class RunCheckpoint(keras.callbacks.Callback):
    """Validation P@k, then checkpoint, log row and state of every finished epoch, in that order."""

    def __init__(
        self,
        run: Path,
        state: dict,
        validate: Optional[Callable[[object], dict]],
        patience: int,
        say: Callable[[str], None],
    ) -> None:
        super().__init__()
        self.run, self.state, self.validate, self.patience, self.say = run, state, validate, patience, say

    def _save(self, path: Path, weights_only: bool = False) -> None:
        suffix = ".weights.h5" if weights_only else ".keras"
        with atomic_path(path, suffix) as tmp:
            (self.model.save_weights if weights_only else self.model.save)(tmp)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        if self.validate is not None:
            logs.update(self.validate(self.model))
        number, folder = epoch + 1, RunFolder(self.run)
        self._save(folder.epoch_weights(number), weights_only=True)
        improved = MONITOR in logs and (
            self.state.get("best_value") is None or logs[MONITOR] > self.state["best_value"]
        )
        if improved:
            self.state.update(best_value=logs[MONITOR], best_epoch=number)
            self._save(folder.checkpoint("best"))
        self._save(folder.checkpoint("last"))
        _write_log(self.run, _read_log(self.run)[: number - 1] + [{"epoch": number, **logs}])
        self.state.update(epoch=number, finished=False)
        best_epoch = self.state.get("best_epoch")
        if best_epoch is not None and self.patience and number - best_epoch >= self.patience:
            self.model.stop_training = True
            self.state.update(finished=True, stopped_early=True)
        atomic_write_json(folder.state, self.state)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in logs.items() if k in ("loss", MONITOR))
        self.say(f"epoch {number}: {shown}{' (best)' if improved else ''}")


def _read_log(run: Path) -> list[dict]:
    path = RunFolder(run).log
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
            for row in csv.DictReader(handle)
        ]


def _write_log(run: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(RunFolder(run).log, out.getvalue())


def _validation(config: Config, data: TrainingData) -> Optional[Callable[[object], dict]]:
    """A function model → {val_precision, val_p@k_<facet>…}, or None when the split is too small."""
    from msd_triplet import evaluation

    rows = data.rows.get("validation")
    if rows is None or len(rows) < 3:
        return None
    k = min(config.evaluation.k, len(rows) - 1)
    facets = evaluation.facets_from_prepared(
        data.prepared, data.positions["validation"], match=config.evaluation.facet_match
    )

    def validate(model) -> dict:
        # P@k only: the chance levels and bootstrap intervals of evaluate_embeddings are not logged
        neighbours = evaluation.nearest_neighbours(
            embed_rows(model, data.cache, rows), k, chunk_size=config.evaluation.chunk_size
        )
        precision = {facet: evaluation.precision_at_k(neighbours, f) for facet, f in facets.items()}
        logs = {f"val_p@{k}_{facet}": p for facet, p in precision.items()}
        tags = [p for facet, p in precision.items() if facet not in ("artist", "album")]
        logs[MONITOR] = float(np.mean(tags)) if tags else float(np.mean(list(logs.values())))
        return logs

    return validate


def _versions() -> dict:
    import tensorflow as tf

    from msd_triplet import __version__

    return {
        "msd_triplet": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- fit


def fit(
    config: Config,
    *,
    resume: bool = False,
    run_dir: Optional[Path] = None,
    verbose: int = 1,
    say: Callable[[str], None] = print,
    data: Optional[TrainingData] = None,
    callbacks: Sequence = (),
) -> FitResult:
    """Train ``config`` into its run folder; with ``resume`` continue after the last finished epoch.

    ``data`` reuses already loaded :class:`TrainingData`; ``callbacks`` are
    extra Keras callbacks, run after the run's own checkpointing.

    Under ``training.distribution: multi_worker`` every worker calls this with
    the same config and run folder, which must be on a file system they share
    (a resumed run starts from its checkpoint on every worker). Each step and
    each validation batch is collective, so every worker runs all of fit in
    lockstep and takes the same decisions (best epoch, early stopping) from the
    same numbers, but only the chief writes the run folder; the others write
    the same files to a temporary folder they delete at the end. Saving is not
    collective in Keras 3.15 (checked), but one code path for every worker keeps
    them in step should it become so, as TensorFlow's own checkpoints are.

    Raises MsdTripletError when the run folder already holds a run and
    ``resume`` is not given, when it was made with another config, when the
    workers of a multi-worker run see different runs, or when one of them is
    lost during training (restart all of them with ``resume``).
    """
    run = run_directory(config, run_dir)
    state = _read_state(run)
    if state is not None and not resume:
        raise MsdTripletError(
            f"{run}: holds a run ({state.get('epoch', 0)} epochs done); continue it with "
            "--resume, or give the experiment another name"
        )
    if state is not None:
        _check_resumable(run, config)
        if state.get("finished") and state.get("stopped_early"):
            say(f"{run}: stopped early at epoch {state['epoch']}; nothing to resume")
            return FitResult(
                run, state["epoch"], state.get("best_epoch"), state.get("best_value"), True, _read_log(run)
            )
    state = state or {"epoch": 0}
    if int(state["epoch"]) >= config.training.epochs:
        say(f"{run}: all {config.training.epochs} epochs are done")
        return FitResult(
            run, int(state["epoch"]), state.get("best_epoch"), state.get("best_value"), False, _read_log(run)
        )

    # first TensorFlow work of the run: a multi-worker strategy must come before any other
    strategy = distribution_strategy(config)
    workers = devices.is_multi_worker(strategy)
    out = run if strategy.extended.should_checkpoint else Path(tempfile.mkdtemp(prefix="msd-triplet-worker-"))
    progress = {"epoch": int(state["epoch"])}
    try:
        if workers:
            _check_same_run(strategy, run, int(state["epoch"]))
        return _train(config, strategy, run, out, state, data, verbose, say, callbacks, progress)
    except Exception as exc:
        if workers and _lost_worker(exc):
            raise MsdTripletError(_lost_worker_message(exc, run, progress["epoch"])) from exc
        raise
    finally:
        if out != run:
            shutil.rmtree(out, ignore_errors=True)


def _train(
    config: Config,
    strategy,
    run: Path,
    out: Path,
    state: dict,
    data: Optional[TrainingData],
    verbose: int,
    say: Callable[[str], None],
    callbacks: Sequence,
    progress: dict,
) -> FitResult:
    """The body of :func:`fit` once the strategy is made: ``run`` is read, ``out`` written (``run`` on the chief)."""
    import tensorflow as tf

    from msd_triplet.features import feature_dataset, steps_per_epoch

    initial_epoch = int(state["epoch"])
    data = data or load_training_data(config)
    n_train, batch = len(data.rows["train"]), config.training.batch_size
    if n_train < batch:
        raise DataError(
            f"the training split has {n_train} tracks, fewer than training.batch_size {batch}; "
            "lower the batch size or add data"
        )
    out.mkdir(parents=True, exist_ok=True)
    source, written = RunFolder(run), RunFolder(out)
    if out != run and source.log.is_file():
        # a resumed run's log so far, which RunCheckpoint extends: every worker then returns the same history
        shutil.copyfile(source.log, written.log)
    save_config(config, written.config)
    data.lsi.save(written.lsi)

    keras.utils.set_random_seed(config.seed)
    last = source.checkpoint("last")
    if initial_epoch and last.is_file():
        with strategy.scope():
            model = keras.models.load_model(last)
        adapt_to_workers(model, strategy)
        say(f"{run}: resuming after epoch {initial_epoch}")
        phases = training_phases(config, initial_epoch)
    else:
        initial_epoch, state = 0, {"epoch": 0}
        phases = training_phases(config, 0)
        model = compile_model(config, strategy=strategy, mining=phases[0][2])

    compute = model_compute(model)
    say(
        f"training in {compute['precision']} (training.precision: {config.training.precision}), XLA "
        f"{'on' if compute['jit_compile'] else 'off'}, {compute['replicas']} replica(s)"
    )
    atomic_write_json(
        written.run_info,
        {
            "seed": config.seed,
            "versions": _versions(),
            "compute": compute,
            "tracks": {s: int(len(r)) for s, r in data.rows.items()},
            "lsi": {
                "sets": list(data.lsi.sets),
                "k": int(data.lsi.k),
                "weighting": data.lsi.weighting,
                "path": written.lsi.name,
            },
            "feature_cache": str(data.cache.directory),
        },
    )
    steps = steps_per_epoch(n_train, batch, drop_remainder=True)
    order = batch_order(config, data)
    progress["epoch"] = initial_epoch
    checkpoint = RunCheckpoint(out, state, _validation(config, data), config.training.early_stopping_patience, say)
    callbacks = [
        checkpoint,
        keras.callbacks.TensorBoard(str(written.tensorboard), write_graph=False, update_freq="epoch"),
        *callbacks,
    ]
    # each worker reads the global batches and keeps its replicas' slices of them
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    for start, end, mining in phases:
        if model.loss.mining != mining:
            say(f"epochs {start + 1}-{end}: {mining} mining")
            with strategy.scope():
                compile_loss(model, config, model.optimizer, mining)
        train = feature_dataset(
            data.cache,
            data.rows["train"],
            data.targets["train"],
            batch_size=batch,
            seed=config.seed,
            epochs=end - start,
            first_epoch=start,
            drop_remainder=True,
            order=order,
        )
        try:
            model.fit(
                train.with_options(options),
                epochs=end,
                initial_epoch=start,
                steps_per_epoch=steps,
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,
            )
        finally:
            progress["epoch"] = checkpoint.state.get("epoch", progress["epoch"])
        if model.stop_training:
            break
    state = _read_state(out) or state
    if not state.get("finished") and state.get("epoch", 0) >= config.training.epochs:
        state["finished"] = True
        atomic_write_json(written.state, state)
    return FitResult(
        run,
        int(state["epoch"]),
        state.get("best_epoch"),
        state.get("best_value"),
        bool(state.get("stopped_early", False)),
        _read_log(out),
    )


def _check_same_run(strategy, run: Path, epochs_done: int) -> None:
    """MsdTripletError unless every worker found the same number of finished epochs in ``run``.

    Workers that read different run folders (not a shared file system) would
    otherwise start from different weights and train different epochs.
    """
    import tensorflow as tf

    mine = strategy.experimental_distribute_values_from_function(lambda _: tf.constant([epochs_done], tf.int64))
    seen = [int(e) for e in strategy.gather(mine, axis=0).numpy()]
    if len(set(seen)) > 1:
        raise MsdTripletError(
            f"{run}: the workers see different runs (epochs done, per replica: {seen}); every "
            "worker must read the same run folder, on a file system they share"
        )


def _lost_worker(exc: BaseException) -> bool:
    """Whether ``exc`` is how TensorFlow reports a lost peer of a multi-worker run.

    The coordination service's missed heartbeats or a broken connection abort
    every collective with ``UnavailableError`` (both measured); a deadline, an
    abort or a cancellation of the step carry the same news when they come
    from a collective.
    """
    import tensorflow as tf

    peer_errors = (
        tf.errors.UnavailableError,
        tf.errors.DeadlineExceededError,
        tf.errors.AbortedError,
        tf.errors.CancelledError,
    )
    return isinstance(exc, peer_errors) or (
        isinstance(exc, tf.errors.OpError) and "collective ops is aborted" in str(exc).lower()
    )


def _lost_worker_message(exc: BaseException, run: Path, epochs_done: int) -> str:
    """One line: which worker was lost and TensorFlow's reason, and to restart them all with --resume."""
    text = str(getattr(exc, "message", exc))
    tasks = sorted({f"{job} {task}" for job, task in re.findall(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)", text)})
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # TensorFlow's reason follows "Collective ops is aborted by:", sometimes continued on the next line
    at = next((i for i, line in enumerate(lines) if "aborted by:" in line), None)
    if at is None:
        reason = lines[-1] if lines else ""
    else:
        reason = lines[at].split("aborted by:", 1)[1].strip()
        if reason.endswith(":") and at + 1 < len(lines):
            reason = f"{reason} {lines[at + 1]}"
    reason = re.sub(r"^Error reported from /job:\S+: ", "", reason)[:200]
    return (
        f"training.distribution multi_worker: lost {' and '.join(tasks) or 'a worker'} "
        f"({type(exc).__name__}: {reason}); the other workers cannot go on without it. Restart every worker "
        f"with the same command and --resume (`msd-triplet fit --config <config> --resume`); training "
        f"continues after epoch {epochs_done}, the last one finished in {run}"
    )


def batch_order(config: Config, data: TrainingData) -> Optional[Callable[[int], np.ndarray]]:
    """The per-epoch order of the training tracks for ``training.batch_composition`` (None: random).

    ``related``: groups of ``group_size`` tracks that are positives of one another
    (:func:`msd_triplet.batches.related_order_fn`), a function of seed and epoch.
    """
    if config.training.batch_composition == "random":
        return None
    from msd_triplet.batches import related_order_fn
    from msd_triplet.relatedness import SOURCE_KIND

    vectors, albums = losses.unpack_targets(data.targets["train"])
    return related_order_fn(
        vectors,
        SOURCE_KIND[config.loss.relatedness],
        albums,
        config.loss.positive_threshold,
        config.training.batch_size,
        config.training.group_size,
        config.seed,
    )


def load_run_model(run: Path, which: str = "best"):
    """The ``best`` (or ``last``) model of a run folder; falls back to ``last`` without validation
    (:meth:`msd_triplet.runfolder.RunFolder.loaded_checkpoint`)."""
    path = RunFolder(run).loaded_checkpoint(which)
    if not path.is_file():
        raise DataError(f"{run}: no checkpoint ({path.name}); train it with `msd-triplet fit` first")
    return keras.models.load_model(path)
