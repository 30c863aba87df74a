"""The messages between workers and the parameter server, and the server handle protocol.

Plain dataclasses of numbers and numpy arrays: cheap to serialise and the same whether the
server is a Dask actor, an in-process object (tests, the simulator) or restored from a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["NONFINITE", "STALE", "Pull", "Push", "PushReply", "ServerHandle", "reason_kind"]

#: Rejection kind of a push whose update or loss holds NaN/Inf (a key of the server's
#: ``metrics()["rejected"]`` and of :attr:`psdist.replica.loop.ChunkResult.rejected`).
NONFINITE = "nonfinite"
#: Rejection kind of a push computed from weights older than ``max_staleness`` versions.
STALE = "stale"


def reason_kind(reason: str | None) -> str:
    """The stable kind of a rejection reason: the text before its first colon (``"nonfinite"``)."""
    return (reason or "rejected").split(":", 1)[0].strip() or "rejected"


@dataclass
class Push:
    """One update sent by a worker.

    Parameters
    ----------
    worker
        Stable identity of the sender (the Dask worker address).
    base_version
        Server version of the weights the update was computed from; staleness is measured
        against it.
    update
        float32 vector in the server layout: per model group, the gradient (or delta, as the
        update rule defines) over the parameter section, and the change of each buffer.
    samples
        Training samples behind this update.
    loss
        Mean training loss over those samples.
    groups
        The model groups the update carries (``None``: all); the others are left untouched.
    info
        Rule-specific numbers (small), e.g. a worker clock.
    """

    worker: str
    base_version: int
    update: np.ndarray
    samples: int
    loss: float
    groups: tuple[str, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pull:
    """The server's answer to a pull: ``weights`` is ``None`` when the caller is current.

    ``lr`` is the learning rate in force for the first model, ``lrs`` for each model (rules
    with local optimizers follow the server's schedule and ``set_lr`` through them).
    """

    version: int
    weights: np.ndarray | None
    lr: float = 0.0
    lrs: dict[str, float] | None = None


@dataclass
class PushReply:
    """The server's answer to a push (and, with ``pull``, the fresh weights).

    ``reason`` (rejected pushes) starts with a stable kind and a colon, e.g.
    ``"nonfinite: ..."`` or ``"stale: ..."``; :func:`reason_kind` extracts it.
    ``wait`` is set when a barrier rule (SSP, Sync) holds the worker back: ``pull`` is then
    ``None`` and the worker calls :meth:`ServerHandle.wait` before computing again.
    """

    applied: bool
    version: int
    staleness: int
    reason: str | None = None
    pull: Pull | None = None
    wait: bool = False


class ServerHandle(Protocol):
    """What a training loop needs from a parameter server, wherever it runs."""

    def pull(self, worker: str, have_version: int = -1) -> Pull: ...

    def push(self, push: Push, pull: bool = True) -> PushReply: ...

    def join(self, worker: str) -> None:
        """The worker starts training (a chunk): barriers count it from now on."""

    def leave(self, worker: str) -> None:
        """The worker stops training: barriers no longer wait for it."""

    def wait(self, worker: str, have_version: int = -1) -> Pull:
        """Block until the rule lets ``worker`` compute again, then pull."""
        ...
