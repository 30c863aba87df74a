"""Objects named in text: ``"package.module:name"`` in YAML files and checkpoints."""

from __future__ import annotations

import importlib
from typing import Any

from psdist.errors import ConfigError

__all__ = ["import_object"]


def import_object(spec: str, what: str) -> Any:
    """Resolve ``"package.module:name"``; errors say what was looked for."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(f"{what}={spec!r} must look like 'package.module:function'")
    mod_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"{what}: cannot import module {mod_name!r} ({e}); is it on PYTHONPATH?") from e
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigError(f"{what}: module {mod_name!r} has no attribute {attr!r}") from None
    return obj
