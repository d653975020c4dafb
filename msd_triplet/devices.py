"""What this machine computes with: numeric precision, XLA and the ``tf.distribute`` strategy.

``training.precision`` and ``training.jit_compile`` may be ``auto``; these
functions turn a setting into what a run uses, from what the machine has:

==============  ===============================  ========================
machine         ``precision: auto``              ``jit_compile: auto``
==============  ===============================  ========================
a GPU           ``mixed_float16`` (loss scaled)  on
bfloat16 CPU    ``mixed_bfloat16``               off
other CPU       ``float32``                      off
==============  ===============================  ========================

A CPU "has bfloat16" when it lists the ``avx512_bf16`` or ``amx_bf16``
instruction flags (oneDNN then runs bfloat16 convolutions natively; without
them it emulates them and they are slower than float32). XLA is off on CPU
because it measured 22-37 % slower there (``benchmarks/train_step.py``).

Under a mixed policy the convolution stacks compute in 16 bits with float32
weights; the input normalisation, the embedding layer, the L2 normalisation
and the loss stay float32 (:func:`msd_triplet.model.build_dpnn`), so the
model takes and returns float32.
"""

from __future__ import annotations

import functools
from pathlib import Path

from msd_triplet.errors import ArgumentError

#: The precision settings: ``auto`` or a Keras dtype policy name.
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


@functools.lru_cache(maxsize=None)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``cpuinfo`` (empty where there is no such file)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_bfloat16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU runs bfloat16 arithmetic natively (AVX512-BF16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def gpu_count() -> int:
    """The GPUs TensorFlow sees."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def resolve_precision(setting: str, gpus: int | None = None, bfloat16_cpu: bool | None = None) -> str:
    """The Keras dtype policy name for a ``training.precision`` setting on this machine.

    ``gpus`` and ``bfloat16_cpu`` override what the machine reports (for tests
    and for planning a run elsewhere).
    """
    if setting not in PRECISIONS:
        raise ArgumentError(f"precision: expected one of {', '.join(PRECISIONS)}, got {setting!r}")
    if setting != "auto":
        return setting
    if (gpu_count() if gpus is None else gpus) > 0:
        return "mixed_float16"
    if cpu_has_bfloat16() if bfloat16_cpu is None else bfloat16_cpu:
        return "mixed_bfloat16"
    return "float32"


def resolve_jit_compile(setting: bool | str, gpus: int | None = None) -> bool:
    """Whether to compile the train step with XLA for a ``training.jit_compile`` setting."""
    if setting == "auto":
        return (gpu_count() if gpus is None else gpus) > 0
    if not isinstance(setting, bool):
        raise ArgumentError(f"jit_compile: expected true, false or 'auto', got {setting!r}")
    return setting


def distribution_strategy(kind: str):
    """The ``tf.distribute`` strategy named by ``training.distribution``.

    ``default``: one device. ``mirrored``: every local GPU (or the devices
    TensorFlow lists), one replica each. ``multi_worker``: several machines,
    each told its role by the ``TF_CONFIG`` environment variable.
    """
    import tensorflow as tf

    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind != "default":
        raise ArgumentError(f"distribution: expected default, mirrored or multi_worker, got {kind!r}")
    return tf.distribute.get_strategy()
