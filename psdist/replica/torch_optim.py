"""psdist's optimizers as ``torch.optim`` twins: the reference loop's and elastic averaging's.

:func:`torch_optimizer` builds the ``torch.optim`` optimizer with the same formula and settings
as a psdist server optimizer; :class:`TorchLocalOptimizer` is what a replica hands a rule with
local steps (:class:`~psdist.core.ports.LocalOptimizer`).
"""

from __future__ import annotations

from typing import Any

import torch

from psdist.core.optim import SGD, Adam, Optimizer, RMSprop
from psdist.errors import ConfigError

__all__ = ["TorchLocalOptimizer", "torch_optimizer"]


def torch_optimizer(opt: Optimizer, params: Any) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer with the same formula and hyperparameters.

    Parameters with ``requires_grad=False`` among ``params`` are left out, as the psdist
    server leaves them: psdist gives every parameter a (zero) ``.grad`` view, on which torch
    would otherwise apply weight decay and momentum to a frozen layer.
    """
    params = list(params)
    if all(isinstance(p, torch.Tensor) for p in params):
        params = [p for p in params if p.requires_grad]
    if isinstance(opt, SGD):
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                               dampening=opt.dampening, weight_decay=opt.weight_decay)
    if isinstance(opt, Adam):
        return torch.optim.Adam(params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)
    if isinstance(opt, RMSprop):
        return torch.optim.RMSprop(params, lr=opt.lr, alpha=opt.alpha, eps=opt.eps, weight_decay=opt.weight_decay)
    raise TypeError(f"no torch twin for {type(opt).__name__}")


class TorchLocalOptimizer:
    """A ``torch.optim`` optimizer behind the core's :class:`~psdist.core.ports.LocalOptimizer`."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.torch = optimizer

    def set_lr(self, lr: float) -> None:
        for g in self.torch.param_groups:
            g["lr"] = lr

    def step(self) -> None:
        self.torch.step()


def local_optimizer(params: list[torch.Tensor], opt: Optimizer, nesterov_momentum: float | None) -> TorchLocalOptimizer:
    """The local optimizer of elastic averaging over ``params`` (the trainable ones).

    Without ``nesterov_momentum`` it is the torch twin of ``opt`` (EASGD); with it, SGD with that
    Nesterov momentum and ``opt``'s rate and weight decay (EAMSGD, which takes plain SGD only).
    """
    params = [p for p in params if p.requires_grad]  # frozen: no local weight decay or momentum
    if nesterov_momentum is None:
        return TorchLocalOptimizer(torch_optimizer(opt, params))
    if not isinstance(opt, SGD):
        raise ConfigError(f"local Nesterov momentum needs plain SGD, got {opt!r}: use optimizer=psdist.optim.SGD(lr=...)")
    return TorchLocalOptimizer(torch.optim.SGD(params, lr=opt.lr, momentum=nesterov_momentum, nesterov=True,
                                               weight_decay=opt.weight_decay))
