"""The settings groups: :class:`Training`, :class:`Algorithm`, :class:`Scaling`, :class:`FaultPolicy`.

Every setting is declared once here, with its type, default, allowed values, help, example,
YAML keys (and how the YAML's values become the Python value) and its place in a checkpoint.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from psdist.core import rules as core_rules
from psdist.core.names import import_object
from psdist.core.rules import Downpour, Rule, rule_from_config
from psdist.core.rules.base import rule_code
from psdist.data.dataset import ZarrDataset
from psdist.errors import ConfigError, ModelError
from psdist.run.recovery import Checkpoints
from psdist.run.stopping import EarlyStopping
from psdist.settings.schema import Schema
from psdist.settings.spec import BAD, UNSET, Key, check_fields, declared, plain

__all__ = ["AUTO", "GROUPS", "JOB_KEYS", "PRECISIONS", "Algorithm", "FaultPolicy", "Scaling", "Training", "import_object"]

#: ``max_staleness="auto"``: 2n + 2 for n training slots, sized at each fit (the same value as
#: :data:`psdist.cluster.session.AUTO`; not imported from there, which would load Dask).
AUTO = "auto"


# ----------------------------------------------------------------------------- object settings
def _build_model(v: Mapping[str, Any]) -> Any:
    fn = import_object(v["model"], "model")
    return functools.partial(fn, **v["model_args"]) if v["model_args"] else fn


def _build_loss(v: Mapping[str, Any]) -> Any:
    if v["step"]:  # a custom step computes its own loss
        return None
    if ":" in v["loss"]:
        return import_object(v["loss"], "loss")
    import torch.nn.functional as F  # only here: reading a config does not load torch

    fn = getattr(F, v["loss"], None)
    if fn is None or not callable(fn):
        raise ConfigError(f"loss={v['loss']!r} is not a torch.nn.functional loss; e.g. cross_entropy, mse_loss")
    return fn


def _build_optimizer(v: Mapping[str, Any]) -> Any:
    """One optimizer (``{name: adamw, ...}``) or one per model (``{generator: {name: adam}, ...}``)."""
    from psdist.optim.resolve import optimizer_from_config  # torch: only when a training is set up

    cfg = v["optimizer"]
    if "name" not in cfg and cfg and all(isinstance(o, dict) for o in cfg.values()):
        return {str(k): optimizer_from_config(o) for k, o in cfg.items()}
    return optimizer_from_config(cfg)


def _build_step(v: Mapping[str, Any]) -> Any:
    if not v["step"]:
        return None
    cls = import_object(v["step"], "step")
    try:
        return cls(**v["step_args"])
    except TypeError as e:
        raise ConfigError(f"bad step_args for {v['step']}: {e}") from None


def _build_early_stopping(v: Mapping[str, Any]) -> EarlyStopping | None:
    return EarlyStopping(**v["early_stopping"]) if v["early_stopping"] else None


def _optimizer(value: Any) -> Any:
    # recipes (psdist.optim.TorchOptimizer), never built optimizers: the server builds one per
    # model, so one recipe given for two models (a GAN) does not make them share state
    from psdist.optim import SGD, as_optimizer

    def one(v: Any) -> Any:
        spec = as_optimizer(v)  # a clear ConfigError for anything else
        spec.check()  # bad values (momentum=-1) raise now, before any cluster
        return spec

    if value is None:
        return SGD(lr=0.01)
    if isinstance(value, Mapping) and value and "name" not in value:
        if not all(isinstance(k, str) for k in value):
            return BAD
        return {k: one(o) for k, o in value.items()}
    return one(value)


def _optimizer_json(value: Any) -> Any:
    return {k: o.to_config() for k, o in value.items()} if isinstance(value, dict) else value.to_config()


def _optimizer_from_server(server: Mapping[str, Any]) -> Any:
    from psdist.optim.resolve import optimizer_from_config

    optims = {n: optimizer_from_config(o["config"]) for n, o in server["optimizers"].items()}
    return optims["model"] if list(optims) == ["model"] else optims


def _metrics(value: Any) -> Any:
    if value is None:
        return {}
    ok = isinstance(value, Mapping) and all(isinstance(k, str) and callable(f) for k, f in value.items())
    return dict(value) if ok else BAD


def _security(value: Any) -> Any:
    if value is True:  # its temporary certificate is made when a cluster starts
        return True
    from psdist.cluster.security import as_security  # loads distributed: only when asked

    return as_security(value)  # PEM files are checked now, before any cluster


def _is(kind: type, default: Callable[[], Any] | None = None) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is None:
            return default() if default is not None else None
        return value if isinstance(value, kind) else BAD
    return check


def _callable_or(none_ok: bool) -> Callable[[Any], Any]:
    return lambda v: v if callable(v) or (none_ok and v is None) else BAD


def _names(module: Any, base: type) -> list[str]:
    """Names a config may give for the public subclasses of ``base``: lower case and the class's."""
    out: list[str] = []
    for attr in module.__all__:
        cls = getattr(module, attr)
        if isinstance(cls, type) and issubclass(cls, base) and cls is not base:
            lower = str(getattr(cls, "name", cls.__name__)).lower()
            out += [lower] if lower == cls.__name__ else [lower, cls.__name__]
    return out


def _name_schema(names: list[str]) -> Schema:
    lower = [n for n in names if n == n.lower()]
    return {"enum": names, "title": "one of " + ", ".join(lower)}


#: a ``package.module:name`` import path
_IMPORT = {"type": "string", "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
           "title": "an import path 'package.module:name'"}
_POSITIVE = {"type": "number", "exclusiveMinimum": 0, "title": "a positive number of seconds"}

#: JSON Schema of a dataclass field's annotation, for the YAML mappings of ZarrDataset and
#: EarlyStopping: their keys come from the classes themselves
_ANNOTATION = {
    "str": {"type": "string"}, "str | os.PathLike[str]": {"type": "string"}, "bool": {"type": "boolean"},
    "int": {"type": "integer"}, "float": {"type": "number"},
    "int | None": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
    "float | None": {"anyOf": [{"type": "number"}, {"type": "null"}]},
    "str | None": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    "str | list[str] | dict[str, str] | None": {"anyOf": [
        {"type": "string", "title": "one array"},
        {"type": "array", "items": {"type": "string"}, "minItems": 1, "title": "arrays passed in this order"},
        {"type": "object", "additionalProperties": {"type": "string"}, "title": "{argument: array}"},
        {"type": "null"}]},
}


def _mapping_of(cls: type, required: tuple[str, ...] = ()) -> Schema:
    props = {f.name: _ANNOTATION.get(str(f.type), {}) for f in fields(cls) if f.init}
    schema: Schema = {"type": "object", "properties": props, "additionalProperties": False}
    return {**schema, "required": list(required)} if required else schema


_CKPT = {f.name: f.default for f in fields(Checkpoints)}


def _build_checkpoints(v: Mapping[str, Any]) -> Checkpoints:
    return Checkpoints(v["checkpoint"], v["checkpoint_every_versions"], v["checkpoint_every_seconds"],
                       v["max_restarts"])


def _or_null(schema: Schema, meaning: str = "") -> Schema:
    return {"anyOf": [schema, {"type": "null", **({"description": meaning} if meaning else {})}]}


#: ``precision=``: Lightning's names (the replica's autocast: psdist.replica.precision)
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
_PRECISION_ALIASES = {"32": "32", "32-true": "32", "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed",
                      "16": "16-mixed", "16-mixed": "16-mixed"}


def _precision(value: Any) -> Any:
    if value is None:
        return "32"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return BAD
    return _PRECISION_ALIASES.get(str(value).strip().lower(), BAD)


def _devices(value: Any) -> Any:
    from psdist.core.devices import parse_devices

    parsed = parse_devices("auto" if value is None else value)
    return BAD if parsed is None else parsed


# ----------------------------------------------------------------------------- the groups
@dataclass(frozen=True)
class Training:
    """What to train: the model, its loss or custom step, the optimizer, metrics, batches, seed.

    Each field's help, allowed values and example: :func:`psdist.settings.specs` (``psdist schema``).
    """

    model_fn: Callable[..., Any] = field(default=UNSET, metadata=declared(
        "picklable function returning a fresh nn.Module (or a dict of named modules), built once per worker",
        "model_fn=functools.partial(psdist.hep.models.mlp, inputs=20)", "a function returning an nn.Module",
        _callable_or(False),
        Key("model", _IMPORT, "the model factory: a function returning an nn.Module (or a dict of them)",
            "psdist.hep.models:jet_cnn", required=True),
        Key("model_args", {"type": "object"}, "keyword arguments for the model factory", {"width": 32}, {}),
        error=ModelError, build=_build_model))
    loss_fn: Callable[..., Any] | None = field(default=None, metadata=declared(
        "loss_fn(output, target) -> scalar tensor, the mean over the batch; not needed with a custom step",
        "loss_fn=torch.nn.functional.cross_entropy",
        "a function loss_fn(output, target) -> scalar tensor, or None with a custom step", _callable_or(True),
        Key("loss", {"type": "string",
                     "title": "a torch.nn.functional name or an import path 'package.module:name'"},
            "the loss: a torch.nn.functional name or 'package.module:function' (ignored with step)",
            "cross_entropy", "cross_entropy"),
        build=_build_loss))
    optimizer: Any = field(default=UNSET, metadata=declared(
        "server optimizer: a torch.optim class, a factory such as functools.partial(torch.optim.AdamW, "
        "lr=1e-3) or f(named_params) -> optimizer, psdist.optim.TorchOptimizer(..., scheduler=, clip_norm=), "
        "or a dict of them per model name; default psdist.optim.SGD(lr=0.01)",
        "optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01)",
        "a torch.optim class or factory, a psdist.optim.TorchOptimizer, or a dict of them per model name",
        _optimizer,
        Key("optimizer", {"type": "object", "properties": {"name": {
                "type": "string", "title": "a torch.optim class (sgd, adam, adamw, rmsprop, adagrad, ...) or "
                "an import path 'package.module:function'"}},
            "title": "a mapping {name: ..., lr: ..., options, scheduler: {name: ..., options}, clip_norm: ...}, "
                     "or one such mapping per model"},
            "the server optimizer, a torch.optim name with its arguments {name: adamw, lr: ..., weight_decay: ...} "
            "plus scheduler: {name: <torch.optim.lr_scheduler class>, ...} and clip_norm:, or one per model "
            "{generator: {name: adam, ...}, ...}",
            {"name": "adamw", "lr": 0.001, "weight_decay": 0.01}, {"name": "sgd", "lr": 0.01}),
        build=_build_optimizer, checkpoint="server", dump=_optimizer_json, load=_optimizer_from_server))
    step: Any = field(default=None, metadata=declared(
        "custom training step: __call__(replica, x, y) -> loss after backward, evaluate(replica, x, y); "
        "default: supervised with loss_fn", "step=psdist.hep.gan.CaloGANStep(latent=32)",
        "a training step object (callable), or None for the supervised step with loss_fn", _callable_or(True),
        Key("step", _or_null(_IMPORT), "a custom training step class 'package.module:Class', built with "
            "step_args (then no loss)", "psdist.hep.gan:CaloGANStep"),
        Key("step_args", {"type": "object"}, "keyword arguments for the step class", {"latent": 32}, {}),
        build=_build_step))
    metrics: dict[str, Callable[..., float]] = field(default=UNSET, metadata=declared(
        "extra validation metrics {name: fn(targets, outputs) -> float}", "metrics={'auc': psdist.metrics.auc}",
        "a dict {name: fn(targets, outputs) -> float}", _metrics,
        Key("metrics", {"type": "object", "additionalProperties": _IMPORT},
            "extra validation metrics {name: 'package.module:function'}", {"auc": "psdist.metrics:auc"}, {}),
        build=lambda v: {str(k): import_object(f, f"metrics.{k}") for k, f in v["metrics"].items()}))
    early_stopping: EarlyStopping | None = field(default=None, metadata=declared(
        "stop when a validation metric stops improving for patience epochs, or reaches target",
        "early_stopping=psdist.EarlyStopping('val_auc', patience=3)", "a psdist.EarlyStopping or None",
        _is(EarlyStopping),
        Key("early_stopping", _or_null(_mapping_of(EarlyStopping)), "stop when a validation metric stops "
            "improving for patience epochs, or reaches target", {"monitor": "val_auc", "patience": 3}),
        build=_build_early_stopping))
    batch_size: int = field(default=128, metadata=plain(
        "rows per minibatch", {"type": "integer", "minimum": 1}, 128,
        flag="--batch-size N", checkpoint="restore"))
    seed: int = field(default=0, metadata=plain(
        "seeds the initial weights, the chunk order and the in-chunk shuffles",
        {"type": "integer", "minimum": 0}, 0,
        flag="--seed N", checkpoint="restore"))

    precision: str = field(default="32", metadata=declared(
        "32 (float32), bf16-mixed (autocast to bfloat16; CPU or GPU) or 16-mixed (autocast to float16 with a "
        "loss scaler per worker; GPU); the server's weights and optimizer state stay float32", 'precision="bf16-mixed"',
        "'32', 'bf16-mixed' or '16-mixed' (Lightning's names; 32, 'bf16' and 16 are read as these)", _precision,
        Key("precision", {"anyOf": [{"enum": list(PRECISIONS)}, {"enum": [32, 16, "bf16", "16", "32-true"]}]},
            "32, bf16-mixed (autocast to bfloat16) or 16-mixed (float16 with a loss scaler)", "bf16-mixed", "32",
            flag="--precision 32|bf16-mixed|16-mixed"),
        checkpoint="record"))

    def __post_init__(self) -> None:
        check_fields(self)
        if self.step is None and self.loss_fn is None:
            raise ConfigError("give loss_fn (e.g. torch.nn.functional.cross_entropy) or a custom step")


@dataclass(frozen=True)
class Algorithm:
    """How updates are made: the update rule and its staleness bound and push period."""

    rule: Rule = field(default=UNSET, metadata=declared(
        "update rule (psdist.rules), default Downpour; options that depend on the workers (EASGD's alpha) "
        "are sized at each fit", "rule=psdist.rules.SSP(bound=2)", "an update rule of psdist.rules, or None "
        "(Downpour)", _is(Rule, Downpour),
        Key("rule", _or_null({"type": "object", "properties": {"name": _name_schema(_names(core_rules, Rule))},
                              "required": ["name"], "title": "a mapping {name: ..., options}"}, "downpour"),
            "the update rule {name: ..., options}", {"name": "ssp", "bound": 2}),
        build=lambda v: rule_from_config(v["rule"]) if v["rule"] else None,
        checkpoint="restore", dump=lambda rule: rule.to_config(), load=rule_from_config))
    max_staleness: int | str | None = field(default=AUTO, metadata=plain(
        "reject pushes computed on weights more than this many versions old",
        {"anyOf": [{"type": "integer", "minimum": 0},
                   {"const": AUTO, "description": "2 x workers + 2, sized at each fit"},
                   {"type": "null", "description": "no bound"}]},
        4, flag="--max-staleness N|auto|null", checkpoint="restore"))
    push_every: int = field(default=1, metadata=plain(
        "minibatches whose gradients a worker accumulates before each push",
        {"type": "integer", "minimum": 1}, 1,
        flag="--push-every N", checkpoint="restore"))
    overlap: bool | None = field(default=None, metadata=plain(
        "keep one push in flight while the next minibatch computes (one more round of staleness, "
        "the round trip hidden); only rules with a plain push and pull (Downpour, StalenessAware, DynSGD)",
        _or_null({"type": "boolean"}, "on for CUDA workers when the rule allows it, off on CPU"), True,
        checkpoint="record"))

    def __post_init__(self) -> None:
        check_fields(self)
        rule = self.rule if isinstance(self.rule, Rule) else None
        if self.overlap and rule is not None and not type(rule).overlaps:
            raise ConfigError(
                f"overlap=True: {rule_code(rule)} cannot have a push in flight while its workers compute "
                "(a barrier, updates paired with what a worker pulled, or local weights); use overlap=False, "
                "or rule=psdist.rules.Downpour() (or StalenessAware, DynSGD) to overlap"
            )


@dataclass(frozen=True)
class Scaling:
    """Where the training runs: the cluster, the parameter server's place, TLS, allocator."""

    workers: int | None = field(default=None, metadata=plain(
        "training workers of the embedded LocalCluster (ignored with a client); with GPUs one per GPU",
        _or_null({"type": "integer", "minimum": 1}, "one per GPU of devices=, else 2"), 2,
        flag="--workers N", checkpoint="record"))
    devices: Any = field(default="auto", metadata=declared(
        "what trains: auto (every GPU torch sees, one worker process each, else CPU), cpu, a number of GPUs, "
        "or the GPU ordinals [0, 2]; the embedded cluster pins each worker to its GPU, a given cluster's "
        "workers keep the GPU they were given (auto or cpu only)", "devices=[0, 2]",
        "'auto', 'cpu', a number of GPUs >= 1, or a list of distinct GPU ordinals", _devices,
        Key("devices", {"anyOf": [{"enum": ["auto", "cpu"]}, {"type": "integer", "minimum": 1},
                                  {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1,
                                   "uniqueItems": True},
                                  {"type": "string", "pattern": "^[0-9]+(,[0-9]+)*$",
                                   "description": "GPU ordinals, comma-separated"}]},
            "what trains: auto (every GPU, else CPU), cpu, a number of GPUs, or GPU ordinals [0, 2]",
            [0, 2], "auto", flag="--devices auto|cpu|N|0,2"),
        checkpoint="record", dump=lambda d: list(d) if isinstance(d, tuple) else d))
    threads_per_worker: int = field(default=1, metadata=plain(
        "threads per worker of the embedded LocalCluster (torch threads)", {"type": "integer", "minimum": 1}, 1,
        flag="--threads N", checkpoint="record"))
    client: Any = field(default=None, metadata=declared(
        "an existing distributed.Client; without it each fit starts and closes a LocalCluster",
        "client=distributed.Client('tcp://scheduler:8786')", "a distributed.Client or None",
        lambda value: value))
    ps_worker: str | None = field(default=None, metadata=plain(
        "name or address of the worker to host the parameter server", _or_null({"type": "string"}, "chosen"),
        "tcp://10.0.0.5:40331", checkpoint="record"))
    dedicated_ps: bool | None = field(default=None, metadata=plain(
        "keep the parameter server's worker free of training; null: the embedded cluster starts one "
        "worker more for it, a given cluster only if it has a psdist-ps worker",
        _or_null({"type": "boolean"}, "chosen by the cluster"), True, checkpoint="record"))
    ps_shards: int = field(default=1, metadata=plain(
        "parameter-server shards: the weights are cut into this many contiguous slices (whole tensors, "
        "balanced by bytes), each served by its own worker; every worker pushes to and pulls from all "
        "of them at once (docs/scaling.md says how many a model and network need); the embedded "
        "cluster starts one worker per shard", {"type": "integer", "minimum": 1}, 2,
        flag="--ps-shards N", checkpoint="record"))
    security: Any = field(default=None, metadata=declared(
        "TLS for the embedded cluster: true (a temporary certificate) or PEM files {ca_file, cert, key}",
        "security=True", "True, a distributed.Security or {'ca_file': ..., 'cert': ..., 'key': ...}", _security,
        Key("", {"anyOf": [{"type": "boolean"}, {"type": "null"}, {
            "type": "object", "properties": {k: {"type": "string"} for k in ("ca_file", "cert", "key")},
            "required": ["ca_file", "cert"], "additionalProperties": False}]},
            "TLS for the embedded cluster: true (a temporary certificate) or PEM files {ca_file, cert, key}",
            {"ca_file": "tls/ca.pem", "cert": "tls/node.pem", "key": "tls/node.key"})))
    malloc_fix: bool = field(default=True, metadata=plain(
        "undo Dask's MALLOC_TRIM_THRESHOLD_ on workers (about 2x faster PyTorch CPU training)",
        {"type": "boolean"}, True, checkpoint="record"))
    data_plane: str = field(default="auto", metadata=plain(
        "how pushes and pulls travel: auto (shared memory on the parameter server's host, TCP "
        "elsewhere, the actor if neither connects, logged), shm, tcp (forced: an error if it "
        "cannot connect) or actor (through the Dask actor, as before the data plane)",
        {"enum": ["auto", "shm", "tcp", "actor"]}, "tcp", checkpoint="record"))
    wire_dtype: str = field(default="float32", metadata=plain(
        "what gradients and pulled weights travel as over the data plane's TCP connections: float32, "
        "or bf16/fp16 (half the bytes between hosts; the server keeps float32 weights and optimizer "
        "state); shared memory on one host always carries float32",
        {"enum": ["float32", "bf16", "fp16"]}, "bf16", checkpoint="record"))

    def __post_init__(self) -> None:
        check_fields(self)
        if self.client is not None:
            self.check_own_cluster()
        if self.ps_shards > 1 and self.data_plane == "actor":
            raise ConfigError(
                f"ps_shards={self.ps_shards} sends each push to every shard over the data plane, "
                "but data_plane='actor' turns it off: use data_plane='auto' (or 'shm', 'tcp'), or ps_shards=1"
            )
        if self.data_plane in ("shm", "actor") and self.wire_dtype != "float32":
            raise ConfigError(
                f"wire_dtype={self.wire_dtype!r} narrows what crosses the data plane's TCP connections, "
                f"but data_plane={self.data_plane!r} never uses one; use data_plane='tcp' (or 'auto', TCP "
                "between hosts), or wire_dtype='float32'"
            )


    def check_own_cluster(self) -> None:
        """Refuse what only the embedded cluster can do, for a cluster of the user's (``client=``,
        ``psdist train --cluster/--scheduler``): choosing its GPUs."""
        if self.devices not in ("auto", "cpu"):
            shown = list(self.devices) if isinstance(self.devices, tuple) else self.devices
            raise ConfigError(
                f"devices={shown!r} chooses the GPUs of the embedded cluster; the workers of a cluster of "
                "yours train on the GPU each was given (pin them with CUDA_VISIBLE_DEVICES, e.g. dask-cuda's "
                "LocalCUDACluster): use devices='auto', or 'cpu' to train on CPU"
            )


@dataclass(frozen=True)
class FaultPolicy:
    """What the training survives: timeouts of the server and of chunks, recovery points."""

    timeout: float = field(default=300.0, metadata=plain(
        "seconds any call to the parameter server may take before it is an error", _POSITIVE, 300.0,
        flag="--timeout S", checkpoint="record"))
    chunk_timeout: float | None = field(default=None, metadata=plain(
        "seconds a chunk task may take before its worker counts as hung and is restarted",
        _or_null(_POSITIVE, "the larger of timeout and 20 x the slowest chunk so far"), 600.0,
        flag="--chunk-timeout S", checkpoint="record"))
    checkpoints: Checkpoints = field(default=UNSET, metadata=declared(
        "recovery points: how often the server's state is saved within an epoch, to which file, how many "
        "lost parameter servers to replace", "checkpoints=psdist.Checkpoints('run.ckpt', every_versions=500)",
        "psdist.Checkpoints(...)", _is(Checkpoints, Checkpoints),
        Key("checkpoint", _or_null({"type": "string"}, "in memory only"), "checkpoint file, written at each "
            "recovery point and at the end", "runs/run.ckpt", _CKPT["path"], flag="--save CKPT"),
        Key("checkpoint_every_versions", _or_null({"type": "integer", "minimum": 1}), "also take a recovery "
            "point every N server updates within an epoch", 500, _CKPT["every_versions"],
            flag="--checkpoint-every-versions N"),
        Key("checkpoint_every_seconds", _or_null({"type": "number", "exclusiveMinimum": 0}), "take a recovery "
            "point every T seconds within an epoch", 60.0, _CKPT["every_seconds"],
            flag="--checkpoint-every-seconds T"),
        Key("max_restarts", {"type": "integer", "minimum": 0}, "lost parameter servers a training may "
            "replace before it gives up", 3, _CKPT["max_restarts"], flag="--max-restarts N"),
        build=_build_checkpoints, checkpoint="record", dump=lambda c: c.to_config()))

    def __post_init__(self) -> None:
        check_fields(self)


#: the groups: Settings' field -> one line (the YAML section's description)
GROUPS: Mapping[str, str] = MappingProxyType({
    "training": "what to train: the model, its loss or step, data, optimizer, metrics, batches, seed",
    "algorithm": "how updates are made: the update rule, its staleness bound and push period",
    "scaling": "where it runs: workers, threads, the parameter server's place, TLS",
    "faults": "what it survives: timeouts and recovery points",
})

#: YAML keys of ``psdist train`` that are no Trainer setting (in the ``training`` section)
JOB_KEYS = (
    Key("data", {"anyOf": [{"type": "string"}, _mapping_of(ZarrDataset, ("path",))]},
        "the Zarr dataset: its path (relative to the config file) or "
        "{path: ..., options of psdist.ZarrDataset}",
        {"path": "../data/jets.zarr", "val_fraction": 0.1}, required=True),
    Key("epochs", {"type": "integer", "minimum": 1}, "epochs to train (with --resume: up to this many in all; "
        "the --epochs flag: this many more)", 5, 1, flag="--epochs N"),
)


