"""Optimizers and schedulers named in text, and whatever a user passes as ``optimizer=``.

YAML names resolve against ``torch.optim`` and ``torch.optim.lr_scheduler`` (case-insensitive:
``adamw``, ``cosineannealinglr``) or a user's own ``package.module:function``;
:func:`as_optimizer` turns a class, a partial or a factory into a :class:`TorchOptimizer`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch

from psdist.core.names import import_object
from psdist.core.optim.flat import Optimizer as FlatOptimizer
from psdist.core.optim.schedules import schedule_from_config
from psdist.errors import ConfigError
from psdist.optim.naming import code_of, config_target, optimizers, scheduler_config, schedulers
from psdist.optim.presets import SUGAR
from psdist.optim.spec import TorchOptimizer

__all__ = ["as_optimizer", "config_target", "optimizer_from_config", "scheduler_config"]


def _resolve(name: Any, table: dict[str, type], what: str, example: str) -> Any:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what} needs a name, e.g. {example}")
    if ":" in name:
        return import_object(name, what)
    found = table.get(name.lower())
    if found is None:
        raise ConfigError(f"unknown {what} {name!r}; choose one of {', '.join(sorted(table))} or "
                          f"'package.module:function', e.g. {example}")
    return found


def _scheduler_from_config(cfg: Mapping[str, Any]) -> Any:
    cfg = dict(cfg)
    cls = _resolve(cfg.pop("name", None), schedulers(), "scheduler",
                   "scheduler: {name: cosineannealinglr, T_max: 1000}")
    return functools.partial(cls, **cfg) if cfg else cls


def optimizer_from_config(cfg: Mapping[str, Any]) -> TorchOptimizer:
    """A :class:`TorchOptimizer` from YAML or :meth:`TorchOptimizer.to_config` output.

    ``{name: adamw, lr: 1e-3, weight_decay: 0.01, scheduler: {name: steplr, step_size: 100},
    clip_norm: 1.0}``; ``name`` may be ``package.module:function`` (a factory taking the
    ``(name, parameter)`` pairs and the other keys as arguments). ``schedule:`` takes psdist's
    own schedules (``{name: cosine, total: 1000}``).
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"optimizer={cfg!r} must be a mapping, e.g. {{name: adamw, lr: 0.001}}")
    cfg = dict(cfg)
    if "code" in cfg:
        raise ConfigError(
            f"the optimizer was {cfg['code']}, a Python object text cannot rebuild: give "
            "optimizer=... again (e.g. to Trainer.load)"
        )
    factory = _resolve(cfg.pop("name", None), optimizers(), "optimizer", "optimizer: {name: adamw, lr: 0.001}")
    schedule, scheduler = cfg.pop("schedule", None), cfg.pop("scheduler", None)
    if schedule is not None and scheduler is not None:
        raise ConfigError("give either schedule: (psdist's) or scheduler: (torch's), not both")
    clip_norm, base_lr = cfg.pop("clip_norm", None), cfg.pop("base_lr", None)
    if isinstance(cfg.get("betas"), list):
        cfg["betas"] = tuple(cfg["betas"])
    sched = (schedule_from_config(schedule) if schedule is not None
             else _scheduler_from_config(scheduler) if scheduler is not None else None)
    spec = TorchOptimizer(factory, scheduler=sched, clip_norm=clip_norm, **cfg)
    return spec.with_lr(base_lr) if base_lr is not None else spec


def as_optimizer(value: Any) -> TorchOptimizer:
    """What ``optimizer=`` accepts, as a :class:`TorchOptimizer`.

    A :class:`TorchOptimizer`; a ``torch.optim`` class (its defaults); a factory (a
    ``functools.partial`` of a class, or a function of the ``(name, parameter)`` pairs); a YAML
    mapping. A built optimizer instance or one of psdist's numpy optimizers raises
    :class:`ConfigError` showing the recipe to pass instead.
    """
    if isinstance(value, TorchOptimizer):
        return value
    if isinstance(value, torch.optim.Optimizer):
        cls = type(value)
        args = ", ".join(f"{k}={v!r}" for k, v in value.defaults.items()
                         if k in ("lr", "momentum", "weight_decay", "betas", "eps", "nesterov", "alpha"))
        raise ConfigError(
            f"optimizer= got a built {cls.__name__} (bound to some model's parameters); the parameter "
            f"server builds its own over its weights: pass the recipe, e.g. "
            f"optimizer=functools.partial({code_of(cls)}, {args})"
        )
    if value in SUGAR:  # psdist.optim.SGD itself, not called
        raise ConfigError(f"psdist.optim.{value.__name__} makes a recipe: call it, e.g. "
                          f"optimizer=psdist.optim.{value.__name__}(lr=0.01)")
    if isinstance(value, FlatOptimizer):
        raise ConfigError(
            f"{value!r} is one of psdist's numpy optimizers (psdist.core.optim, for torch-free use of "
            f"ServerState); a Trainer runs torch.optim: use psdist.optim.{type(value).__name__}(lr={value.lr!r}, ...) "
            f"or functools.partial(torch.optim.{type(value).__name__}, lr={value.lr!r})"
        )
    if isinstance(value, Mapping) and "name" in value:
        return optimizer_from_config(value)
    if callable(value):
        return TorchOptimizer(value)
    raise ConfigError(
        f"optimizer={value!r} is no optimizer; give a torch.optim class, a factory such as "
        "functools.partial(torch.optim.AdamW, lr=1e-3), or psdist.optim.SGD(lr=0.05, momentum=0.9)"
    )
