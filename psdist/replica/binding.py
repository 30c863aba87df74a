"""A live ``nn.Module`` bound to psdist's flat float32 vector (torch; no Dask, no Zarr).

:func:`spec_of` reads a module's :class:`~psdist.core.layout.FlatSpec`; :class:`FlatBinding`
makes the module's tensors views into one weight vector and one gradient vector, so that
loading new weights is one copy and gradients land contiguously without any gathering.
"""

from __future__ import annotations

import numpy as np
import torch

from psdist.core.layout import INT_EXACT, Entry, FlatSpec
from psdist.errors import ModelError

__all__ = ["FlatBinding", "flatten", "spec_of", "unflatten_into"]


def spec_of(module: torch.nn.Module) -> FlatSpec:
    """Read the layout of ``module``; raises :class:`ModelError` for unsupported dtypes."""
    entries: list[Entry] = []
    offset = 0
    for name, p in module.named_parameters():
        if p.dtype != torch.float32:
            raise ModelError(
                f"parameter {name!r} has dtype {p.dtype}; psdist trains float32 models: "
                "return model.float() from your model_fn"
            )
        entries.append(Entry(name, tuple(p.shape), "float32", offset, "param", bool(p.requires_grad)))
        offset += p.numel()
    n_params = offset
    for name, b in module.named_buffers():
        if b.is_floating_point() and b.dtype != torch.float32:
            raise ModelError(
                f"buffer {name!r} has dtype {b.dtype}; psdist keeps buffers in float32: "
                "return model.float() from your model_fn"
            )
        dtype = str(b.dtype).removeprefix("torch.")
        entries.append(Entry(name, tuple(b.shape), dtype, offset, "buffer"))
        offset += b.numel()
    if n_params == 0:
        raise ModelError("the model has no parameters to train; check your model_fn")
    return FlatSpec(tuple(entries), n_params)


def _as_float32(name: str, t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point():
        return t.detach().reshape(-1)
    if t.dtype == torch.bool:
        return t.detach().reshape(-1).to(torch.float32)
    if t.numel() and int(t.abs().max()) > INT_EXACT:
        raise ModelError(f"integer buffer {name!r} exceeds 2**24 and cannot travel as float32")
    return t.detach().reshape(-1).to(torch.float32)


def flatten(module: torch.nn.Module, spec: FlatSpec) -> np.ndarray:
    """Copy ``module``'s parameters and buffers into a new float32 numpy vector."""
    out = torch.empty(spec.size, dtype=torch.float32)
    tensors: dict[str, torch.Tensor] = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    for e in spec.entries:
        out[e.offset : e.stop] = _as_float32(e.name, tensors[e.name]).cpu()
    return out.numpy()


def unflatten_into(module: torch.nn.Module, spec: FlatSpec, flat: np.ndarray) -> None:
    """Write ``flat`` back into ``module``'s tensors (dtype and device preserved)."""
    if flat.shape != (spec.size,):
        raise ModelError(f"flat vector has shape {flat.shape}, the spec expects ({spec.size},)")
    src = torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float32))
    tensors: dict[str, torch.Tensor] = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    with torch.no_grad():
        for e in spec.entries:
            t = tensors[e.name]
            t.copy_(src[e.offset : e.stop].view(t.shape).to(t.dtype))


class FlatBinding:
    """Rebind a module's tensors as views into one flat weight vector and one flat gradient.

    After :meth:`bind`, ``weights`` holds every float tensor of the module (autograd and
    BatchNorm write straight into it), and backward passes accumulate into ``grads``: pushing a
    gradient is one device-to-host copy of ``grads``, loading weights one copy into ``weights``.
    """

    def __init__(self, module: torch.nn.Module, spec: FlatSpec) -> None:
        self.module = module
        self.spec = spec
        self.weights: torch.Tensor | None = None
        self.grads: torch.Tensor | None = None
        self._int_buffers: list[tuple[Entry, torch.nn.Module, str]] = []
        self._views: list[tuple[Entry, torch.nn.Module, str]] = []  # params and float buffers

    def bind(self, device: torch.device | str = "cpu") -> FlatBinding:
        """Move the module to ``device`` and make its tensors views; returns ``self``."""
        module = self.module.to(device)
        initial = torch.from_numpy(flatten(module, self.spec)).to(device)
        self.weights = initial
        self.grads = torch.zeros(self.spec.n_params, dtype=torch.float32, device=device)
        owners = _owners(module)
        for e in self.spec.entries:
            owner, attr = owners[e.name]
            if e.kind == "param" or e.dtype == "float32":
                self._views.append((e, owner, attr))
            else:  # integer buffers cannot be float views; copied on load and dump
                self._int_buffers.append((e, owner, attr))
        self._point(self.weights, self.grads)
        return self

    def _point(self, weights: torch.Tensor, grads: torch.Tensor) -> None:
        for e, owner, attr in self._views:
            if e.kind == "param":
                p = owner._parameters[attr]
                assert p is not None  # the spec lists named_parameters(), which skips None slots
                p.data = weights[e.offset : e.stop].view(e.shape)
                p.grad = grads[e.offset : e.stop].view(e.shape)
            else:
                owner._buffers[attr] = weights[e.offset : e.stop].view(e.shape)

    def point_to(self, weights: torch.Tensor, grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Make the module's tensors views of other vectors of this layout; answer the old pair.

        A worker with a push in flight keeps two sets (:mod:`psdist.replica.overlap`): the
        module trains on one while the other is read out and refilled on the communication
        thread. Integer buffers are written into the old weights first (their change is then
        in the old set) and read from the new ones.
        """
        assert self.weights is not None and self.grads is not None, "call bind() first"
        old = (self.weights, self.grads)
        with torch.no_grad():
            for e, owner, attr in self._int_buffers:
                b = owner._buffers[attr]
                assert b is not None
                self.weights[e.offset : e.stop] = _as_float32(e.name, b)
            if weights is not self.weights:
                for e, owner, attr in self._int_buffers:
                    b = owner._buffers[attr]
                    assert b is not None
                    b.copy_(weights[e.offset : e.stop].view(e.shape).to(b.dtype))
        self.weights, self.grads = weights, grads
        self._point(weights, grads)
        return old

    def load(self, flat: np.ndarray | torch.Tensor, non_blocking: bool = False) -> None:
        """Set every tensor from a flat vector (one host-to-device copy).

        ``non_blocking``: ``flat`` is pinned host memory and the copy is queued on the current
        stream (the one that then computes with the weights) without waiting for it.
        """
        assert self.weights is not None, "call bind() first"
        src = torch.as_tensor(flat)
        with torch.no_grad():
            self.weights.copy_(src, non_blocking=non_blocking)
            for e, owner, attr in self._int_buffers:
                b = owner._buffers[attr]
                assert b is not None  # bind() kept only the spec's buffers, never None slots
                b.copy_(self.weights[e.offset : e.stop].view(e.shape).to(b.dtype))

    def buffer_vector(self) -> np.ndarray:
        """The current buffer section as float32 numpy (integer buffers included)."""
        assert self.weights is not None, "call bind() first"
        with torch.no_grad():
            for e, owner, attr in self._int_buffers:
                b = owner._buffers[attr]
                assert b is not None  # bind() kept only the spec's buffers, never None slots
                self.weights[e.offset : e.stop] = _as_float32(e.name, b)
        out: np.ndarray = self.weights[self.spec.n_params :].cpu().numpy().copy()
        return out

    def zero_grad(self) -> None:
        assert self.grads is not None, "call bind() first"
        self.grads.zero_()

    def check_grads(self) -> None:
        """Raise :class:`ModelError` if a step replaced a parameter's ``.grad`` view.

        ``model.zero_grad()`` (set_to_none) or an optimizer inside a custom step would detach
        the gradients from the flat vector, and they would silently never be pushed.
        """
        assert self.grads is not None, "call bind() first"
        lo, hi = self.grads.data_ptr(), self.grads.data_ptr() + self.grads.numel() * 4
        for name, p in self.module.named_parameters():
            if p.grad is None or not lo <= p.grad.data_ptr() < hi:
                raise ModelError(
                    f"the gradient of {name!r} no longer lives in psdist's flat gradient buffer: "
                    "a custom step must not call zero_grad() or replace .grad; psdist zeroes gradients itself"
                )


def _owners(module: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, str]]:
    """Map each dotted tensor name to (owning submodule, attribute name)."""
    out: dict[str, tuple[torch.nn.Module, str]] = {}
    for prefix, sub in module.named_modules():
        for attr in list(sub._parameters) + list(sub._buffers):
            name = f"{prefix}.{attr}" if prefix else attr
            out.setdefault(name, (sub, attr))
    return out
