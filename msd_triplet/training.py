"""Training: the model, loss and optimiser of a config, and ``fit`` on the feature cache.

:func:`dry_run` builds everything for a config and runs one training step on a
random batch of the configured size, to check the model, the loss and the
memory before a long run (``msd-triplet fit --dry-run``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from msd_triplet import audio, losses
from msd_triplet.config import Config


@dataclass
class DryRunReport:
    parameters: int
    trainable_parameters: int
    input_shape: tuple[int, ...]
    embedding_dim: int
    batch_size: int
    compile_seconds: float     # first step: tracing (and XLA compilation)
    step_seconds: float        # second step
    loss: float
    statistics: dict[str, float]


def compile_model(config: Config, seed: int | None = None):
    """The DPNN of ``config.model`` compiled with Adam, the LSI triplet loss and its statistics."""
    import keras

    from msd_triplet.model import build_dpnn

    model = build_dpnn(config.model, audio.feature_shape(config.features), seed=config.seed if seed is None else seed)
    loss = losses.LsiTripletLoss.from_config_dataclass(config.loss)
    model.compile(optimizer=keras.optimizers.Adam(config.training.learning_rate), loss=loss,
                  metrics=losses.triplet_metrics(loss), jit_compile=config.training.jit_compile)
    return model


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
    import keras

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
    return DryRunReport(int(model.count_params()), trainable, tuple(model.input_shape[1:]),
                        int(model.output_shape[-1]), config.training.batch_size, compiled, step,
                        float(result["loss"]), {s: float(result[s]) for s in losses.STATISTICS if s in result})
