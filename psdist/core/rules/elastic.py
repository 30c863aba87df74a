"""Elastic averaging: workers explore with local weights, tied to the server's centre by α."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from psdist.core.protocol import Pull, Push, PushReply, RejectKind
from psdist.core.rules.base import Rule, ServerRule, WorkerRule, positive, rule_code
from psdist.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from psdist.core.optim.port import OptimizerInfo, OptimizerSpec
    from psdist.core.ports import LocalOptimizer
    from psdist.core.ports import ReplicaPort as Replica
    from psdist.core.protocol import ServerHandle
    from psdist.core.server import ServerState

__all__ = ["EAMSGD", "EASGD"]

logger = logging.getLogger(__name__)


class _CentreServer(ServerRule):
    """The server only adds the elastic differences workers send: x̃ ← x̃ + E."""

    def apply(self, state: ServerState, push: Push, staleness: int) -> None:
        state.apply_delta(push)


class _ElasticWorker(WorkerRule):
    """Local optimizer steps on the replica's own weights; every period an elastic exchange.

    The local weights and the local optimizer state live in this object, on the worker, across
    chunks. If the worker is lost they are lost with it: the centre variable is on the server,
    and a replacement worker starts from it with a fresh local optimizer.
    """

    keeps_local = True

    def __init__(self, alpha: float, optimizers: Mapping[str, OptimizerSpec], momentum: float | None) -> None:
        self.alpha = np.float32(alpha)
        self.optimizers = optimizers
        self.momentum = momentum
        self._local: dict[str, LocalOptimizer] = {}
        self._centre: np.ndarray | None = None

    def begin(self, replica: Replica, pull: Pull) -> None:
        if replica.version < 0:  # a new worker starts from the centre
            replica.load(pull)
            self._centre = None if pull.weights is None else pull.weights
        if not self._local:
            self._make_locals(replica)
        self._follow_lr(pull)

    def _make_locals(self, replica: Replica) -> None:
        # frozen parameters stay out of the local optimizers (the replica leaves them out)
        self._local = {n: replica.local_optimizer(n, self.optimizers[n], self.momentum)
                       for n in replica.trainable_models()}

    def _follow_lr(self, pull: Pull) -> None:
        # the server's set_lr() drives the local base rates; schedules step with the local steps
        for name, lr in (pull.lrs or {}).items():
            local = self._local.get(name)
            if local is not None:
                local.set_lr(lr)

    def after_backward(self, replica: Replica) -> None:
        for local in self._local.values():
            local.step()
        replica.zero_grad()

    def communicate(
        self, replica: Replica, server: ServerHandle, batches: int, samples: int, loss: float
    ) -> PushReply:
        pull = server.pull(replica.worker, replica.version)
        if pull.weights is not None:
            self._centre = pull.weights
        if self._centre is None:  # same version as our first load: the replica held it
            raise ConfigError("elastic averaging lost track of the centre weights; restart the worker")
        local = replica.weights_vector()
        elastic = self.alpha * (local - self._centre)
        for part in replica.layout.frozen:  # frozen weights never move, locally or at the centre
            elastic[part] = 0.0
        replica.version = pull.version
        self._follow_lr(pull)
        reply = server.push(Push(replica.worker, pull.version, elastic, samples, loss), pull=False)
        # x ← x − E only once the centre took E: a rejected push (stale, non-finite) leaves
        # both sides as they were, so the elastic difference is not lost
        if reply.applied:
            replica.set_weights(local - elastic)
        elif reply.kind is RejectKind.NONFINITE and not np.isfinite(local).all():
            # diverged local weights would be refused forever: start again from the centre,
            # as a replacement worker would
            logger.warning("psdist: %s: local EASGD weights hold NaN/Inf; restarting from the centre",
                           replica.worker)
            replica.set_weights(self._centre)
            self._make_locals(replica)
            self._follow_lr(pull)
        return reply

    def resume(self, replica: Replica, server: ServerHandle) -> None:
        """Never held back (no barrier); nothing to load: the local weights go on."""


@dataclass(frozen=True)
class EASGD(Rule):
    """Asynchronous Elastic Averaging SGD.

    Each worker trains its own weights x with the training's optimizer (and its schedule,
    stepped per local step), locally. Every ``period`` minibatches it reads the centre x̃,
    computes E = α (x − x̃), sets x ← x − E and sends E; the server adds it, x̃ ← x̃ + E (the
    server optimizer is not used; ``set_lr`` reaches the local optimizers' base rates). α defaults to β / p with β = 0.9 and p
    workers, the paper's choice. Validation scores the centre x̃.

    References
    ----------
    S. Zhang, A. Choromanska, Y. LeCun, "Deep learning with Elastic Averaging SGD", NIPS 2015
    (Algorithm 2, asynchronous; τ = 10, β = 0.9 in its experiments).
    """

    alpha: float | None = None
    beta: float = 0.9
    period: int = 10

    def server_side(self) -> ServerRule:
        return _CentreServer()

    def worker_side(self, optimizers: Mapping[str, OptimizerSpec] | None = None) -> WorkerRule:
        if self.alpha is None:
            raise ConfigError(f"{type(self).__name__}: alpha unresolved; call rule.for_workers(n) first")
        if optimizers is None:
            raise ConfigError(f"{type(self).__name__} needs the training's optimizers on the workers")
        return _ElasticWorker(self.alpha, optimizers, self._momentum())

    def _momentum(self) -> float | None:
        return None

    def for_workers(self, workers: int) -> Rule:
        return self if self.alpha is not None else replace(self, alpha=self.beta / max(1, workers))

    def comm_period(self, push_every: int) -> int:
        return self.period

    def check(
        self,
        push_every: int,
        max_staleness: int | None,
        optimizers: Mapping[str, OptimizerInfo] | None = None,
    ) -> None:
        super().check(push_every, max_staleness, optimizers)
        name = type(self).__name__
        p = self.period
        if not (isinstance(p, int) and p >= 1):
            raise ConfigError(
                f"{name} period={p!r} must be an integer >= 1, e.g. psdist.rules.{name}(period=10)"
            )
        if push_every not in (1, p):
            raise ConfigError(
                f"{name} communicates every period={p} minibatches; give "
                f"rule={rule_code(replace(self, period=push_every))} instead of push_every={push_every}"
            )
        if self.alpha is not None:
            positive(f"{name} alpha", self.alpha, f"psdist.rules.{name}(alpha=None) (0.9 / workers)")
            if self.alpha >= 1:
                raise ConfigError(
                    f"{name} alpha={self.alpha!r} must be < 1 (it moves x toward x̃), e.g. "
                    f"psdist.rules.{name}(alpha=None) for 0.9 / workers"
                )
        positive(f"{name} beta", self.beta, f"psdist.rules.{name}(beta=0.9)")
        for model, opt in (optimizers or {}).items():
            if opt.clip_norm is not None:  # the server adds elastic differences: nothing to clip there
                raise ConfigError(
                    f"{name} steps the optimizer on the workers and the server only adds elastic "
                    f"differences, so model {model!r}'s clip_norm={opt.clip_norm!r} (a per-push clip at "
                    "the server) would never apply: drop clip_norm, or use rule=psdist.rules.Downpour()"
                )

    def to_config(self) -> dict[str, Any]:
        return {"name": type(self).__name__, "alpha": self.alpha, "beta": self.beta,
                "period": self.period}


@dataclass(frozen=True)
class EAMSGD(EASGD):
    """EASGD with Nesterov momentum δ in the local steps (the paper's EAMSGD).

    The local optimizer is SGD with the training optimizer's learning rate and weight decay and
    Nesterov momentum ``momentum``; the training optimizer must therefore be SGD.

    References
    ----------
    S. Zhang, A. Choromanska, Y. LeCun, "Deep learning with Elastic Averaging SGD", NIPS 2015
    (Algorithm 3; δ = 0.99 in its experiments).
    """

    momentum: float = 0.99

    def _momentum(self) -> float | None:
        return self.momentum

    def check(
        self,
        push_every: int,
        max_staleness: int | None,
        optimizers: Mapping[str, OptimizerInfo] | None = None,
    ) -> None:
        super().check(push_every, max_staleness, optimizers)
        if not 0 <= self.momentum < 1:
            raise ConfigError(
                f"EAMSGD momentum={self.momentum!r} must be in [0, 1), e.g. psdist.rules.EAMSGD(momentum=0.99)"
            )
        for name, opt in (optimizers or {}).items():
            if not opt.is_sgd():
                raise ConfigError(
                    f"EAMSGD runs local Nesterov SGD, but model {name!r} has {opt.summary()}: "
                    f"use optimizer=psdist.optim.SGD(lr={opt.lr!r}), or rule=psdist.rules.EASGD() "
                    "to keep this optimizer locally"
                )

    def to_config(self) -> dict[str, Any]:
        return {**super().to_config(), "momentum": self.momentum}
