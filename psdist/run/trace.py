"""Chrome-trace timelines (``chrome://tracing``, Perfetto) of what each worker did when.

The old MPI tools wrote one at the end of a run; psdist builds it from the spans every chunk
task reports (read, pull, compute, push, wait) and every validation task (validate).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

__all__ = ["chrome_trace", "write_trace"]

_COLOURS = {  # Chrome's reserved colour names, so phases look the same in every trace
    "read": "grey", "pull": "thread_state_iowait", "compute": "good", "push": "thread_state_runnable",
    "wait": "terrible", "validate": "rail_load",
}


def chrome_trace(spans: Iterable[tuple[str, str, float, float, int, int]], name: str = "psdist") -> dict[str, Any]:
    """Trace-event JSON (complete "X" events, µs) with one row per worker.

    ``spans`` are ``(worker, phase, start, stop, epoch, chunk)`` with wall-clock seconds.
    """
    spans = list(spans)
    t0 = min((s[2] for s in spans), default=0.0)
    workers = sorted({s[0] for s in spans})
    tid = {w: i + 1 for i, w in enumerate(workers)}
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": name}},
        *({"ph": "M", "name": "thread_name", "pid": 1, "tid": tid[w], "args": {"name": w}} for w in workers),
    ]
    for worker, phase, start, stop, epoch, chunk in spans:
        events.append({
            "ph": "X", "name": phase, "cat": phase, "pid": 1, "tid": tid[worker],
            "ts": round((start - t0) * 1e6, 1), "dur": round(max(stop - start, 0.0) * 1e6, 1),
            "cname": _COLOURS.get(phase, "generic_work"), "args": {"epoch": epoch, "chunk": chunk},
        })
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"origin_unix_s": t0}}


def write_trace(path: str | os.PathLike[str], trace: dict[str, Any]) -> None:
    """Write a trace dict as JSON (open it in chrome://tracing or ui.perfetto.dev)."""
    with open(path, "w") as f:
        json.dump(trace, f)
