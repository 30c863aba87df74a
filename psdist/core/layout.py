"""Where every tensor of the models lives in one float32 vector (numpy only: no torch here).

The parameter server and the workers exchange a single buffer per model, never one message per
tensor (the old MPI tools' weakness). :class:`FlatSpec` says where each tensor lives in it and
:class:`Layout` puts several models side by side; :mod:`psdist.replica.binding` reads a spec off
a live ``nn.Module`` and makes its tensors views into such a buffer.

Layout: parameters first (``[0, n_params)``), then buffers. Integer and boolean buffers
(BatchNorm's ``num_batches_tracked``) are stored as float32 values, exact up to 2**24.
Parameters with ``requires_grad=False`` keep their place in the parameter section (workers bind
every parameter the same way) but are marked frozen: :attr:`FlatSpec.frozen` lists their ranges,
which the server never changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from psdist.errors import CheckpointError

__all__ = ["INT_EXACT", "Entry", "FlatSpec", "Group", "Layout"]

# float32 has a 24-bit significand: integers beyond this no longer round-trip exactly.
INT_EXACT = 2**24


@dataclass(frozen=True)
class Entry:
    """Where one named tensor lives inside the flat vector."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    kind: str  # "param" or "buffer": which section of the vector, not a mode switch
    # requires_grad of a parameter; False: frozen, the server leaves its values bit-identical.
    # Buffers are always True (they travel as they are; BatchNorm statistics of a frozen backbone
    # still follow the data, as in PyTorch).
    trainable: bool = True

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def stop(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class FlatSpec:
    """The map from a model's named tensors to slices of one float32 vector.

    Parameters
    ----------
    entries
        One :class:`Entry` per parameter, then per buffer, in module order.
    n_params
        Length of the parameter section; gradients have exactly this length.
    """

    entries: tuple[Entry, ...]
    n_params: int

    @property
    def size(self) -> int:
        return self.entries[-1].stop if self.entries else 0

    @property
    def n_buffers(self) -> int:
        return self.size - self.n_params

    @cached_property  # read on every push: computed once per spec
    def frozen(self) -> tuple[tuple[int, int], ...]:
        """``(start, stop)`` ranges of the frozen parameters (``requires_grad=False``).

        Adjacent frozen tensors are merged into one range; empty when every parameter trains.
        """
        return _merge([(e.offset, e.stop) for e in self.entries if e.kind == "param" and not e.trainable])

    @property
    def n_frozen(self) -> int:
        """How many parameter values are frozen."""
        return sum(stop - start for start, stop in self.frozen)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description, stored in checkpoints."""
        return {
            "n_params": self.n_params,
            "entries": [
                [e.name, list(e.shape), e.dtype, e.offset, e.kind, e.trainable] for e in self.entries
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlatSpec:
        """Rebuild :meth:`to_dict` output; entries of older checkpoints (5 fields) are trainable."""
        entries = tuple(
            Entry(str(n), tuple(int(s) for s in shape), str(dt), int(off), str(kind),
                  bool(rest[0]) if rest else True)
            for n, shape, dt, off, kind, *rest in d["entries"]
        )
        return cls(entries, int(d["n_params"]))

    def check_same(self, other: FlatSpec, what: str = "checkpoint") -> None:
        """Raise :class:`CheckpointError` naming the first tensor where ``other`` differs."""
        mine = {e.name: e for e in self.entries}
        theirs = {e.name: e for e in other.entries}
        for name in mine.keys() - theirs.keys():
            raise CheckpointError(f"the {what} has no tensor {name!r} that the model has")
        for name in theirs.keys() - mine.keys():
            raise CheckpointError(f"the {what} has a tensor {name!r} that the model lacks")
        for e in self.entries:
            o = theirs[e.name]
            if (e.shape, e.dtype, e.offset) != (o.shape, o.dtype, o.offset):
                raise CheckpointError(
                    f"tensor {e.name!r} is {e.dtype}{list(e.shape)} in the model but "
                    f"{o.dtype}{list(o.shape)} in the {what}: a different model architecture"
                )


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted, non-empty ranges with touching neighbours joined."""
    out: list[tuple[int, int]] = []
    for start, stop in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((start, stop))
    return tuple(out)


@dataclass(frozen=True)
class Group:
    """One model of a training (e.g. ``"generator"``) inside the server's flat vector."""

    name: str
    spec: FlatSpec
    offset: int

    @property
    def params(self) -> slice:
        return slice(self.offset, self.offset + self.spec.n_params)

    @property
    def buffers(self) -> slice:
        return slice(self.offset + self.spec.n_params, self.offset + self.spec.size)

    @property
    def whole(self) -> slice:
        return slice(self.offset, self.offset + self.spec.size)

    @cached_property
    def frozen(self) -> tuple[slice, ...]:
        """The frozen parameter ranges of this group, in layout coordinates."""
        return tuple(slice(self.offset + a, self.offset + b) for a, b in self.spec.frozen)

    @cached_property
    def updatable(self) -> tuple[slice, ...]:
        """:attr:`whole` without the frozen ranges: where a delta update may write."""
        out, start = [], self.offset
        for f in self.frozen:
            if f.start > start:
                out.append(slice(start, f.start))
            start = f.stop
        end = self.offset + self.spec.size
        if end > start:
            out.append(slice(start, end))
        return tuple(out)

    @cached_property
    def frozen_in_params(self) -> tuple[slice, ...]:
        """The frozen ranges relative to :attr:`params` (what the group's optimizer skips)."""
        return tuple(slice(a, b) for a, b in self.spec.frozen)


@dataclass(frozen=True)
class Layout:
    """Several models side by side in one vector; a single model is a layout of one group.

    Weights, pushed updates and checkpoints all use this layout, so a GAN's generator and
    discriminator travel and version together.
    """

    groups: tuple[Group, ...]

    @classmethod
    def of(cls, specs: dict[str, FlatSpec]) -> Layout:
        groups, offset = [], 0
        for name, spec in specs.items():
            groups.append(Group(name, spec, offset))
            offset += spec.size
        return cls(tuple(groups))

    @property
    def size(self) -> int:
        return sum(g.spec.size for g in self.groups)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    @cached_property
    def frozen(self) -> tuple[slice, ...]:
        """Every frozen parameter range of every group, in layout coordinates."""
        return tuple(s for g in self.groups for s in g.frozen)

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no model group {name!r}; the layout has {list(self.names)}")

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [[g.name, g.spec.to_dict()] for g in self.groups]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layout:
        return cls.of({str(n): FlatSpec.from_dict(s) for n, s in d["groups"]})

    def check_same(self, other: Layout, what: str = "checkpoint") -> None:
        if self.names != other.names:
            raise CheckpointError(
                f"the {what} holds models {list(other.names)}, this training {list(self.names)}"
            )
        for mine, theirs in zip(self.groups, other.groups, strict=True):
            mine.spec.check_same(theirs.spec, what)
