"""Server optimizers as the core sees them: a binding protocol, schedules, numpy optimizers.

:mod:`~psdist.core.optim.port` says what the server needs of an optimizer;
:mod:`~psdist.core.optim.flat` holds the torch-free numpy ones; :mod:`~psdist.core.optim.schedules`
the learning-rate schedules both paths share. Training uses ``psdist.optim`` (torch).
"""

from __future__ import annotations

from psdist.core.optim.flat import SGD, Adam, FlatBound, Optimizer, RMSprop, optimizer_from_config
from psdist.core.optim.port import BoundOptimizer, OptimizerInfo, OptimizerSpec
from psdist.core.optim.schedules import Constant, Cosine, Schedule, StepDecay, Warmup, schedule_from_config

__all__ = [
    "SGD",
    "Adam",
    "BoundOptimizer",
    "Constant",
    "Cosine",
    "FlatBound",
    "Optimizer",
    "OptimizerInfo",
    "OptimizerSpec",
    "RMSprop",
    "Schedule",
    "StepDecay",
    "Warmup",
    "optimizer_from_config",
    "schedule_from_config",
]
