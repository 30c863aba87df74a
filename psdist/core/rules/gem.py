"""Gradient Energy Matching: each worker scales its gradient so that the collective move of the
server matches the energy of a momentum-SGD proxy, whatever the number of workers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from psdist.core.protocol import Push, PushReply
from psdist.core.rules.base import Rule, WorkerRule, plain_sgd, positive
from psdist.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from psdist.core.optim.port import OptimizerInfo, OptimizerSpec
    from psdist.core.ports import ReplicaPort as Replica
    from psdist.core.protocol import ServerHandle

__all__ = ["GEM"]


def gem_scale(
    grad: np.ndarray, momentum: np.ndarray, central_move: np.ndarray, lr: float,
    kappa: float, pi_max: float, eps: float,
) -> np.ndarray:
    """π = clip((κ·|η m| − |Δw̃|) / (|η g| + ε), 0, π_max), elementwise.

    ``η m`` is the move a momentum-SGD proxy would make, ``Δw̃`` what the server moved since
    this worker's last pull (the other workers' updates), ``η g`` the worker's own plain move.
    """
    num = kappa * np.abs(lr * momentum) - np.abs(central_move)
    pi: np.ndarray = np.clip(num / (np.abs(lr * grad) + eps), 0.0, pi_max).astype(np.float32)
    return pi


class _GEMWorker(WorkerRule):
    """Keeps the proxy momentum m of its own gradients (lost with the worker: a replacement
    starts with m = 0, i.e. a cautious first step)."""

    def __init__(self, kappa: float, mu: float, pi_max: float, eps: float) -> None:
        self.kappa, self.mu, self.pi_max, self.eps = kappa, mu, pi_max, eps
        self.m: np.ndarray | None = None

    def communicate(
        self, replica: Replica, server: ServerHandle, batches: int, samples: int, loss: float
    ) -> PushReply:
        g = replica.gradient_update(scale=1.0 / batches)
        held = replica.weights_vector()  # the centre as this worker last pulled it
        now = server.pull(replica.worker, replica.version)
        move = np.zeros_like(g) if now.weights is None else now.weights - held
        if self.m is None:
            self.m = np.zeros_like(g)
        update = g.copy()
        lrs = now.lrs or {}
        for grp in replica.layout.groups:
            p = grp.params
            self.m[p] = self.mu * self.m[p] + g[p]
            lr = lrs.get(grp.name, now.lr)
            update[p] *= gem_scale(g[p], self.m[p], move[p], lr, self.kappa, self.pi_max, self.eps)
        push = Push(replica.worker, replica.version, update, samples, loss)
        reply = server.push(push, pull=True)
        replica.load(reply.pull)
        replica.zero_grad()
        return reply


@dataclass(frozen=True)
class GEM(Rule):
    """Gradient Energy Matching.

    Each worker keeps a momentum proxy m ← μ m + g of its own gradients, reads how far the
    server moved since its last pull (Δw̃, the other workers' updates) and sends π ⊙ g with
    π = clip((κ|η m| − |Δw̃|) / (|η g| + ε), 0, π_max) elementwise. The server applies it with
    plain SGD at rate η (GEM brings the momentum itself; a server optimizer with momentum or
    Adam is refused). One extra pull per push measures Δw̃.

    References
    ----------
    J. Hermans, G. Louppe, "Gradient Energy Matching for Distributed Asynchronous Gradient
    Descent", arXiv:1805.08469 (2018).
    """

    kappa: float = 2.0
    momentum: float = 0.9
    pi_max: float = 5.0
    eps: float = 1e-8

    def worker_side(self, optimizers: Mapping[str, OptimizerSpec] | None = None) -> WorkerRule:
        return _GEMWorker(self.kappa, self.momentum, self.pi_max, self.eps)

    def check(
        self,
        push_every: int,
        max_staleness: int | None,
        optimizers: Mapping[str, OptimizerInfo] | None = None,
    ) -> None:
        super().check(push_every, max_staleness, optimizers)
        positive("GEM kappa", self.kappa, "psdist.rules.GEM(kappa=2.0)")
        positive("GEM pi_max", self.pi_max, "psdist.rules.GEM(pi_max=5.0)")
        positive("GEM eps", self.eps, "psdist.rules.GEM(eps=1e-8)")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"GEM momentum={self.momentum!r} must be in [0, 1), e.g. psdist.rules.GEM(momentum=0.9)")
        plain_sgd("GEM", optimizers)
