"""Server optimizers (numpy; :mod:`psdist.core.optim`), the public name ``psdist.optim``."""

from __future__ import annotations

from psdist.core.optim import (
    SGD,
    Adam,
    Constant,
    Cosine,
    Optimizer,
    RMSprop,
    Schedule,
    StepDecay,
    Warmup,
    optimizer_from_config,
    schedule_from_config,
)

__all__ = [
    "SGD",
    "Adam",
    "Constant",
    "Cosine",
    "Optimizer",
    "RMSprop",
    "Schedule",
    "StepDecay",
    "Warmup",
    "optimizer_from_config",
    "schedule_from_config",
]
