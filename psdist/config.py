"""YAML training configurations for ``psdist train``: the YAML form of :mod:`psdist.settings`.

A config names everything by value or by import path (``module:function``), so a run is fully
described by one small text file::

    model: psdist.hep.models:jet_cnn     # a function returning an nn.Module
    model_args: {width: 32}              # keyword arguments for it (optional)
    loss: cross_entropy                  # torch.nn.functional name, or module:function
    data: {path: data/jets.zarr, val_fraction: 0.1}
    optimizer: {name: adamw, lr: 0.001, weight_decay: 0.01}   # any torch.optim class, or module:function
    epochs: 5
    batch_size: 128
    workers: 2
    threads_per_worker: 1
    max_staleness: 4                     # leave out for "auto"; null: no bound
    push_every: 1
    metrics: {auc: psdist.metrics:auc}   # extra validation metrics (module:function)
    step: psdist.hep.gan:CaloGANStep     # a custom training step (then no loss), with step_args

The same keys may stand in sections named as :mod:`psdist.settings` groups them::

    training: {model: psdist.hep.models:jet_cnn, data: data/jets.zarr, epochs: 5}
    algorithm: {rule: {name: ssp, bound: 2}, max_staleness: 4}
    scaling: {workers: 4}
    faults: {checkpoint: runs/jets.ckpt}

Every key, its type, default and meaning come from :mod:`psdist.settings` (``psdist schema``
prints them as a JSON Schema for editors: ``docs/psdist-config.schema.json``). An unknown key,
or a value of the wrong type, is a :class:`~psdist.errors.ConfigError` naming the key with its
path (``algorithm.push_every``, ``data.val_fraction``) and what it may be.

On ``psdist train --resume`` the training settings a checkpoint restores (those whose
:class:`~psdist.settings.Spec` has ``checkpoint`` ``restore`` or ``server``: optimizer, rule,
batch_size, push_every, max_staleness, seed) are compared with the ones the YAML sets
(:func:`resume_settings`): keys the YAML leaves out come from the checkpoint; a key it sets to
another value is refused unless ``--override`` asks for the YAML's value.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from psdist.core.rules import Downpour, Rule
from psdist.data.dataset import ZarrDataset
from psdist.errors import ConfigError
from psdist.run.recovery import Checkpoints
from psdist.run.stopping import EarlyStopping
from psdist.settings import (
    GROUPS,
    Key,
    Settings,
    describe,
    did_you_mean,
    import_object,
    mismatch,
    restored_settings,
    specs,
    stored_values,
    yaml_keys,
)

__all__ = ["ResumeSettings", "SettingChange", "TrainConfig", "import_object", "load_config", "resume_settings"]

def _keys() -> dict[str, tuple[str, Key]]:
    """Every YAML key -> (its section, its declaration)."""
    return {key.name: (group, key) for group, keys in yaml_keys().items() for key in keys}


def _yaml(value: Any) -> str:
    """A value as a YAML flow (``{name: sgd, lr: 0.05}``, ``auto``, ``null``) for messages."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000)
    return text.removesuffix("...\n").strip()


def _shown(value: Any) -> str:
    """A bad value: scalars as JSON, so that a string is quoted (``"none"``), mappings as YAML."""
    return _yaml(value) if isinstance(value, (Mapping, list)) else json.dumps(value)


def _flag(key: Key) -> str:
    return key.flag.split()[0] if key.flag else key.name


# ----------------------------------------------------------------------------- reading
def _unknown(path: str, key: str, section: str | None, where: str) -> ConfigError:
    table = _keys()
    if section is None:
        return ConfigError(
            f"{where}unknown config key {key!r}{did_you_mean(key, [*table, *GROUPS])}; the keys are "
            f"{', '.join(table)} (at the top level or in the sections {', '.join(f'{g}:' for g in GROUPS)})")
    if key in table:
        return ConfigError(f"{where}{path}: {key} belongs in {table[key][0]}: (or at the top level), "
                           f"not in {section}:")
    names = [k.name for k in yaml_keys()[section]]
    return ConfigError(f"{where}{path}: unknown key{did_you_mean(key, names)}; "
                       f"{section}: takes {', '.join(names)}")


def _flatten(raw: Any, where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The YAML's keys, top-level and in sections, as one mapping; and each key's path."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}a psdist config is a YAML mapping of settings (model:, data:, ...)")
    table = _keys()
    flat: dict[str, Any] = {}
    paths: dict[str, str] = {}

    def put(key: str, value: Any, path: str) -> None:
        if key in flat:
            raise ConfigError(f"{where}{key} is given twice: as {paths[key]} and as {path}; keep one")
        flat[key], paths[key] = value, path

    for top, value in raw.items():
        top = str(top)
        if top in GROUPS:
            names = [k.name for k in yaml_keys()[top]]
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}{top}: must be a mapping of its settings ({', '.join(names)})")
            for key, item in value.items():
                if str(key) not in names:
                    raise _unknown(f"{top}.{key}", str(key), top, where)
                put(str(key), item, f"{top}.{key}")
        elif top in table:
            put(top, value, top)
        else:
            raise _unknown(top, top, None, where)
    return flat, paths


def _check(key: Key, value: Any, path: str, where: str) -> None:
    """Raise a ConfigError naming the key's path unless ``value`` meets the key's schema."""
    m = mismatch(value, key.schema)
    if m is None:
        return
    at = f"{path}.{m.path}" if m.path else path
    example = f"{path} {_yaml(key.example)}" if path.startswith("--") else f"{key.name}: {_yaml(key.example)}"
    if m.unknown is not None:
        allowed = list(m.schema.get("properties", {}))
        raise ConfigError(f"{where}{at}.{m.unknown}: unknown key{did_you_mean(m.unknown, allowed)}; "
                          f"{at} takes {', '.join(allowed)}")
    if m.missing is not None:
        raise ConfigError(f"{where}{at}: needs a {m.missing!r} key, e.g. {example}")
    raise ConfigError(f"{where}{at}: {_shown(m.value)} must be {describe(m.schema)}; e.g. {example}")


def _data(value: Any, base_dir: str) -> dict[str, Any]:
    """``data:`` as ZarrDataset's arguments; a relative path is taken from the config's directory."""
    data = {"path": value} if isinstance(value, str) else dict(value)
    path = os.fspath(data["path"])
    if "://" not in path and not os.path.isabs(path):
        data["path"] = os.path.normpath(os.path.join(base_dir, path))
    return data


class TrainConfig:
    """A checked training configuration: the value of every YAML key, given or default.

    Each key is also an attribute (``cfg.epochs``, ``cfg.workers``, ``cfg.checkpoint``); the
    Python objects are made on demand (:meth:`settings`, or one with :meth:`setting`).

    Parameters
    ----------
    values
        Every key of :func:`psdist.settings.yaml_keys` -> its value; ``data`` as
        :class:`~psdist.data.dataset.ZarrDataset`'s arguments.
    given
        The keys the YAML (or a command-line flag) set; the others hold defaults. A resumed run
        compares only these with its checkpoint.
    """

    def __init__(self, values: dict[str, Any], given: frozenset[str] = frozenset()) -> None:
        self.values = values
        self.given = given

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values")  # not self.values: unpickling asks before it is set
        if values is not None and name in values:
            return values[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"TrainConfig({self.values!r}, given={sorted(self.given)})"

    @classmethod
    def from_dict(cls, raw: Any, base_dir: str = ".", *, overrides: Mapping[str, Any] | None = None,
                  source: str = "") -> TrainConfig:
        """Check a parsed YAML config (flat or in sections) and fill in the defaults.

        Parameters
        ----------
        raw
            The YAML document.
        base_dir
            Directory a relative ``data`` path is taken from.
        overrides
            Values that replace the YAML's, by key (command-line flags; ``None`` is ``null``).
            Messages name them by their flag (``--workers``).
        source
            How messages name the config (its path); ``""``: not at all.

        Raises
        ------
        ConfigError
            For an unknown key (with the closest known one), a value of the wrong type or out of
            range (naming its path, ``algorithm.push_every``, and what it may be), or a missing
            ``model`` or ``data``.
        """
        where = f"{source}: " if source else ""
        flat, paths = _flatten(raw, where)
        table = _keys()
        for key, value in (overrides or {}).items():
            if key not in table:
                raise _unknown(key, key, None, where)
            flat[key], paths[key] = value, _flag(table[key][1])
        for key, value in flat.items():
            _check(table[key][1], value, paths[key], where)
        for name, (_, decl) in table.items():
            if decl.required and name not in flat:
                raise ConfigError(f"{where}the config needs a {name!r} entry ({decl.help}), e.g. "
                                  f"{name}: {_yaml(decl.example)}; see `psdist train --help`")
        # a default is copied: model_args: {} of one config is not another's
        values = {name: flat[name] if name in flat else copy.deepcopy(decl.default)
                  for name, (_, decl) in table.items()}
        values["data"] = _data(values["data"], base_dir)
        return cls(values, frozenset(flat))

    def setting(self, name: str) -> Any:
        """The Python value of one setting (:func:`psdist.settings.specs`) as this config gives it.

        Not yet checked: :meth:`settings` checks them all together.
        """
        spec = specs()[name]
        if spec.build is not None:
            return spec.build(self.values)
        return self.values[name] if spec.keys else None  # client: never in a YAML

    def settings(self, **changes: Any) -> Settings:
        """All the settings of this config, checked; ``changes`` by flat name (``client=...``)."""
        made = {name: self.setting(name) for name, spec in specs().items() if spec.keys}
        return Settings.from_kwargs(**{**made, **changes})

    def given_settings(self) -> list[str]:
        """The settings (flat names) any of whose keys the YAML or a flag set."""
        return [name for name, spec in specs().items() if any(k.name in self.given for k in spec.keys)]

    def trainer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`psdist.Trainer` (all but model, loss and data)."""
        kwargs = self.settings().to_kwargs()
        del kwargs["model_fn"], kwargs["loss_fn"]
        return kwargs

    def model_fn(self) -> Any:
        """The model factory (``model`` with ``model_args``)."""
        return self.setting("model_fn")

    def loss_fn(self) -> Any:
        """The loss function (``None`` with a custom ``step``)."""
        return self.setting("loss_fn")

    def dataset(self) -> ZarrDataset:
        """The :class:`~psdist.data.dataset.ZarrDataset` of ``data``."""
        return ZarrDataset(**self.values["data"])

    def make_optimizer(self) -> Any:
        """One optimizer recipe (``{name: adamw, ...}``) or one per model (``{generator: {name: adam}, ...}``)."""
        return self.setting("optimizer")

    def make_metrics(self) -> dict[str, Any]:
        """``metrics: {auc: psdist.metrics:auc}`` -> functions."""
        return self.setting("metrics")

    def make_step(self) -> Any | None:
        """``step: psdist.hep.gan:CaloGANStep`` with ``step_args`` -> a step object (or None)."""
        return self.setting("step")

    def make_rule(self) -> Rule:
        """The update rule (``rule:``; Downpour without one)."""
        return self.setting("rule") or Downpour()

    def make_early_stopping(self) -> EarlyStopping | None:
        """The :class:`~psdist.run.stopping.EarlyStopping` of ``early_stopping`` (or None)."""
        return self.setting("early_stopping")

    def make_checkpoints(self) -> Checkpoints:
        """The :class:`~psdist.run.recovery.Checkpoints` of ``checkpoint`` and ``checkpoint_every_*``."""
        return self.setting("checkpoints")


def load_config(path: str, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read and check a YAML config; relative data paths are taken from the config's directory.

    ``overrides`` replace the YAML's values by key (see :meth:`TrainConfig.from_dict`).
    """
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path!r} is not valid YAML: {e}") from e
    return TrainConfig.from_dict(raw if raw is not None else {}, os.path.dirname(os.path.abspath(path)),
                                 overrides=overrides, source=path)


# ----------------------------------------------------------------------------- --resume
def _show(value: Any) -> str:
    """A value for a message: strings bare (``sgd``), others as JSON (``null``, ``0.05``, ``{"name": ...}``)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class SettingChange:
    """One training setting where a YAML config and a checkpoint disagree.

    Attributes
    ----------
    key
        Dotted name of the setting: ``batch_size``, ``rule.bound``, ``optimizer.lr`` (or
        ``optimizer.generator.lr`` with one optimizer per model).
    checkpoint, config
        The checkpoint's value and the YAML's (``None`` where one side has no such entry).
    """

    key: str
    checkpoint: Any
    config: Any

    def __str__(self) -> str:
        return f"{self.key}: checkpoint={_show(self.checkpoint)} yaml={_show(self.config)}"


@dataclass
class ResumeSettings:
    """What ``psdist train --resume`` trains with (see :func:`resume_settings`).

    Attributes
    ----------
    changes
        The settings the YAML sets to something else than the checkpoint stores.
    kwargs
        Keyword arguments for :meth:`psdist.Trainer.load`: the YAML's settings that replace the
        checkpoint's (empty unless ``override``).
    lrs
        Learning rate per model (``None``: the only optimizer) to set after loading with
        ``Trainer.set_lr``: a checkpoint's optimizer state carries its own rate, which would
        otherwise win over the YAML's.
    """

    changes: list[SettingChange]
    kwargs: dict[str, Any] = field(default_factory=dict)
    lrs: dict[str | None, float] = field(default_factory=dict)

    def describe(self, checkpoint: str) -> str:
        """One line for the user: where the training settings of the resumed run come from."""
        if not self.changes:
            return (f"training settings from {checkpoint} (the YAML's agree; keys it leaves out "
                    "come from the checkpoint)")
        return ("--override: the YAML's training settings replace the checkpoint's (precedence: "
                "command line > YAML > checkpoint): " + "; ".join(str(c) for c in self.changes))


def _differ(prefix: str, stored: dict[str, Any], wanted: dict[str, Any]) -> list[SettingChange]:
    """The entries of ``wanted`` that ``stored`` holds with another value (None in wanted: unset)."""
    return [SettingChange(f"{prefix}.{k}", stored.get(k), v) for k, v in wanted.items()
            if v is not None and stored.get(k) != v]


def _config_changes(key: str, have: dict[str, Any], want: dict[str, Any]) -> list[SettingChange]:
    """Two ``{name: ..., options}`` configs (a rule, an optimizer): another name, or other options."""
    if str(have.get("name", "")).lower() != str(want["name"]).lower():  # other options: not comparable
        return [SettingChange(f"{key}.name", have.get("name"), want["name"])]
    # None: an option resolved when training starts (EASGD's alpha), the stored one holds
    return _differ(key, have, {k: v for k, v in want.items() if k != "name"})


def _optimizer_changes(stored: dict[str, dict[str, Any]], want: dict[str, Any]) -> list[SettingChange]:
    single = "name" in want  # one optimizer: the checkpoint's only model, whatever its name
    wanted = {next(iter(stored)) if len(stored) == 1 else "model": want} if single else want
    out: list[SettingChange] = []
    for name in sorted(set(wanted) | set(stored)):
        if name not in wanted or name not in stored:
            out.append(SettingChange(f"optimizer.{name}", stored[name]["name"] if name in stored else None,
                                     wanted[name]["name"] if name in wanted else None))
            continue
        # both sides normalised the same way, with the torch.optim class's defaults filled in
        # (leaving out momentum means momentum 0)
        out += _config_changes("optimizer" if single else f"optimizer.{name}", _normalised(stored[name]),
                               _normalised(wanted[name]))
    return out


def _normalised(cfg: dict[str, Any]) -> dict[str, Any]:
    """An optimizer's config with every hyperparameter of its class (defaults filled in)."""
    from psdist.optim.resolve import optimizer_from_config

    spec = optimizer_from_config(cfg)
    full = spec.to_config()
    out = {"name": full["name"], **{k: list(v) if isinstance(v, tuple) else v
                                    for k, v in (spec.hyperparameters() or {}).items()}}
    out.update({k: full.get(k) for k in ("scheduler", "schedule", "clip_norm")})
    return out


def _changes(name: str, stored: dict[str, Any], value: Any) -> list[SettingChange]:
    """How the checkpoint's JSON of one restored setting differs from ``value`` (a checked one)."""
    spec = specs()[name]
    want = spec.dump(value) if spec.dump else value
    if spec.checkpoint == "server":
        return _optimizer_changes(stored.get(name) or {}, want)
    if isinstance(want, dict) and "name" in want:  # a rule: its default where an old checkpoint has none
        default = spec.check(None) if spec.check else None
        have = stored.get(name) or (spec.dump(default) if spec.dump and default is not None else {})
        return _config_changes(name, dict(have), want)
    return [SettingChange(name, stored.get(name), want)] if stored.get(name) != want else []


def resume_settings(cfg: TrainConfig, meta: dict[str, Any], override: bool = False, *,
                    source: str = "the config", checkpoint: str = "the checkpoint") -> ResumeSettings:
    """Compare a config's training settings with a checkpoint's, for ``psdist train --resume``.

    The settings compared are those a checkpoint restores (:mod:`psdist.settings`: optimizer,
    rule, batch_size, push_every, max_staleness, seed), and only where the YAML sets them: keys
    it leaves out come from the checkpoint, as does a rule option left to its automatic default
    (EASGD's ``alpha``). An ``optimizer:`` or ``rule:`` entry means that optimizer or rule with
    its defaults, as a fresh run would build it.

    Parameters
    ----------
    cfg
        The run's config (after the command-line flags were applied to it).
    meta
        The checkpoint's metadata (``psdist.run.checkpoint.read_checkpoint(path)[0]``).
    override
        Apply the YAML's values where they differ (``--override``). The optimizer's state
        (step count, momentum or Adam buffers) is kept; its learning rate becomes the YAML's.
    source, checkpoint
        How the messages name the config and the checkpoint (their paths in the CLI).

    Returns
    -------
    ResumeSettings
        The differences, and with ``override`` the Trainer.load arguments that apply them.

    Raises
    ------
    ConfigError
        When the YAML differs and ``override`` is false (listing every difference and both
        ways out), or when ``override`` would change an optimizer's type, whose state cannot
        carry over.
    """
    names = [n for n in cfg.given_settings() if n in restored_settings()]
    if not names:
        return ResumeSettings([])
    flat = cfg.settings().to_kwargs()  # checked and normalised as the run would use them
    stored = stored_values(meta)
    changes = [change for name in names for change in _changes(name, stored, flat[name])]
    if not changes:
        return ResumeSettings([])
    listing = "\n".join(f"  {c}" for c in changes)
    if not override:
        raise ConfigError(
            f"{source} sets {len(changes)} training setting(s) to other values than {checkpoint} "
            f"stores:\n{listing}\n--resume would train with the checkpoint's values. Either add --override "
            "to apply the YAML's (precedence: command line > YAML > checkpoint; the optimizer's state is "
            "kept), or set these keys back to the checkpoint's values in the YAML (or delete them: keys "
            "the YAML leaves out come from the checkpoint)"
        )
    retyped = [c for c in changes if c.key.startswith("optimizer") and _retypes(c)]
    if retyped:
        raise ConfigError(
            "--override cannot change the optimizer's type or models:\n"
            + "\n".join(f"  {c}" for c in retyped)
            + "\nthe checkpoint's optimizer state (step count, buffers) does not apply to another "
            "optimizer; keep the checkpoint's in the YAML, or start a new run without --resume"
        )
    kwargs = {name: flat[name] for name in names}
    lrs: dict[str | None, float] = {}
    if "optimizer" in kwargs:
        opts = kwargs["optimizer"] if isinstance(kwargs["optimizer"], dict) else {None: kwargs["optimizer"]}
        lrs = {name: opt.lr for name, opt in opts.items() if opt.lr is not None}
    return ResumeSettings(changes, kwargs, lrs)


def _retypes(change: SettingChange) -> bool:
    """Whether an optimizer difference changes its type, or which models have one."""
    return change.key.endswith(".name") or change.checkpoint is None or change.config is None
