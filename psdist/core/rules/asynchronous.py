"""Asynchronous rules: every admitted push is applied as soon as it arrives.

They differ in how they treat staleness τ (server versions applied since the worker pulled):
Downpour ignores it (optionally bounded by ``max_staleness``), the others damp or correct it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from psdist.core.protocol import Push
from psdist.core.rules.base import Rule, ServerRule, sgd_family
from psdist.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from psdist.core.optim.port import OptimizerInfo
    from psdist.core.server import ServerState

__all__ = ["DCASGD", "Downpour", "DynSGD", "StalenessAware"]


@dataclass(frozen=True)
class Downpour(Rule):
    """Asynchronous SGD with gradient accumulation (Downpour SGD).

    Each worker accumulates the gradients of ``push_every`` minibatches, pushes their mean and
    pulls the new weights; the server applies every admitted push through its optimizer as soon
    as it arrives. Pushes staler than ``max_staleness`` are rejected by the server.

    References
    ----------
    J. Dean et al., "Large Scale Distributed Deep Networks", NIPS 2012.
    """

    overlaps: ClassVar[bool] = True  # a plain push and pull: one may be in flight


class _ScaledServer(ServerRule):
    def __init__(self, scale: Callable[[int], float]) -> None:
        self._scale = scale

    def lr_scale(self, staleness: int) -> float:
        return self._scale(staleness)


@dataclass(frozen=True)
class StalenessAware(Downpour):
    """Staleness-aware asynchronous SGD: the learning rate of an update is η / max(1, τ).

    References
    ----------
    W. Zhang, S. Gupta, X. Lian, J. Liu, "Staleness-aware Async-SGD for Distributed Deep
    Learning", IJCAI 2016 (arXiv:1511.05950).
    """

    def server_side(self) -> ServerRule:
        return _ScaledServer(lambda tau: 1.0 / max(1, tau))


@dataclass(frozen=True)
class DynSGD(Downpour):
    """DynSGD: each update scaled by 1 / (τ + 1).

    References
    ----------
    J. Jiang, B. Cui, C. Zhang, L. Yu, "Heterogeneity-aware Distributed Parameter Servers",
    SIGMOD 2017.
    """

    def server_side(self) -> ServerRule:
        return _ScaledServer(lambda tau: 1.0 / (tau + 1))


class _DelayCompensation(ServerRule):
    """Keeps, per *active* worker, the parameters it last pulled (what DC-ASGD needs).

    One model-sized vector per worker: it is dropped when the worker leaves (end of its chunk,
    lost, evicted), and pulls outside training (validation, the client) keep none, so the
    memory follows the workers training now, not every address ever seen (adapt, restarts).
    """

    def __init__(self, lam: float) -> None:
        self.lam = lam
        self.pulled: dict[str, np.ndarray] = {}

    def on_pull(self, state: ServerState, worker: str) -> None:
        if worker not in state.active:
            return
        held = self.pulled.get(worker)
        if held is None or held.shape != state.weights.shape:
            self.pulled[worker] = state.weights.copy()
        else:
            np.copyto(held, state.weights)

    def apply(self, state: ServerState, push: Push, staleness: int) -> None:
        backup = self.pulled.get(push.worker)
        if backup is not None and staleness > 0:
            g = push.update.copy()
            for grp in state._groups(push):
                p = grp.params
                g[p] += self.lam * g[p] * g[p] * (state.weights[p] - backup[p])
            push = Push(push.worker, push.base_version, g, push.samples, push.loss, push.groups, push.info)
        state.apply_gradient(push, lr_scale=1.0)

    def on_leave(self, state: ServerState, worker: str) -> None:
        self.pulled.pop(worker, None)

    def validate(self, state: ServerState) -> None:
        from psdist.errors import InvalidServerState

        super().validate(state)
        stray = set(self.pulled) - set(state.active)
        if stray:
            raise InvalidServerState(
                f"invariant 'DC-ASGD backups only for active workers' broken: {sorted(stray)} "
                f"are not training but hold {len(stray)} weight copies"
            )
        for worker, held in self.pulled.items():
            if held.shape != state.weights.shape:
                raise InvalidServerState(
                    f"invariant 'DC-ASGD backup shape' broken: {worker} holds {held.shape}, "
                    f"weights are {state.weights.shape}"
                )


@dataclass(frozen=True)
class DCASGD(Downpour):
    """Delay-compensated asynchronous SGD: g + λ · g ⊙ g ⊙ (w_now − w_pulled).

    The server keeps the parameters each training worker last pulled (one vector per active
    worker, dropped when it leaves) and applies the compensated gradient through its optimizer.
    The backups are not checkpointed: after a restore each worker's first push is applied
    uncompensated, as is a push from a worker that is not training (it never joined).

    References
    ----------
    S. Zheng et al., "Asynchronous Stochastic Gradient Descent with Delay Compensation",
    ICML 2017 (λ = 0.04 as in MXNet's implementation).
    """

    lam: float = 0.04
    # the compensation pairs a push with the weights its worker pulled last; with one push in
    # flight the gradient was computed on the pull before that one
    overlaps: ClassVar[bool] = False

    def server_side(self) -> ServerRule:
        return _DelayCompensation(self.lam)

    def check(
        self,
        push_every: int,
        max_staleness: int | None,
        optimizers: Mapping[str, OptimizerInfo] | None = None,
    ) -> None:
        super().check(push_every, max_staleness, optimizers)
        if not self.lam >= 0:
            raise ConfigError(f"DCASGD lam={self.lam!r} must be >= 0, e.g. psdist.rules.DCASGD(lam=0.04)")
        # the compensation approximates the Hessian of SGD's step; an adaptive optimizer
        # rescales the gradient after it, which the derivation does not cover
        sgd_family("DCASGD", "compensates the delay of SGD steps (its derivation)", optimizers)
