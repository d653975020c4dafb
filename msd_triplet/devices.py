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
because it gave 29-41 % fewer samples/s there, in float32 and bfloat16
alike, at twice the memory (``benchmarks/train_step.py``).

Under a mixed policy the convolution stacks compute in 16 bits with float32
weights; the input normalisation, the embedding layer, the L2 normalisation
and the loss stay float32 (:func:`msd_triplet.model.build_dpnn`), so the
model takes and returns float32.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from msd_triplet.errors import ArgumentError, ConfigError

#: The Keras dtype policies the DPNN can compute in (:func:`msd_triplet.model.build_dpnn`).
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
#: The precision settings: ``auto`` or one of :data:`POLICIES`.
PRECISIONS = ("auto", *POLICIES)


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


#: The ``TF_CONFIG`` example the errors show.
TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
#: The ``TF_CONFIG`` task types that train (a parameter server or an evaluator does not).
TRAINING_TASKS = ("chief", "worker")


@dataclass(frozen=True)
class ClusterTask:
    """This process's place in a ``MultiWorkerMirroredStrategy`` cluster, read from ``TF_CONFIG``.

    ``kind`` is ``chief`` or ``worker``, ``index`` its position in that job,
    ``workers`` the number of training tasks (chief and workers). The chief is
    the ``chief`` task, or worker 0 when the cluster has no ``chief`` job (the
    TensorFlow convention); only it writes the run folder.
    """

    kind: str
    index: int
    workers: int
    chief: bool


def cluster_task(environ: Mapping[str, str] | None = None) -> ClusterTask:
    """The :class:`ClusterTask` that ``TF_CONFIG`` in ``environ`` (default: ``os.environ``) describes.

    Raises ConfigError naming what is missing or malformed, with an example,
    before TensorFlow reads the variable (whose own errors do not say which
    setting needs it, or fall back to one local worker without saying so).
    """
    environ = os.environ if environ is None else environ

    def wrong(what: str) -> ConfigError:
        return ConfigError(
            f"training.distribution multi_worker: TF_CONFIG {what}; set it on every worker, e.g. "
            f"TF_CONFIG='{TF_CONFIG_EXAMPLE}' with this worker's index"
        )

    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        raise wrong("is not set")
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise wrong(f"is not JSON ({exc})") from None
    cluster, task = (spec.get("cluster"), spec.get("task")) if isinstance(spec, dict) else (None, None)
    if not isinstance(cluster, dict) or not cluster:
        raise wrong('has no "cluster" (a mapping of job names to lists of "host:port")')
    for job, addresses in cluster.items():
        if (
            not isinstance(addresses, list)
            or not addresses
            or not all(isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses)
        ):
            raise wrong(f'cluster "{job}" must be a non-empty list of "host:port" strings, got {addresses!r}')
    sizes = {job: len(cluster.get(job, [])) for job in TRAINING_TASKS}
    if sizes["chief"] > 1:
        raise wrong(f"lists {sizes['chief']} chief tasks; at most one is allowed")
    if not isinstance(task, dict):
        raise wrong('has no "task" ({"type": ..., "index": ...})')
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in TRAINING_TASKS:
        raise wrong(f"task type {kind!r}: this process must be a chief or worker task")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < sizes[kind]:
        raise wrong(
            f'task index {index!r}: cluster "{kind}" has {sizes[kind]} task(s), indices 0-{sizes[kind] - 1}'
            if sizes[kind]
            else f'task type "{kind}" is not in the cluster'
        )
    chief = kind == "chief" or (sizes["chief"] == 0 and index == 0)
    return ClusterTask(kind, index, sizes["chief"] + sizes["worker"], chief)


def distribution_strategy(kind: str):
    """The ``tf.distribute`` strategy named by ``training.distribution``.

    ``default``: one device. ``mirrored``: every local GPU (or the devices
    TensorFlow lists), one replica each. ``multi_worker``: several machines,
    each told its role by the ``TF_CONFIG`` environment variable
    (:func:`cluster_task`; ConfigError when it is missing or malformed).

    A lost worker: TensorFlow 2.21 starts its coordination service with every
    ``MultiWorkerMirroredStrategy``; each task sends it heartbeats, and when a
    task stops (killed, crashed, its machine gone) the others' collectives are
    aborted with ``UnavailableError`` within about ten seconds (the service's
    heartbeat timeout; on loopback the other worker exited 8-19 s after a
    worker was killed, and 3 s after the chief was, whose connections break).
    The strategy's own health-check thread and its ``_check_health_*``
    settings are switched off whenever the coordination service runs, so they
    are not set here. ``CommunicationOptions(timeout_seconds=...)`` is not set
    either: it bounds every single collective (TensorFlow calls it a debugging
    aid), so it would also stop a healthy run whose peer is merely slow
    (tracing, a checkpoint on a busy disk), while the heartbeats already catch
    a dead one. :func:`msd_triplet.training.fit` turns the abort into one
    :class:`~msd_triplet.errors.MsdTripletError`. Not covered: a worker that
    never starts. The others wait for it here (over ten minutes when tried,
    and SIGTERM did not stop them; SIGKILL does).

    TensorFlow joins a cluster once per process, before it runs anything else:
    a second ``multi_worker`` strategy in one process, or one made after other
    TensorFlow work, is a ConfigError.
    """
    if kind not in ("default", "mirrored", "multi_worker"):
        raise ArgumentError(f"distribution: expected default, mirrored or multi_worker, got {kind!r}")
    if kind == "multi_worker":
        cluster_task()  # before TensorFlow reads TF_CONFIG

    import tensorflow as tf

    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError) as exc:
            if "collective ops" not in str(exc).lower():
                raise
            raise ConfigError(
                f"training.distribution multi_worker: TensorFlow can join a cluster only once per "
                f"process and before it runs anything else ({exc}); start one fresh process per "
                "run and worker, e.g. `msd-triplet fit`"
            ) from None
    return tf.distribute.get_strategy()


def is_multi_worker(strategy) -> bool:
    """Whether ``strategy`` spans several processes (a ``MultiWorkerMirroredStrategy`` with a cluster)."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        strategy.cluster_resolver.cluster_spec().as_dict()
    )
