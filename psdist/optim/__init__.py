"""Server optimizers: real ``torch.optim`` optimizers, run by the parameter server.

Pass what you would use in a single process::

    optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01)
    optimizer=psdist.optim.TorchOptimizer(torch.optim.SGD, lr=0.1, momentum=0.9,
        scheduler=functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=1000),
        clip_norm=5.0)
    optimizer=my_factory  # my_factory(named_params) -> torch.optim.Optimizer (parameter groups)

``SGD``, ``Adam``, ``AdamW``, ``RMSprop`` and ``Adagrad`` here are thin sugar for
``TorchOptimizer(torch.optim.<Name>, ...)``. The server builds the optimizer over tensors that
view its flat weight vector (:mod:`psdist.optim.bound`); the scheduler steps once per server
update of its model. psdist's own schedules (:class:`Cosine`, :class:`Warmup`, ...) still work
as ``schedule=`` and become a ``LambdaLR``.
"""

from __future__ import annotations

from psdist.core.optim.schedules import Constant, Cosine, Schedule, StepDecay, Warmup, schedule_from_config
from psdist.optim.presets import SGD, Adagrad, Adam, AdamW, RMSprop
from psdist.optim.resolve import as_optimizer, optimizer_from_config
from psdist.optim.spec import NamedParams, SchedulerFactory, TorchOptimizer, decay_groups

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "Constant",
    "Cosine",
    "NamedParams",
    "RMSprop",
    "Schedule",
    "SchedulerFactory",
    "StepDecay",
    "TorchOptimizer",
    "Warmup",
    "as_optimizer",
    "decay_groups",
    "optimizer_from_config",
    "schedule_from_config",
]
