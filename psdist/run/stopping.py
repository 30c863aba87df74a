"""Early stopping on a monitored metric, with patience and an optional target."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from psdist.errors import ConfigError

__all__ = ["EarlyStopping"]

# Whether smaller or larger is better, by the last "_"-separated word of a metric's name (after
# a "val_" or "train_" prefix): "val_type_accuracy" is an accuracy, "train_g_loss" a loss. Only
# the last word counts, so "val_loss_ratio" is not taken for a loss: a name whose last word is
# not listed has no known direction and needs mode=.
_MIN_WORDS = frozenset({
    "loss", "mse", "mae", "rmse", "msle", "nll", "error", "err", "resolution", "distance",
    "divergence", "kl", "perplexity", "chi2",
})
_MAX_WORDS = frozenset({
    "accuracy", "acc", "auc", "rejection", "f1", "precision", "recall", "purity", "significance",
    "r2", "iou", "dice",
})
# Whole names psdist's own metrics take (psdist.hep.evaluate) that the last-word rule misses:
# background rejection at a signal efficiency ("rejection_at_50", "rej50").
_MAX_NAMES = re.compile(r"rej(ection_at_)?\d+")


def _known_mode(monitor: str) -> str | None:
    """``"min"``/``"max"`` for a metric name psdist knows the direction of, else ``None``."""
    name = monitor.lower()
    for prefix in ("val_", "train_"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if _MAX_NAMES.fullmatch(name):
        return "max"
    last = name.rsplit("_", 1)[-1]
    if last in _MIN_WORDS:
        return "min"
    if last in _MAX_WORDS:
        return "max"
    return None


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
        ``"min"`` (smaller is better) or ``"max"``. Default: taken from the name, after a
        ``val_`` or ``train_`` prefix, by its last ``_``-separated word: ``loss``, ``mse``,
        ``mae``, ``rmse``, ``msle``, ``nll``, ``error``, ``err``, ``resolution``, ``distance``,
        ``divergence``, ``kl``, ``perplexity`` and ``chi2`` are minimised; ``accuracy``,
        ``acc``, ``auc``, ``rejection``, ``f1``, ``precision``, ``recall``, ``purity``,
        ``significance``, ``r2``, ``iou`` and ``dice`` maximised, and so are background
        rejections ``rej50``/``rejection_at_50``. So ``val_loss``, ``train_loss``,
        ``val_mse``, ``val_resolution`` go down, ``val_auc``, ``val_type_accuracy`` up.
        Any other name (``val_loss_ratio``: its last word is ``ratio``) needs ``mode=``;
        without it the constructor raises :class:`~psdist.errors.ConfigError`.
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
        if not isinstance(self.monitor, str) or not self.monitor:
            raise ConfigError(f"EarlyStopping monitor={self.monitor!r} must be a history key, e.g. 'val_loss'")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ConfigError(f"EarlyStopping patience={self.patience!r} must be an integer >= 1 or None")
        if not self.min_delta >= 0:  # also refuses NaN
            raise ConfigError(f"EarlyStopping min_delta={self.min_delta!r} must be >= 0")
        # the other settings first, so that the code this error suggests runs
        if self.mode is None:
            self.mode = _known_mode(self.monitor)
        if self.mode is None:
            # a wrong guess would keep the worst model and stop on improvement: ask instead
            raise ConfigError(
                f"EarlyStopping cannot tell whether {self.monitor!r} should go down or up (it knows "
                "losses, errors, resolutions and distances, which go down, and accuracies, AUCs, "
                "rejections, precision and recall, which go up); say which: "
                f"{self._code(mode='min')} if smaller is better, {self._code(mode='max')} if larger "
                f"is better (YAML: early_stopping: {{monitor: {self.monitor}, mode: min}})"
            )
        if self.mode not in ("min", "max"):
            raise ConfigError(f"EarlyStopping mode={self.mode!r} must be 'min' or 'max'")

    def _code(self, **changes: Any) -> str:
        """Python that builds this EarlyStopping with ``changes`` (for error messages)."""
        args = [repr(self.monitor)]
        for f in fields(self):
            if f.init and f.name != "monitor":
                value = changes.get(f.name, getattr(self, f.name))
                if f.name in changes or value != f.default:
                    args.append(f"{f.name}={value!r}")
        return f"psdist.EarlyStopping({', '.join(args)})"

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
