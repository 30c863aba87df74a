"""When to take recovery points, and what a lost parameter server costs.

A recovery point is the server's whole state (weights, optimizer, counters) plus the epoch's
progress (:class:`~psdist.run.epoch.EpochProgress`). The trainer takes one when a training starts,
at every epoch end, and while an epoch runs every ``every_versions`` server versions and/or
every ``every_seconds`` seconds. With a ``path`` each one is also written as a checkpoint file
(atomically, see :mod:`psdist.run.checkpoint`), which ``Trainer.load`` / ``psdist train --resume``
continue from after the client itself is gone.

When the parameter server's worker dies, a new server starts from the last point: the updates
applied since (at most one interval) are lost and the chunks finished since are trained again.
Chunks that were running at the point are not done in it: they run again from their start, and
the pushes they had made before the point are applied a second time (``pushes_replayed``).

A point costs the server one copy of its state (on its only thread) and the transfer of that
copy to the client; ``benchmarks/bench_recovery.py`` measures both. So that points never take
more than ``max_overhead`` of a training's time, the time-based interval stretches to at least
the measured cost of the last point divided by ``max_overhead``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from psdist.errors import ConfigError

__all__ = ["Checkpoints", "PointKeeper", "RecoveryPoint"]


@dataclass(frozen=True)
class Checkpoints:
    """Recovery points of a training: how often, where, and how many restarts to allow.

    Parameters
    ----------
    path
        Checkpoint file written at each recovery point (``None``: kept in memory only, which
        still lets a lost parameter server be replaced, but not a lost client).
    every_versions
        Take a point every this many server versions (updates) within an epoch.
    every_seconds
        Take a point every this many seconds within an epoch (default 60), or less often when
        points are expensive (see ``max_overhead``).
    max_restarts
        Parameter servers a training may lose before it gives up with the error.
    max_overhead
        Largest share of the training's time that time-based points may take (default 0.01):
        a point that took ``c`` seconds postpones the next time-based one to at least
        ``c / max_overhead`` seconds later (a 1e7-parameter Adam state costs about 0.1-0.2 s on
        a 2-core machine: a point every 10-20 s at most). Version-based points are kept as asked.

    Examples
    --------
    >>> trainer = psdist.Trainer(..., checkpoints=psdist.Checkpoints("run.ckpt", every_versions=500))
    """

    path: str | None = None
    every_versions: int | None = None
    every_seconds: float | None = 60.0
    max_restarts: int = 3
    max_overhead: float = 0.01

    def __post_init__(self) -> None:
        v = self.every_versions
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"every_versions={v!r} must be an integer >= 1 (or None), e.g. every_versions=500")
        s = self.every_seconds
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0):
            raise ConfigError(f"every_seconds={s!r} must be a positive number of seconds (or None), e.g. 60")
        r = self.max_restarts
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ConfigError(f"max_restarts={r!r} must be an integer >= 0, e.g. max_restarts=3")
        o = self.max_overhead
        if isinstance(o, bool) or not isinstance(o, (int, float)) or not 0 < o <= 1:
            raise ConfigError(f"max_overhead={o!r} must be a fraction in (0, 1], e.g. max_overhead=0.01")
        if self.path is not None and not isinstance(self.path, str):
            raise ConfigError(f"path={self.path!r} must be a file name, e.g. 'runs/run.ckpt'")

    def due(self, version: int, last_version: int, now: float, last_time: float, cost: float = 0.0) -> bool:
        """Whether a point is due at server ``version`` and time ``now`` (same clock as ``last_time``).

        ``cost`` is what the last point took (s): time-based points wait at least
        ``cost / max_overhead``.
        """
        if self.every_versions is not None and version - last_version >= self.every_versions:
            return True
        if self.every_seconds is None:
            return False
        return now - last_time >= max(self.every_seconds, cost / self.max_overhead)

    def to_config(self) -> dict[str, Any]:
        return {"path": self.path, "every_versions": self.every_versions,
                "every_seconds": self.every_seconds, "max_restarts": self.max_restarts,
                "max_overhead": self.max_overhead}


@dataclass
class RecoveryPoint:
    """The server's state and the trainer's bookkeeping of one moment, taken together.

    Parameters
    ----------
    state
        The server's ``state_dict()`` (scalars, arrays).
    progress
        The running epoch's :class:`~psdist.run.epoch.EpochProgress` as a dict, or ``None`` between
        epochs.
    epoch
        Epochs completed at that moment.
    history_len
        History records at that moment.
    taken_at
        ``time.monotonic()`` when it was taken.
    cost_s
        Seconds the point took (the server's copy and its transfer).
    """

    state: tuple[dict[str, Any], dict[str, Any]]
    progress: dict[str, Any] | None
    epoch: int
    history_len: int
    taken_at: float
    cost_s: float = 0.0

    @property
    def version(self) -> int:
        return int(self.state[0]["version"])

    def pushes_in_flight(self) -> int:
        """Pushes the point's weights hold from chunks that were not done at that moment.

        They are applied again when those chunks rerun after a restore. The epoch's pushes
        applied by the server so far, less those of the chunks already done (0 between epochs).
        """
        p = self.progress
        if p is None or not p.get("server_start"):
            return 0
        applied = int(self.state[0]["applied"]) - int(p["server_start"]["applied"])
        return max(0, applied - sum(int(c.get("applied", 0)) for c in p["done"].values()))


@dataclass
class PointKeeper:
    """The last recovery point of a training and when the next one is due."""

    policy: Checkpoints
    last: RecoveryPoint | None = None
    seen_version: int = 0  # the highest server version any result reported
    costs: list[float] = field(default_factory=list)  # seconds each point took, in order

    def keep(self, point: RecoveryPoint) -> None:
        self.last = point
        self.costs.append(point.cost_s)
        self.seen_version = max(self.seen_version, point.version)

    def seen(self, version: int) -> None:
        self.seen_version = max(self.seen_version, version)

    def due(self, now: float) -> bool:
        if self.last is None:
            return True
        return self.policy.due(self.seen_version, self.last.version, now, self.last.taken_at, self.last.cost_s)

    def restored(self, version: int, now: float) -> None:
        """A new server started from the last point at ``version``: count from there."""
        self.seen_version = version
        if self.last is not None:
            self.last.taken_at = now
