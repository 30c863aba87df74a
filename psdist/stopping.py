"""Early stopping on a monitored metric, with patience and an optional target."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from psdist.errors import ConfigError

__all__ = ["EarlyStopping"]


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` stops improving for ``patience`` epochs, or reaches ``target``.

    Parameters
    ----------
    monitor
        A history key, e.g. ``"val_loss"`` or ``"val_accuracy"``.
    patience
        Epochs without improvement before stopping; ``None`` never stops for that reason.
    mode
        ``"min"`` or ``"max"``; default ``"min"`` for names containing "loss", else ``"max"``.
    min_delta
        Smallest change that counts as an improvement.
    target
        Stop as soon as the metric is at least this good.
    """

    monitor: str = "val_loss"
    patience: int | None = 3
    mode: str | None = None
    min_delta: float = 0.0
    target: float | None = None
    best: float = field(default=math.nan, init=False)
    bad_epochs: int = field(default=0, init=False)
    reason: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.mode is None:
            self.mode = "min" if "loss" in self.monitor else "max"
        if self.mode not in ("min", "max"):
            raise ConfigError(f"EarlyStopping mode={self.mode!r} must be 'min' or 'max'")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ConfigError(f"EarlyStopping patience={self.patience!r} must be an integer >= 1 or None")
        if not self.min_delta >= 0:  # also refuses NaN
            raise ConfigError(f"EarlyStopping min_delta={self.min_delta!r} must be >= 0")

    def _better(self, a: float, b: float, delta: float) -> bool:
        return a < b - delta if self.mode == "min" else a > b + delta

    def update(self, record: dict[str, Any]) -> bool:
        """Feed one epoch's record; returns True when training should stop."""
        if self.monitor not in record:
            raise ConfigError(
                f"EarlyStopping monitors {self.monitor!r}, but the history has "
                f"{sorted(record)}; pick one of those"
            )
        value = float(record[self.monitor])
        if self.target is not None and (value == self.target or self._better(value, self.target, 0.0)):
            self.reason = f"{self.monitor}={value:.4g} reached the target {self.target}"
            return True
        if math.isnan(self.best) or self._better(value, self.best, self.min_delta):
            self.best, self.bad_epochs = value, 0
            return False
        self.bad_epochs += 1
        if self.patience is not None and self.bad_epochs >= self.patience:
            self.reason = f"{self.monitor} did not improve for {self.bad_epochs} epochs (best {self.best:.4g})"
            return True
        return False

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state(self, s: dict[str, Any]) -> None:
        self.best, self.bad_epochs = float(s["best"]), int(s["bad_epochs"])
