"""The two strategy interfaces every update rule implements, and the rule registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from psdist.core.protocol import Pull, Push, PushReply, Rejection, push_buffer
from psdist.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from psdist.core.optim.port import OptimizerInfo, OptimizerSpec
    from psdist.core.ports import ReplicaPort as Replica
    from psdist.core.protocol import ServerHandle
    from psdist.core.server import ServerState

__all__ = ["Rule", "ServerRule", "WorkerRule", "rule_from_config"]


class ServerRule:
    """Server half of a rule. The default applies each push as a gradient, at full rate."""

    def on_pull(self, state: ServerState, worker: str) -> None:
        """Called for every pull (e.g. to remember the weights a worker holds)."""

    def admit(self, state: ServerState, push: Push, staleness: int) -> Rejection | None:
        """Why this push is refused (its kind and an explanation), or ``None`` to admit it."""
        return None

    def lr_scale(self, staleness: int) -> float:
        """Factor of the learning rate for an update of this staleness."""
        return 1.0

    def apply(self, state: ServerState, push: Push, staleness: int) -> None:
        """Apply an admitted push (``state.apply_*`` advances the version; a rule may defer)."""
        state.apply_gradient(push, lr_scale=self.lr_scale(staleness))

    def may_proceed(self, state: ServerState, worker: str) -> bool:
        """Whether an active worker may compute its next update now (barriers say no)."""
        return True

    def on_leave(self, state: ServerState, worker: str) -> None:
        """Called when a worker stops training (end of its chunk, lost, evicted)."""

    def validate(self, state: ServerState) -> None:
        """Assert the rule's invariants (called by :meth:`ServerState.validate_state`).

        The default: every admitted push made exactly one version since the start (or the
        last restore). Rules that defer or merge pushes (:class:`~psdist.rules.Sync`) override.
        """
        from psdist.errors import InvalidServerState

        base = state.baseline
        if state.version - base["version"] != state.applied - base["applied"]:
            raise InvalidServerState(
                f"invariant 'one version per applied push' broken: {state.version - base['version']} "
                f"versions for {state.applied - base['applied']} applied pushes under {type(self).__name__}"
            )

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned."""


class WorkerRule:
    """Worker half of a rule. The default is Downpour: accumulate, push, pull.

    ``keeps_local`` says the replica holds worker-local weights between chunks (elastic
    averaging): validation then saves and restores them around its pull of the server weights.
    """

    keeps_local: bool = False

    def begin(self, replica: Replica, pull: Pull) -> None:
        """Start of a chunk, with the server's answer to the worker's first pull."""
        replica.load(pull)

    def after_backward(self, replica: Replica) -> None:
        """Called after every minibatch backward pass (gradients sit in the replica)."""

    def communicate(
        self, replica: Replica, server: ServerHandle, batches: int, samples: int, loss: float
    ) -> PushReply:
        """Send the mean gradient of the last ``batches`` minibatches and load fresh weights.

        When the reply says ``wait`` (a barrier rule held the worker back), the weights are not
        loaded here; the loop calls :meth:`resume` before the next minibatch.
        """
        update = replica.gradient_update(scale=1.0 / batches, out=push_buffer(server))
        push = Push(replica.worker, replica.version, update, samples, loss)
        reply = server.push(push, pull=True)
        replica.load(reply.pull)
        replica.zero_grad()
        return reply

    def resume(self, replica: Replica, server: ServerHandle) -> None:
        """Wait until the server lets this worker go on, then load the weights it answers."""
        replica.load(server.wait(replica.worker, replica.version))


@dataclass(frozen=True)
class Rule:
    """Base class of update rules; subclasses override the factories they need.

    ``overlaps`` says whether a worker may keep one push in flight while it computes the next
    window (``Trainer(overlap=True)``, :mod:`psdist.replica.overlap`): only rules whose worker
    side is a plain push and pull, and whose server side pairs no update with what the worker
    pulled, can.
    """

    overlaps: ClassVar[bool] = False

    def server_side(self) -> ServerRule:
        return ServerRule()

    def worker_side(self, optimizers: Mapping[str, OptimizerSpec] | None = None) -> WorkerRule:
        """The worker half; ``optimizers`` are the training's optimizers (for local steps)."""
        return WorkerRule()

    def for_workers(self, workers: int) -> Rule:
        """This rule with defaults that depend on the number of workers filled in."""
        return self

    def comm_period(self, push_every: int) -> int:
        """Minibatches between two communications (the trainer's ``push_every`` by default)."""
        return push_every

    def check(
        self,
        push_every: int,
        max_staleness: int | None,
        optimizers: Mapping[str, OptimizerInfo] | None = None,
    ) -> None:
        """Raise :class:`ConfigError` if the rule cannot work with these settings."""
        if not (isinstance(push_every, int) and push_every >= 1):
            raise ConfigError(f"push_every={push_every!r} must be an integer >= 1, e.g. 1")

    def to_config(self) -> dict[str, Any]:
        """JSON-safe description (stored in checkpoints)."""
        return {"name": type(self).__name__, **asdict(self)}


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
        if not c.__name__.startswith("_"):
            out.append(c)
        todo.extend(c.__subclasses__())
    return out


def rule_code(rule: Rule) -> str:
    """Python that builds ``rule``: ``psdist.rules.Name(field=value, ...)``, non-defaults only.

    What error messages suggest, so the fix they show can be pasted as it is.
    """
    args = ", ".join(
        f"{f.name}={getattr(rule, f.name)!r}" for f in fields(rule)
        if getattr(rule, f.name) != f.default
    )
    return f"psdist.rules.{type(rule).__name__}({args})"


def positive(name: str, value: Any, example: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number > 0.

    ``example`` is shown as the fix: valid code, e.g. ``"psdist.rules.GEM(kappa=2.0)"``.
    """
    if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r} must be a number > 0, e.g. {example}")


def plain_sgd(rule: str, optimizers: Mapping[str, OptimizerInfo] | None) -> None:
    """Raise unless every optimizer is SGD without momentum (rules that bring their own)."""
    for name, opt in (optimizers or {}).items():
        if not opt.is_sgd() or opt.any("momentum"):
            raise ConfigError(
                f"{rule} applies its updates with plain SGD at the server, but model {name!r} has "
                f"{opt.summary()}: use optimizer=psdist.optim.SGD(lr={opt.lr!r}) without momentum "
                f"({rule} supplies its own momentum)"
            )


def sgd_family(rule: str, why: str, optimizers: Mapping[str, OptimizerInfo] | None) -> None:
    """Raise unless every optimizer is SGD (momentum allowed): rules derived for SGD's update."""
    for name, opt in (optimizers or {}).items():
        if not opt.is_sgd():
            raise ConfigError(
                f"{rule} {why}, but model {name!r} has {opt.summary()}: use "
                f"optimizer=psdist.optim.SGD(lr={opt.lr!r}, momentum=0.9), or rule=psdist.rules.Downpour() "
                f"to keep {opt.name}"
            )
