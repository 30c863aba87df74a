"""How optimizer and scheduler recipes read as code and as text (no building here)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch

from psdist.core.optim.schedules import Schedule

__all__ = ["code_of", "config_target", "is_optimizer_class", "jsonable", "optimizers", "partial_kwargs",
           "scheduler_config", "schedulers", "target_of"]


def target_of(fn: Any) -> Any:
    """The class or function behind (nested) ``functools.partial`` objects."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def partial_kwargs(fn: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    chain = []
    while isinstance(fn, functools.partial):
        chain.append(fn)
        fn = fn.func
    for p in reversed(chain):  # the outer partial's keywords win, as when it is called
        out.update(p.keywords)
    return out


def is_optimizer_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)


def code_of(fn: Any) -> str:
    """How ``fn`` reads in Python (``torch.optim.AdamW``, ``functools.partial(...)``)."""
    if isinstance(fn, functools.partial):
        args = ", ".join([code_of(fn.func), *map(repr, fn.args), *(f"{k}={v!r}" for k, v in fn.keywords.items())])
        return f"functools.partial({args})"
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    for public in (torch.optim, torch.optim.lr_scheduler):  # torch.optim.AdamW, not torch.optim.adamw.AdamW
        if name and getattr(public, name, None) is fn:
            return f"{public.__name__}.{name}"
    if module and name:
        return f"{module}.{name}"
    return repr(fn)


def jsonable(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(jsonable(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and jsonable(v) for k, v in value.items())
    return False


def _classes(module: Any, base: type) -> dict[str, type]:
    return {n.lower(): c for n in dir(module)
            if isinstance(c := getattr(module, n), type) and issubclass(c, base) and c is not base
            and not n.startswith("_")}


def optimizers() -> dict[str, type]:
    return _classes(torch.optim, torch.optim.Optimizer)


def schedulers() -> dict[str, type]:
    return _classes(torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler)


def config_target(fn: Any) -> str | None:
    """The text that names ``fn`` (behind any partial): ``adamw``, ``steplr``, ``pkg.mod:function``.

    ``None`` when text cannot name it (a lambda, a function defined inside another).
    """
    target = target_of(fn)
    name = getattr(target, "__name__", "")
    for table in (optimizers(), schedulers()):
        if table.get(name.lower()) is target:
            return name.lower()
    module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def scheduler_config(scheduler: Any) -> tuple[str, dict[str, Any]]:
    """``("schedule", {...})`` for a psdist schedule, ``("scheduler", {name: ..., args})`` for torch's."""
    if isinstance(scheduler, Schedule):
        return "schedule", scheduler.to_config()
    name = config_target(scheduler)
    kwargs: dict[str, Any] = {}
    fn = scheduler
    while isinstance(fn, functools.partial):
        kwargs = {**fn.keywords, **kwargs}
        fn = fn.func
    return "scheduler", {"name": name if name is not None else repr(scheduler), **kwargs}


