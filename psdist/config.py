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
    max_staleness: 4
    push_every: 1
    metrics: {auc: psdist.metrics:auc}   # extra validation metrics (module:function)
    step: psdist.hep.gan:CaloGANStep     # a custom training step (then no loss), with step_args
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from psdist.data import ZarrDataset
from psdist.errors import ConfigError
from psdist.optim import Optimizer, optimizer_from_config
from psdist.recovery import Checkpoints
from psdist.rules import Downpour, Rule, rule_from_config
from psdist.stopping import EarlyStopping

__all__ = ["TrainConfig", "import_object", "load_config"]


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
    max_staleness: int | None = None
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

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: str = ".") -> TrainConfig:
        if not isinstance(raw, dict):
            raise ConfigError("a psdist config is a YAML mapping of settings (model:, data:, ...)")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; known keys are {sorted(known)}")
        for required in ("model", "data"):
            if required not in raw:
                raise ConfigError(f"the config needs a {required!r} entry (see `psdist train --help`)")
        cfg = cls(**raw)
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
            raise ConfigError(f"bad data: option ({e}); known: path, x, y, x_val, y_val, val_fraction, chunk_rows, skip_bad_chunks") from None

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
        """Keyword arguments for :class:`psdist.Trainer` (all but model, loss and data)."""
        return {
            "optimizer": self.make_optimizer(),
            "rule": self.make_rule(),
            "max_staleness": self.max_staleness,
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
