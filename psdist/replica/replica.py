"""A worker's copy of the model(s): flat-bound tensors, the pulled version, the training step.

No Dask here: a :class:`Replica` is driven by :mod:`psdist.replica.loop` against any
:class:`~psdist.core.protocol.ServerHandle` (the actor, or an in-process server in tests and the
simulator).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import numpy as np
import torch

from psdist.core.layout import Layout
from psdist.core.optim.port import OptimizerSpec
from psdist.core.protocol import Pull
from psdist.errors import ModelError
from psdist.replica.binding import FlatBinding, spec_of
from psdist.replica.local_optim import TorchLocalOptimizer, local_optimizer
from psdist.replica.precision import Precision
from psdist.replica.transfer import Staging

__all__ = ["Replica", "as_model_dict", "layout_of"]

_Out = TypeVar("_Out")


def as_model_dict(built: Any) -> dict[str, torch.nn.Module]:
    """Accept what a ``model_fn`` returns: one module, or a dict of named modules."""
    if isinstance(built, torch.nn.Module):
        return {"model": built}
    if isinstance(built, dict) and built and all(
        isinstance(k, str) and isinstance(v, torch.nn.Module) for k, v in built.items()
    ):
        return dict(built)
    raise ModelError(
        f"model_fn returned {type(built).__name__}; it must return a torch.nn.Module "
        "(or a dict of named modules for multi-model training)"
    )


def layout_of(models: dict[str, torch.nn.Module]) -> Layout:
    return Layout.of({name: spec_of(m) for name, m in models.items()})


class Replica:
    """Model(s) bound to flat vectors, plus the server version they hold.

    Parameters
    ----------
    worker
        Identity used in pushes.
    models
        Named modules, in layout order.
    device
        Where the tensors live (``"cpu"`` or ``"cuda:N"``).
    precision
        ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"``
        (:data:`~psdist.replica.precision.PRECISIONS`), or a
        :class:`~psdist.replica.precision.Precision`. The replica owns it: under ``"16-mixed"``
        its loss scale lives here, from chunk to chunk. The flat gradients then hold the
        accumulated gradients times the current scale; :meth:`gradient_update` divides it out.
    """

    def __init__(
        self, worker: str, models: dict[str, torch.nn.Module], device: str = "cpu",
        precision: str | Precision = "32",
    ) -> None:
        self.worker = worker
        self.models = models
        self.device = torch.device(device)
        self.precision = Precision.of(precision)
        self._backward_calls = 0  # replica.backward() calls of the current step (run_step)
        self.layout = layout_of(models)
        self.bindings = {
            g.name: FlatBinding(models[g.name], g.spec).bind(self.device)
            for g in self.layout.groups
        }
        self.version = -1
        self._buffers_at_pull = np.zeros(self.layout.size, dtype=np.float32)
        # pinned host buffers and a side stream for the host <-> GPU copies (CUDA only)
        self.staging = Staging(self.device) if self.device.type == "cuda" else None

    @property
    def module(self) -> torch.nn.Module:
        """The single model (raises for multi-model replicas)."""
        if len(self.models) != 1:
            raise ModelError(f"this training has several models {list(self.models)}")
        return next(iter(self.models.values()))

    def train(self, mode: bool = True) -> None:
        for m in self.models.values():
            m.train(mode)

    def load(self, pull: Pull | None) -> None:
        """Adopt the weights of a pull (a no-op when the answer says we are current)."""
        if pull is None:
            return
        if pull.weights is not None:
            w = pull.weights
            if w.shape != (self.layout.size,):
                raise ModelError(
                    f"server weights have {w.shape[0]} values, this model {self.layout.size}: "
                    "the server was started for a different model"
                )
            with warnings.catch_warnings():
                # pulled snapshots are read-only on purpose; we only copy out of them
                warnings.simplefilter("ignore", UserWarning)
                src = torch.from_numpy(w)
            for g in self.layout.groups:
                if self.staging is None:
                    self.bindings[g.name].load(src[g.whole])
                else:  # from pinned memory, queued on the compute stream: the host goes on at once
                    self.bindings[g.name].load(self.staging.upload(f"w:{g.name}", w[g.whole]), non_blocking=True)
                    self.staging.queued(f"w:{g.name}")
                self._buffers_at_pull[g.buffers] = w[g.buffers]
        self.version = pull.version

    def weights_vector(self) -> np.ndarray:
        """A copy of the replica's whole weight vector (server layout, buffers included)."""
        out = np.empty(self.layout.size, dtype=np.float32)
        for g in self.layout.groups:
            b = self.bindings[g.name]
            assert b.weights is not None
            out[g.params] = b.weights[: g.spec.n_params].detach().cpu().numpy()
            if g.spec.n_buffers:
                out[g.buffers] = b.buffer_vector()
        return out

    def set_weights(self, w: np.ndarray) -> None:
        """Overwrite the local weights (the version is left alone: local rules move it)."""
        src = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        for g in self.layout.groups:
            self.bindings[g.name].load(src[g.whole])

    def gradient_update(self, scale: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
        """A push vector: ``scale`` × accumulated gradients, and each buffer's change since pull.

        ``out``: write it there (a data plane's shared-memory gradient slot) instead of a new array.
        Under ``"16-mixed"`` the loss scale is divided out here: the vector holds true gradients.
        """
        if out is None:
            out = np.empty(self.layout.size, dtype=np.float32)
        scale *= self.grad_unscale
        for g in self.layout.groups:
            b = self.bindings[g.name]
            b.check_grads()
            assert b.grads is not None
            if self.staging is None:
                grads = b.grads.detach().numpy()
            else:  # one DMA copy into pinned memory, after the step's kernels
                grads = self.staging.download(f"g:{g.name}", b.grads.detach())
            np.multiply(grads, np.float32(scale), out=out[g.params])
            if g.spec.n_buffers:
                np.subtract(b.buffer_vector(), self._buffers_at_pull[g.buffers], out=out[g.buffers])
        return out

    def buffer_delta(self, out: np.ndarray) -> None:
        """Write each buffer's change since the pull into ``out``'s buffer sections (small:
        BatchNorm statistics); the gradient sections are left alone."""
        for g in self.layout.groups:
            if g.spec.n_buffers:
                np.subtract(self.bindings[g.name].buffer_vector(), self._buffers_at_pull[g.buffers],
                            out=out[g.buffers])

    def buffers_sent(self) -> None:
        """The buffers' change so far went out with a push: count the next change from here.

        A pull does this by itself (its buffers are the new reference); a worker that pushes
        without loading a reply (one push in flight) says so, or the change travels twice.
        """
        for g in self.layout.groups:
            if g.spec.n_buffers:
                self._buffers_at_pull[g.buffers] = self.bindings[g.name].buffer_vector()

    def zero_grad(self) -> None:
        for b in self.bindings.values():
            b.zero_grad()

    def trainable_models(self) -> tuple[str, ...]:
        """The models with at least one parameter that trains (a wholly frozen one has no step)."""
        return tuple(n for n, m in self.models.items() if any(p.requires_grad for p in m.parameters()))

    def local_optimizer(self, model: str, optimizer: OptimizerSpec, nesterov_momentum: float | None = None
                        ) -> TorchLocalOptimizer:
        """A torch optimizer of ``model``'s trainable parameters (see :class:`~psdist.core.ports.ReplicaPort`)."""
        return local_optimizer(list(self.models[model].named_parameters()), optimizer, nesterov_momentum)

    # ------------------------------------------------------------------ precision
    def autocast(self) -> AbstractContextManager[object]:
        """The autocast context of this replica's precision on its device (a no-op for ``"32"``)."""
        return self.precision.autocast(self.device.type)

    @property
    def grad_unscale(self) -> float:
        """What turns the flat gradients into true gradients: 1 / loss scale (1.0 without one)."""
        scaler = self.precision.scaler
        return 1.0 if scaler is None else 1.0 / scaler.scale

    def run_step(self, step: Callable[[Replica, torch.Tensor, torch.Tensor], _Out],
                 x: torch.Tensor, y: torch.Tensor) -> _Out:
        """Run one training step on this replica under its precision's autocast.

        Under ``"16-mixed"`` the loss must reach the gradients through :meth:`backward`, which
        scales it: a step that changed the gradients without calling it (a plain
        ``loss.backward()``) would push them divided by the loss scale, 65536 times too small.
        That raises :class:`~psdist.errors.ModelError`. Under the other precisions a plain
        ``loss.backward()`` is fine.
        """
        self._backward_calls = 0
        # the flat vectors' version counters move with every in-place write through a view,
        # backward's accumulation into .grad included: an O(1) test that gradients changed
        before = self._grad_versions() if self.precision.scaler is not None else ()
        with self.autocast():
            out = step(self, x, y)
        if self.precision.scaler is not None and self._backward_calls == 0 and self._grad_versions() != before:
            raise ModelError(
                "under precision='16-mixed' a step must send its loss through replica.backward(loss) "
                "(or replica.backward(loss, model)), which scales it for float16; this step changed the "
                "gradients without it (loss.backward()?), so they would reach the server divided by the "
                "loss scale"
            )
        return out

    def _grad_versions(self) -> tuple[int, ...]:
        return tuple(b.grads._version for b in self.bindings.values() if b.grads is not None)

    def grads_finite(self) -> bool:
        """Whether every accumulated gradient is finite (one reduction per model, one sync).

        A sum is NaN or Inf when any term is; a finite float32 gradient sum cannot overflow
        before the scaled gradients themselves would.
        """
        sums = [b.grads.sum() for b in self.bindings.values() if b.grads is not None]
        return bool(torch.isfinite(torch.stack(sums).sum()))

    @torch.no_grad()
    def scale_grads(self, factor: float) -> None:
        """Multiply the accumulated gradients by ``factor`` (the loss scale changed by it)."""
        if factor != 1.0:
            for b in self.bindings.values():
                assert b.grads is not None
                b.grads.mul_(factor)

    @contextlib.contextmanager
    def true_grads(self) -> Iterator[None]:
        """Inside, the flat gradients are true gradients (the loss scale divided out), then
        scaled back: for a rule's local optimizer steps (elastic averaging), which read
        ``.grad`` directly. Exact with power-of-two scales."""
        unscale = self.grad_unscale
        self.scale_grads(unscale)
        try:
            yield
        finally:
            self.scale_grads(1.0 / unscale)

    def backward(self, loss: torch.Tensor, model: str | None = None) -> None:
        """Accumulate the gradient of ``loss`` into the flat gradients; what a step calls.

        ``model=None``: into every model's parameters (a plain backward pass). A model's name:
        into that model's parameters only — for steps with several models (a GAN's generator
        loss flows through the discriminator too, but must only train the generator); other
        models' gradients are left untouched.

        Under ``"16-mixed"`` the loss is multiplied by the replica's loss scale first (in
        float32, so the scaled loss itself cannot overflow); psdist divides the scale out
        before pushing. The backward pass runs outside autocast, as torch recommends.
        """
        if model is not None and model not in self.models:
            raise ModelError(f"no model {model!r} in this training; models are {list(self.models)}")
        self._backward_calls += 1
        scaler = self.precision.scaler
        if scaler is not None:
            loss = loss.float() * scaler.scale
        off = (torch.autocast(self.device.type, enabled=False) if self.precision.mixed
               else contextlib.nullcontext())
        with off:
            if model is None:
                loss.backward()
                return
            params = [p for p in self.models[model].parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                if g is None:
                    continue
                if p.grad is None:  # was an AttributeError on None: say what happened
                    raise ModelError(
                        f"a gradient of model {model!r} no longer lives in psdist's flat gradient buffer: "
                        "a custom step must not call zero_grad() or replace .grad; psdist zeroes gradients itself"
                    )
                p.grad.add_(g)
