"""Issue 13 item 3: one typed definition of the settings (psdist.settings).

The Trainer's flat keywords, the YAML config (flat or in sections), the flags of ``psdist
train``, the checkpoint's ``meta["trainer"]`` and the JSON Schema for editors all come from it.
Every bad input is checked for the message: it names the setting (or the YAML key with its
path), the bad value and what it may be.
"""

from __future__ import annotations

import functools
import inspect
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import psdist
from psdist.cli import build_parser, main
from psdist.config import TrainConfig, load_config, resume_settings
from psdist.errors import ConfigError, ModelError
from psdist.hep.models import mlp
from psdist.settings import (
    AUTO,
    GROUPS,
    Algorithm,
    FaultPolicy,
    Scaling,
    Settings,
    Training,
    json_schema,
    mismatch,
    restored_settings,
    specs,
    stored_values,
    yaml_keys,
)

ROOT = Path(__file__).resolve().parents[2]
CE = torch.nn.functional.cross_entropy
MLP = functools.partial(mlp, inputs=20, hidden=8, classes=4)
BASE = "model: psdist.hep.models:mlp\ndata: d.zarr\n"


def made(**kwargs: object) -> Settings:
    return Settings.from_kwargs(model_fn=MLP, loss_fn=CE, **kwargs)


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ----------------------------------------------------------------------------- flat keywords
def test_groups_hold_the_defaults():
    s = made()
    assert isinstance(s.training, Training) and isinstance(s.algorithm, Algorithm)
    assert isinstance(s.scaling, Scaling) and isinstance(s.faults, FaultPolicy)
    assert (s.training.batch_size, s.training.seed, s.training.metrics, s.training.step) == (128, 0, {}, None)
    assert s.training.optimizer.to_config()["name"] == "sgd" and s.training.optimizer.lr == 0.01
    assert (s.algorithm.rule, s.algorithm.max_staleness, s.algorithm.push_every) == (psdist.rules.Downpour(), "auto", 1)
    assert (s.scaling.workers, s.scaling.threads_per_worker, s.scaling.client, s.scaling.ps_worker,
            s.scaling.dedicated_ps, s.scaling.security, s.scaling.malloc_fix, s.scaling.devices) == (
        None, 1, None, None, None, None, True, "auto")
    assert s.training.precision == "32"
    assert (s.faults.timeout, s.faults.chunk_timeout, s.faults.checkpoints) == (300.0, None, psdist.Checkpoints())
    assert list(GROUPS) == ["training", "algorithm", "scaling", "faults"]


def test_reading_settings_and_configs_loads_neither_torch_nor_dask():
    code = ("import sys, psdist.settings, psdist.config; psdist.settings.json_schema(); "
            "print(sorted({'torch', 'distributed', 'zarr'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_auto_is_the_sessions_auto():
    from psdist.cluster.session import AUTO as SESSION_AUTO

    assert AUTO == SESSION_AUTO


@pytest.mark.parametrize("kwargs, error, message", [
    ({"batch_size": 0}, ConfigError, "batch_size=0 must be an integer >= 1, e.g. batch_size=128"),
    ({"max_staleness": -1}, ConfigError, "max_staleness=-1 must be an integer >= 0, 'auto' (2 x workers + 2, sized "
     "at each fit) or None (no bound), e.g. max_staleness=4"),
    ({"max_staleness": "none"}, ConfigError, "max_staleness='none' must be an integer >= 0, 'auto'"),
    ({"push_every": 1.0}, ConfigError, "push_every=1.0 must be an integer >= 1, e.g. push_every=1"),
    ({"workers": True}, ConfigError, "workers=True must be an integer >= 1 or None (one per GPU of devices=, else 2), e.g. workers=2"),
    ({"threads_per_worker": 0}, ConfigError, "threads_per_worker=0 must be an integer >= 1, e.g. threads_per_worker=1"),
    ({"seed": -1}, ConfigError, "seed=-1 must be an integer >= 0, e.g. seed=0"),
    ({"dedicated_ps": "yes"}, ConfigError,
     "dedicated_ps='yes' must be True, False or None (chosen by the cluster), e.g. dedicated_ps=True"),
    ({"ps_worker": 3}, ConfigError, "ps_worker=3 must be a string or None (chosen), e.g. ps_worker='tcp://"),
    ({"malloc_fix": "yes"}, ConfigError, "malloc_fix='yes' must be True or False, e.g. malloc_fix=True"),
    ({"timeout": -5}, ConfigError, "timeout=-5 must be a positive number of seconds, e.g. timeout=300.0"),
    ({"chunk_timeout": 0}, ConfigError, "chunk_timeout=0 must be a positive number of seconds or None (the larger "
     "of timeout and 20 x the slowest chunk so far), e.g. chunk_timeout=600.0"),
    ({"checkpoints": "run.ckpt"}, ConfigError, "checkpoints='run.ckpt' must be psdist.Checkpoints(...), e.g. "
     "checkpoints=psdist.Checkpoints('run.ckpt', every_versions=500)"),
    ({"optimizer": "sgd"}, ConfigError, "optimizer='sgd' is no optimizer; give a torch.optim class, a factory such as "
     "functools.partial(torch.optim.AdamW, lr=1e-3), or psdist.optim.SGD(lr=0.05, momentum=0.9)"),
    ({"rule": "ssp"}, ConfigError, "rule='ssp' must be an update rule of psdist.rules, or None (Downpour), e.g. "
     "rule=psdist.rules.SSP(bound=2)"),
    ({"metrics": {"auc": 1}}, ConfigError, "metrics={'auc': 1} must be a dict {name: fn(targets, outputs) -> "
     "float}, e.g. metrics={'auc': psdist.metrics.auc}"),
    ({"early_stopping": "val_loss"}, ConfigError, "early_stopping='val_loss' must be a psdist.EarlyStopping or None"),
    ({"step": 3}, ConfigError, "step=3 must be a training step object (callable)"),
    ({"loss_fn": "ce"}, ConfigError, "loss_fn='ce' must be a function loss_fn(output, target) -> scalar tensor, "
     "or None with a custom step, e.g. loss_fn=torch.nn.functional.cross_entropy"),
    ({"loss_fn": None}, ConfigError, "give loss_fn (e.g. torch.nn.functional.cross_entropy) or a custom step"),
    ({"model_fn": None}, ModelError, "model_fn=None must be a function returning an nn.Module, e.g. "
     "model_fn=functools.partial(psdist.hep.models.mlp, inputs=20)"),
    ({"security": "on"}, ConfigError, "security='on' is not understood; give True"),
    # settings that only work together: the rule says which
    ({"rule": psdist.rules.EASGD(period=4), "push_every": 2}, ConfigError,
     "EASGD communicates every period=4 minibatches; give rule=psdist.rules.EASGD(period=2) instead of push_every=2"),
])
def test_bad_keyword_names_setting_value_and_valid_code(kwargs, error, message):
    with pytest.raises(error) as e:
        Settings.from_kwargs(**{"model_fn": MLP, "loss_fn": CE, **kwargs})
    assert str(e.value).startswith(message)


def test_unknown_keyword_names_the_closest_and_all_settings():
    with pytest.raises(ConfigError) as e:
        made(batchsize=64)
    assert str(e.value) == (
        "unknown setting 'batchsize' (did you mean 'batch_size'?); the settings are model_fn, loss_fn, optimizer, "
        "step, metrics, early_stopping, batch_size, seed, precision, rule, max_staleness, push_every, overlap, "
        "workers, devices, threads_per_worker, client, ps_worker, dedicated_ps, ps_shards, security, malloc_fix, data_plane, wire_dtype, timeout, "
        "chunk_timeout, checkpoints")


def test_values_are_normalised_and_optimizers_owned():
    s = made(seed=np.int64(3), timeout=30, max_staleness=np.int32(4))
    assert (type(s.training.seed), type(s.faults.timeout), type(s.algorithm.max_staleness)) == (int, float, int)
    sgd = psdist.optim.SGD(lr=0.1)
    gan = made(optimizer={"generator": sgd, "discriminator": sgd}).training.optimizer
    # recipes, not optimizers: one given for two models is fine (the server builds one optimizer
    # per model, tests/optim), and the settings never change it
    assert gan["generator"] is sgd and gan["discriminator"] is sgd and sgd.lr == 0.1
    # a class or a partial becomes a recipe of it
    made_from = made(optimizer=functools.partial(torch.optim.AdamW, lr=1e-3)).training.optimizer
    assert made_from.cls is torch.optim.AdamW and made_from.lr == 1e-3


def test_flat_view_round_trips_and_pickles():
    s = made(batch_size=64, rule=psdist.rules.SSP(bound=2), max_staleness=None, workers=3)
    flat = s.to_kwargs()
    assert list(flat) == list(specs())
    again = Settings.from_kwargs(**flat)
    assert again.to_checkpoint() == s.to_checkpoint()
    assert s.replace(batch_size=32).training.batch_size == 32 and s.training.batch_size == 64
    back = pickle.loads(pickle.dumps(s))
    assert back.to_checkpoint() == s.to_checkpoint() and back.training.model_fn.keywords == MLP.keywords


def test_flat_names_are_the_trainers_keywords():
    params = inspect.signature(psdist.Trainer.__init__).parameters
    named = {n for n, p in params.items() if n not in ("self", "data") and p.kind is not p.VAR_KEYWORD}
    assert named <= set(specs())
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):  # an explicit list must be the same list
        assert named == set(specs())


# ----------------------------------------------------------------------------- checkpoints
#: meta["trainer"] as Trainer._write wrote it before psdist.settings (and the server's optimizers)
OLD_META = {
    "trainer": {"batch_size": 64, "push_every": 1, "max_staleness": 4, "seed": 3, "rule": {"name": "Downpour"}},
    "server": {"optimizers": {"model": {"config": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}}},
}


def test_to_checkpoint_is_json_and_holds_restored_and_recorded_settings():
    s = made(batch_size=64, rule=psdist.rules.SSP(bound=2), workers=3,
             checkpoints=psdist.Checkpoints("run.ckpt", every_versions=500))
    stored = s.to_checkpoint()
    assert json.loads(json.dumps(stored)) == stored
    assert stored == {
        "batch_size": 64, "seed": 0, "precision": "32", "rule": {"name": "SSP", "bound": 2}, "max_staleness": "auto", "push_every": 1,
        "overlap": None,
        "workers": 3, "devices": "auto", "threads_per_worker": 1, "ps_worker": None, "dedicated_ps": None, "ps_shards": 1,
        "malloc_fix": True,
        "data_plane": "auto", "wire_dtype": "float32",
        "timeout": 300.0, "chunk_timeout": None,
        "checkpoints": {"path": "run.ckpt", "every_versions": 500, "every_seconds": 60.0, "max_restarts": 3,
                        "max_overhead": 0.01},
    }


def test_from_checkpoint_reads_old_checkpoints_and_kwargs_win():
    s = Settings.from_checkpoint(OLD_META, model_fn=MLP, loss_fn=CE)
    assert (s.training.batch_size, s.training.seed, s.algorithm.max_staleness, s.algorithm.rule) == (
        64, 3, 4, psdist.rules.Downpour())
    assert s.training.optimizer.cls is torch.optim.SGD  # the old numpy "sgd" config: torch's SGD
    assert (s.training.optimizer.lr, s.training.optimizer.kwargs["momentum"]) == (0.05, 0.9)
    s = Settings.from_checkpoint(OLD_META, model_fn=MLP, loss_fn=CE, batch_size=32, workers=4)
    assert (s.training.batch_size, s.scaling.workers) == (32, 4)


def test_recorded_settings_are_not_restored():
    assert restored_settings() == ("optimizer", "batch_size", "seed", "rule", "max_staleness", "push_every")
    meta = {**OLD_META, "trainer": made(workers=7, timeout=5.0, max_staleness=None).to_checkpoint()}
    s = Settings.from_checkpoint(meta, model_fn=MLP, loss_fn=CE)
    assert (s.scaling.workers, s.faults.timeout, s.algorithm.max_staleness) == (None, 300.0, None)
    assert stored_values(meta) == {"batch_size": 128, "seed": 0, "rule": {"name": "Downpour"}, "max_staleness": None,
                                   "push_every": 1, "optimizer": {"model": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}}


def test_resume_compares_the_checkpoint_view(tmp_path):
    cfg = load_config(write(tmp_path, BASE + "batch_size: 32\nrule: {name: ssp, bound: 2}\nworkers: 4\n"
                            "optimizer: {name: sgd, lr: 0.05, momentum: 0.9}\n"))
    with pytest.raises(ConfigError) as e:
        resume_settings(cfg, OLD_META)
    # workers is stored for the record only: a resumed run may use other workers
    assert ":\n  batch_size: checkpoint=64 yaml=32\n  rule.name: checkpoint=Downpour yaml=SSP\n--resume" in str(e.value)
    resumed = resume_settings(cfg, OLD_META, override=True)
    assert set(resumed.kwargs) == {"optimizer", "batch_size", "rule"} and resumed.lrs == {None: 0.05}
    assert resumed.kwargs["rule"] == psdist.rules.SSP(bound=2)


# ----------------------------------------------------------------------------- YAML
@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load_unchanged(path):
    cfg = load_config(str(path))
    s = cfg.settings()
    assert s.training.batch_size == yaml.safe_load(path.read_text())["batch_size"]
    assert cfg.data["path"] == str((path.parent / yaml.safe_load(path.read_text())["data"]["path"]).resolve())


def test_sections_and_flat_keys_are_the_same_config(tmp_path):
    flat = load_config(write(tmp_path, BASE + "batch_size: 64\nrule: {name: ssp, bound: 2}\nworkers: 3\n"
                             "checkpoint: run.ckpt\n", "flat.yaml"))
    grouped = load_config(write(tmp_path, "training: {model: psdist.hep.models:mlp, data: d.zarr, batch_size: 64}\n"
                                "algorithm: {rule: {name: ssp, bound: 2}}\nscaling: {workers: 3}\n"
                                "faults: {checkpoint: run.ckpt}\n", "grouped.yaml"))
    assert grouped.values == flat.values and grouped.given == flat.given
    assert grouped.given_settings() == ["model_fn", "batch_size", "rule", "workers", "checkpoints"]
    s = grouped.settings()
    assert (s.training.batch_size, s.algorithm.rule, s.scaling.workers, s.faults.checkpoints.path) == (
        64, psdist.rules.SSP(bound=2), 3, "run.ckpt")


@pytest.mark.parametrize("text, message", [
    (BASE + "epochz: 3\n", "unknown config key 'epochz' (did you mean 'epochs'?); the keys are model, model_args, loss"),
    (BASE + "batch_size: '64'\n", 'batch_size: "64" must be an integer >= 1; e.g. batch_size: 128'),
    (BASE + "max_staleness: none\n", 'max_staleness: "none" must be an integer >= 0, auto (2 x workers + 2, sized '
     "at each fit) or null (no bound); e.g. max_staleness: 4"),
    (BASE + "timeout: 0\n", "timeout: 0 must be a positive number of seconds; e.g. timeout: 300.0"),
    (BASE + "dedicated_ps: yes please\n", 'dedicated_ps: "yes please" must be true, false or null (chosen by the '
     "cluster); e.g. dedicated_ps: true"),
    (BASE + "optimizer: sgd\n", 'optimizer: "sgd" must be a mapping {name: ..., lr: ..., options, scheduler: {name: '
     "..., options}, clip_norm: ...}, or one such mapping per model; e.g. optimizer: {name: adamw, lr: 0.001, "
     "weight_decay: 0.01}"),
    (BASE + "rule: {bound: 2}\n", "rule: needs a 'name' key, e.g. rule: {name: ssp, bound: 2}"),
    (BASE + "early_stopping: {monitr: val_loss}\n", "early_stopping.monitr: unknown key (did you mean 'monitor'?); "
     "early_stopping takes monitor, patience, mode, min_delta, target"),
    ("model: psdist.hep.models:mlp\ndata: {path: d.zarr, val_frac: 0.1}\n", "data.val_frac: unknown key (did you "
     "mean 'val_fraction'?); data takes path, x, y, x_val, y_val, val_fraction, chunk_rows, skip_bad_chunks, "
     "holdout_seed"),
    (BASE + "metrics: {auc: auc}\n", "metrics.auc: \"auc\" must be an import path 'package.module:name'"),
    ("training: {model: psdist.hep.models:mlp, data: d.zarr}\nalgorithm: {push_every: 0}\n",
     "algorithm.push_every: 0 must be an integer >= 1; e.g. push_every: 1"),
    ("training: {model: psdist.hep.models:mlp, data: d.zarr}\nalgorithm: {pushevery: 1}\n",
     "algorithm.pushevery: unknown key (did you mean 'push_every'?); algorithm: takes rule, max_staleness, push_every"),
    ("training: {model: psdist.hep.models:mlp, data: d.zarr}\nscaling: {batch_size: 1}\n",
     "scaling.batch_size: batch_size belongs in training: (or at the top level), not in scaling:"),
    (BASE + "training: {model: psdist.hep.models:cnn}\n", "model is given twice: as model and as training.model"),
    ("data: d.zarr\n", "the config needs a 'model' entry (the model factory: a function returning an nn.Module (or a "
     "dict of them)), e.g. model: psdist.hep.models:jet_cnn"),
])
def test_bad_yaml_names_the_key_and_what_it_may_be(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: {message}")


def test_optimizer_names_resolve_against_torch_optim(tmp_path):
    """A YAML optimizer is any torch.optim class by its lower-case name (or module:function); a
    wrong one fails when the settings are built (before any cluster), listing torch's names."""
    cfg = load_config(write(tmp_path, BASE + "optimizer: {name: adamw, lr: 0.001, weight_decay: 0.01, "
                            "scheduler: {name: cosineannealinglr, T_max: 100}, clip_norm: 1.0}\n"))
    opt = cfg.settings().training.optimizer
    assert (opt.cls, opt.kwargs, opt.clip_norm) == (torch.optim.AdamW, {"lr": 0.001, "weight_decay": 0.01}, 1.0)
    assert opt.scheduler.func is torch.optim.lr_scheduler.CosineAnnealingLR and opt.scheduler.keywords == {"T_max": 100}
    with pytest.raises(ConfigError, match="unknown optimizer 'sdg'; choose one of adadelta, adafactor, adagrad, adam"):
        load_config(write(tmp_path, BASE + "optimizer: {name: sdg}\n", "bad.yaml")).settings()


def test_flags_are_named_in_errors_and_win_over_the_yaml(tmp_path):
    path = write(tmp_path, BASE + "workers: 2\nmax_staleness: 4\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: --workers: 0 must be an integer >= 1 or null (one per GPU of devices=, else 2); e.g. --workers 2")):
        load_config(path, {"workers": 0})
    cfg = load_config(path, {"workers": 3, "max_staleness": None})
    assert (cfg.workers, cfg.max_staleness, "max_staleness" in cfg.given) == (3, None, True)


def test_yaml_builds_the_trainer_keywords(tmp_path):
    cfg = load_config(write(tmp_path, BASE + "optimizer: {generator: {name: adam, lr: 0.001}, critic: {name: sgd, "
                            "lr: 0.1}}\nstep: psdist.hep.gan:CaloGANStep\nstep_args: {latent: 8}\n"
                            "early_stopping: {monitor: val_loss, patience: 2}\nmetrics: {auc: psdist.metrics:auc}\n"
                            "checkpoint_every_versions: 50\nsecurity: false\n"))
    kwargs = cfg.trainer_kwargs()
    assert set(kwargs) == set(specs()) - {"model_fn", "loss_fn"}
    assert {k: v.cls.__name__ for k, v in kwargs["optimizer"].items()} == {"generator": "Adam", "critic": "SGD"}
    assert (kwargs["step"].latent, cfg.loss_fn(), kwargs["early_stopping"].patience) == (8, None, 2)
    assert kwargs["metrics"] == {"auc": psdist.metrics.auc} and kwargs["security"] is None
    assert kwargs["checkpoints"] == psdist.Checkpoints(every_versions=50)


# ----------------------------------------------------------------------------- the one definition
def test_every_setting_and_key_is_documented_and_its_example_valid():
    for name, spec in specs().items():
        assert spec.help and spec.example.startswith(f"{name}="), name
        assert spec.keys or name == "client", name  # every setting but a live client has a YAML form
        assert spec.build is not None or spec.check is None or [k.name for k in spec.keys] in ([], [name]), name
    for keys in yaml_keys().values():
        for key in keys:
            assert key.help and mismatch(key.example, key.schema) is None, key.name
            assert key.required or mismatch(key.default, key.schema) is None, key.name
    # the keys of data: and early_stopping: come from ZarrDataset and EarlyStopping: each has a type
    for name in ("data", "early_stopping"):
        (key,) = [k for keys in yaml_keys().values() for k in keys if k.name == name]
        (mapping,) = [b for b in key.schema["anyOf"] if b.get("type") == "object"]
        assert all(mapping["properties"].values()), name


def test_schema_file_is_up_to_date():
    committed = (ROOT / "docs" / "psdist-config.schema.json").read_text()
    assert committed == json.dumps(json_schema(), indent=2) + "\n", "regenerate: psdist schema > docs/psdist-config.schema.json"


def test_psdist_schema_prints_it(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


def test_editors_and_psdist_agree(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json_schema())
    jsonschema.Draft202012Validator.check_schema(json_schema())
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path.name
    good = "training: {model: psdist.hep.models:mlp, data: d.zarr}\nalgorithm: {max_staleness: null}\n"
    assert validator.is_valid(yaml.safe_load(good)) and load_config(write(tmp_path, good)).max_staleness is None
    for text in ("data: d.zarr\n", BASE + "epochz: 1\n", BASE + "seed: 1.5\n", BASE + "rule: {name: nope}\n",
                 "training: {model: psdist.hep.models:mlp, data: d.zarr}\nfaults: {timeout: -1}\n"):
        assert not validator.is_valid(yaml.safe_load(text)), text
        with pytest.raises(ConfigError):
            load_config(write(tmp_path, text))


def test_flags_come_from_the_schema(capsys):
    flagged = [key for keys in yaml_keys().values() for key in keys if key.flag]
    assert [k.flag.split()[0] for k in flagged] == [
        "--batch-size", "--seed", "--precision", "--epochs", "--max-staleness", "--push-every", "--workers",
        "--devices", "--threads", "--ps-shards",
        "--timeout", "--chunk-timeout", "--save", "--checkpoint-every-versions", "--checkpoint-every-seconds",
        "--max-restarts"]
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = "".join(capsys.readouterr().out.split())  # argparse wraps lines where it likes
    parser = build_parser()
    for key in flagged:
        assert "".join(f"{key.flag} {key.name}: {key.help} (default".split()) in shown, key.name
        flag_text = yaml.safe_dump(key.example, default_flow_style=True).removesuffix("...\n").strip()
        parsed = parser.parse_args(["train", "c.yaml", key.flag.split()[0], flag_text])
        assert getattr(parsed, key.name) == key.example, key.name
    # values as YAML writes them; a file name that looks like a number stays a name
    a = parser.parse_args(["train", "c.yaml", "--max-staleness", "null", "--save", "2024", "--batch-size", "64"])
    assert (a.max_staleness, a.checkpoint, a.batch_size, hasattr(a, "workers")) == (None, "2024", 64, False)


def test_bad_config_from_dict_without_a_file():
    # TrainConfig.from_dict (the notebook's way) names the key without a file
    with pytest.raises(ConfigError, match=r"^push_every: 0 must be an integer >= 1; e.g. push_every: 1$"):
        TrainConfig.from_dict({"model": "psdist.hep.models:mlp", "data": "d.zarr", "push_every": 0})


@pytest.mark.parametrize("rule", [psdist.rules.Sync(), psdist.rules.SSP(), psdist.rules.DCASGD(),
                                  psdist.rules.EASGD(), psdist.rules.GEM()])
def test_overlap_is_refused_for_rules_that_cannot_have_a_push_in_flight(rule):
    with pytest.raises(ConfigError, match=r"overlap=True: psdist\.rules\.\w+\(.*\) cannot have a push in flight.*"
                       r"use overlap=False, or rule=psdist.rules.Downpour\(\)"):
        made(rule=rule, overlap=True)
    assert made(rule=rule, overlap=None).algorithm.overlap is None  # auto: off for these rules


@pytest.mark.parametrize("rule", [psdist.rules.Downpour(), psdist.rules.StalenessAware(), psdist.rules.DynSGD()])
def test_overlap_is_accepted_for_push_and_pull_rules(rule):
    assert made(rule=rule, overlap=True).algorithm.overlap is True


@pytest.mark.parametrize("plane", ["shm", "actor"])
def test_a_narrow_wire_needs_a_tcp_data_plane(plane):
    with pytest.raises(ConfigError, match=f"wire_dtype='bf16' .* data_plane='{plane}' never uses one; use data_plane='tcp'"):
        made(data_plane=plane, wire_dtype="bf16")
    assert made(data_plane="auto", wire_dtype="fp16").scaling.wire_dtype == "fp16"
    with pytest.raises(ConfigError, match="wire_dtype='float16' must be one of"):
        made(wire_dtype="float16")
