"""YAML training configurations for ``psdist train``.

A config names everything by value or by import path (``module:function``), so a run is fully
described by one small text file::

    model: psdist.hep.models:jet_cnn     # a function returning an nn.Module
    model_args: {width: 32}              # keyword arguments for it (optional)
    loss: cross_entropy                  # torch.nn.functional name, or module:function
    data: {path: data/jets.zarr, val_fraction: 0.1}
    optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
    epochs: 5
    batch_size: 128
    workers: 2
    threads_per_worker: 1
    max_staleness: 4                     # leave out for psdist.Trainer's default
    push_every: 1
    metrics: {auc: psdist.metrics:auc}   # extra validation metrics (module:function)
    step: psdist.hep.gan:CaloGANStep     # a custom training step (then no loss), with step_args

On ``psdist train --resume`` the training settings a checkpoint stores (optimizer, rule,
batch_size, push_every, max_staleness, seed) are compared with the ones the YAML sets
(:func:`resume_settings`): keys the YAML leaves out come from the checkpoint; a key it sets to
another value is refused unless ``--override`` asks for the YAML's value.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from psdist.core.optim import Optimizer, optimizer_from_config
from psdist.core.rules import Downpour, Rule, rule_from_config
from psdist.data.dataset import ZarrDataset
from psdist.errors import ConfigError
from psdist.run.recovery import Checkpoints
from psdist.run.stopping import EarlyStopping

__all__ = ["ResumeSettings", "SettingChange", "TrainConfig", "import_object", "load_config", "resume_settings"]

#: Training settings ``Trainer.save`` stores under ``meta["trainer"]`` (besides the rule); a
#: resumed run takes them from the checkpoint unless the YAML sets them.
STORED_SETTINGS = ("batch_size", "push_every", "max_staleness", "seed")


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


def _loss(spec: str) -> Any:
    if ":" in spec:
        return import_object(spec, "loss")
    import torch.nn.functional as F

    fn = getattr(F, spec, None)
    if fn is None or not callable(fn):
        raise ConfigError(f"loss={spec!r} is not a torch.nn.functional loss; e.g. cross_entropy, mse_loss")
    return fn


@dataclass
class TrainConfig:
    """A validated training configuration (see the module docstring for the YAML form)."""

    model: str
    data: dict[str, Any]
    loss: str = "cross_entropy"
    model_args: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=lambda: {"name": "sgd", "lr": 0.01})
    rule: dict[str, Any] | None = None
    epochs: int = 1
    batch_size: int = 128
    workers: int = 2
    threads_per_worker: int = 1
    max_staleness: int | str | None = None
    push_every: int = 1
    seed: int = 0
    timeout: float = 300.0
    malloc_fix: bool = True
    early_stopping: dict[str, Any] | None = None
    checkpoint: str | None = None
    checkpoint_every_versions: int | None = None
    checkpoint_every_seconds: float | None = 60.0
    max_restarts: int = 3
    chunk_timeout: float | None = None
    metrics: dict[str, str] = field(default_factory=dict)
    step: str | None = None
    step_args: dict[str, Any] = field(default_factory=dict)
    #: the keys the YAML (or a command-line flag) set; the others hold defaults. A resumed run
    #: compares only these with its checkpoint, and an unset max_staleness is left to the Trainer.
    given: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: str = ".") -> TrainConfig:
        if not isinstance(raw, dict):
            raise ConfigError("a psdist config is a YAML mapping of settings (model:, data:, ...)")
        known = {f.name for f in fields(cls)} - {"given"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; known keys are {sorted(known)}")
        for required in ("model", "data"):
            if required not in raw:
                raise ConfigError(f"the config needs a {required!r} entry (see `psdist train --help`)")
        cfg = cls(**raw, given=frozenset(raw))
        if isinstance(cfg.data, str):
            cfg.data = {"path": cfg.data}
        if "path" not in cfg.data:
            raise ConfigError("data: needs a path, e.g. data: {path: data/jets.zarr}")
        path = os.fspath(cfg.data["path"])
        if "://" not in path and not os.path.isabs(path):
            cfg.data["path"] = os.path.normpath(os.path.join(base_dir, path))
        return cfg

    def model_fn(self) -> Any:
        fn = import_object(self.model, "model")
        return functools.partial(fn, **self.model_args) if self.model_args else fn

    def loss_fn(self) -> Any:
        return None if self.step else _loss(self.loss)

    def dataset(self) -> ZarrDataset:
        try:
            return ZarrDataset(**self.data)
        except TypeError as e:
            raise ConfigError(f"bad data: option ({e}); known: path, x, y, x_val, y_val, val_fraction, chunk_rows, skip_bad_chunks, holdout_seed") from None

    def make_optimizer(self) -> Optimizer | dict[str, Optimizer]:
        """One optimizer (``{name: sgd, ...}``) or one per model (``{generator: {name: adam}, ...}``)."""
        if "name" not in self.optimizer and self.optimizer and all(isinstance(v, dict) for v in self.optimizer.values()):
            return {str(k): optimizer_from_config(v) for k, v in self.optimizer.items()}
        return optimizer_from_config(self.optimizer)

    def make_metrics(self) -> dict[str, Any]:
        """``metrics: {auc: psdist.metrics:auc}`` → functions."""
        return {str(k): import_object(v, f"metrics.{k}") for k, v in self.metrics.items()}

    def make_step(self) -> Any | None:
        """``step: psdist.hep.gan:CaloGANStep`` with ``step_args`` → a step object (or None)."""
        if not self.step:
            return None
        cls = import_object(self.step, "step")
        try:
            return cls(**self.step_args)
        except TypeError as e:
            raise ConfigError(f"bad step_args for {self.step}: {e}") from None

    def make_rule(self) -> Rule:
        return rule_from_config(self.rule) if self.rule else Downpour()

    def make_early_stopping(self) -> EarlyStopping | None:
        if not self.early_stopping:
            return None
        try:
            return EarlyStopping(**self.early_stopping)
        except TypeError as e:
            raise ConfigError(f"bad early_stopping option ({e})") from None

    def trainer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`psdist.Trainer` (all but model, loss and data).

        ``max_staleness`` is left out when the YAML does not set it, so
        :class:`psdist.Trainer`'s own default applies; ``max_staleness: null`` means no bound.
        """
        kwargs = {
            "optimizer": self.make_optimizer(),
            "rule": self.make_rule(),
            "push_every": self.push_every,
            "batch_size": self.batch_size,
            "workers": self.workers,
            "threads_per_worker": self.threads_per_worker,
            "early_stopping": self.make_early_stopping(),
            "metrics": self.make_metrics(),
            "step": self.make_step(),
            "seed": self.seed,
            "malloc_fix": self.malloc_fix,
            "timeout": self.timeout,
            "checkpoints": Checkpoints(self.checkpoint, self.checkpoint_every_versions,
                                       self.checkpoint_every_seconds, self.max_restarts),
            "chunk_timeout": self.chunk_timeout,
        }
        if "max_staleness" in self.given or self.max_staleness is not None:
            kwargs["max_staleness"] = self.max_staleness
        return kwargs


def load_config(path: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config; relative data paths are taken from the config's directory."""
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path!r} is not valid YAML: {e}") from e
    raw = dict(raw or {})
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig.from_dict(raw, base_dir=os.path.dirname(os.path.abspath(path)))


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


def _optimizer_changes(cfg: TrainConfig, stored: dict[str, dict[str, Any]]) -> list[SettingChange]:
    wanted = cfg.make_optimizer()
    single = not isinstance(wanted, dict)
    if not isinstance(wanted, dict):  # one optimizer: the checkpoint's only model, whatever its name
        wanted = {next(iter(stored)) if len(stored) == 1 else "model": wanted}
    out: list[SettingChange] = []
    for name in sorted(set(wanted) | set(stored)):
        if name not in wanted or name not in stored:
            out.append(SettingChange(f"optimizer.{name}", stored[name]["name"] if name in stored else None,
                                     wanted[name].name if name in wanted else None))
            continue
        key = "optimizer" if single else f"optimizer.{name}"
        # both sides normalised the same way: the YAML's optimizer with its defaults filled in
        # (leaving out momentum means momentum 0) against the checkpoint's full config
        have, want = optimizer_from_config(stored[name]).to_config(), wanted[name].to_config()
        if have["name"] != want["name"]:  # another optimizer: its options are not comparable
            out.append(SettingChange(f"{key}.name", have["name"], want["name"]))
        else:
            out += _differ(key, have, want)
    return out


def resume_settings(cfg: TrainConfig, meta: dict[str, Any], override: bool = False, *,
                    source: str = "the config", checkpoint: str = "the checkpoint") -> ResumeSettings:
    """Compare a config's training settings with a checkpoint's, for ``psdist train --resume``.

    Only what the YAML sets is compared: top-level keys it leaves out (``batch_size``,
    ``max_staleness``, ...) come from the checkpoint, as does a rule option left to its
    automatic default (EASGD's ``alpha``). An ``optimizer:`` or ``rule:`` entry means that
    optimizer or rule with its defaults, as a fresh run would build it.

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
    trainer = meta.get("trainer") or {}
    optimizers = {n: o["config"] for n, o in (meta.get("server") or {}).get("optimizers", {}).items()}
    changes = [SettingChange(k, trainer.get(k), getattr(cfg, k)) for k in STORED_SETTINGS
               if k in cfg.given and trainer.get(k) != getattr(cfg, k)]
    if "rule" in cfg.given:
        stored = dict(trainer.get("rule") or {"name": "Downpour"})
        wanted = cfg.make_rule().to_config()
        if str(stored.get("name", "")).lower() != str(wanted["name"]).lower():
            changes.append(SettingChange("rule.name", stored.get("name"), wanted["name"]))
        else:  # None: an option resolved when training starts (EASGD's alpha), the stored one holds
            changes += _differ("rule", stored, {k: v for k, v in wanted.items() if k != "name"})
    if "optimizer" in cfg.given:
        changes += _optimizer_changes(cfg, optimizers)
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
    kwargs: dict[str, Any] = {k: getattr(cfg, k) for k in STORED_SETTINGS if k in cfg.given}
    lrs: dict[str | None, float] = {}
    if "rule" in cfg.given:
        kwargs["rule"] = cfg.make_rule()
    if "optimizer" in cfg.given:
        kwargs["optimizer"] = cfg.make_optimizer()
        opts = kwargs["optimizer"] if isinstance(kwargs["optimizer"], dict) else {None: kwargs["optimizer"]}
        lrs = {name: opt.lr for name, opt in opts.items()}
    return ResumeSettings(changes, kwargs, lrs)


def _retypes(change: SettingChange) -> bool:
    """Whether an optimizer difference changes its type, or which models have one."""
    return change.key.endswith(".name") or change.checkpoint is None or change.config is None
