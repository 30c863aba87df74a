"""A checkpoint's optimizer state under the optimizer given again to ``Trainer.load``."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from psdist.optim.spec import TorchOptimizer

__all__ = ["adopt_optimizers"]

logger = logging.getLogger(__name__)


def adopt_optimizers(
    given: TorchOptimizer | dict[str, TorchOptimizer], server: dict[str, Any], arrays: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Make a checkpoint's server state resume with the optimizers ``given``; returns the arrays.

    The same kind of optimizer keeps its state (momentum, moments, steps, the schedule's
    progress) under the given hyperparameters (learning rate included); another kind starts
    afresh, since its state would not fit, and says so in the log.
    """
    stored = server["optimizers"]
    named = given if isinstance(given, dict) else {next(iter(stored)): given}
    for name, spec in named.items():
        if name not in stored:
            continue
        old, new = stored[name]["config"].get("name"), spec.to_config()["name"]
        stored[name]["config"] = spec.to_config()
        if old == new:
            stored[name]["state"]["keep_given_hyper"] = True
        else:
            logger.warning("psdist: %s's optimizer changes from %s to %s: its state starts fresh", name, old, new)
            stored[name]["state"] = {"format": "torch", "steps": 0, "fresh": True}
            arrays = {k: v for k, v in arrays.items() if not k.startswith(f"optim/{name}/")}
    return arrays
