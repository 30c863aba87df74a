"""What ``optimizer=`` accepts, how text names it, and the rules that refuse optimizers."""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler

import psdist
import psdist.core.optim as flat
import psdist.optim as po
from psdist.core.layout import Entry, FlatSpec, Layout
from psdist.core.server import ServerState
from psdist.errors import ConfigError
from psdist.hep.models import mlp
from psdist.rules import DCASGD, EAMSGD, EASGD, GEM, Downpour, StalenessAware


def sgd_factory(params: Any, lr: float = 0.1) -> torch.optim.Optimizer:
    """A user's own factory, named in YAML as tests.optim...:sgd_factory."""
    return torch.optim.SGD([p for _, p in params], lr=lr)


def adam_factory(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for _, p in params], lr=1e-3)


def bound_info(recipe: Any) -> Any:
    lay = Layout.of({"model": FlatSpec((Entry("w", (4,), "float32", 0, "param"),), 4)})
    return ServerState(lay, np.zeros(4, np.float32), {"model": po.as_optimizer(recipe)}).optimizers["model"].info


@pytest.mark.parametrize("given", [
    torch.optim.AdamW,
    functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01),
    po.TorchOptimizer(torch.optim.AdamW, lr=1e-3),
    {"name": "adamw", "lr": 1e-3},
    {"name": "AdamW", "lr": 1e-3},
])
def test_every_spelling_builds_the_same_class(given: Any) -> None:
    info = bound_info(given)
    assert info.name == "AdamW" and info.groups[0]["fused"] is True  # torch's fused kernel on CPU


def test_factories_and_text_round_trip() -> None:
    recipe = po.TorchOptimizer(functools.partial(torch.optim.SGD, lr=0.1), momentum=0.9,
                               scheduler=functools.partial(lr_scheduler.StepLR, step_size=10), clip_norm=2.0)
    cfg = recipe.to_config()
    assert cfg == {"name": "sgd", "lr": 0.1, "momentum": 0.9, "scheduler": {"name": "steplr", "step_size": 10},
                   "clip_norm": 2.0}
    again = po.optimizer_from_config(json.loads(json.dumps(cfg)))
    assert again.to_config() == cfg and again.resolvable
    own = po.TorchOptimizer(sgd_factory, lr=0.05)
    name = own.to_config()["name"]
    assert name.endswith(":sgd_factory") and po.optimizer_from_config({"name": name, "lr": 0.05}).optimizer is sgd_factory
    local = po.TorchOptimizer(lambda params: torch.optim.SGD([p for _, p in params], lr=0.1))
    assert not local.resolvable and "code" in local.to_config()
    with pytest.raises(ConfigError, match=r"a Python object text cannot rebuild: give optimizer=\.\.\. again"):
        po.optimizer_from_config(local.to_config())
    assert po.optimizer_from_config({"name": "sgd", "lr": 0.1, "schedule": {"name": "cosine", "total": 100}}).scheduler \
        == psdist.optim.Cosine(total=100)


@pytest.mark.parametrize(("given", "message"), [
    ({"name": "sdg"}, "unknown optimizer 'sdg'; choose one of adadelta"),
    (po.SGD, r"psdist.optim.SGD makes a recipe: call it, e.g. optimizer=psdist.optim.SGD\(lr=0.01\)"),
    (torch.optim.LBFGS, "LBFGS re-evaluates the loss inside step()"),
    ("sgd", "optimizer='sgd' is no optimizer"),
])
def test_bad_optimizers_say_what_to_give(given: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        po.as_optimizer(given)


def test_a_built_optimizer_or_a_numpy_one_is_refused_with_the_recipe() -> None:
    built = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=0.003, weight_decay=0.02)
    with pytest.raises(ConfigError, match=r"optimizer=functools.partial\(torch.optim.AdamW, lr=0.003, .*"
                                          r"weight_decay=0.02"):
        po.as_optimizer(built)
    with pytest.raises(ConfigError, match=r"use psdist.optim.SGD\(lr=0.1, \.\.\.\)"):
        po.as_optimizer(flat.SGD(lr=0.1))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lr": 0.0}, "lr=0.0 must be a positive finite number"),
    ({"lr": float("nan")}, "lr=nan must be a positive finite number"),
    ({"lr": 0.1, "momentum": -1.0}, r"torch.optim.SGD\(params, lr=0.1, momentum=-1.0\) refused its arguments"),
    ({"lr": 0.1, "momentun": 0.9}, "torch.optim.SGD takes no argument 'momentun'; its arguments are lr, momentum"),
    ({"lr": 0.1, "clip_norm": 0}, "clip_norm=0 must be a positive number"),
])
def test_bad_values_raise_where_written(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        po.SGD(**kwargs)


@pytest.mark.parametrize(("rule", "recipe", "message"), [
    (GEM(), po.SGD(lr=0.1, momentum=0.9), "GEM applies its updates with plain SGD"),
    (GEM(), po.Adam(lr=1e-3), "GEM applies its updates with plain SGD"),
    (DCASGD(), po.Adam(lr=1e-3), "DCASGD compensates the delay of SGD steps"),
    (EAMSGD(), po.AdamW(lr=1e-3), "EAMSGD runs local Nesterov SGD"),
    (EASGD(), po.SGD(lr=0.1, clip_norm=1.0), "clip_norm=1.0 .* would never apply"),
    (GEM(), adam_factory, "GEM applies its updates with plain SGD"),  # seen into once built
])
def test_rules_refuse_optimizers_they_do_not_hold_for(rule: Any, recipe: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        rule.check(1, None, {"model": bound_info(recipe)})


@pytest.mark.parametrize(("rule", "recipe"), [
    (GEM(), po.SGD(lr=0.1)), (DCASGD(), po.SGD(lr=0.1, momentum=0.9)), (EAMSGD(), po.SGD(lr=0.1)),
    (EASGD(), po.AdamW(lr=1e-3)), (StalenessAware(), po.Adam(lr=1e-3)), (Downpour(), po.Adagrad(lr=0.1)),
])
def test_rules_accept_what_they_hold_for(rule: Any, recipe: Any) -> None:
    rule.check(1, None, {"model": bound_info(recipe)})


def test_a_trainer_refuses_a_factory_the_rule_does_not_hold_for_before_any_cluster(blob_data: Any) -> None:
    """A factory is opaque until built: fit builds it over the model's parameter names and the
    rule refuses it, before a cluster starts (no client is given, none is made)."""
    trainer = psdist.Trainer(mlp, torch.nn.functional.cross_entropy, blob_data,
                             optimizer=adam_factory, rule=GEM())
    with pytest.raises(ConfigError, match="GEM applies its updates with plain SGD"):
        trainer.fit(epochs=1)
    assert trainer.version == 0 and trainer.ps_address is None


def test_the_user_recipe_is_never_changed_by_set_lr(blob_data: Any) -> None:
    recipe = po.SGD(lr=0.1, momentum=0.9)
    trainer = psdist.Trainer(mlp, torch.nn.functional.cross_entropy, blob_data, optimizer=recipe)
    trainer.set_lr(0.01)
    assert recipe.lr == 0.1 and trainer.settings.training.optimizer.lr == 0.01
