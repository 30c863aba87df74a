"""Training steps: what one minibatch does on a worker.

A step is a small picklable object with two methods:

* ``step(replica, x, y)`` runs forward and backward for one minibatch and returns the loss (a
  float) or several named losses (a dict of floats; ``"loss"``, if present, is the one reported
  as ``train_loss``, else their sum). Gradients must end up in the parameters' ``.grad`` —
  through ``loss.backward()`` for one model, or :meth:`~psdist.replica.replica.Replica.backward` to
  send a loss to one model only. Do not zero or replace gradients: psdist does that.
* ``step.evaluate(replica, x, y)`` returns ``(summed loss, outputs)`` for one validation batch,
  without gradients; ``outputs`` is a tensor or a dict of tensors (one row per sample), handed
  to the metric functions after concatenation.

The server holds and versions every model of ``replica.models`` together, each with its own
optimizer, so a step may train several models at once (a GAN's generator and discriminator).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from psdist.replica.replica import Replica

__all__ = ["Step", "SupervisedStep", "reported_loss"]


class Step:
    """Base class of training steps (subclass and implement both methods)."""

    def __call__(self, replica: Replica, x: torch.Tensor, y: torch.Tensor) -> float | dict[str, float]:
        raise NotImplementedError

    def evaluate(self, replica: Replica, x: torch.Tensor, y: torch.Tensor) -> tuple[float, Any]:
        raise NotImplementedError


class SupervisedStep(Step):
    """The default step: ``loss_fn(model(x), y)``, backward, return the loss."""

    def __init__(self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.loss_fn = loss_fn

    def __call__(self, replica: Replica, x: torch.Tensor, y: torch.Tensor) -> float:
        loss = self.loss_fn(replica.module(x), y)
        loss.backward()
        return float(loss.detach())

    def evaluate(self, replica: Replica, x: torch.Tensor, y: torch.Tensor) -> tuple[float, Any]:
        out = replica.module(x)
        return float(self.loss_fn(out, y).detach()) * len(x), out


def reported_loss(out: float | dict[str, float]) -> tuple[float, dict[str, float]]:
    """(the loss reported as train_loss, the named losses) of a step's return value."""
    if isinstance(out, dict):
        named = {str(k): float(v) for k, v in out.items()}
        return named.get("loss", sum(named.values())), named
    return float(out), {}
