"""Which arrays of a store make a batch's inputs, or its targets, and in which structure.

``ZarrDataset(path, inputs=["points", "features", "mask"], targets="y")``: the model is called
``model(points, features, mask)``; ``inputs={"points": "pts", ...}`` calls ``model(points=...)``;
one name (the default ``"x"``) passes one array, as psdist always did. Targets likewise: one
tensor, a tuple or a dict for the loss. A :class:`Fields` is that choice, checked and hashable
(it travels inside every task's :class:`~psdist.data.dataset.Chunk`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psdist.errors import ConfigError

__all__ = ["Fields"]


@dataclass(frozen=True)
class Fields:
    """The arrays of one side of a batch.

    Attributes
    ----------
    names
        The store's array names, in call order.
    keys
        The argument names of the dict form (``model(**inputs)``); ``None`` otherwise.
    single
        One array, passed as it is (not a tuple of one).
    """

    names: tuple[str, ...]
    keys: tuple[str, ...] | None = None
    single: bool = True

    @classmethod
    def of(cls, spec: Any, role: str) -> Fields:
        """Fields from a name, a list of names or a dict ``{argument: name}``; ``role`` names the
        setting in errors (``"inputs"``, ``"targets"``)."""
        if isinstance(spec, Fields):
            return spec
        if isinstance(spec, str):
            spec = spec.strip()
            if not spec:
                raise ConfigError(f"{role}='' names no array; give an array name, e.g. {role}='x'")
            return cls((spec,))
        if isinstance(spec, Mapping):
            keys, names = tuple(spec), tuple(spec.values())
            bad_keys = [k for k in keys if not (isinstance(k, str) and k.isidentifier())]
            if bad_keys:
                raise ConfigError(f"{role}={dict(spec)!r}: the keys are the model's argument names, and "
                                  f"{bad_keys[0]!r} is not a Python identifier")
            fields = cls(names, keys, single=False)
        elif isinstance(spec, Sequence) and not isinstance(spec, (bytes, bytearray)):
            fields = cls(tuple(spec), None, single=False)
        else:
            raise ConfigError(f"{role}={spec!r} must be an array name, a list of names or a dict "
                              f"{{argument: name}}, e.g. {role}=['points', 'features', 'mask']")
        if not fields.names:
            raise ConfigError(f"{role}={spec!r} names no array; e.g. {role}=['points', 'features', 'mask']")
        bad = [n for n in fields.names if not (isinstance(n, str) and n.strip())]
        if bad:
            raise ConfigError(f"{role}={spec!r}: {bad[0]!r} is not an array name")
        twice = sorted({n for n in fields.names if fields.names.count(n) > 1})
        if twice:
            raise ConfigError(f"{role}={spec!r} names {twice[0]!r} twice")
        return fields

    def pack(self, arrays: Sequence[Any]) -> Any:
        """``arrays`` (one per name, in order) in this structure: one array, a tuple or a dict."""
        if self.single:
            return arrays[0]
        if self.keys is not None:
            return dict(zip(self.keys, arrays, strict=True))
        return tuple(arrays)

    def renamed(self, rename: Callable[[str], str]) -> Fields:
        """The same structure over other arrays (``<name>_val``)."""
        return Fields(tuple(rename(n) for n in self.names), self.keys, self.single)

    def to_config(self) -> str | list[str] | dict[str, str]:
        """The value of the setting that makes these fields (YAML, checkpoints, error messages)."""
        if self.single:
            return self.names[0]
        if self.keys is not None:
            return dict(zip(self.keys, self.names, strict=True))
        return list(self.names)

    def call(self) -> str:
        """How the model is called with these inputs, for messages: ``model(points, mask)``."""
        if self.single:
            return f"model({self.names[0]})"
        if self.keys is not None:
            return "model(" + ", ".join(f"{k}={n}" for k, n in zip(self.keys, self.names, strict=True)) + ")"
        return "model(" + ", ".join(self.names) + ")"

    def __str__(self) -> str:
        return repr(self.to_config())
