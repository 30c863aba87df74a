"""What the parameter server needs of an optimizer, without torch.

The server holds each model's parameters as one section of a flat float32 vector. An
:class:`OptimizerSpec` is the recipe the user gives (picklable, stateless); the server *binds* it
to one model group's section, which gives a :class:`BoundOptimizer`: the live optimizer with its
state, stepping that section in place from a pushed update. ``psdist.optim.TorchOptimizer``
binds real ``torch.optim`` optimizers whose parameters are views of the section; the numpy
optimizers of :mod:`psdist.core.optim.flat` bind to themselves. Rules never see either: they
check an :class:`OptimizerInfo` (a JSON-safe description) and scale the rate of one step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from psdist.core.layout import Group

__all__ = ["BoundOptimizer", "OptimizerInfo", "OptimizerSpec"]


@dataclass(frozen=True)
class OptimizerInfo:
    """What an optimizer is, for the rules' checks and for messages.

    Parameters
    ----------
    name
        The optimizer's class name as torch spells it (``"SGD"``, ``"AdamW"``).
    groups
        The hyperparameters of each parameter group (``lr``, ``momentum``, ...; no tensors).
    code
        Python that builds it, shown in error messages (``"psdist.optim.SGD(lr=0.1)"``).
    clip_norm
        The per-push gradient clipping bound, or ``None``.
    """

    name: str
    groups: tuple[Mapping[str, Any], ...]
    code: str
    clip_norm: float | None = None

    @property
    def lr(self) -> float:
        """The first parameter group's learning rate (what messages quote)."""
        return float(self.groups[0].get("lr", 0.0)) if self.groups else 0.0

    def any(self, key: str) -> bool:
        """Whether any parameter group sets ``key`` to a true value (``momentum``, ``nesterov``)."""
        return any(bool(g.get(key)) for g in self.groups)

    def is_sgd(self) -> bool:
        return self.name == "SGD"

    def summary(self) -> str:
        """``"SGD (lr=0.1, momentum=0.9)"``: what messages say the current optimizer is (not code)."""
        keys = ("lr", "momentum", "nesterov", "weight_decay", "betas")
        first = self.groups[0] if self.groups else {}
        shown = ", ".join(f"{k}={first[k]!r}" for k in keys if first.get(k) not in (None, 0, 0.0, False))
        return f"{self.name} ({shown})" if shown else self.name


class BoundOptimizer(Protocol):
    """One model's optimizer on the server, bound to its parameter section (changed in place)."""

    @property
    def info(self) -> OptimizerInfo:
        """What it is (class, per-group hyperparameters)."""

    @property
    def steps(self) -> int:
        """Updates applied since it was built (or as restored from a checkpoint)."""

    def step(self, update: np.ndarray, lr_scale: float = 1.0, norm: float | None = None,
             trainable_norm: float | None = None) -> None:
        """Apply one pushed update (the model's parameter section of it) in place.

        ``lr_scale`` multiplies every group's learning rate for this step only (staleness-aware
        rules); ``norm`` is the update's L2 norm when the server already measured it (folded
        into its finite check), so gradient clipping needs no second pass over memory.
        ``trainable_norm`` is the norm over the whole model's trainable parameters, measured by
        the worker when this server holds only a slice (a shard): clipping uses it as it is.
        """

    def lr(self) -> float:
        """The learning rate the first parameter group uses at the next step (scheduled)."""

    def base_lr(self) -> float:
        """The first group's rate before any schedule: what :meth:`set_lr` sets."""

    def set_lr(self, lr: float) -> None:
        """Make the first group's base rate ``lr``; other groups keep their ratio to it, and a
        schedule goes on from the new base."""

    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-safe scalars, arrays): what a checkpoint stores, without pickle."""

    def load_state_dict(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output (or migrate an older format, or say why not)."""

    def validate(self) -> None:
        """Raise :class:`~psdist.errors.InvalidServerState` if an invariant is broken."""


class OptimizerSpec(Protocol):
    """The recipe of a server optimizer: bound once per model group, never changed itself."""

    def bind(self, group: Group, params: np.ndarray) -> BoundOptimizer:
        """The live optimizer of ``group``, stepping ``params`` (its parameter section) in place."""

    def info(self) -> OptimizerInfo | None:
        """A description known without a model (``None``: only a bound optimizer can say)."""

    def to_config(self) -> dict[str, Any]:
        """A JSON-safe description (checkpoints, YAML)."""
