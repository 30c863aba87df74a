"""The flat numpy optimizers: psdist's torch-free server optimizers (SGD, Adam, RMSprop).

They step one flat float32 vector in place with ``torch.optim``'s formulas. Training goes
through ``psdist.optim`` (real ``torch.optim`` optimizers, fused, with parameter groups); these
remain for what must run without torch (the core's own tests, the server-step benchmark's
numpy path) and to read checkpoints they wrote. Their state is a dict of arrays and numbers,
so checkpoints need no pickle; the schedule is a function of the optimizer's own step count.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from psdist.core.optim.port import OptimizerInfo
from psdist.core.optim.schedules import Constant, Schedule, positive_number, schedule_from_config
from psdist.errors import ConfigError, InvalidServerState

if TYPE_CHECKING:
    from psdist.core.layout import Group

__all__ = ["SGD", "Adam", "FlatBound", "Optimizer", "RMSprop", "optimizer_from_config"]


def _fraction(name: str, value: float, example: str | None = None) -> None:
    if not (isinstance(value, (int, float)) and 0 <= value < 1):
        raise ConfigError(f"{name}={value!r} must lie in [0, 1), e.g. {example or f'{name}=0.9'}")


# ----------------------------------------------------------------------------- optimizers
def _between(frozen: Sequence[slice], n: int) -> Iterator[slice]:
    """The ranges of ``[0, n)`` outside the sorted, disjoint ``frozen`` slices."""
    start = 0
    for f in frozen:
        if f.start > start:
            yield slice(start, f.start)
        start = max(start, f.stop)
    if start < n or n == 0:
        yield slice(start, n)


class Optimizer:
    """Base class: an in-place update of a flat float32 vector from a gradient.

    Subclasses implement :meth:`_update`; the base class handles the learning rate, the
    schedule, and (de)serialisation of the state.
    """

    name: ClassVar[str] = "optimizer"

    def __init__(self, lr: float, weight_decay: float = 0.0, schedule: Schedule | None = None):
        positive_number("lr", lr, "e.g. lr=0.01")
        if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
            raise ConfigError(f"weight_decay={weight_decay!r} must be >= 0, e.g. weight_decay=1e-4")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.schedule = schedule if schedule is not None else Constant()
        self.steps = 0
        self.state: dict[str, np.ndarray] = {}

    def lr_at(self, version: int) -> float:
        """The learning rate in force at a server version (before any rule's scaling)."""
        return self.lr * self.schedule.factor(version)

    def set_lr(self, lr: float) -> None:
        positive_number("lr", lr, "e.g. lr=0.01")
        self.lr = float(lr)

    def step(
        self,
        w: np.ndarray,
        g: np.ndarray,
        version: int,
        lr_scale: float = 1.0,
        frozen: Sequence[slice] = (),
    ) -> None:
        """Apply one update to ``w`` in place from gradient ``g``.

        Parameters
        ----------
        w, g
            The weights (changed in place) and the gradient, float32 of the same length.
        version
            Server version, for the schedule.
        lr_scale
            Factor of this step's learning rate (staleness-aware rules).
        frozen
            Ranges of ``w`` the step must leave bit-identical (``requires_grad=False``
            parameters): no weight decay, no momentum, no state change there. The optimizer
            runs only on the ranges between them, so freezing costs nothing per push.
        """
        self.steps += 1
        lr = self.lr_at(version) * lr_scale
        fresh = self._allocate(w)
        work = self._scratch(w)
        for part in _between(frozen, len(w)):
            wp, gp = w[part], g[part]
            if self.weight_decay:
                gp = gp + self.weight_decay * wp
            state = {k: v[part] for k, v in self.state.items()}
            self._update(wp, gp, lr, state, work[part], fresh)

    def _allocate(self, w: np.ndarray) -> frozenset[str]:
        """Create the state buffers this step needs (zeros, shaped like ``w``); their keys.

        Buffers always cover the whole parameter section (frozen ranges included, left at
        zero), so checkpoints keep one array per buffer whatever is frozen.
        """
        fresh = [k for k in self._state_keys() if k not in self.state]
        for k in fresh:
            self.state[k] = np.zeros_like(w, dtype=np.float32)
        return frozenset(fresh)

    def _state_keys(self) -> tuple[str, ...]:
        """Names of the state buffers (subclasses with state override)."""
        return ()

    def _update(
        self,
        w: np.ndarray,
        g: np.ndarray,
        lr: float,
        state: dict[str, np.ndarray],
        work: np.ndarray,
        fresh: frozenset[str],
    ) -> None:  # pragma: no cover - interface
        """Update ``w`` in place; ``state`` holds views of the buffers over the same range,
        ``work`` is scratch space of that size, ``fresh`` the buffers created this step."""
        raise NotImplementedError

    def _scratch(self, like: np.ndarray) -> np.ndarray:
        """A reusable work vector shaped like ``like`` (not state: never checkpointed).

        The server updates millions of floats per push; a fresh temporary per operation costs
        an allocation and its page faults every time, more than the arithmetic.
        """
        buf = getattr(self, "_work", None)
        if buf is None or buf.shape != like.shape:
            buf = self._work = np.empty_like(like, dtype=np.float32)
        return buf

    def bind(self, group: Group, params: np.ndarray) -> FlatBound:
        """A private copy of this optimizer stepping ``params`` (the group's parameter section)."""
        return FlatBound(copy.deepcopy(self), group, params)

    def info(self) -> OptimizerInfo:
        hyper = {"lr": self.lr, "weight_decay": self.weight_decay, **self.hyper()}
        return OptimizerInfo(type(self).__name__, (hyper,), f"psdist.core.optim.{self!r}")

    def hyper(self) -> dict[str, Any]:
        """Hyperparameters beyond lr/weight_decay (subclasses extend)."""
        return {}

    def to_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "schedule": self.schedule.to_config(),
            **self.hyper(),
        }

    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-safe scalars, arrays) — the form checkpoints store without pickle."""
        return {"steps": self.steps, "lr": self.lr}, dict(self.state)

    def load_state_dict(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.steps = int(scalars["steps"])
        self.lr = float(scalars["lr"])
        self.state = {k: np.array(v, dtype=np.float32) for k, v in arrays.items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """SGD with optional momentum, dampening and Nesterov, as ``torch.optim.SGD``."""

    name: ClassVar[str] = "sgd"

    def __init__(
        self,
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        schedule: Schedule | None = None,
    ) -> None:
        super().__init__(lr, weight_decay, schedule)
        _fraction("momentum", momentum)
        if nesterov and (momentum == 0 or dampening != 0):
            raise ConfigError(
                "nesterov=True needs momentum > 0 and dampening=0, "
                f"e.g. psdist.core.optim.SGD(lr={self.lr!r}, momentum=0.9, nesterov=True)"
            )
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.dampening = float(dampening)

    def hyper(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "nesterov": self.nesterov, "dampening": self.dampening}

    def _state_keys(self) -> tuple[str, ...]:
        return ("momentum",) if self.momentum else ()

    def _update(
        self, w: np.ndarray, g: np.ndarray, lr: float, state: dict[str, np.ndarray],
        work: np.ndarray, fresh: frozenset[str],
    ) -> None:
        s = work  # in place throughout: no temporaries of the model's size
        if self.momentum:
            buf = state["momentum"]
            if "momentum" in fresh:  # torch's first step: the buffer is the gradient itself
                buf[...] = g
            else:
                buf *= self.momentum
                if self.dampening:
                    np.multiply(g, np.float32(1 - self.dampening), out=s)
                    buf += s
                else:
                    buf += g
            if self.nesterov:
                np.multiply(buf, np.float32(self.momentum), out=s)
                s += g
                g = s
            else:
                g = buf
        np.multiply(g, np.float32(lr), out=s)
        w -= s


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction, as ``torch.optim.Adam`` (L2 decay)."""

    name: ClassVar[str] = "adam"

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        schedule: Schedule | None = None,
    ) -> None:
        super().__init__(lr, weight_decay, schedule)
        b1, b2 = betas
        _fraction("betas[0]", b1, "betas=(0.9, 0.999)")
        _fraction("betas[1]", b2, "betas=(0.9, 0.999)")
        positive_number("eps", eps, "e.g. eps=1e-8")
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)

    def hyper(self) -> dict[str, Any]:
        return {"betas": list(self.betas), "eps": self.eps}

    def _state_keys(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _update(
        self, w: np.ndarray, g: np.ndarray, lr: float, state: dict[str, np.ndarray],
        work: np.ndarray, fresh: frozenset[str],
    ) -> None:
        b1, b2 = self.betas
        m, v = state["exp_avg"], state["exp_avg_sq"]
        s = work  # in place throughout: no temporaries of the model's size
        m *= b1
        np.multiply(g, np.float32(1 - b1), out=s)
        m += s
        v *= b2
        np.square(g, out=s)
        s *= np.float32(1 - b2)
        v += s
        t = self.steps
        np.sqrt(v, out=s)
        s /= np.float32(math.sqrt(1 - b2**t))
        s += np.float32(self.eps)
        np.divide(m, s, out=s)
        s *= np.float32(lr / (1 - b1**t))
        w -= s


class RMSprop(Optimizer):
    """RMSprop (Tieleman & Hinton 2012), as ``torch.optim.RMSprop`` without momentum."""

    name: ClassVar[str] = "rmsprop"

    def __init__(
        self,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        schedule: Schedule | None = None,
    ) -> None:
        super().__init__(lr, weight_decay, schedule)
        _fraction("alpha", alpha)
        positive_number("eps", eps, "e.g. eps=1e-8")
        self.alpha = float(alpha)
        self.eps = float(eps)

    def hyper(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "eps": self.eps}

    def _state_keys(self) -> tuple[str, ...]:
        return ("square_avg",)

    def _update(
        self, w: np.ndarray, g: np.ndarray, lr: float, state: dict[str, np.ndarray],
        work: np.ndarray, fresh: frozenset[str],
    ) -> None:
        sq = state["square_avg"]
        sq *= self.alpha
        sq += (1 - self.alpha) * np.square(g)
        w -= np.float32(lr) * g / (np.sqrt(sq) + self.eps)


_OPTIMIZERS: dict[str, type[Optimizer]] = {c.name: c for c in (SGD, Adam, RMSprop)}


def optimizer_from_config(cfg: dict[str, Any]) -> Optimizer:
    """Build an optimizer from :meth:`Optimizer.to_config` output or a YAML mapping."""
    cfg = dict(cfg)
    name = str(cfg.pop("name", "")).lower()
    if name not in _OPTIMIZERS:
        raise ConfigError(
            f"unknown optimizer {name!r}; choose one of {sorted(_OPTIMIZERS)}, "
            "e.g. optimizer: {name: sgd, lr: 0.05, momentum: 0.9}"
        )
    sched = cfg.pop("schedule", None)
    if "betas" in cfg:
        cfg["betas"] = tuple(cfg["betas"])
    try:
        return _OPTIMIZERS[name](schedule=schedule_from_config(sched), **cfg)
    except TypeError as e:
        raise ConfigError(f"bad option for optimizer {name!r}: {e}") from None


class FlatBound:
    """A flat numpy optimizer bound to one model group's parameter section on the server.

    Implements :class:`~psdist.core.optim.port.BoundOptimizer`. The schedule reads the
    optimizer's own step count, so a model's rate decays with its own updates.
    """

    def __init__(self, optimizer: Optimizer, group: Group, params: np.ndarray) -> None:
        self.optimizer = optimizer
        self.group = group
        self.params = params

    @property
    def info(self) -> OptimizerInfo:
        return self.optimizer.info()

    @property
    def steps(self) -> int:
        return self.optimizer.steps

    def step(self, update: np.ndarray, lr_scale: float = 1.0, norm: float | None = None,
             trainable_norm: float | None = None) -> None:
        opt = self.optimizer
        opt.step(self.params, update, opt.steps, lr_scale, frozen=self.group.frozen_in_params)

    def lr(self) -> float:
        return self.optimizer.lr_at(self.optimizer.steps)

    def base_lr(self) -> float:
        return self.optimizer.lr

    def set_lr(self, lr: float) -> None:
        self.optimizer.set_lr(lr)

    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        scalars, arrays = self.optimizer.state_dict()
        return {**scalars, "format": "flat"}, {k: v.copy() for k, v in arrays.items()}

    def load_state_dict(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if scalars.get("format", "flat") != "flat":
            raise ConfigError(
                f"this checkpoint holds {scalars.get('format')!r} optimizer state for model "
                f"{self.group.name!r}; the flat numpy optimizers read only their own: load it with "
                "a psdist.optim (torch) optimizer"
            )
        if scalars.get("fresh"):
            return
        lr = self.optimizer.lr
        self.optimizer.load_state_dict(scalars, arrays)
        if scalars.get("keep_given_hyper"):
            self.optimizer.lr = lr
        if "set_lr" in scalars:
            self.optimizer.set_lr(float(scalars["set_lr"]))

    def validate(self) -> None:
        opt, n = self.optimizer, self.group.spec.n_params
        if not (opt.steps >= 0 and math.isfinite(opt.lr) and opt.lr > 0):
            raise InvalidServerState(f"invariant 'optimizer scalars' broken: group {self.group.name!r}: "
                                     f"steps {opt.steps}, lr {opt.lr}")
        for key, buf in opt.state.items():
            if buf.shape != (n,):
                raise InvalidServerState(f"invariant 'optimizer state shape' broken: group "
                                         f"{self.group.name!r} state {key!r} has shape {buf.shape}, params {n}")
