"""Thin sugar: ``psdist.optim.SGD(lr=0.05, momentum=0.9)`` is
``TorchOptimizer(torch.optim.SGD, lr=0.05, momentum=0.9)``; nothing more.

Each takes the ``torch.optim`` class's own arguments, and psdist's ``scheduler=``,
``clip_norm=`` and ``schedule=`` (a :class:`~psdist.core.optim.schedules.Schedule`, the older
spelling of a scheduler).
"""

from __future__ import annotations

from typing import Any

import torch

from psdist.core.optim.schedules import Schedule
from psdist.errors import ConfigError
from psdist.optim.spec import SchedulerFactory, TorchOptimizer

__all__ = ["SGD", "SUGAR", "Adagrad", "Adam", "AdamW", "RMSprop"]


def _make(cls: type[torch.optim.Optimizer], lr: float | None, schedule: Schedule | None,
          scheduler: SchedulerFactory | Schedule | None, clip_norm: float | None, kwargs: dict[str, Any]
          ) -> TorchOptimizer:
    if schedule is not None and scheduler is not None:
        raise ConfigError("give schedule= (psdist's) or scheduler= (torch's), not both")
    if lr is not None:
        kwargs = {"lr": lr, **kwargs}
    spec = TorchOptimizer(cls, scheduler=schedule if schedule is not None else scheduler, clip_norm=clip_norm, **kwargs)
    spec.check()  # a bad value (momentum=-1) raises where it was written
    return spec


def SGD(lr: float | None = None, *, schedule: Schedule | None = None, scheduler: SchedulerFactory | None = None,
        clip_norm: float | None = None, **kwargs: Any) -> TorchOptimizer:
    """``torch.optim.SGD`` (momentum, dampening, nesterov, weight_decay, ...) on the server."""
    return _make(torch.optim.SGD, lr, schedule, scheduler, clip_norm, kwargs)


def Adam(lr: float | None = None, *, schedule: Schedule | None = None, scheduler: SchedulerFactory | None = None,
         clip_norm: float | None = None, **kwargs: Any) -> TorchOptimizer:
    """``torch.optim.Adam`` (betas, eps, weight_decay as L2, amsgrad, ...) on the server."""
    return _make(torch.optim.Adam, lr, schedule, scheduler, clip_norm, kwargs)


def AdamW(lr: float | None = None, *, schedule: Schedule | None = None, scheduler: SchedulerFactory | None = None,
          clip_norm: float | None = None, **kwargs: Any) -> TorchOptimizer:
    """``torch.optim.AdamW`` (decoupled weight decay) on the server."""
    return _make(torch.optim.AdamW, lr, schedule, scheduler, clip_norm, kwargs)


def RMSprop(lr: float | None = None, *, schedule: Schedule | None = None, scheduler: SchedulerFactory | None = None,
            clip_norm: float | None = None, **kwargs: Any) -> TorchOptimizer:
    """``torch.optim.RMSprop`` (alpha, eps, momentum, centered, ...) on the server."""
    return _make(torch.optim.RMSprop, lr, schedule, scheduler, clip_norm, kwargs)


def Adagrad(lr: float | None = None, *, schedule: Schedule | None = None, scheduler: SchedulerFactory | None = None,
            clip_norm: float | None = None, **kwargs: Any) -> TorchOptimizer:
    """``torch.optim.Adagrad`` on the server."""
    return _make(torch.optim.Adagrad, lr, schedule, scheduler, clip_norm, kwargs)


#: the sugar functions (``optimizer=psdist.optim.SGD`` without a call is refused by name)
SUGAR = (SGD, Adam, AdamW, RMSprop, Adagrad)
