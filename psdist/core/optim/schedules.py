"""Learning-rate schedules as plain functions of a step count (numpy-free arithmetic).

The flat numpy optimizers use them directly; ``psdist.optim`` turns one into a torch
``LambdaLR`` (:meth:`Schedule.factor` is its ``lr_lambda``), so ``schedule=psdist.optim.Cosine(...)``
keeps working next to torch's own schedulers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from psdist.errors import ConfigError

__all__ = ["Constant", "Cosine", "Schedule", "StepDecay", "Warmup", "schedule_from_config"]


def positive_number(name: str, value: float, fix: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r} must be a positive finite number; {fix}")


@dataclass(frozen=True)
class Schedule:
    """A multiplier of the base learning rate as a function of the server version."""

    name: ClassVar[str] = "schedule"

    def factor(self, version: int) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}


@dataclass(frozen=True)
class Constant(Schedule):
    """No decay."""

    name: ClassVar[str] = "constant"

    def factor(self, version: int) -> float:
        return 1.0


@dataclass(frozen=True)
class StepDecay(Schedule):
    """Multiply by ``gamma`` every ``step`` server versions."""

    step: int = 1000
    gamma: float = 0.5
    name: ClassVar[str] = "step"

    def __post_init__(self) -> None:
        if not (isinstance(self.step, int) and self.step > 0):
            raise ConfigError(f"StepDecay step={self.step!r} must be a positive integer, e.g. step=1000")
        positive_number("StepDecay gamma", self.gamma, "e.g. gamma=0.5")

    def factor(self, version: int) -> float:
        return self.gamma ** (version // self.step)


@dataclass(frozen=True)
class Cosine(Schedule):
    """Cosine decay from 1 to ``floor`` over ``total`` versions, then ``floor``."""

    total: int = 10000
    floor: float = 0.0
    name: ClassVar[str] = "cosine"

    def __post_init__(self) -> None:
        if not (isinstance(self.total, int) and self.total > 0):
            raise ConfigError(f"Cosine total={self.total!r} must be a positive integer, e.g. total=10000")

    def factor(self, version: int) -> float:
        t = min(version, self.total) / self.total
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * t))


@dataclass(frozen=True)
class Warmup(Schedule):
    """Linear warm-up over ``steps`` versions, then ``after`` (default: constant)."""

    steps: int = 100
    after: Schedule = field(default_factory=Constant)
    name: ClassVar[str] = "warmup"

    def __post_init__(self) -> None:
        if not (isinstance(self.steps, int) and self.steps > 0):
            raise ConfigError(f"Warmup steps={self.steps!r} must be a positive integer, e.g. steps=100")

    def factor(self, version: int) -> float:
        ramp = min(1.0, (version + 1) / self.steps)
        return ramp * self.after.factor(max(0, version - self.steps))

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, "after": self.after.to_config()}


_SCHEDULES: dict[str, type[Schedule]] = {
    c.name: c for c in (Constant, StepDecay, Cosine, Warmup)
}


def schedule_from_config(cfg: dict[str, Any] | None) -> Schedule:
    """Build a schedule from :meth:`Schedule.to_config` output (or ``None`` for constant)."""
    if cfg is None:
        return Constant()
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name not in _SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; choose one of {sorted(_SCHEDULES)}")
    if "after" in cfg:
        cfg["after"] = schedule_from_config(cfg["after"])
    return _SCHEDULES[name](**cfg)


