"""The messages between workers and the parameter server, and the server handle protocol.

Plain dataclasses of numbers and numpy arrays: cheap to serialise and the same whether the
server is a Dask actor, an in-process object (tests, the simulator) or restored from a checkpoint.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = [
    "NONFINITE",
    "STALE",
    "Pull",
    "Push",
    "PushReply",
    "RejectKind",
    "Rejection",
    "ServerHandle",
    "push_buffer",
    "run_version",
]


class RejectKind(str, enum.Enum):
    """Why the server refused a push, as a stable name.

    ``str``-valued, so a kind is its value wherever text is expected: the keys of the server's
    ``metrics()["rejected"]``, of :attr:`psdist.replica.loop.ChunkResult.rejected` and of
    checkpoints are these strings (``"nonfinite"``, ``"stale"``, ...), and a counter read back
    from JSON is found again with the member (``counts.get(RejectKind.STALE)``).
    """

    #: The update or the loss holds NaN/Inf.
    NONFINITE = "nonfinite"
    #: Computed from weights older than the bound allows (``max_staleness``, or Sync's round).
    STALE = "stale"
    #: A second gradient of the same worker for one synchronous round.
    DUPLICATE = "duplicate"
    #: Any other refusal of a rule's own (a user's rule); its reason says why.
    RULE = "rule"

    # the value, not "RejectKind.STALE": f-strings and logs show the stable name, on every
    # Python (the str() of mixed-in enums changed between 3.10 and 3.12)
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


#: Rejection kind of a push whose update or loss holds NaN/Inf.
NONFINITE = RejectKind.NONFINITE
#: Rejection kind of a push computed from weights older than ``max_staleness`` versions.
STALE = RejectKind.STALE


@dataclass(frozen=True)
class Rejection:
    """A refused push: the kind to count it under and an explanation for people.

    Parameters
    ----------
    kind
        What counters and code look at (never parse ``reason``).
    reason
        Why, and what to do about it, e.g. ``"staleness 5 > max_staleness 4; pull and
        recompute"``.
    """

    kind: RejectKind
    reason: str

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.reason}"


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

    ``lr`` is the learning rate in force for the first model (scheduled), ``lrs`` each model's
    base rate (rules with local optimizers follow the server's ``set_lr`` through them; their
    schedules step with the local steps).
    """

    version: int
    weights: np.ndarray | None
    lr: float = 0.0
    lrs: dict[str, float] | None = None


@dataclass
class PushReply:
    """The server's answer to a push (and, with ``pull``, the fresh weights).

    ``rejection`` says why a push was refused (``None`` when it was admitted); code looks at
    its :attr:`~Rejection.kind`. ``wait`` is set when a barrier rule (SSP, Sync) holds the
    worker back: ``pull`` is then ``None`` and the worker calls :meth:`ServerHandle.wait`
    before computing again.
    """

    applied: bool
    version: int
    staleness: int
    rejection: Rejection | None = None
    pull: Pull | None = None
    wait: bool = False

    def __post_init__(self) -> None:
        if self.applied == (self.rejection is not None):
            raise ValueError(
                f"PushReply(applied={self.applied}, rejection={self.rejection}): a push is either "
                "applied or rejected with a Rejection"
            )

    @property
    def kind(self) -> RejectKind | None:
        """The rejection's kind, ``None`` for an admitted push."""
        return None if self.rejection is None else self.rejection.kind

    @property
    def reason(self) -> str | None:
        """The rejection as text for people (``"stale: staleness 5 > ..."``), or ``None``."""
        return None if self.rejection is None else str(self.rejection)


def push_buffer(server: object) -> np.ndarray | None:
    """Where ``server`` would like the next push's update written, if it offers a place.

    An optional capability: the data plane's shared-memory client answers its gradient slot, so
    the worker's gradient lands where the server reads it (no copy); other handles answer ``None``.
    """
    offer = getattr(server, "push_buffer", None)
    return offer() if callable(offer) else None


def run_version(server: object, version: int) -> int:
    """The run's version (what the server's counters and recovery points count) for a version
    ``server`` handed out: the same number, except where the handle speaks for several servers.

    An optional capability: a sharded server's handle answers each shard's versions summed
    (one number for the loop) and maps it back to shard 0's, which counts the run's updates.
    """
    convert = getattr(server, "run_version", None)
    return int(convert(version)) if callable(convert) else version


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
