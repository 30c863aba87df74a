"""Validation metrics (:mod:`psdist.run.metrics`), the public name ``psdist.metrics``."""

from __future__ import annotations

from psdist.run.metrics import (
    accuracy,
    auc,
    default_metrics,
    mse,
    scores,
)

__all__ = [
    "accuracy",
    "auc",
    "default_metrics",
    "mse",
    "scores",
]
