"""The optimizer a rule with local steps runs on the worker (elastic averaging).

EASGD trains each worker's own weights with the training's optimizer: the same recipe the server
binds (:class:`~psdist.optim.spec.TorchOptimizer`), built here over the replica's trainable
parameters, with its scheduler stepped per local step. EAMSGD replaces it by SGD with Nesterov
momentum at the recipe's rate and weight decay.
"""

from __future__ import annotations

from typing import Any

import torch

from psdist.core.optim.port import OptimizerSpec
from psdist.errors import ConfigError
from psdist.optim.bound import rescale_lr
from psdist.optim.spec import TorchOptimizer

__all__ = ["TorchLocalOptimizer", "local_optimizer"]


class TorchLocalOptimizer:
    """A ``torch.optim`` optimizer and its scheduler behind :class:`~psdist.core.ports.LocalOptimizer`."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: Any = None) -> None:
        self.torch = optimizer
        self.scheduler = scheduler

    def set_lr(self, lr: float) -> None:
        rescale_lr(self.torch, self.scheduler, lr)

    def step(self) -> None:
        self.torch.step()
        if self.scheduler is not None:
            self.scheduler.step()


def local_optimizer(named: list[tuple[str, torch.nn.Parameter]], spec: OptimizerSpec,
                    nesterov_momentum: float | None) -> TorchLocalOptimizer:
    """The local optimizer of elastic averaging over ``named`` parameters (frozen ones left out)."""
    if not isinstance(spec, TorchOptimizer):
        raise ConfigError(
            f"elastic averaging runs the optimizer on the workers, which takes a torch optimizer; got "
            f"{spec!r}: use e.g. psdist.optim.SGD(lr=0.05)"
        )
    params = [(n, p) for n, p in named if p.requires_grad]  # frozen: no local weight decay or momentum
    if nesterov_momentum is None:
        return TorchLocalOptimizer(*spec.build(params))
    info = spec.info()
    if info is None or not info.is_sgd():
        raise ConfigError(f"local Nesterov momentum needs SGD, got {spec!r}: use optimizer=psdist.optim.SGD(lr=...)")
    hyper = info.groups[0]
    opt = torch.optim.SGD([p for _, p in params], lr=info.lr, momentum=nesterov_momentum, nesterov=True,
                          weight_decay=float(hyper.get("weight_decay", 0.0)))
    return TorchLocalOptimizer(opt)
