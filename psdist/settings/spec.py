"""How a setting is declared: :class:`Spec` (one setting) and :class:`Key` (one YAML key).

A settings group (:mod:`psdist.settings.groups`) is a frozen dataclass whose fields carry
``metadata=plain(...)`` (a JSON value, checked by its schema) or ``metadata=declared(...)``
(Python objects, checked by a function); :func:`check_fields` checks them all when the group
is built.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Literal

from psdist.errors import ConfigError
from psdist.settings.schema import Schema, describe, mismatch

__all__ = ["BAD", "UNSET", "CheckpointRole", "Key", "Spec", "check_fields", "declared", "plain", "resolved"]


@dataclass(frozen=True)
class Key:
    """One key of the YAML config (and one property of its JSON Schema).

    Attributes
    ----------
    name
        The key, as the YAML writes it at the top level or in its group's section.
    schema
        JSON Schema fragment its value must meet.
    help
        One line for ``--help``, the JSON Schema and error messages.
    example
        A JSON-safe value that is valid (``128``, ``{"name": "sgd", "lr": 0.05}``).
    default
        The value when the YAML leaves the key out.
    required
        The YAML must give it.
    flag
        The ``psdist train`` flag that sets it and its metavar (``"--batch-size N"``), or ``""``.
    """

    name: str
    schema: Schema
    help: str
    example: Any
    default: Any = None
    required: bool = False
    flag: str = ""


#: Where a setting lives in a checkpoint. ``restore``: in ``meta["trainer"]``, restored by
#: :meth:`Settings.from_checkpoint` and compared by ``psdist train --resume``; ``server``: in
#: the parameter server's state (the optimizer, with its own state), restored and compared
#: likewise; ``record``: in ``meta["trainer"]`` for the record only (a resumed run may use
#: other workers or timeouts); ``""``: not stored (functions, clients, certificates).
CheckpointRole = Literal["", "restore", "server", "record"]


@dataclass(frozen=True)
class Spec:
    """The declaration of one setting (the metadata of one field of a settings group).

    Attributes
    ----------
    help
        One line: what the setting does.
    example
        Valid Python for the keyword argument (``"batch_size=128"``); error messages show it.
    schema
        Plain settings: the JSON Schema fragment their value meets, in Python as in YAML.
    allowed, check
        Object settings: ``check(value)`` returns the value to keep (``None`` made the default)
        or ``BAD``, and the error then says the value must be ``allowed``.
    error
        The error class for a bad value (:class:`~psdist.errors.ModelError` for ``model_fn``).
    keys
        Its YAML keys (none: a Python-only setting such as ``client``).
    build
        Object settings: the Python value from the YAML's values (all keys, defaults filled).
    checkpoint, dump, load
        Its :data:`CheckpointRole`; ``dump(value)`` makes the JSON stored (plain values are
        their own), ``load`` the value again from that JSON (``server``: from the server's
        state, ``meta["server"]``).
    name, group
        The setting's keyword name (filled in by :func:`resolved`) and its group (by
        :func:`psdist.settings.specs`).
    """

    help: str
    example: str = ""
    schema: Schema | None = None
    allowed: str = ""
    check: Callable[[Any], Any] | None = None
    error: type[Exception] = ConfigError
    keys: tuple[Key, ...] = ()
    build: Callable[[Mapping[str, Any]], Any] | None = None
    checkpoint: CheckpointRole = ""
    dump: Callable[[Any], Any] | None = None
    load: Callable[[Any], Any] | None = None
    name: str = ""
    group: str = ""


#: what an object setting's check returns for a value it refuses
BAD: Any = object()

#: the default of an object setting whose check makes the real one (``rule``: ``Downpour()``), or
#: that must be given (``model_fn``); typed ``Any`` so that the field keeps its real type
UNSET: Any = None


def plain(help: str, schema: Schema, example: Any, *, flag: str = "",
          checkpoint: CheckpointRole = "") -> dict[str, Spec]:
    """The metadata of a setting whose value is JSON (the same in Python and YAML), checked by its schema.

    ``batch_size: int = field(default=128, metadata=plain(...))``. Its one YAML key has the
    setting's name and default; ``example`` is a valid value.
    """
    key = Key("", schema, help, example, flag=flag)
    return {"spec": Spec(help, schema=schema, keys=(key,), checkpoint=checkpoint)}


def declared(help: str, example: str, allowed: str, check: Callable[[Any], Any], *keys: Key,
             **more: Any) -> dict[str, Spec]:
    """The metadata of a setting holding Python objects (functions, optimizers), checked by ``check``.

    ``rule: Rule = field(default=None, metadata=declared(...))``: ``check`` turns ``None`` into
    the real default (``Downpour()``). ``example`` is valid Python for the keyword
    (``"rule=psdist.rules.SSP(bound=2)"``); ``more`` are further :class:`Spec` fields
    (``build``, ``checkpoint``, ...).
    """
    return {"spec": Spec(help, example, allowed=allowed, check=check, keys=keys, **more)}


_RESOLVED: dict[type, Mapping[str, Spec]] = {}


def resolved(group: type) -> Mapping[str, Spec]:
    """The specs of a group's fields with their names filled in (keys named ``""`` take the field's)."""
    if group not in _RESOLVED:  # once per group class: it is checked at every construction
        out = {}
        for f in fields(group):
            spec: Spec = f.metadata["spec"]
            # a plain setting's key: the field's name and default
            keys = tuple(k if k.name else dataclasses.replace(k, name=f.name, default=f.default)
                         for k in spec.keys)
            example = spec.example or f"{f.name}={keys[0].example!r}"
            out[f.name] = dataclasses.replace(spec, name=f.name, keys=keys, example=example)
        _RESOLVED[group] = MappingProxyType(out)
    return _RESOLVED[group]


def check_fields(group: object) -> None:
    """Check every field of a frozen settings group, keeping the normalised values."""
    for name, spec in resolved(type(group)).items():
        value = getattr(group, name)
        if spec.check is not None:
            kept = spec.check(value)
            if kept is BAD:
                raise spec.error(f"{name}={value!r} must be {spec.allowed}, e.g. {spec.example}")
        elif spec.schema is not None and mismatch(value, spec.schema) is not None:
            allowed = describe(spec.schema, python=True)
            raise spec.error(f"{name}={value!r} must be {allowed}, e.g. {spec.example}")
        else:
            kept = _normalised(value, spec.schema or {})
        object.__setattr__(group, name, kept)  # frozen: set once, here


def _normalised(value: Any, schema: Schema) -> Any:
    """numpy integers as int, and an int where only a number fits as float (``timeout=300``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    branches = schema.get("anyOf", [schema])
    if isinstance(value, numbers.Integral) and any(b.get("type") == "integer" for b in branches):
        return int(value)
    return float(value)
