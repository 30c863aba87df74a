"""Live monitoring feed: what a training publishes for the dashboard page.

Everything travels as Dask structured events on one topic, :data:`TOPIC`, so it needs no extra
connection and works on any cluster: the parameter server logs a snapshot of its counters at
most every ``interval`` seconds (``Worker.log_event``), the trainer logs the start, every
finished chunk, every epoch record and the end (``Client.log_event``). Each message is a flat,
msgpack-safe dict with ``kind`` and ``run`` keys; the dashboard's scheduler plugin
(:mod:`psdist.dashboard`) keeps the recent ones per run.

=========  ==================================================================================
kind       fields besides ``kind``, ``run``, ``time``
=========  ==================================================================================
start      ``name``, ``ps`` (address), ``config`` (rule, optimizer, batch size, workers, ...)
server     :meth:`psdist.core.server.ServerState.metrics` (version, applied, rejected by reason,
           samples, staleness histogram, lr, per-worker table, active workers, waits)
chunk      ``epoch``, ``chunk``, ``worker``, ``samples``, ``loss``, ``compute_s``, ``comm_s``,
           ``wait_s``, ``read_s``, ``spans`` ((phase, start, stop) for the timeline)
epoch      ``record``: the history record of the epoch (losses, validation metrics, ...)
lr         ``lr``: a learning rate set by hand (``trainer.set_lr``)
end        ``reason``: "completed", "stopped", "early stop: ...", or the error
=========  ==================================================================================
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

__all__ = ["TOPIC", "Throttle", "event"]

#: The Dask event topic of every psdist message.
TOPIC = "psdist"


def _safe(v: Any) -> Any:
    """msgpack-safe copy: str keys, finite floats (NaN/Inf as None), lists for tuples."""
    if isinstance(v, dict):
        return {str(k): _safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_safe(x) for x in v]
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if hasattr(v, "item"):  # numpy scalars
        return _safe(v.item())
    return str(v)


def event(kind: str, run: str, **fields: Any) -> dict[str, Any]:
    """One feed message."""
    return _safe({"kind": kind, "run": run, "time": time.time(), **fields})


class Throttle:
    """True at most once per ``interval`` seconds (the first call is always due)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last = -math.inf

    def due(self) -> bool:
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False
