"""Barrier rules: a worker that is ahead waits (it is not rejected).

Both rules rely on the server's membership table: a worker is *active* while it trains a chunk
(``join`` at its start, ``leave`` at its end or when it is lost), and its *clock* counts the
updates it pushed. A worker that leaves never holds the others back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from psdist.core.protocol import Push, Rejection, RejectKind
from psdist.core.rules.base import Rule, ServerRule
from psdist.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from psdist.core.optim.port import OptimizerInfo
    from psdist.core.server import ServerState

__all__ = ["SSP", "Sync"]


class _SyncServer(ServerRule):
    """Collects one gradient per active worker; their sample-weighted mean is one step."""

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self._samples = 0
        self._loss = 0.0
        self._groups: set[str] | None = set()
        self.contributed: set[str] = set()

    def admit(self, state: ServerState, push: Push, staleness: int) -> Rejection | None:
        if staleness > 0:
            return Rejection(
                RejectKind.STALE,
                f"computed at version {push.base_version}, the round is at {state.version}; "
                "synchronous SGD takes only gradients of the current weights",
            )
        if push.worker in self.contributed:
            return Rejection(RejectKind.DUPLICATE,
                             "this worker already contributed to the current round; wait for it")
        return None

    def apply(self, state: ServerState, push: Push, staleness: int) -> None:
        if self._sum is None:
            self._sum = np.zeros_like(state.weights)
        # weighting by samples makes the mean the gradient of the concatenated batches
        self._sum += np.float32(push.samples) * push.update
        self._samples += push.samples
        self._loss += push.loss * push.samples
        if self._groups is not None:
            self._groups = None if push.groups is None else self._groups | set(push.groups)
        self.contributed.add(push.worker)
        self._maybe_step(state)

    def may_proceed(self, state: ServerState, worker: str) -> bool:
        return worker not in self.contributed

    def on_leave(self, state: ServerState, worker: str) -> None:
        self._maybe_step(state)

    def validate(self, state: ServerState) -> None:
        from psdist.errors import InvalidServerState

        base = state.baseline
        rounds, applied = state.version - base["version"], state.applied - base["applied"]
        pending = len(self.contributed)
        problems = []
        if not rounds <= applied - pending:
            problems.append(f"{rounds} rounds from {applied} contributions, {pending} of them pending")
        if (self._sum is None) != (pending == 0):
            problems.append(f"a round sum {'without' if self._sum is not None else 'missing for'} contributions")
        if self._samples < 0 or (pending == 0 and self._samples):
            problems.append(f"{self._samples} samples in a round of {pending} contributions")
        unknown = self.contributed - set(state.workers)
        if unknown:
            problems.append(f"contributions from never-seen workers {sorted(unknown)}")
        if problems:
            raise InvalidServerState("invariant 'Sync round bookkeeping' broken: " + "; ".join(problems))

    def _maybe_step(self, state: ServerState) -> None:
        if not self.contributed or not self.contributed.issuperset(state.active):
            return
        assert self._sum is not None
        groups = None if self._groups is None else tuple(
            n for n in state.layout.names if n in self._groups
        )
        mean = Push(
            "sync-round", state.version, self._sum / np.float32(max(self._samples, 1)),
            self._samples, self._loss / max(self._samples, 1), groups,
        )
        state.apply_gradient(mean)
        self._sum = None
        self._samples, self._loss, self._groups = 0, 0.0, set()
        self.contributed = set()


@dataclass(frozen=True)
class Sync(Rule):
    """Synchronous SGD: one gradient from every active worker, their **mean** applied as one step.

    With n workers of batch b this is single-process SGD with batch n·b (the mean is weighted by
    samples, so unequal last batches are exact too). A worker that pushed waits until the round
    is complete; a worker that leaves (end of its chunk, lost) is no longer waited for, and its
    contribution, if any, stays in the round. Pushes computed on older weights are rejected as
    ``stale``. A partly collected round is not checkpointed.

    References
    ----------
    The baseline of Horovod and PyTorch DDP; J. Chen et al., "Revisiting Distributed Synchronous
    SGD", arXiv:1604.00981 (2016).
    """

    def server_side(self) -> ServerRule:
        return _SyncServer()


class _SSPServer(ServerRule):
    def __init__(self, bound: int) -> None:
        self.bound = bound

    def may_proceed(self, state: ServerState, worker: str) -> bool:
        return state.clock_gap(worker) <= self.bound


@dataclass(frozen=True)
class SSP(Rule):
    """Stale Synchronous Parallel with bound ``s``: a worker may start its next update only
    while its clock is at most ``s`` ahead of the slowest active worker's.

    Clocks count pushes. A fast worker waits (its push is applied, it is not rejected);
    ``bound=0`` makes every worker wait for the others at each step (each gradient is still
    applied on its own, unlike :class:`Sync`); a very large bound is asynchronous SGD. Updates
    go through the server optimizer as in Downpour.

    References
    ----------
    Q. Ho et al., "More Effective Distributed ML via a Stale Synchronous Parallel Parameter
    Server", NIPS 2013.
    """

    bound: int = 2

    def server_side(self) -> ServerRule:
        return _SSPServer(self.bound)

    def check(
        self,
        push_every: int,
        max_staleness: int | None,
        optimizers: Mapping[str, OptimizerInfo] | None = None,
    ) -> None:
        super().check(push_every, max_staleness, optimizers)
        if not (isinstance(self.bound, int) and self.bound >= 0):
            raise ConfigError(f"SSP bound={self.bound!r} must be an integer >= 0, e.g. psdist.rules.SSP(bound=2)")

    def to_config(self) -> dict[str, Any]:
        return {"name": "SSP", "bound": self.bound}
