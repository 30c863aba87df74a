"""``TorchOptimizer``: the recipe of a ``torch.optim`` optimizer for the parameter server.

The user's optimizer stays theirs: a ``torch.optim`` class with its arguments, or any factory
that builds one from ``(name, parameter)`` pairs (so it may form parameter groups by the model's
own parameter names), plus a ``torch.optim.lr_scheduler`` factory and per-push gradient
clipping. The recipe is small and picklable; the server builds the optimizer itself, over
tensors that view its flat weight vector (:mod:`psdist.optim.bound`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import torch

from psdist.core.optim.port import OptimizerInfo
from psdist.core.optim.schedules import Schedule
from psdist.errors import ConfigError
from psdist.optim.naming import (
    code_of,
    config_target,
    is_optimizer_class,
    jsonable,
    partial_kwargs,
    scheduler_config,
    target_of,
)

if TYPE_CHECKING:
    import numpy as np

    from psdist.core.layout import Group
    from psdist.optim.bound import TorchBound

__all__ = ["NamedParams", "SchedulerFactory", "TorchOptimizer", "decay_groups"]

#: what a factory receives: the trainable parameters as ``(name, tensor)`` pairs, module order
NamedParams: TypeAlias = Sequence[tuple[str, torch.Tensor]]
#: ``f(optimizer) -> LRScheduler``: a ``torch.optim.lr_scheduler`` class or a partial of one
SchedulerFactory: TypeAlias = Callable[[torch.optim.Optimizer], Any]

# the classes psdist.optim has sugar for (psdist.optim.presets)
_SUGAR = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad)
# need a closure per step (a re-evaluation of the loss), which a pushed gradient cannot give
_NEEDS_CLOSURE = ("LBFGS",)


class TorchOptimizer:
    """A ``torch.optim`` optimizer for the parameter server: what to build, not the built one.

    Parameters
    ----------
    optimizer
        A ``torch.optim.Optimizer`` subclass (``torch.optim.AdamW``), or a factory called as
        ``optimizer(params, **kwargs)`` with ``params`` the model's trainable parameters as
        ``(name, tensor)`` pairs in module order, returning a ``torch.optim.Optimizer``:
        ``functools.partial(torch.optim.AdamW, lr=1e-3)``, or your own function building
        parameter groups (see :func:`psdist.optim.decay_groups`).
    scheduler
        A learning-rate scheduler factory ``scheduler(optimizer)``:
        ``functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=1000)``, or a
        :class:`psdist.optim.Schedule`. It steps once per server update of this model (after
        every optimizer step), as ``scheduler.step()`` after every ``optimizer.step()`` in a
        single-process loop.
    clip_norm
        Clip each pushed gradient to this L2 norm (over the model's trainable parameters)
        before the step, as ``torch.nn.utils.clip_grad_norm_`` would; ``None``: no clipping.
    **kwargs
        Arguments of ``optimizer`` (``lr=1e-3, weight_decay=0.01``).

    Examples
    --------
    >>> TorchOptimizer(torch.optim.AdamW, lr=1e-3, weight_decay=0.01)  # doctest: +SKIP
    >>> TorchOptimizer(functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
    ...                scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=500),
    ...                clip_norm=5.0)  # doctest: +SKIP
    """

    def __init__(
        self,
        optimizer: type[torch.optim.Optimizer] | Callable[..., torch.optim.Optimizer] = torch.optim.SGD,
        /,
        *,
        scheduler: SchedulerFactory | Schedule | None = None,
        clip_norm: float | None = None,
        **kwargs: Any,
    ) -> None:
        if not callable(optimizer):
            raise ConfigError(
                f"optimizer={optimizer!r} is neither a torch.optim class nor a factory; e.g. "
                "psdist.optim.TorchOptimizer(torch.optim.AdamW, lr=1e-3)"
            )
        target = target_of(optimizer)
        if getattr(target, "__name__", "") in _NEEDS_CLOSURE:
            raise ConfigError(
                f"{target.__name__} re-evaluates the loss inside step() (a closure), which a pushed "
                "gradient cannot do on the server; use e.g. torch.optim.Adam"
            )
        if scheduler is not None and not (callable(scheduler) or isinstance(scheduler, Schedule)):
            raise ConfigError(
                f"scheduler={scheduler!r} must build a scheduler from the optimizer, e.g. "
                "functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=1000)"
            )
        if target_of(scheduler) is torch.optim.lr_scheduler.ReduceLROnPlateau:
            raise ConfigError(
                "ReduceLROnPlateau steps on a validation metric, not per server update; use "
                "psdist.EarlyStopping, trainer.set_lr() between fits, or a schedule such as "
                "functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=...)"
            )
        if clip_norm is not None and not (
            isinstance(clip_norm, (int, float)) and not isinstance(clip_norm, bool)
            and math.isfinite(clip_norm) and clip_norm > 0
        ):
            raise ConfigError(f"clip_norm={clip_norm!r} must be a positive number (an L2 norm), e.g. clip_norm=1.0")
        if is_optimizer_class(target):
            _check_arguments(target, {**partial_kwargs(optimizer), **kwargs})
        self.optimizer = optimizer
        self.kwargs = dict(kwargs)
        self.scheduler = scheduler
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.base_lr: float | None = None  # set by with_lr(): the first group's rate after building

    # ------------------------------------------------------------------ building
    def build(self, params: NamedParams) -> tuple[torch.optim.Optimizer, Any]:
        """The optimizer over ``params`` and its scheduler (or ``None``).

        Raises
        ------
        ConfigError
            When the factory fails or returns no ``torch.optim.Optimizer``, naming the recipe.
        """
        opt = self._fast(params)
        if opt is None:
            try:
                opt = self.optimizer(list(params), **self.kwargs)
            except (TypeError, ValueError, KeyError) as e:
                raise ConfigError(f"{self.described()} refused its arguments ({type(e).__name__}: {e}); fix the value it "
                                  "names") from e
        if not isinstance(opt, torch.optim.Optimizer):
            raise ConfigError(
                f"{self.described()} returned {type(opt).__name__}, not a torch.optim.Optimizer; a factory "
                "takes the (name, parameter) pairs and returns e.g. torch.optim.AdamW(params, lr=1e-3)"
            )
        for i, g in enumerate(opt.param_groups):  # torch takes lr=0, NaN and inf: a run that never learns
            lr = g.get("lr")
            lr = lr.item() if isinstance(lr, torch.Tensor) and lr.numel() == 1 else lr
            if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
                where = "" if len(opt.param_groups) == 1 else f" (parameter group {i})"
                raise ConfigError(f"lr={lr!r}{where} must be a positive finite number, e.g. lr=0.01")
        for g in opt.param_groups:  # a factory's own optimizer: its groups still step together
            if "foreach" in g and g["foreach"] is None and not g.get("fused"):
                g["foreach"] = True
        given = {id(p) for _, p in params}
        foreign = [p for g in opt.param_groups for p in g["params"] if id(p) not in given]
        if foreign:
            raise ConfigError(
                f"{self.described()} built an optimizer over {len(foreign)} tensor(s) it was not given; build it "
                "over the (name, parameter) pairs the factory receives"
            )
        scheduler = None
        if isinstance(self.scheduler, Schedule):
            scheduler = torch.optim.lr_scheduler.LambdaLR(opt, self.scheduler.factor)
        elif self.scheduler is not None:
            try:
                scheduler = self.scheduler(opt)
            except (TypeError, ValueError, KeyError) as e:
                raise ConfigError(f"scheduler {code_of(self.scheduler)} could not be built: {e}") from e
        if self.base_lr is not None:
            from psdist.optim.bound import rescale_lr

            rescale_lr(opt, scheduler, self.base_lr)
        return opt, scheduler

    def _fast(self, params: NamedParams) -> torch.optim.Optimizer | None:
        """The optimizer with torch's fused kernel (else foreach) when the user chose neither.

        On CPU, torch's default is a per-tensor Python loop; the fused kernels are 1.5-3x faster
        on the server's large tensors. ``None``: no class known, or the user chose; build as given.
        """
        cls = self.cls
        chosen = {**partial_kwargs(self.optimizer), **self.kwargs}
        if cls is None or "fused" in chosen or "foreach" in chosen:
            return None
        sig = inspect.signature(cls).parameters
        for flag in ("fused", "foreach"):
            if flag in sig:
                try:
                    kwargs: dict[str, Any] = {**self.kwargs, flag: True}
                    return self.optimizer(list(params), **kwargs)
                except (RuntimeError, ValueError):  # not on this device or for these tensors
                    continue
        return None

    def check(self) -> None:
        """Build it once over a probe parameter when the class is known (a bad value such as
        ``momentum=-1`` raises here, before any cluster); a factory is checked at ``fit``."""
        if self.cls is None:
            return
        lr = (self.hyperparameters() or {}).get("lr")
        if isinstance(lr, bool) or not (isinstance(lr, (int, float, torch.Tensor)) and math.isfinite(float(lr)) and lr > 0):
            raise ConfigError(f"lr={lr!r} must be a positive finite number, e.g. lr=0.01")
        self.build([("probe", torch.nn.Parameter(torch.zeros(1)))])

    def bind(self, group: Group, params: np.ndarray) -> TorchBound:
        """The optimizer of ``group`` on the server, over views of ``params`` (its parameter section)."""
        from psdist.optim.bound import TorchBound

        return TorchBound(self, group, params)

    def with_lr(self, lr: float) -> TorchOptimizer:
        """This recipe with the first group's base rate set to ``lr`` (others keep their ratio)."""
        out = TorchOptimizer(self.optimizer, scheduler=self.scheduler, clip_norm=self.clip_norm, **self.kwargs)
        out.base_lr = float(lr)
        return out

    # ------------------------------------------------------------------ describing
    @property
    def cls(self) -> type[torch.optim.Optimizer] | None:
        """The ``torch.optim`` class built, when known without building (a class or a partial of one)."""
        target = target_of(self.optimizer)
        return target if is_optimizer_class(target) else None

    def hyperparameters(self) -> dict[str, Any] | None:
        """The class's defaults with the given arguments applied (``None`` for a factory function)."""
        cls = self.cls
        if cls is None:
            return None
        out = {
            k: p.default for k, p in inspect.signature(cls).parameters.items()
            if p.default is not inspect.Parameter.empty and k != "params"
        }
        out.update(partial_kwargs(self.optimizer))
        out.update(self.kwargs)
        if self.base_lr is not None:
            out["lr"] = self.base_lr
        return out

    def info(self) -> OptimizerInfo | None:
        """What rules check, known without a model when the class is (else ``None``)."""
        hyper = self.hyperparameters()
        if hyper is None or self.cls is None:
            return None
        return OptimizerInfo(self.cls.__name__, (hyper,), repr(self), self.clip_norm)

    @property
    def lr(self) -> float | None:
        """The first group's base rate, when known without building."""
        hyper = self.hyperparameters()
        return None if hyper is None or not isinstance(hyper.get("lr"), (int, float)) else float(hyper["lr"])

    @property
    def resolvable(self) -> bool:
        """Whether :meth:`to_config` can be built again (YAML, ``Trainer.load`` without ``optimizer=``)."""
        return config_target(self.optimizer) is not None and jsonable(self.kwargs) and (
            self.scheduler is None or isinstance(self.scheduler, Schedule)
            or config_target(self.scheduler) is not None)

    def to_config(self) -> dict[str, Any]:
        """A JSON-safe description: ``{name: adamw, lr: ..., scheduler: {...}, clip_norm: ...}``.

        A recipe that cannot be rebuilt from text (a lambda, a local function) is described by
        its code under ``"code"``; loading such a checkpoint asks for ``optimizer=`` again.
        """
        name = config_target(self.optimizer)
        cfg: dict[str, Any] = {"name": name if name is not None else repr(self)}
        kwargs = {**partial_kwargs(self.optimizer), **self.kwargs}
        if jsonable(kwargs):
            cfg.update({k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})
        if self.scheduler is not None:
            key, sched = scheduler_config(self.scheduler)
            cfg[key] = sched
        if self.clip_norm is not None:
            cfg["clip_norm"] = self.clip_norm
        if self.base_lr is not None:
            cfg["base_lr"] = self.base_lr
        if not self.resolvable:
            cfg["code"] = repr(self)
        return cfg

    def described(self) -> str:
        """The call the server makes, ``torch.optim.SGD(params, lr=0.1)``: what messages quote
        when the recipe is wrong (not :meth:`__repr__`, which messages show only as a fix)."""
        args = ", ".join(["params", *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{code_of(self.optimizer)}({args})"

    def __repr__(self) -> str:
        if self.optimizer in _SUGAR:  # psdist.optim.SGD(lr=0.1): the sugar's spelling reads best
            parts, head = [], f"psdist.optim.{self.optimizer.__name__}"
        else:
            parts, head = [code_of(self.optimizer)], "psdist.optim.TorchOptimizer"
        parts += [f"{k}={v!r}" for k, v in self.kwargs.items()]
        if self.scheduler is not None:
            parts.append(f"scheduler={self.scheduler!r}" if isinstance(self.scheduler, Schedule)
                         else f"scheduler={code_of(self.scheduler)}")
        if self.clip_norm is not None:
            parts.append(f"clip_norm={self.clip_norm!r}")
        text = f"{head}({', '.join(parts)})"
        return text if self.base_lr is None else f"{text}.with_lr({self.base_lr!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TorchOptimizer):
            return NotImplemented
        return (self.optimizer, self.kwargs, self.scheduler, self.clip_norm, self.base_lr) == (
            other.optimizer, other.kwargs, other.scheduler, other.clip_norm, other.base_lr)

    __hash__ = None  # type: ignore[assignment]  # mutable kwargs: compared, never hashed


def _check_arguments(cls: type[torch.optim.Optimizer], kwargs: Mapping[str, Any]) -> None:
    """Unknown keyword arguments of a ``torch.optim`` class raise now, naming the valid ones."""
    sig = inspect.signature(cls)
    known = [k for k in sig.parameters if k != "params"]
    unknown = [k for k in kwargs if k not in sig.parameters or k == "params"]
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        raise ConfigError(
            f"torch.optim.{cls.__name__} takes no argument {unknown[0]!r}; its arguments are {', '.join(known)}"
        )


def decay_groups(
    params: Iterable[tuple[str, torch.Tensor]],
    weight_decay: float,
    no_decay: tuple[str, ...] = ("bias", "norm"),
) -> list[dict[str, Any]]:
    """Two parameter groups: weight decay for weight matrices, none for biases and norm layers.

    A parameter gets no decay when it is one-dimensional (biases, norm scales) or any of the
    ``no_decay`` words occurs in its name; the usual recipe for AdamW.

    Examples
    --------
    >>> def adamw(params):
    ...     return torch.optim.AdamW(psdist.optim.decay_groups(params, 0.01), lr=1e-3)
    >>> trainer = psdist.Trainer(make_model, F.cross_entropy, data, optimizer=adamw)  # doctest: +SKIP
    """
    decay: list[tuple[str, torch.Tensor]] = []
    keep: list[tuple[str, torch.Tensor]] = []
    for name, p in params:
        skip = p.ndim <= 1 or any(word in name.lower() for word in no_decay)
        (keep if skip else decay).append((name, p))
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
