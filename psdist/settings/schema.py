"""A small subset of JSON Schema, checked in Python, with errors in words.

The settings' plain values (:mod:`psdist.settings.definition`) and the YAML config's keys are
declared as JSON Schema fragments. :func:`mismatch` finds where a value breaks one, and
:func:`describe` says what it must be: the same fragments make the editor's schema
(:func:`psdist.settings.json_schema`), so what the editor accepts and what psdist accepts agree.
"""

from __future__ import annotations

import difflib
import json
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Mismatch", "Schema", "describe", "did_you_mean", "mismatch"]

Schema = dict[str, Any]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, numbers.Integral):
        return "integer"
    if isinstance(value, numbers.Real):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    return "array" if isinstance(value, (list, tuple)) else "other"


def _type_of(schema: Schema) -> str | None:
    return schema.get("type") or (_json_type(schema["const"]) if "const" in schema else None)


def _fits_type(value: Any, schema: Schema) -> bool:
    want, have = _type_of(schema), _json_type(value)
    return want is None or want == have or (want == "number" and have == "integer")


@dataclass(frozen=True)
class Mismatch:
    """Where a value breaks a JSON Schema fragment.

    Attributes
    ----------
    path
        Dotted path of the bad part inside the value (``""``: the value itself).
    value
        The bad part.
    schema
        The fragment it breaks (for :func:`describe`).
    unknown, missing
        A mapping's key that the fragment does not allow, or requires and does not find.
    """

    path: str
    value: Any
    schema: Schema
    unknown: str | None = None
    missing: str | None = None


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def mismatch(value: Any, schema: Schema, path: str = "") -> Mismatch | None:
    """The first place where ``value`` breaks ``schema`` (``None``: it conforms).

    Understands the subset of JSON Schema the settings use: ``type``, ``const``, ``enum``,
    ``minimum``, ``exclusiveMinimum``, ``pattern``, ``anyOf``, ``properties``, ``required``,
    ``additionalProperties`` and ``items``.
    """
    if "anyOf" in schema:
        branches = schema["anyOf"]
        typed = [b for b in branches if _fits_type(value, b)]
        if len(typed) == 1 and _type_of(typed[0]) in ("object", "array"):
            return mismatch(value, typed[0], path)  # the one container form: say what is wrong inside
        ok = any(mismatch(value, b, path) is None for b in branches)
        return None if ok else Mismatch(path, value, schema)
    bad = Mismatch(path, value, schema)
    if not _fits_type(value, schema):
        return bad
    if ("const" in schema and value != schema["const"]) or ("enum" in schema and value not in schema["enum"]):
        return bad
    if "minimum" in schema and not value >= schema["minimum"]:
        return bad
    if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:  # NaN fails too
        return bad
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return bad
    if isinstance(value, Mapping):
        return _mapping_mismatch(value, schema, path)
    if isinstance(value, (list, tuple)) and "items" in schema:
        for i, item in enumerate(value):
            if (m := mismatch(item, schema["items"], _join(path, i))) is not None:
                return m
    return None


def _mapping_mismatch(value: Mapping[Any, Any], schema: Schema, path: str) -> Mismatch | None:
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key in value:
        if key not in props and extra is False:
            return Mismatch(path, value, schema, unknown=str(key))
    for key in schema.get("required", ()):
        if key not in value:
            return Mismatch(path, value, schema, missing=key)
    for key, item in value.items():
        sub = props.get(key, extra if isinstance(extra, dict) else None)
        if sub is not None and (m := mismatch(item, sub, _join(path, key))) is not None:
            return m
    return None


def _literal(value: Any, python: bool) -> str:
    if python:
        return repr(value)
    return value if isinstance(value, str) else json.dumps(value)


def _alternatives(schema: Schema, python: bool) -> list[str]:
    if "title" in schema:
        return [schema["title"]]
    if "anyOf" in schema:
        out = []
        for branch in schema["anyOf"]:
            words = _alternatives(branch, python)
            if "description" in branch:  # a branch's meaning: None (no bound)
                words[-1] += f" ({branch['description']})"
            out += words
        return out
    if "const" in schema:
        return [_literal(schema["const"], python)]
    if "enum" in schema:
        return ["one of " + ", ".join(_literal(v, python) for v in schema["enum"])]
    kind = schema.get("type")
    if kind in ("integer", "number"):
        text = "an integer" if kind == "integer" else "a number"
        if "minimum" in schema:
            text += f" >= {schema['minimum']}"
        if "exclusiveMinimum" in schema:
            text += f" > {schema['exclusiveMinimum']}"
        return [text]
    if kind == "boolean":
        return ["True", "False"] if python else ["true", "false"]
    if kind == "null":
        return ["None" if python else "null"]
    if kind == "object" and schema.get("properties"):
        return ["a mapping with keys " + ", ".join(schema["properties"])]
    return [{"string": "a string", "object": "a mapping", "array": "a list"}.get(kind or "", "any value")]


def describe(schema: Schema, python: bool = False) -> str:
    """What a value of ``schema`` may be, in words: ``an integer >= 0, 'auto' or None (no bound)``.

    ``python`` spells literals as Python does (``None``, ``True``, ``'auto'``), else as YAML.
    """
    alts = _alternatives(schema, python)
    return alts[0] if len(alts) == 1 else ", ".join(alts[:-1]) + " or " + alts[-1]


def did_you_mean(name: str, choices: list[str]) -> str:
    """`` (did you mean 'batch_size'?)`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


