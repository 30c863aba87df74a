"""What the core's rules need of a worker's model replica: a small protocol, without torch.

A rule's worker half (:class:`~psdist.core.rules.base.WorkerRule`) reads and writes the
replica's flat vectors and, for rules with local steps (elastic averaging), asks it for a local
optimizer. :class:`psdist.replica.replica.Replica` implements this with torch; the core itself
never imports torch, so rules stay numpy code that the simulator and tests drive directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from psdist.core.layout import Layout
    from psdist.core.optim.port import OptimizerSpec
    from psdist.core.protocol import Pull

__all__ = ["LocalOptimizer", "ReplicaPort"]


class LocalOptimizer(Protocol):
    """An optimizer stepping a replica's own weights on the worker (elastic averaging)."""

    def set_lr(self, lr: float) -> None:
        """Make ``lr`` the base rate (the server's ``set_lr``); a no-op when it already is."""

    def step(self) -> None:
        """One step from the gradients the replica holds (and of its schedule, if any)."""


class ReplicaPort(Protocol):
    """A worker's model replica as the rules see it: flat vectors and a version."""

    worker: str
    version: int

    @property
    def layout(self) -> Layout:
        """The models inside the flat vectors."""

    def load(self, pull: Pull | None) -> None:
        """Take the weights of a pull (nothing when it carries none)."""

    def weights_vector(self) -> np.ndarray:
        """The replica's current weights and buffers, as one float32 vector (a copy)."""

    def set_weights(self, w: np.ndarray) -> None:
        """Overwrite the replica's weights and buffers."""

    def gradient_update(self, scale: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
        """The accumulated gradients (times ``scale``) and buffer changes, in the server layout
        (written into ``out`` when given)."""

    def zero_grad(self) -> None:
        """Clear the accumulated gradients."""

    def trainable_models(self) -> tuple[str, ...]:
        """The models with at least one parameter that trains (``requires_grad``)."""

    def local_optimizer(self, model: str, optimizer: OptimizerSpec, nesterov_momentum: float | None = None
                        ) -> LocalOptimizer:
        """``optimizer`` built over ``model``'s trainable parameters, with its schedule (with
        ``nesterov_momentum``: SGD with that Nesterov momentum and its rate instead)."""
