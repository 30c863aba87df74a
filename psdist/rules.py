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

__all__ = ["Downpour", "Rule", "ServerRule", "WorkerRule", "rule_from_config"]


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
