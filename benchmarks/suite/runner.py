"""Launching one contender process tree with a spec, a timeout and a clean environment.

    from benchmarks.suite.runner import launch     # used by benchmarks/run_suite.py

Each launch gets its own session (process group), so a timeout kills everything it started
(mp.spawn children, Dask nannies, mpirun ranks, Ray's workers are stopped by ray.shutdown or
die with the group). Thread and malloc variables of the caller are not inherited: plain runs
get their thread count, the rest one thread per process, as Dask's nanny does for its workers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.suite.common import ROOT, write_json

logger = logging.getLogger(__name__)

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def child_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARS and not k.startswith("MALLOC_")}
    env.update({k: str(threads) for k in _THREAD_VARS})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(extra or {})
    return env


def launch(name: str, cmd: list[str], spec: dict[str, Any], workdir: Path, timeout: float,
           threads: int = 1, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` with ``spec`` (written to ``workdir/name.spec.json``); its result document.

    Never raises for a failing contender: the document then carries ``error`` (and whatever
    rows the contender wrote before it failed or timed out).
    """
    spec_path = workdir / f"{name}.spec.json"
    out_path = workdir / f"{name}.result.json"
    log_path = workdir / f"{name}.log"
    write_json(spec_path, {**spec, "out": str(out_path)})
    cmd = [str(spec_path) if c == "{spec}" else c for c in cmd]
    t0 = time.perf_counter()
    error = None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=str(ROOT), env=child_env(threads, extra_env), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
            if rc != 0:
                error = f"exit code {rc}"
        except subprocess.TimeoutExpired:
            error = f"timed out after {timeout:.0f} s"
        finally:
            if proc.poll() is None or error:  # timeout, Ctrl-C, or leftovers of a failed run
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
    wall = time.perf_counter() - t0
    doc: dict[str, Any] = {"rows": {}}
    if out_path.exists():
        try:
            doc = json.loads(out_path.read_text())
        except json.JSONDecodeError as e:
            error = error or f"unreadable result file: {e}"
    doc["wall_s"] = wall
    if error:
        doc["error"] = error
        doc["log_tail"] = log_path.read_text(errors="replace")[-3000:]
        logger.warning("%s: %s after %.0f s (log %s)", name, error, wall, log_path)
    return doc
