"""Training steps: what one minibatch does on a worker.

A step is a small picklable object with two methods:

* ``step(replica, x, y)`` runs forward and backward for one minibatch and returns the loss (a
  float) or several named losses (a dict of floats; ``"loss"``, if present, is the one reported
  as ``train_loss``, else their sum). Send each loss to the gradients with
  :meth:`replica.backward(loss) <psdist.replica.replica.Replica.backward>` (all models), or
  ``replica.backward(loss, "generator")`` to send it to one model only. Under
  ``precision="16-mixed"`` that is required: it multiplies the loss by the worker's loss scale
  (and psdist divides it out of the pushed gradients); a step that calls ``loss.backward()``
  itself there raises :class:`~psdist.errors.ModelError`. Under ``"32"`` and ``"bf16-mixed"`` a
  plain ``loss.backward()`` works too. Return the loss unscaled (``float(loss.detach())``). Do
  not zero or replace gradients: psdist does that.
* ``step.evaluate(replica, x, y)`` returns ``(summed loss, outputs)`` for one validation batch,
  without gradients; ``outputs`` is a tensor or a dict of tensors (one row per sample), handed
  to the metric functions after concatenation (as float32: outputs of a mixed-precision
  forward pass are cast back).

Both run under the training's autocast (``precision``): the forward pass of a mixed precision
computes in bfloat16 or float16, while the parameters and their gradients stay float32.

The server holds and versions every model of ``replica.models`` together, each with its own
optimizer, so a step may train several models at once (a GAN's generator and discriminator).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from psdist.core.tree import rows
from psdist.replica.replica import Replica

__all__ = ["Step", "SupervisedStep", "forward", "reported_loss"]


class Step:
    """Base class of training steps (subclass and implement both methods; see the module docs).

    Examples
    --------
    A step that sends its loss through the replica, so it runs under every ``precision``::

        class Smoothed(Step):
            def __call__(self, replica, x, y):
                loss = F.cross_entropy(replica.module(x), y, label_smoothing=0.1)
                replica.backward(loss)  # scales the loss under "16-mixed"
                return float(loss.detach())  # the unscaled loss
    """

    def __call__(self, replica: Replica, x: torch.Tensor, y: torch.Tensor) -> float | dict[str, float]:
        """Forward and backward (through ``replica.backward``) of one minibatch; its loss(es)."""
        raise NotImplementedError

    def evaluate(self, replica: Replica, x: torch.Tensor, y: torch.Tensor) -> tuple[float, Any]:
        """``(summed loss, outputs)`` of one validation batch (run without gradients)."""
        raise NotImplementedError


def forward(model: torch.nn.Module, x: Any) -> Any:
    """Call ``model`` with a batch's inputs: ``model(x)`` for one array, ``model(*x)`` for a
    tuple (``inputs=[...]``), ``model(**x)`` for a dict (``inputs={argument: array}``)."""
    if isinstance(x, dict):
        return model(**x)
    if isinstance(x, (tuple, list)):
        return model(*x)
    return model(x)


class SupervisedStep(Step):
    """The default step: ``loss_fn(model(*inputs), targets)``, ``replica.backward(loss)``.

    Several inputs reach the model as positional (a list) or keyword (a dict) arguments
    (:func:`forward`); several targets reach ``loss_fn`` as a tuple or a dict, as given.
    """

    def __init__(self, loss_fn: Callable[[Any, Any], torch.Tensor]) -> None:
        self.loss_fn = loss_fn

    def __call__(self, replica: Replica, x: Any, y: Any) -> float:
        loss = self.loss_fn(forward(replica.module, x), y)
        replica.backward(loss)  # not loss.backward(): under "16-mixed" the replica scales the loss
        return float(loss.detach())

    def evaluate(self, replica: Replica, x: Any, y: Any) -> tuple[float, Any]:
        out = forward(replica.module, x)
        return float(self.loss_fn(out, y).detach()) * rows(x), out


def reported_loss(out: float | dict[str, float]) -> tuple[float, dict[str, float]]:
    """(the loss reported as train_loss, the named losses) of a step's return value."""
    if isinstance(out, dict):
        named = {str(k): float(v) for k, v in out.items()}
        return named.get("loss", sum(named.values())), named
    return float(out), {}
