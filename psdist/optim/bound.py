"""A ``torch.optim`` optimizer running on the parameter server, over views of its weight vector.

The server keeps one model's parameters as a section of one float32 vector. :class:`TorchBound`
makes each trainable parameter an ``nn.Parameter`` *viewing* its slice of that section
(``torch.from_numpy``, no copy) and builds the user's optimizer over them, so ``optimizer.step()``
writes the server's weights in place with torch's fused or foreach kernels. A push's update
becomes the ``.grad`` of those parameters the same way: views of the pushed array, re-pointed
only when a push arrives in another buffer. Frozen parameters (``requires_grad=False``) are never
handed to the optimizer.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from psdist.core.optim.port import OptimizerInfo
from psdist.errors import CheckpointError, ConfigError, InvalidServerState

if TYPE_CHECKING:
    from psdist.core.layout import Entry, Group
    from psdist.optim.spec import TorchOptimizer

__all__ = ["TorchBound", "rescale_lr"]

# the numpy optimizers' state buffers and the torch state key each becomes (checkpoint migration)
_FLAT_STATE = {
    "sgd": ("SGD", {"momentum": "momentum_buffer"}),
    "adam": ("Adam", {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
    "rmsprop": ("RMSprop", {"square_avg": "square_avg"}),
}


def rescale_lr(opt: torch.optim.Optimizer, scheduler: Any, lr: float) -> None:
    """Make the first group's base rate ``lr``; every group's rate (and the schedule's bases)
    scale by the same factor, so group ratios and the schedule's progress stay."""
    bases = getattr(scheduler, "base_lrs", None)
    base = float(bases[0]) if bases else float(opt.param_groups[0]["lr"])
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr={lr!r} must be a positive number, e.g. trainer.set_lr(0.01)")
    factor = lr / base if base > 0 else 1.0
    for g in opt.param_groups:
        g["lr"] = g["lr"] * factor
        if "initial_lr" in g:
            g["initial_lr"] = g["initial_lr"] * factor
    if bases:
        scheduler.base_lrs = [b * factor for b in bases]


def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON (tuples as lists, 0-d tensors as numbers), or a CheckpointError."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise CheckpointError(
        f"{where} holds a {type(value).__name__}, which a checkpoint cannot keep without pickle; "
        "give the scheduler or optimizer numbers, strings and tensors only"
    )


class TorchBound:
    """One model's ``torch.optim`` optimizer on the server (a :class:`~psdist.core.optim.port.BoundOptimizer`).

    Parameters
    ----------
    spec
        The recipe (:class:`~psdist.optim.spec.TorchOptimizer`).
    group
        The model group: names, shapes and offsets of its parameters.
    params
        The group's parameter section of the server's weights (written in place).
    """

    def __init__(self, spec: TorchOptimizer, group: Group, params: np.ndarray) -> None:
        self.spec = spec
        self.group = group
        self.params = params
        flat = torch.from_numpy(params)
        self.slots: list[tuple[Entry, torch.nn.Parameter]] = [
            (e, torch.nn.Parameter(flat[e.offset:e.stop].view(e.shape)))
            for e in group.spec.entries if e.kind == "param" and e.trainable
        ]
        self.torch: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        if self.slots:  # a wholly frozen model has nothing to optimise (torch refuses empty lists)
            self.torch, self.scheduler = spec.build([(e.name, p) for e, p in self.slots])
        self._steps = 0
        self._grads_at: tuple[int, int] | None = None  # (address, length) the .grad views point into
        self._scratch: np.ndarray | None = None  # clipped gradients (the pushed array is never written)

    # ------------------------------------------------------------------ the protocol
    @property
    def info(self) -> OptimizerInfo:
        if self.torch is None:
            return OptimizerInfo("none", (), repr(self.spec), self.spec.clip_norm)
        groups = tuple({k: _plain(v, k) for k, v in g.items() if k not in ("params", "param_names")}
                       for g in self.torch.param_groups)
        return OptimizerInfo(type(self.torch).__name__, groups, repr(self.spec), self.spec.clip_norm)

    @property
    def steps(self) -> int:
        return self._steps

    def step(self, update: np.ndarray, lr_scale: float = 1.0, norm: float | None = None,
             trainable_norm: float | None = None) -> None:
        self._steps += 1
        if self.torch is None:
            return
        clip = self.spec.clip_norm
        if clip is not None:
            if trainable_norm is not None:  # a shard: the whole model's, as the worker measured it
                norm = trainable_norm
            elif norm is None or self.group.frozen:  # the server's norm also covers frozen ranges
                norm = self._trainable_norm(update)
            if norm > clip:
                if self._scratch is None or self._scratch.shape != update.shape:
                    self._scratch = np.empty_like(update)
                np.multiply(update, np.float32(clip / (norm + 1e-6)), out=self._scratch)
                update = self._scratch
        if not update.flags.writeable:  # torch views need writable memory (it never writes grads)
            update = update.copy()
        self._point_grads(update)
        groups = self.torch.param_groups
        saved = [g["lr"] for g in groups]
        if lr_scale != 1.0:
            for g in groups:
                g["lr"] = g["lr"] * lr_scale
        try:
            self.torch.step()
        finally:
            for g, lr in zip(groups, saved, strict=True):
                g["lr"] = lr
        if self.scheduler is not None:
            self.scheduler.step()

    def _trainable_norm(self, update: np.ndarray) -> float:
        """The L2 norm over the trainable parameters' part of ``update`` (what torch's
        ``clip_grad_norm_`` measures over the parameters that have gradients)."""
        u = torch.from_numpy(update) if update.flags.writeable else torch.from_numpy(update.copy())
        parts = [u[e.offset:e.stop] for e, _ in self.slots]
        return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(parts))))

    def _point_grads(self, update: np.ndarray) -> None:
        # the .grad views hold the array they view alive, so an unchanged address is the same
        # live buffer (a data plane's receive buffer): nothing to re-point
        where = (update.__array_interface__["data"][0], len(update))
        if where == self._grads_at:
            return
        u = torch.from_numpy(update)
        for e, p in self.slots:
            p.grad = u[e.offset:e.stop].view(e.shape)
        self._grads_at = where

    def lr(self) -> float:
        if self.torch is None:
            return self.spec.lr or 0.0
        return float(self.torch.param_groups[0]["lr"])

    def base_lr(self) -> float:
        bases = getattr(self.scheduler, "base_lrs", None)
        return float(bases[0]) if bases else self.lr()

    def set_lr(self, lr: float) -> None:
        if self.torch is not None:
            rescale_lr(self.torch, self.scheduler, lr)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Scalars (format, class, steps, groups, scalar state, scheduler) and one array per
        tensor of the optimizer's state, keyed ``<parameter name>/<state key>``: no pickle."""
        scalars: dict[str, Any] = {"format": "torch", "steps": self._steps}
        arrays: dict[str, np.ndarray] = {}
        if self.torch is None:
            return scalars, arrays
        names = {id(p): e.name for e, p in self.slots}
        scalar_state: dict[str, dict[str, Any]] = {}
        for group in self.torch.param_groups:
            for p in group["params"]:
                for key, value in self.torch.state.get(p, {}).items():
                    # the step counter is a number; every other tensor (moments, buffers) an array
                    if isinstance(value, torch.Tensor) and key != "step":
                        arrays[f"{names[id(p)]}/{key}"] = value.detach().cpu().numpy().copy()
                    else:
                        scalar_state.setdefault(names[id(p)], {})[key] = _plain(value, f"state {key!r}")
        scalars.update({
            "class": type(self.torch).__name__,
            "param_groups": [{k: _plain(v, f"param group {k!r}") for k, v in g.items() if k != "params"}
                             for g in self.torch.param_groups],
            "state": scalar_state,
            "scheduler": None if self.scheduler is None else _plain(self.scheduler.state_dict(), "scheduler"),
        })
        return scalars, arrays

    def load_state_dict(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output; a numpy optimizer's state of the same kind migrates.

        ``scalars["keep_given_hyper"]``: keep this recipe's hyperparameters (``Trainer.load``
        with ``optimizer=`` given again) and take only the state; ``scalars["set_lr"]``: a
        ``set_lr`` made while no server ran, applied last.
        """
        if scalars.get("fresh"):  # Trainer.load with an optimizer of another kind: no state to take
            pass
        elif scalars.get("format", "flat") == "flat":
            self._migrate(scalars, arrays)
        elif self.torch is not None:
            self._load_torch(scalars, arrays)
        self._steps = int(scalars["steps"])
        if "set_lr" in scalars:
            self.set_lr(float(scalars["set_lr"]))

    def _load_torch(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        assert self.torch is not None
        model = self.group.name
        if scalars.get("class") != type(self.torch).__name__:
            raise CheckpointError(
                f"model {model!r}'s optimizer state in the checkpoint is {scalars.get('class')}'s, this "
                f"training's is {type(self.torch).__name__}: resume with {scalars.get('class')}, or give "
                "optimizer= to Trainer.load to start the optimizer afresh"
            )
        ours = self.torch.param_groups
        saved = scalars["param_groups"]
        names = {id(p): e.name for e, p in self.slots}
        order = [names[id(p)] for g in ours for p in g["params"]]
        if len(saved) != len(ours) or any(
                "param_names" in s and list(s["param_names"]) != [names[id(p)] for p in g["params"]]
                for s, g in zip(saved, ours, strict=False)):
            raise CheckpointError(
                f"model {model!r}'s parameter groups differ from the checkpoint's ({len(saved)} groups "
                f"there, {len(ours)} here, or other parameters in them): build the groups as that training did"
            )
        index = {name: i for i, name in enumerate(order)}
        state: dict[int, dict[str, Any]] = {}
        for key, arr in arrays.items():
            name, _, what = key.rpartition("/")
            state.setdefault(index[name], {})[what] = torch.from_numpy(np.array(arr))
        for name, entries in scalars.get("state", {}).items():
            for what, value in entries.items():
                state.setdefault(index[name], {})[what] = (
                    torch.tensor(float(value)) if what == "step" else value)
        keep = scalars.get("keep_given_hyper", False)
        start = 0
        groups = []
        for s, g in zip(saved, ours, strict=True):
            hyper = {k: v for k, v in g.items() if k not in ("params",)} if keep else dict(s)
            groups.append({**hyper, "params": list(range(start, start + len(g["params"])))})
            start += len(g["params"])
        self.torch.load_state_dict({"state": state, "param_groups": groups})
        if self.scheduler is not None and scalars.get("scheduler") is not None:
            self.scheduler.load_state_dict(scalars["scheduler"])
            if keep:
                self.scheduler.base_lrs = [g.get("initial_lr", g["lr"]) for g in self.torch.param_groups]

    def _migrate(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """State of psdist's numpy optimizers (checkpoints before torch.optim ran the server)."""
        name = str(scalars.get("config", {}).get("name", "?"))
        want, keys = _FLAT_STATE.get(name, ("?", {}))
        have = "none" if self.torch is None else type(self.torch).__name__
        if self.torch is None:
            return
        if have != want:
            raise CheckpointError(
                f"model {self.group.name!r}: the checkpoint holds the state of psdist's numpy {name!r} "
                f"optimizer, which migrates to torch.optim.{want} only; this training builds {have}. Resume "
                f"with optimizer=psdist.optim.{want}(...), or give optimizer= to Trainer.load to start afresh"
            )
        steps = int(scalars["steps"])
        for e, p in self.slots:
            st: dict[str, Any] = {}
            for flat_key, torch_key in keys.items():
                if flat_key in arrays:
                    st[torch_key] = torch.from_numpy(np.array(arrays[flat_key][e.offset:e.stop]).reshape(e.shape))
            if st and want != "SGD":
                st["step"] = torch.tensor(float(steps))
            if st:
                self.torch.state[p] = st
        if not scalars.get("keep_given_hyper", False):
            self.set_lr(float(scalars["lr"]))
        if self.scheduler is not None:  # a schedule resumes where it was: replayed, whatever its formula
            with warnings.catch_warnings():  # no optimizer step in between, on purpose
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                for _ in range(steps):
                    self.scheduler.step()

    # ------------------------------------------------------------------ invariants
    def validate(self) -> None:
        """Parameters still view the server's weights; state shaped like them; a usable rate."""
        where = f"group {self.group.name!r}"
        base = self.params.__array_interface__["data"][0]
        for e, p in self.slots:
            if p.data_ptr() != base + 4 * e.offset:
                raise InvalidServerState(f"invariant 'optimizer views the weights' broken: {where}: "
                                         f"{e.name} no longer views the server's weight vector")
        if self.torch is None:
            return
        lr = self.lr()
        if not (self._steps >= 0 and math.isfinite(lr) and lr >= 0):
            raise InvalidServerState(f"invariant 'optimizer scalars' broken: {where}: steps {self._steps}, lr {lr}")
        for e, p in self.slots:
            for key, value in self.torch.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.numel() > 1 and value.shape != p.shape:
                    raise InvalidServerState(f"invariant 'optimizer state shape' broken: {where}: {e.name} "
                                             f"{key!r} is {list(value.shape)}, the parameter {list(p.shape)}")
