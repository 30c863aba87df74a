"""The torch optimizers' state in checkpoints: arrays and JSON, no pickle; old numpy state migrates."""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler

import psdist.core.optim as flat
import psdist.optim as po
from psdist.core.layout import Entry, FlatSpec, Layout
from psdist.core.protocol import Push
from psdist.core.rules import StalenessAware
from psdist.core.server import ServerState
from psdist.errors import CheckpointError
from psdist.run.checkpoint import read_checkpoint, write_checkpoint

N = 10  # parameters: w (2x3), b (3), frozen f (1); then one buffer


def layout() -> Layout:
    return Layout.of({"model": FlatSpec((
        Entry("w", (2, 3), "float32", 0, "param"),
        Entry("b", (3,), "float32", 6, "param"),
        Entry("f", (1,), "float32", 9, "param", trainable=False),
        Entry("running", (1,), "float32", 10, "buffer"),
    ), N)})


def w0() -> np.ndarray:
    return np.linspace(-1, 1, N + 1).astype(np.float32)


def updates(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        u = rng.standard_normal(N + 1).astype(np.float32)
        u[9] = 0.0  # a worker's gradient of a frozen parameter
        out.append(u)
    return out


def by_name(params: Any) -> torch.optim.Optimizer:
    params = list(params)
    return torch.optim.AdamW([{"params": [p for p in params if p[0] == "w"], "weight_decay": 0.1},
                              {"params": [p for p in params if p[0] != "w"], "weight_decay": 0.0, "lr": 0.02}],
                             lr=0.01)


RECIPES = {
    "sgd-momentum-steplr": po.SGD(lr=0.1, momentum=0.9, scheduler=functools.partial(lr_scheduler.StepLR, step_size=2)),
    "adam-clip": po.Adam(lr=0.01, clip_norm=0.5),
    "adamw-groups-cosine": po.TorchOptimizer(by_name, scheduler=functools.partial(lr_scheduler.CosineAnnealingLR,
                                                                                    T_max=8)),
    "rmsprop-centered": po.RMSprop(lr=0.01, momentum=0.5, centered=True),
    "adagrad": po.Adagrad(lr=0.1),
}


def run(state: ServerState, us: list[np.ndarray]) -> None:
    for u in us:
        assert state.push(Push("w", state.version, u, 4, 0.5), pull=False).applied


@pytest.mark.parametrize("name", list(RECIPES))
def test_checkpoint_resumes_bit_identical_without_pickle(name: str, tmp_path: Any) -> None:
    recipe = RECIPES[name]
    us = updates(8)
    whole = ServerState(layout(), w0(), {"model": recipe})
    run(whole, us)

    first = ServerState(layout(), w0(), {"model": recipe})
    run(first, us[:4])
    scalars, arrays = first.state_dict()
    assert all(a.dtype != object for a in arrays.values())  # plain arrays: np.load(allow_pickle=False) reads them
    assert any(k.startswith("optim/model/") for k in arrays)  # the moments/buffers are stored
    write_checkpoint(str(tmp_path / "c.ckpt"), json.loads(json.dumps({"server": scalars})), arrays)
    meta, back = read_checkpoint(str(tmp_path / "c.ckpt"))
    second = ServerState(layout(), np.zeros(N + 1, np.float32), {"model": recipe})
    second.load_state_dict(meta["server"], back)
    second.validate_state()
    assert second.optimizers["model"].lr() == first.optimizers["model"].lr()  # the schedule's point too
    run(second, us[4:])
    assert second.weights.tobytes() == whole.weights.tobytes()
    assert second.weights[9] == w0()[9]  # frozen: bit-identical throughout


def test_a_fresh_state_differs_so_the_resume_check_can_fail() -> None:
    us = updates(8)
    whole = ServerState(layout(), w0(), {"model": po.Adam(lr=0.01)})
    run(whole, us)
    first = ServerState(layout(), w0(), {"model": po.Adam(lr=0.01)})
    run(first, us[:4])
    restarted = ServerState(layout(), first.weights.copy(), {"model": po.Adam(lr=0.01)})  # weights, no moments
    run(restarted, us[4:])
    assert np.abs(restarted.weights - whole.weights).max() > 1e-4


@pytest.mark.parametrize(("old", "new"), [
    (flat.SGD(lr=0.1, momentum=0.9, weight_decay=0.01), po.SGD(lr=0.1, momentum=0.9, weight_decay=0.01)),
    (flat.Adam(lr=0.01, weight_decay=0.01), po.Adam(lr=0.01, weight_decay=0.01)),
    (flat.RMSprop(lr=0.01), po.RMSprop(lr=0.01)),
    (flat.SGD(lr=0.1, momentum=0.9, schedule=flat.StepDecay(step=3, gamma=0.5)),
     po.SGD(lr=0.1, momentum=0.9, schedule=flat.StepDecay(step=3, gamma=0.5))),
], ids=["sgd", "adam", "rmsprop", "sgd-schedule"])
def test_numpy_optimizer_checkpoints_migrate(old: flat.Optimizer, new: po.TorchOptimizer) -> None:
    """A checkpoint written by psdist's numpy optimizers resumes under the torch one of the same
    kind with its state (momentum, moments, step count, the schedule's point)."""
    us = updates(8, seed=3)
    numpy_run = ServerState(layout(), w0(), {"model": old})
    run(numpy_run, us[:4])
    scalars, arrays = numpy_run.state_dict()
    assert scalars["optimizers"]["model"]["state"].get("format") == "flat"
    migrated = ServerState(layout(), np.zeros(N + 1, np.float32), {"model": new})
    migrated.load_state_dict(json.loads(json.dumps(scalars)), arrays)
    migrated.validate_state()
    run(numpy_run, us[4:])
    run(migrated, us[4:])
    np.testing.assert_allclose(migrated.weights, numpy_run.weights, rtol=1e-6, atol=1e-7)
    fresh = ServerState(layout(), arrays["weights"].copy(), {"model": new})
    run(fresh, us[4:])
    assert np.abs(fresh.weights - numpy_run.weights).max() > 1e-5  # without the state: another run


def test_numpy_state_of_another_kind_fails_with_the_fix() -> None:
    numpy_run = ServerState(layout(), w0(), {"model": flat.Adam(lr=0.01)})
    run(numpy_run, updates(2))
    state = ServerState(layout(), w0(), {"model": po.AdamW(lr=0.01)})
    with pytest.raises(CheckpointError, match=r"numpy 'adam' optimizer, which migrates to torch.optim.Adam only; "
                                              r"this training builds AdamW. Resume with optimizer=psdist.optim.Adam"):
        state.load_state_dict(*numpy_run.state_dict())


def test_torch_state_of_another_class_or_groups_fails() -> None:
    saved = ServerState(layout(), w0(), {"model": po.Adam(lr=0.01)})
    run(saved, updates(2))
    with pytest.raises(CheckpointError, match="is Adam's, this training's is SGD"):
        ServerState(layout(), w0(), {"model": po.SGD(lr=0.1)}).load_state_dict(*saved.state_dict())
    grouped = ServerState(layout(), w0(), {"model": po.TorchOptimizer(by_name)})
    with pytest.raises(CheckpointError, match="parameter groups differ"):
        grouped.load_state_dict(*ServerState(layout(), w0(), {"model": po.AdamW(lr=0.01)}).state_dict())


def test_staleness_scales_every_group_for_one_step_then_restores() -> None:
    rule = StalenessAware()
    state = ServerState(layout(), w0(), {"model": po.TorchOptimizer(by_name)}, rule)
    groups = state.optimizers["model"].torch.param_groups
    before = [g["lr"] for g in groups]
    u = updates(1)[0]
    state.push(Push("a", 0, u, 1, 0.5), pull=False)
    w1 = state.weights.copy()
    state.push(Push("b", 0, u, 1, 0.5), pull=False)  # staleness 1: rates / 2 for this step only
    assert [g["lr"] for g in groups] == before
    twin = ServerState(layout(), w0(), {"model": po.TorchOptimizer(by_name)})
    twin.push(Push("a", 0, u, 1, 0.5), pull=False)
    for g in twin.optimizers["model"].torch.param_groups:
        g["lr"] = g["lr"] * rule.server_side().lr_scale(1)
    twin.push(Push("b", 1, u, 1, 0.5), pull=False)
    assert twin.weights.tobytes() == state.weights.tobytes() and not np.array_equal(w1, state.weights)


def test_set_lr_keeps_group_ratios_and_the_schedule_goes_on() -> None:
    recipe = po.TorchOptimizer(by_name, scheduler=functools.partial(lr_scheduler.StepLR, step_size=2, gamma=0.5))
    state = ServerState(layout(), w0(), {"model": recipe})
    state.set_lr(0.001)
    groups = state.optimizers["model"].torch.param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.001, 0.002])
    assert state.pull("x").lrs == {"model": pytest.approx(0.001)}
    run(state, updates(2))  # StepLR halves after two steps, from the new base
    assert [g["lr"] for g in groups] == pytest.approx([0.0005, 0.001])
    assert state.pull("x").lrs == {"model": pytest.approx(0.001)}  # the base rate, for local optimizers


def test_gan_models_get_one_optimizer_each() -> None:
    lay = Layout.of({"generator": layout().groups[0].spec, "discriminator": layout().groups[0].spec})
    shared = po.Adam(lr=0.01)
    state = ServerState(lay, np.concatenate([w0(), w0()]), {"generator": shared, "discriminator": po.SGD(lr=0.1)})
    u = np.concatenate(updates(2))
    state.push(Push("w", 0, u, 1, 0.5, ("generator",)), pull=False)
    gen, dis = state.optimizers["generator"], state.optimizers["discriminator"]
    assert (type(gen.torch).__name__, type(dis.torch).__name__, gen.steps, dis.steps) == ("Adam", "SGD", 1, 0)
    same = ServerState(lay, np.concatenate([w0(), w0()]), {"generator": shared, "discriminator": shared})
    assert same.optimizers["generator"].torch is not same.optimizers["discriminator"].torch
