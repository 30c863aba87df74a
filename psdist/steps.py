"""Training steps (:mod:`psdist.replica.steps`), the public name ``psdist.steps``."""

from __future__ import annotations

from psdist.replica.steps import (
    Step,
    SupervisedStep,
    reported_loss,
)

__all__ = [
    "Step",
    "SupervisedStep",
    "reported_loss",
]
