"""Settings and its views: the flat keywords, the YAML keys, the checkpoint, the JSON Schema."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from psdist.errors import ConfigError
from psdist.settings.groups import GROUPS, JOB_KEYS, Algorithm, FaultPolicy, Scaling, Training
from psdist.settings.schema import Schema, did_you_mean
from psdist.settings.spec import Key, Spec, resolved

__all__ = ["Settings", "json_schema", "restored_settings", "specs", "stored_values", "yaml_keys"]

_GROUP_TYPES: dict[str, type] = {"training": Training, "algorithm": Algorithm, "scaling": Scaling,
                                 "faults": FaultPolicy}


@functools.cache
def _specs() -> Mapping[str, Spec]:
    return MappingProxyType({name: dataclasses.replace(spec, group=group)
                             for group, kind in _GROUP_TYPES.items() for name, spec in resolved(kind).items()})


def specs() -> Mapping[str, Spec]:
    """Every setting by its keyword name (``batch_size``), in group order, with its :class:`Spec`."""
    return _specs()


def restored_settings() -> tuple[str, ...]:
    """The settings a checkpoint restores and ``psdist train --resume`` compares (roles ``restore``
    and ``server``): ``optimizer, batch_size, seed, rule, max_staleness, push_every``."""
    return tuple(name for name, spec in specs().items() if spec.checkpoint in ("restore", "server"))


@functools.cache
def _yaml_keys() -> Mapping[str, tuple[Key, ...]]:
    by_group: dict[str, list[Key]] = {g: [] for g in GROUPS}
    for spec in specs().values():
        by_group[spec.group] += spec.keys
    by_group["training"] += JOB_KEYS
    return MappingProxyType({g: tuple(keys) for g, keys in by_group.items()})


def yaml_keys() -> Mapping[str, tuple[Key, ...]]:
    """The YAML config's keys by group (section): the settings' keys and :data:`JOB_KEYS`."""
    return _yaml_keys()


# ----------------------------------------------------------------------------- Settings
@dataclass(frozen=True)
class Settings:
    """All settings of one training, in four groups (see :mod:`psdist.settings`).

    Build it from the flat keywords of :class:`psdist.Trainer` with :meth:`from_kwargs`, from a
    YAML file with :meth:`psdist.config.TrainConfig.settings`, or from a checkpoint with
    :meth:`from_checkpoint`. Every value is checked on construction; a bad one raises
    :class:`~psdist.errors.ConfigError` naming the setting, the value and valid code.

    Examples
    --------
    >>> s = Settings.from_kwargs(model_fn=make_model, loss_fn=F.cross_entropy, batch_size=64)
    >>> s.training.batch_size, s.algorithm.max_staleness, s.scaling.workers
    (64, 'auto', 2)
    """

    training: Training
    algorithm: Algorithm = field(default_factory=Algorithm)
    scaling: Scaling = field(default_factory=Scaling)
    faults: FaultPolicy = field(default_factory=FaultPolicy)

    def __post_init__(self) -> None:
        for name, kind in _GROUP_TYPES.items():
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be "
                                  f"psdist.settings.{kind.__name__}(...)")
        opt = self.training.optimizer
        staleness = self.algorithm.max_staleness
        # settings that only work together: the rule says which (EASGD's period and push_every)
        bound = staleness if isinstance(staleness, int) else None  # AUTO is sized at each fit
        # optimizers the rule can see into now (a class, a partial of one); factories at fit
        infos = {n: i for n, o in (opt.items() if isinstance(opt, dict) else [("model", opt)])
                 if (i := o.info()) is not None}
        self.algorithm.rule.check(self.algorithm.push_every, bound, infos)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Settings:
        """Settings from :class:`psdist.Trainer`'s flat keyword arguments (``batch_size=64``).

        Raises
        ------
        ConfigError
            For a keyword that is no setting (naming the closest one and all of them), or a bad
            value. ``model_fn`` that is not callable raises :class:`~psdist.errors.ModelError`.
        """
        table = specs()
        for name in kwargs:
            if name not in table:
                raise ConfigError(f"unknown setting {name!r}{did_you_mean(name, list(table))}; the settings "
                                  f"are {', '.join(table)}")
        parts: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
        for name, value in kwargs.items():
            parts[table[name].group][name] = value
        return cls(**{g: kind(**parts[g]) for g, kind in _GROUP_TYPES.items()})

    def to_kwargs(self) -> dict[str, Any]:
        """The flat view: every setting by its keyword name (``Trainer(data=..., **to_kwargs())``)."""
        return {f.name: getattr(getattr(self, g), f.name) for g in GROUPS for f in fields(getattr(self, g))}

    def replace(self, **kwargs: Any) -> Settings:
        """A copy with some settings changed, by their flat names (checked as in :meth:`from_kwargs`)."""
        return Settings.from_kwargs(**{**self.to_kwargs(), **kwargs})

    def to_checkpoint(self) -> dict[str, Any]:
        """The JSON-safe settings a checkpoint stores under ``meta["trainer"]``.

        The ``restore`` settings (``batch_size``, ``push_every``, ``max_staleness``, ``seed``,
        ``rule`` as its config) and, for the record, the ``record`` ones (``workers``,
        ``timeout``, ``checkpoints``, ...). The optimizer is in the server's state.
        """
        flat = self.to_kwargs()
        return {name: spec.dump(flat[name]) if spec.dump else flat[name]
                for name, spec in specs().items() if spec.checkpoint in ("restore", "record")}

    @classmethod
    def from_checkpoint(cls, meta: Mapping[str, Any], **kwargs: Any) -> Settings:
        """The settings of a checkpoint's training, where ``kwargs`` do not give others.

        Parameters
        ----------
        meta
            The checkpoint's metadata (``psdist.run.checkpoint.read_checkpoint(path)[0]``); its
            ``meta["trainer"]`` as any psdist version wrote it.
        **kwargs
            Flat settings (:meth:`from_kwargs`): ``model_fn`` and ``loss_fn`` at least, and any
            stored setting to change. Settings stored only for the record (``workers``,
            ``timeout``, ...) are not restored: the resumed run takes these from ``kwargs``.
        """
        return cls.from_kwargs(**{**_restored(meta), **kwargs})


def _restored(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The Python values of the settings a checkpoint restores (older ones may lack some)."""
    trainer = meta.get("trainer") or {}
    out: dict[str, Any] = {}
    for name, spec in specs().items():
        if spec.checkpoint == "restore" and name in trainer:
            out[name] = spec.load(trainer[name]) if spec.load else trainer[name]
        elif spec.checkpoint == "server" and (meta.get("server") or {}).get("optimizers") and spec.load:
            out[name] = spec.load(meta["server"])
    return out


def stored_values(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON values a checkpoint holds for the settings it restores (``psdist train --resume``).

    ``optimizer`` maps each model's name to its optimizer's config; a setting an older
    checkpoint lacks is left out.
    """
    trainer = meta.get("trainer") or {}
    out = {name: trainer[name] for name, spec in specs().items()
           if spec.checkpoint == "restore" and name in trainer}
    optimizers = (meta.get("server") or {}).get("optimizers") or {}
    if optimizers:
        out["optimizer"] = {str(n): o["config"] for n, o in optimizers.items()}
    return out


# ----------------------------------------------------------------------------- JSON Schema
def _property(key: Key) -> Schema:
    out = {**key.schema, "description": key.help}
    if not key.required:
        out["default"] = key.default
    return {**out, "examples": [key.example]}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the YAML config, for editors (``psdist schema``).

    Every key may stand at the top level (as the example configs write them) or in its group's
    section (``algorithm: {push_every: 2}``).
    """
    defs: dict[str, Schema] = {}
    flat: dict[str, Schema] = {}
    sections: dict[str, Schema] = {}
    required: list[tuple[str, str]] = []
    for group, keys in yaml_keys().items():
        props = {}
        for key in keys:
            defs[key.name] = _property(key)
            props[key.name] = {"$ref": f"#/$defs/{key.name}"}
            if key.required:
                required.append((group, key.name))
        flat.update(props)
        sections[group] = {"type": "object", "description": GROUPS[group], "properties": props,
                           "additionalProperties": False}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "psdist training config",
        "description": "A psdist train config (psdist.settings): keys at the top level or in the sections "
                       + ", ".join(GROUPS) + ". Generated by `psdist schema`; do not edit.",
        "type": "object",
        "properties": {**flat, **sections},
        "additionalProperties": False,
        # a required key, at the top level or in its section
        "allOf": [{"anyOf": [{"required": [name]},
                             {"required": [group], "properties": {group: {"required": [name]}}}]}
                  for group, name in required],
        "$defs": defs,
    }
