"""The DPNN: two parallel convolutional stacks over a log-mel spectrogram (paper IV-A, Fig. 1).

Input ``float32 [batch, 80, 130, 1]`` → BatchNormalization → two stacks that
share nothing: a *timbre* stack with kernels wide in time and a *rhythm*
stack with kernels tall in frequency (kernel sizes from the first author's
slides, SPEC section 5). Every block is Conv2D (same padding) →
BatchNormalization → ELU → MaxPool. Both stacks are flattened and
concatenated → Dense(256, ELU) = the representation (layer ``embedding``) →
optionally L2-normalised (layer ``l2_normalize``) for the triplet loss.

Layers are named (``timbre_conv1`` … ``rhythm_pool4``, ``embedding``), so a
user can cut the model anywhere, e.g.
``keras.Model(model.input, model.get_layer("embedding").output)``.
"""

from __future__ import annotations

import zlib
from typing import Optional

import keras

from msd_triplet.config import ModelConfig
from msd_triplet.devices import POLICIES
from msd_triplet.errors import ArgumentError

#: (kernel [mel bands, frames], pool) per block, for each stack.
TIMBRE_BLOCKS = (((10, 23), (2, 2)), ((5, 11), (2, 2)), ((3, 5), (2, 2)), ((2, 4), (1, 8)))
RHYTHM_BLOCKS = (((21, 10), (2, 2)), ((10, 5), (2, 2)), ((5, 3), (2, 2)), ((4, 2), (4, 1)))


def layer_seed(seed: Optional[int], layer: str) -> Optional[int]:
    """The initialiser seed of ``layer``: a stable hash of the run seed and the layer's name.

    Two layers never share a random stream because of a shared position or
    name length (the seeds differ whenever the names differ, up to CRC-32
    collisions, which a test rules out for the DPNN's layers). None stays None.
    """
    if seed is None:
        return None
    return zlib.crc32(f"{int(seed)}/{layer}".encode()) & 0x7FFFFFFF


def _stack(x, name: str, blocks, widths, seed: Optional[int], synchronized: bool, dtype: str):
    for i, ((kernel, pool), width) in enumerate(zip(blocks, widths), start=1):
        conv = f"{name}_conv{i}"
        init = keras.initializers.GlorotUniform(seed=layer_seed(seed, conv))
        x = keras.layers.Conv2D(width, kernel, padding="same", kernel_initializer=init, name=conv, dtype=dtype)(x)
        x = keras.layers.BatchNormalization(synchronized=synchronized, name=f"{name}_bn{i}", dtype=dtype)(x)
        x = keras.layers.Activation("elu", name=f"{name}_elu{i}", dtype=dtype)(x)
        x = keras.layers.MaxPooling2D(pool, padding="same", name=f"{name}_pool{i}", dtype=dtype)(x)
    return keras.layers.Flatten(name=f"{name}_flatten", dtype=dtype)(x)


def build_dpnn(
    config: ModelConfig = ModelConfig(),
    input_shape: tuple[int, int] = (80, 130),
    seed: Optional[int] = None,
    name: str = "dpnn",
    synchronized_bn: bool = False,
    precision: str = "float32",
) -> keras.Model:
    """The DPNN as a functional Keras model.

    Parameters
    ----------
    config : conv widths of both stacks, embedding size, L2 normalisation
    input_shape : (mel bands, frames) of the log-mel input (channel axis added)
    seed : seeds every initialiser (each layer its own stream, :func:`layer_seed`), so the
        same seed gives the same weights
    synchronized_bn : batch statistics over the global batch of every replica
        of a ``tf.distribute`` strategy (the result then does not depend on
        the number of replicas); no effect with one replica
    precision : the Keras dtype policy of the two conv stacks (``float32``,
        ``mixed_bfloat16``, ``mixed_float16``; :mod:`msd_triplet.devices` picks
        one for ``training.precision: auto``). The input normalisation, the
        embedding layer and the L2 normalisation are float32 whatever it is:
        they cost little, and the representation and the distances the loss
        mines keep 24 bits of mantissa instead of 8 (bfloat16) or 11 (float16).

    Returns
    -------
    keras.Model: ``float32 [B, bands, frames, 1]`` → ``float32 [B, embedding_dim]``
    """
    if precision not in POLICIES:
        raise ArgumentError(f"build_dpnn precision: expected one of {', '.join(POLICIES)}, got {precision!r}")
    inputs = keras.Input((*input_shape, 1), name="log_mel")
    x = keras.layers.BatchNormalization(synchronized=synchronized_bn, name="input_bn", dtype="float32")(inputs)
    timbre = _stack(x, "timbre", TIMBRE_BLOCKS, config.widths, seed, synchronized_bn, precision)
    rhythm = _stack(x, "rhythm", RHYTHM_BLOCKS, config.widths, seed, synchronized_bn, precision)
    x = keras.layers.Concatenate(name="concat", dtype=precision)([timbre, rhythm])
    init = keras.initializers.GlorotUniform(seed=layer_seed(seed, "embedding"))
    x = keras.layers.Dense(
        config.embedding_dim, activation="elu", kernel_initializer=init, name="embedding", dtype="float32"
    )(x)
    if config.l2_normalize:
        x = keras.layers.UnitNormalization(axis=-1, name="l2_normalize", dtype="float32")(x)
    return keras.Model(inputs, x, name=name)


def embedding_model(model: keras.Model) -> keras.Model:
    """The representation before L2 normalisation (layer ``embedding``), for downstream use."""
    return keras.Model(model.input, model.get_layer("embedding").output, name=f"{model.name}_embedding")
