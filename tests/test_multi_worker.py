"""training.distribution multi_worker: two worker processes on loopback train like one process.

Each worker is a fresh Python process told its role by ``TF_CONFIG`` (TensorFlow
joins a cluster once per process, before it runs anything else). Every
subprocess runs under a deadline and is killed in a ``finally``, so a hung
cluster fails its test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest
from conftest import write_run_config

from msd_triplet import devices
from msd_triplet.errors import ConfigError

#: Seconds any one worker process may take before the test kills it and fails.
DEADLINE = 180
#: Seconds worker 0 may take to stop after worker 1 was killed.
STOP_AFTER_KILL = 120

# One step on the global batch of 16, with SGD(1.0) so the update is the gradient: as in
# test_distribute, 16 tracks of 8 albums in two LSI clusters, so the hardest pairs of the
# global batch are often on the other replica. With TF_CONFIG it runs as a worker of the
# cluster; without, on one device. Data is fed as training.fit feeds it.
STEP = textwrap.dedent("""
    import json, os, sys
    import keras
    import numpy as np
    import tensorflow as tf
    from msd_triplet import losses, training
    from msd_triplet.config import Config, ModelConfig, TrainingConfig

    workers = bool(os.environ.get("TF_CONFIG"))
    config = Config(model=ModelConfig(widths=(2, 2, 4, 4), embedding_dim=8),
                    training=TrainingConfig(batch_size=16, precision="float32", jit_compile=False,
                                            distribution="multi_worker" if workers else "default"))
    strategy = training.distribution_strategy(config) if workers else tf.distribute.OneDeviceStrategy("/cpu:0")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 80, 130, 1)).astype(np.float32)
    lsi = np.eye(6)[np.arange(16) % 2] + 0.05 * rng.standard_normal((16, 6))
    y = losses.pack_targets(lsi, np.arange(16) % 8)

    model = training.compile_model(config, seed=0, strategy=strategy)
    before = [w.numpy() for w in model.trainable_weights]
    with strategy.scope():
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss=model.loss,
                      metrics=losses.triplet_metrics(model.loss))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)
    logs = model.fit(batches, verbose=0, shuffle=False).history
    steps = {w.path: (b - w.numpy()).tolist() for w, b in zip(model.trainable_weights, before)}
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "steps": steps,
                      "logs": {k: float(v[0]) for k, v in logs.items()}}))
""")

# training.fit of a config; argv: config, run folder, epoch (1-based) in which this worker kills itself
# (0: never), 1 to resume. Prints the FitResult as JSON.
FIT = textwrap.dedent("""
    import dataclasses, json, os, signal, sys
    import keras
    from msd_triplet import training
    from msd_triplet.config import load_config

    config_path, run_dir, kill_in, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"

    class KillSelf(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == kill_in and batch == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    result = training.fit(load_config(config_path), resume=resume, run_dir=run_dir, verbose=0,
                          callbacks=[KillSelf()])
    print(json.dumps({**dataclasses.asdict(result), "run_dir": str(result.run_dir)}))
""")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held open while choosing, so none repeats)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def worker_env(ports: list[int], index: int, **extra: str) -> dict[str, str]:
    """The environment of worker ``index`` of a loopback cluster on ``ports``: its TF_CONFIG, no GPU."""
    spec = {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}
    return dict(os.environ, TF_CONFIG=json.dumps(spec), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", **extra)


@contextlib.contextmanager
def processes(folder: Path, commands: list[tuple[list[str], dict]]) -> Iterator[list[subprocess.Popen]]:
    """Start ``(argv, env)`` commands, output to ``folder/<i>.out`` / ``.err``; kill any still running at exit."""
    started = []
    try:
        for i, (argv, env) in enumerate(commands):
            with open(folder / f"{i}.out", "w") as out, open(folder / f"{i}.err", "w") as err:
                started.append(subprocess.Popen(argv, stdout=out, stderr=err, env=env))
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait()


def wait_for(process: subprocess.Popen, until: float, folder: Path, i: int) -> int:
    """``process``'s exit code, or fail (killing it) when it runs past ``until`` (``time.monotonic``)."""
    try:
        return process.wait(timeout=max(until - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"process {i} still ran at its deadline; its stderr ends:\n{tail(folder, i)}")


def tail(folder: Path, i: int, chars: int = 3000) -> str:
    return (folder / f"{i}.err").read_text(errors="replace")[-chars:]


def last_json(folder: Path, i: int) -> dict:
    return json.loads((folder / f"{i}.out").read_text().strip().splitlines()[-1])


def multi_worker_config(root: Path, runs: Path, epochs: int, name: str) -> Path:
    """The tiny run config of ``conftest`` with ``training.distribution: multi_worker``."""
    path = write_run_config(root, runs, epochs=epochs, name=name)
    path.write_text(path.read_text().replace("training:\n", "training:\n  distribution: multi_worker\n", 1))
    return path


# --------------------------------------------------------------------------- fast: settings and messages


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "TF_CONFIG is not set"),
        ("{cluster", "is not JSON"),
        ('{"task": {"type": "worker", "index": 0}}', 'has no "cluster"'),
        ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}', '"host:port"'),
        ('{"cluster": {"worker": ["a:1", "b:2"]}}', 'has no "task"'),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "indices 0-1"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "chief or worker task"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', '"chief" is not in the cluster'),
    ],
)
def test_malformed_tf_config_is_a_config_error_with_an_example(value, message):
    environ = {} if value is None else {"TF_CONFIG": value}
    with pytest.raises(ConfigError, match="multi_worker") as caught:
        devices.cluster_task(environ)
    assert message in str(caught.value) and '"cluster": {"worker": ["host1:12345"' in str(caught.value)


def test_cluster_task_names_the_chief():
    def task(cluster: dict, kind: str, index: int) -> devices.ClusterTask:
        return devices.cluster_task(
            {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})}
        )

    workers = {"worker": ["a:1", "b:2"]}
    assert task(workers, "worker", 0) == devices.ClusterTask("worker", 0, 2, chief=True)
    assert task(workers, "worker", 1) == devices.ClusterTask("worker", 1, 2, chief=False)
    # with a chief job, worker 0 is not the chief
    assert task({"chief": ["c:3"], **workers}, "worker", 0) == devices.ClusterTask("worker", 0, 3, chief=False)
    assert task({"chief": ["c:3"], **workers}, "chief", 0) == devices.ClusterTask("chief", 0, 3, chief=True)


def test_multi_worker_without_tf_config_fails_before_tensorflow_starts(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG is not set"):
        devices.distribution_strategy("multi_worker")


@pytest.mark.parametrize("batch, replicas, allowed", [(15, 2, "14 or 16"), (6, 4, "4 or 8"), (3, 4, "4 or 8")])
def test_batch_size_must_split_evenly_over_the_replicas(batch, replicas, allowed):
    from msd_triplet.training import check_batch_size

    with pytest.raises(ConfigError, match=f"training.batch_size {batch} .* {replicas} replicas") as caught:
        check_batch_size(batch, replicas)
    assert f"multiple of {replicas}, e.g. {allowed}" in str(caught.value)
    check_batch_size(batch - batch % replicas or replicas, replicas)
    check_batch_size(batch, 1)


def test_a_lost_worker_reads_as_one_line_saying_to_resume(tmp_path):
    import tensorflow as tf

    from msd_triplet.training import _lost_worker, _lost_worker_message

    # the text TensorFlow 2.21 gave in test_a_killed_worker_stops_the_others_with_a_clear_error
    text = (
        "Graph execution error:\n\nDetected at node dpnn_1/input_bn_1/CollectiveReduceV2 defined at ...\n"
        "Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks are "
        "unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed."
    )
    error = tf.errors.UnavailableError(None, None, text)
    assert _lost_worker(error) and not _lost_worker(tf.errors.InvalidArgumentError(None, None, "shape"))
    message = _lost_worker_message(error, tmp_path, 3)
    assert "\n" not in message and message.startswith("training.distribution multi_worker: lost worker 1 (")
    assert "(stopped sending heartbeats): /job:worker/replica:0/task:1)" in message
    assert (
        "Restart every worker" in message
        and "--resume" in message
        and f"after epoch 3, the last one finished in {tmp_path}" in message
    )
    broken = tf.errors.UnavailableError(None, None, "Collective ops is aborted by: recvmsg:Connection reset by peer")
    assert "lost a worker (UnavailableError: recvmsg:Connection reset by peer);" in _lost_worker_message(
        broken, tmp_path, 0
    )


# --------------------------------------------------------------------------- slow: two worker processes


@pytest.mark.slow
def test_two_workers_take_the_single_process_step(tmp_path):
    ports = free_ports(2)
    commands = [([sys.executable, "-c", STEP], worker_env(ports, i)) for i in range(2)]
    commands.append(([sys.executable, "-c", STEP], dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")))
    until = time.monotonic() + DEADLINE
    with processes(tmp_path, commands) as started:
        codes = [wait_for(process, until, tmp_path, i) for i, process in enumerate(started)]
    assert codes == [0, 0, 0], "\n".join(tail(tmp_path, i) for i, code in enumerate(codes) if code)

    import numpy as np

    first, second, single = (last_json(tmp_path, i) for i in range(3))
    assert (first["replicas"], second["replicas"], single["replicas"]) == (2, 2, 1)
    one = {k: np.array(v) for k, v in single["steps"].items()}
    assert one.keys() == first["steps"].keys()
    for worker in (first, second):
        two = {k: np.array(v) for k, v in worker["steps"].items()}
        # largest difference relative to the update's size, over weights that moved; float32 round-off
        # is ~1e-4 of an update, while mining each worker's half on its own is O(1) off
        relative = max(
            float(np.abs(one[k] - two[k]).max() / np.abs(one[k]).max()) for k in one if np.abs(one[k]).max() > 1e-3
        )
        print(f"relative difference of the update: {relative:.2e}")
        assert relative < 1e-3
        for key in ("loss", "valid_anchors", "active_triplets", "positive_distance", "negative_distance"):
            assert worker["logs"][key] == pytest.approx(single["logs"][key], rel=1e-4, abs=1e-6), key
    assert single["logs"]["loss"] > 0.01 and single["logs"]["valid_anchors"] == 1.0
    assert first["steps"] == second["steps"]


@pytest.mark.slow
def test_two_workers_fit_a_run_that_only_the_chief_writes(prepared_root, tmp_path):
    config = multi_worker_config(prepared_root, tmp_path / "runs", epochs=2, name="two-workers.yaml")
    # worker 1 is given a run folder of its own, so anything it wrote there would show
    chief_run, other_run = tmp_path / "chief-run", tmp_path / "other-run"
    scratch = tmp_path / "worker1-tmp"
    scratch.mkdir()
    ports = free_ports(2)
    commands = [
        (
            [sys.executable, "-c", FIT, str(config), str(run), "0", "0"],
            worker_env(ports, i, **({"TMPDIR": str(scratch)} if i else {})),
        )
        for i, run in enumerate((chief_run, other_run))
    ]
    until = time.monotonic() + DEADLINE
    with processes(tmp_path, commands) as started:
        # meanwhile the same run in this process, on one device
        from msd_triplet.config import load_config
        from msd_triplet.training import fit

        single = fit(
            load_config(write_run_config(prepared_root, tmp_path / "runs", epochs=2, name="single.yaml")),
            verbose=0,
            say=lambda _: None,
        )
        codes = [wait_for(process, until, tmp_path, i) for i, process in enumerate(started)]
    assert codes == [0, 0], "\n".join(tail(tmp_path, i) for i, code in enumerate(codes) if code)

    chief, other = last_json(tmp_path, 0), last_json(tmp_path, 1)
    files = sorted(
        str(p.relative_to(chief_run)) for p in chief_run.rglob("*") if p.is_file() and "tensorboard" not in p.parts
    )
    assert files == [
        "checkpoints/best.keras",
        "checkpoints/epoch-001.weights.h5",
        "checkpoints/epoch-002.weights.h5",
        "checkpoints/last.keras",
        "config.yaml",
        "log.csv",
        "lsi.npz",
        "run.json",
        "state.json",
    ]
    assert any((chief_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert not other_run.exists() and not any(scratch.iterdir())
    run_json = json.loads((chief_run / "run.json").read_text())
    assert run_json["compute"]["replicas"] == 2
    state = json.loads((chief_run / "state.json").read_text())
    assert state["epoch"] == 2 and state["finished"] and chief["best_epoch"] == state["best_epoch"]
    # both workers took the same decisions from the same numbers
    assert chief["epochs"] == other["epochs"] == 2 and chief["history"] == other["history"]
    assert (chief["best_epoch"], chief["best_value"]) == (other["best_epoch"], other["best_value"])
    # and the numbers of one process: training statistics to float32 round-off, validation P@k (which
    # only a near tie of neighbours could move) alike
    assert [row["epoch"] for row in chief["history"]] == [row["epoch"] for row in single.history] == [1, 2]
    for two, one in zip(chief["history"], single.history):
        assert two.keys() == one.keys()
        for key in (
            "loss",
            "valid_anchors",
            "active_triplets",
            "positive_distance",
            "negative_distance",
            "embedding_spread",
        ):
            assert two[key] == pytest.approx(one[key], rel=1e-3, abs=1e-5), key
        assert two["val_precision"] == pytest.approx(one["val_precision"], abs=0.1)


@pytest.mark.slow
def test_a_killed_worker_stops_the_others_with_a_clear_error_and_resume_finishes_the_run(prepared_root, tmp_path):
    config = multi_worker_config(prepared_root, tmp_path / "runs", epochs=2, name="killed-worker.yaml")
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "msd_triplet.cli", "fit", "--config", str(config), "--run", str(run)]
    ports = free_ports(2)
    # worker 0 is the command line a user runs; worker 1 kills itself in its second epoch (its temporary
    # run folder, which a SIGKILL leaves behind, goes to tmp_path)
    commands = [
        (cli, worker_env(ports, 0)),
        ([sys.executable, "-c", FIT, str(config), str(run), "2", "0"], worker_env(ports, 1, TMPDIR=str(tmp_path))),
    ]
    with processes(tmp_path, commands) as (chief, other):
        assert wait_for(other, time.monotonic() + DEADLINE, tmp_path, 1) == -9, tail(tmp_path, 1)
        killed = time.monotonic()
        code = wait_for(chief, killed + STOP_AFTER_KILL, tmp_path, 0)
        stopped = time.monotonic() - killed
    print(f"worker 0 exited {stopped:.1f} s after worker 1 was killed")
    assert code == 1
    errors = [line for line in (tmp_path / "0.err").read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1, tail(tmp_path, 0)
    # the heartbeats name the lost worker; a broken connection, if noticed first, does not
    assert re.search(r"multi_worker: lost (worker 1|a worker) \(\w+Error: ", errors[0]), errors[0]
    assert "Restart every worker" in errors[0]
    assert "--resume" in errors[0] and f"after epoch 1, the last one finished in {run}" in errors[0]
    assert json.loads((run / "state.json").read_text())["epoch"] == 1

    # doing what it says finishes the run
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    ports = free_ports(2)
    commands = [
        ([*cli, "--resume"], worker_env(ports, 0)),
        ([sys.executable, "-c", FIT, str(config), str(run), "0", "1"], worker_env(ports, 1)),
    ]
    until = time.monotonic() + DEADLINE
    with processes(resumed, commands) as started:
        codes = [wait_for(process, until, resumed, i) for i, process in enumerate(started)]
    assert codes == [0, 0], "\n".join(tail(resumed, i) for i, code in enumerate(codes) if code)
    assert "resuming after epoch 1" in (resumed / "0.out").read_text()
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 2 and state["finished"]
    assert [row["epoch"] for row in last_json(resumed, 1)["history"]] == [1, 2]
    assert (run / "log.csv").read_text().count("\n") == 3


@pytest.mark.slow
def test_workers_that_see_different_runs_stop_before_training(prepared_root, tmp_path):
    from msd_triplet.config import load_config, save_config

    config = multi_worker_config(prepared_root, tmp_path / "runs", epochs=2, name="different-runs.yaml")
    # one finished epoch in worker 0's run folder only, as when the run folder is not on a shared file system
    chief_run, other_run = tmp_path / "chief-run", tmp_path / "other-run"
    chief_run.mkdir()
    save_config(load_config(config), chief_run / "config.yaml")
    (chief_run / "state.json").write_text(json.dumps({"epoch": 1, "finished": False}))
    ports = free_ports(2)
    commands = [
        ([sys.executable, "-c", FIT, str(config), str(run), "0", "1"], worker_env(ports, i))
        for i, run in enumerate((chief_run, other_run))
    ]
    until = time.monotonic() + DEADLINE
    with processes(tmp_path, commands) as started:
        codes = [wait_for(process, until, tmp_path, i) for i, process in enumerate(started)]
    assert codes == [1, 1]
    for i in range(2):
        assert "MsdTripletError" in tail(
            tmp_path, i
        ) and "the workers see different runs (epochs done, per replica: [1, 0])" in tail(tmp_path, i)
    assert sorted(p.name for p in chief_run.iterdir()) == ["config.yaml", "state.json"] and not other_run.exists()
