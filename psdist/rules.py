"""Update rules: how workers make updates and how the server applies them.

A rule is a small frozen, picklable object (its hyperparameters). It makes two strategy objects:

* :meth:`Rule.server_side` — lives inside :class:`psdist.server.ServerState`; decides whether an
  admitted push is applied now, how (through the server optimizer, with which learning-rate
  scale, or as a direct delta), and keeps any per-worker server state.
* :meth:`Rule.worker_side` — lives with each worker's model replica; decides what happens after
  each backward pass and at each communication point.

The Dask shells (actor, worker tasks, trainer) only ever call these interfaces, so a new rule
plugs in without touching them. No Dask import here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from psdist.errors import ConfigError
from psdist.protocol import Push, PushReply

if TYPE_CHECKING:
    from psdist.protocol import ServerHandle
    from psdist.replica import Replica
    from psdist.server import ServerState

__all__ = [
    "DCASGD",
    "Downpour",
    "DynSGD",
    "Rule",
    "ServerRule",
    "StalenessAware",
    "WorkerRule",
    "rule_from_config",
]


class ServerRule:
    """Server half of a rule. The default applies each push as a gradient, at full rate."""

    def on_pull(self, state: ServerState, worker: str) -> None:
        """Called for every pull (e.g. to remember the weights a worker holds)."""

    def lr_scale(self, staleness: int) -> float:
        """Factor of the learning rate for an update of this staleness."""
        return 1.0

    def apply(self, state: ServerState, push: Push, staleness: int) -> None:
        """Apply an admitted push; must call one of ``state.apply_*`` to advance the version."""
        state.apply_gradient(push, lr_scale=self.lr_scale(staleness))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned."""


class WorkerRule:
    """Worker half of a rule. The default is Downpour: accumulate, push, pull."""

    def after_backward(self, replica: Replica) -> None:
        """Called after every minibatch backward pass (gradients sit in the replica)."""

    def communicate(
        self, replica: Replica, server: ServerHandle, batches: int, samples: int, loss: float
    ) -> PushReply:
        """Send the mean gradient of the last ``batches`` minibatches and load fresh weights."""
        update = replica.gradient_update(scale=1.0 / batches)
        push = Push(replica.worker, replica.version, update, samples, loss)
        reply = server.push(push, pull=True)
        replica.load(reply.pull)
        replica.zero_grad()
        return reply


@dataclass(frozen=True)
class Rule:
    """Base class of update rules; subclasses override the two factories."""

    def server_side(self) -> ServerRule:
        return ServerRule()

    def worker_side(self) -> WorkerRule:
        return WorkerRule()

    def check(self, push_every: int, max_staleness: int | None) -> None:
        """Raise :class:`ConfigError` if the rule cannot work with these settings."""
        if not (isinstance(push_every, int) and push_every >= 1):
            raise ConfigError(f"push_every={push_every!r} must be an integer >= 1, e.g. 1")

    def to_config(self) -> dict[str, Any]:
        """JSON-safe description (stored in checkpoints)."""
        return {"name": type(self).__name__, **asdict(self)}


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


def rule_from_config(cfg: dict[str, Any]) -> Rule:
    """Rebuild a rule from :meth:`Rule.to_config` output, or a YAML mapping ``{name: ...}``."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    known = {c.__name__.lower(): c for c in _all_rules()}
    cls = known.get(str(name).lower())
    if cls is None:
        raise ConfigError(f"unknown update rule {name!r}; choose one of {sorted(known)}")
    try:
        return cls(**cfg)
    except TypeError as e:
        raise ConfigError(f"bad option for rule {name!r}: {e}") from None


def _all_rules() -> list[type[Rule]]:
    out, todo = [], [Rule]
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(c.__subclasses__())
    return out


class _ScaledServer(ServerRule):
    def __init__(self, scale: Any) -> None:
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
    """Keeps, per worker, the parameters it last pulled (what DC-ASGD needs)."""

    def __init__(self, lam: float) -> None:
        self.lam = lam
        self.pulled: dict[str, np.ndarray] = {}

    def on_pull(self, state: ServerState, worker: str) -> None:
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


@dataclass(frozen=True)
class DCASGD(Downpour):
    """Delay-compensated asynchronous SGD: g + λ · g ⊙ g ⊙ (w_now − w_pulled).

    The server keeps the parameters each worker last pulled (one vector per worker) and applies
    the compensated gradient through its optimizer. The backups are not checkpointed: after a
    restore each worker's first push is applied uncompensated.

    References
    ----------
    S. Zheng et al., "Asynchronous Stochastic Gradient Descent with Delay Compensation",
    ICML 2017 (λ = 0.04 as in MXNet's implementation).
    """

    lam: float = 0.04

    def server_side(self) -> ServerRule:
        return _DelayCompensation(self.lam)

    def check(self, push_every: int, max_staleness: int | None) -> None:
        super().check(push_every, max_staleness)
        if not self.lam >= 0:
            raise ConfigError(f"DCASGD lam={self.lam!r} must be >= 0, e.g. 0.04")
