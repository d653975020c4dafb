"""Helpers shared by the benchmark scripts: CPU accounting, memory probes, child processes, tables.

The scripts are run as ``python benchmarks/NAME.py``, which puts this folder
first on ``sys.path``, so they import from here with ``from _common import
...``. Children started with :func:`in_child` ("spawn") inherit the parent's
``sys.path`` and so find this module too; children started with
:func:`run_json` re-run a script by path (its folder is then on ``sys.path``
again) or get ``PYTHONPATH`` from the caller.

Memory figures come from ``/proc/self/status`` (Linux): ``VmHWM`` is the
peak resident set, ``VmRSS`` the current one. ``ru_maxrss`` is not used by
the benchmarks: Linux carries the parent's high-water mark across
fork + exec, so in a child started from a large process it reports the
parent's peak.

This module imports only the standard library, and ``multiprocessing`` only
when :func:`in_child` is called, so that importing it hardly moves a child's
memory baseline.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import traceback
from typing import Callable

__all__ = [
    "machine_cpu_seconds",
    "own_cpu_seconds",
    "cpu_model",
    "markdown_table",
    "_status",
    "_vm_hwm_mib",
    "_reset_peak",
    "_child",
    "in_child",
    "run_json",
]


# --------------------------------------------------------------------------- CPU time


def machine_cpu_seconds() -> float:
    """CPU time all processes have spent so far (busy columns of /proc/stat); 0 where unavailable.

    The difference of two calls, minus that of :func:`own_cpu_seconds`, is
    the CPU time the rest of the machine used in between (ideally ~0 during
    a timing).
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process and its waited-for children so far."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else ``platform.processor()``, else ``"unknown"``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --------------------------------------------------------------------------- memory of this process


def _status(keys: tuple[str, ...]) -> dict[str, float]:
    """Fields ``keys`` of /proc/self/status (e.g. ``VmRSS``, ``VmHWM``, ``RssAnon``) in MiB.

    Fields the kernel does not report are missing from the result.
    """
    with open("/proc/self/status") as f:
        pairs = (line.partition(":")[::2] for line in f)
        return {k: int(v.split()[0]) / 1024 for k, v in pairs if k in keys}


def _vm_hwm_mib() -> float:
    """This process's peak resident set (``VmHWM``) in MiB; NaN where the kernel does not report it."""
    return _status(("VmHWM",)).get("VmHWM", float("nan"))


def _reset_peak() -> bool:
    """Reset this process's peak RSS mark (VmHWM) to its current RSS; False where Linux refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- child processes


def _child(target: Callable[[dict], dict], job: dict, conn) -> None:
    """Body of the process :func:`in_child` starts: send ``target(job)``, or ``{"error": traceback}``."""
    try:
        conn.send(target(job))
    except BaseException:  # noqa: BLE001 - reported by the parent
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def in_child(target: Callable[[dict], dict], job: dict, timeout: float | None = None) -> dict | None:
    """Run ``target(job)`` in a fresh spawned process; its result, or None after ``timeout`` seconds.

    ``target`` must be a module-level function of an importable module or
    of the main script (a spawn child re-imports the main script by path as
    ``__mp_main__``, without running its ``if __name__ == "__main__"``
    block, and finds this module on the ``sys.path`` it inherits). With
    ``timeout`` None it waits as long as the child runs. A child still
    running after ``timeout`` seconds is killed. An exception in the child
    is raised here as a RuntimeError with the child's traceback.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(target, job, send), daemon=True)
    process.start()
    send.close()
    try:
        if not receive.poll(timeout):
            process.kill()
            return None
        result = receive.recv()
    finally:
        process.join()
        receive.close()
    if "error" in result:
        raise RuntimeError(f"{target.__name__} {job.get('method', '')} failed in the child process:\n{result['error']}")
    return result


def run_json(
    command: list[str], what: str, *, input: str | None = None, cwd=None, env: dict[str, str] | None = None
) -> dict:
    """Run ``command`` (a fresh interpreter) and parse the last line it prints as JSON.

    The child gets this environment plus ``TF_CPP_MIN_LOG_LEVEL=2`` plus
    ``env``, and ``input`` on stdin. A non-zero exit raises a RuntimeError
    "``what`` failed:" followed by the end of its stderr.
    """
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    done = subprocess.run(command, input=input, capture_output=True, text=True, env=full_env, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report


def markdown_table(headers: list[str], rows: list[list], *, group_ints: bool = False) -> str:
    """A markdown table: floats as ``1,234.5``; ints as ``1,234`` with ``group_ints``, else as ``str``.

    Other values (strings, numpy integers, bools) are printed with ``str``.
    """

    def cell(v):
        if isinstance(v, float):
            return f"{v:,.1f}"
        if group_ints and isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
