"""Mixed precision in the worker step: ``precision="32" | "bf16-mixed" | "16-mixed"``.

The names are Lightning's. Under a mixed precision the step's forward pass runs under
:func:`torch.autocast` (bfloat16 or float16 matrix products and convolutions); the parameters,
their gradients (psdist's flat float32 gradient vector) and the server's weights and optimizer
state stay float32, so the server always receives a float32 gradient.

float16 has a narrow exponent range: small gradients of the fp16 activations flush to zero.
``"16-mixed"`` therefore multiplies the loss by a *loss scale* before the backward pass and
divides the gradients by it before they leave the worker. :class:`LossScaler` keeps that scale,
one per worker (it lives in the worker's :class:`~psdist.replica.replica.Replica`, from chunk to
chunk): a minibatch whose scaled gradients overflow is taken back and counted, and the scale is
halved; after ``growth_interval`` good minibatches in a row it doubles.

Why not :class:`torch.amp.GradScaler`: it steps a local ``torch.optim`` optimizer (``unscale_``,
``step``, ``update`` around ``optimizer.step()``), while a psdist worker has none. It accumulates
``push_every`` minibatches into one flat vector and pushes their mean; the optimizer runs on the
server. Taking one minibatch back out of that window, and rescaling what the window kept when the
scale changes, has to happen on the flat vector (:mod:`psdist.replica.loop`), which this small
scaler is shaped for. Its defaults are GradScaler's.

On CPU, bfloat16 autocast works on any torch psdist supports; float16 CPU autocast needs a recent
torch (2.4 or so; older ones warn and run float32).
"""

from __future__ import annotations

import contextlib
import math
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from psdist.errors import ConfigError

__all__ = ["PRECISIONS", "LossScaler", "Precision", "check_precision"]

#: The precisions a training may ask for (Lightning's names).
PRECISIONS: tuple[str, ...] = ("32", "bf16-mixed", "16-mixed")

_DTYPES: dict[str, torch.dtype | None] = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}

#: A larger scale would make the scaled float32 loss itself infinite.
_MAX_SCALE = 2.0**127


def check_precision(value: object) -> str:
    """Validate a ``precision`` setting; answer its canonical name.

    Parameters
    ----------
    value
        One of :data:`PRECISIONS`. The integer ``32`` is taken for ``"32"`` (a YAML file's
        ``precision: 32`` reads as an integer).

    Returns
    -------
    str
        The name, one of :data:`PRECISIONS`.

    Raises
    ------
    ConfigError
        When ``value`` is none of them.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value == 32:
        return "32"
    if isinstance(value, str) and value in PRECISIONS:
        return value
    allowed = ", ".join(repr(p) for p in PRECISIONS)
    raise ConfigError(f"precision={value!r} is not a precision psdist knows; use one of {allowed}")


@dataclass
class LossScaler:
    """The loss scale of one worker under ``"16-mixed"`` (see the module docstring).

    The gradients a worker holds are in units of the current scale (the loss was multiplied by
    it); :meth:`update` answers the factor by which the scale changed, and the caller multiplies
    the gradients it keeps by the same factor, so they stay in the current units. With the
    default factors (powers of two) that multiplication is exact.

    Parameters
    ----------
    scale
        The initial scale (torch's default, 2**16).
    growth_factor
        Multiplies the scale after ``growth_interval`` good minibatches in a row.
    backoff_factor
        Multiplies the scale after a minibatch whose gradients overflowed.
    growth_interval
        Good minibatches in a row before the scale grows. Counted per minibatch (each is one
        backward pass of the scaled loss), not per push.
    min_scale
        The scale never goes below it (float16's smallest subnormal, 2**-24: at a smaller scale
        every fp16 gradient is zero). A gradient still non-finite there is not an overflow but
        NaN in the model; :attr:`at_floor` says so.
    """

    scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    min_scale: float = 2.0**-24
    good_steps: int = 0  # good minibatches since the last overflow or growth

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.min_scale <= self.scale <= _MAX_SCALE):
            raise ConfigError(f"loss scale {self.scale!r} must be finite, between min_scale and 2**127")
        if not self.growth_factor > 1.0:
            raise ConfigError(f"growth_factor={self.growth_factor!r} must be above 1 (torch's default: 2.0)")
        if not 0.0 < self.backoff_factor < 1.0:
            raise ConfigError(f"backoff_factor={self.backoff_factor!r} must be between 0 and 1 (torch's default: 0.5)")
        if self.growth_interval < 1:
            raise ConfigError(f"growth_interval={self.growth_interval!r} must be at least 1 (torch's default: 2000)")
        if not self.min_scale > 0.0:
            raise ConfigError(f"min_scale={self.min_scale!r} must be positive")

    @property
    def at_floor(self) -> bool:
        """The scale is as small as it goes: an overflow now cannot be scaled away."""
        return self.scale <= self.min_scale

    def update(self, finite: bool) -> float:
        """Book one minibatch whose scaled gradients were ``finite`` (or not).

        Returns
        -------
        float
            The factor by which the scale changed (1.0 when it did not): multiply the gradients
            kept in the scale's units by it.
        """
        old = self.scale
        if finite:
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.good_steps = 0
                self.scale = min(old * self.growth_factor, _MAX_SCALE)
        else:
            self.good_steps = 0
            self.scale = max(old * self.backoff_factor, self.min_scale)
        return self.scale / old


class Precision:
    """A training's precision on one worker: the step's autocast and, for fp16, its loss scaler.

    Parameters
    ----------
    name
        One of :data:`PRECISIONS` (checked by :func:`check_precision`).
    scaler
        The loss scaler of ``"16-mixed"`` (default: a new :class:`LossScaler`); refused for the
        other precisions, which scale nothing.

    Notes
    -----
    The scaler holds state: give each replica its own :class:`Precision`.
    """

    def __init__(self, name: object = "32", scaler: LossScaler | None = None) -> None:
        self.name = check_precision(name)
        self.dtype = _DTYPES[self.name]
        if self.name == "16-mixed":
            self.scaler: LossScaler | None = scaler if scaler is not None else LossScaler()
        elif scaler is not None:
            raise ConfigError(f"precision={self.name!r} scales no loss; a loss scaler needs '16-mixed'")
        else:
            self.scaler = None

    @classmethod
    def of(cls, value: object) -> Precision:
        """``value`` itself when it is a :class:`Precision`, else a new one of that name."""
        return value if isinstance(value, Precision) else cls(value)

    @property
    def mixed(self) -> bool:
        """The step runs under autocast."""
        return self.dtype is not None

    @property
    def loss_scale(self) -> float | None:
        """The current loss scale (``None`` when the precision scales nothing)."""
        return None if self.scaler is None else self.scaler.scale

    def autocast(self, device_type: str) -> AbstractContextManager[object]:
        """The context a step runs in on a device of ``device_type`` (``"cpu"``, ``"cuda"``).

        ``torch.autocast`` with this precision's dtype; a no-op context for ``"32"``.
        """
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)

    def __repr__(self) -> str:
        scale = "" if self.scaler is None else f", scale={self.scaler.scale:g}"
        return f"Precision({self.name!r}{scale})"
