"""When to take recovery points, and what a lost parameter server costs.

A recovery point is the server's whole state (weights, optimizer, counters) plus the epoch's
progress (:class:`~psdist.epoch.EpochProgress`). The trainer takes one when a training starts,
at every epoch end, and while an epoch runs every ``every_versions`` server versions and/or
every ``every_seconds`` seconds. With a ``path`` each one is also written as a checkpoint file
(atomically, see :mod:`psdist.checkpoint`), which ``Trainer.load`` / ``psdist train --resume``
continue from after the client itself is gone.

When the parameter server's worker dies, a new server starts from the last point: the updates
applied since (at most one interval) are lost and the chunks finished since are trained again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from psdist.errors import ConfigError

__all__ = ["Checkpoints"]


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
        Take a point every this many seconds within an epoch (default 60).
    max_restarts
        Parameter servers a training may lose before it gives up with the error.

    Examples
    --------
    >>> trainer = psdist.Trainer(..., checkpoints=psdist.Checkpoints("run.ckpt", every_versions=500))
    """

    path: str | None = None
    every_versions: int | None = None
    every_seconds: float | None = 60.0
    max_restarts: int = 3

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
        if self.path is not None and not isinstance(self.path, str):
            raise ConfigError(f"path={self.path!r} must be a file name, e.g. 'runs/run.ckpt'")

    def due(self, version: int, last_version: int, now: float, last_time: float) -> bool:
        """Whether a point is due at server ``version`` and time ``now`` (same clock as ``last_time``)."""
        if self.every_versions is not None and version - last_version >= self.every_versions:
            return True
        return self.every_seconds is not None and now - last_time >= self.every_seconds

    def to_config(self) -> dict[str, Any]:
        return {"path": self.path, "every_versions": self.every_versions,
                "every_seconds": self.every_seconds, "max_restarts": self.max_restarts}
