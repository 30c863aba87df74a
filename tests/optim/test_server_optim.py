"""The server runs real torch.optim optimizers: equal to a single-process torch loop, step by step.

psdist with one worker (a Replica pushing every minibatch to a ServerState) against plain
``torch.optim`` on a copy of the same model, same batches: SGD (momentum, Nesterov, weight
decay), Adam, AdamW, RMSprop, Adagrad, with and without a scheduler, with parameter groups and
with clipping. The model has a frozen layer and a BatchNorm.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler

import psdist.optim as po
from psdist.core.layout import Layout
from psdist.core.protocol import Push
from psdist.core.rules import Downpour
from psdist.core.server import ServerState
from psdist.replica.binding import flatten, spec_of
from psdist.replica.replica import Replica
from psdist.replica.steps import SupervisedStep

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 12
FROZEN = "embed.weight"


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(6, 16)
        self.embed.weight.requires_grad_(False)  # a frozen layer (its bias trains)
        self.norm = torch.nn.BatchNorm1d(16)
        self.hidden = torch.nn.Linear(16, 16)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tanh before the norm: a bias right before a BatchNorm has a gradient of pure rounding
        # noise, which Adam and Adagrad would blow up to full steps on either side
        return self.head(torch.tanh(self.hidden(self.norm(torch.tanh(self.embed(x))))))


def net() -> Net:
    torch.manual_seed(0)
    return Net()


def batches(n: int = STEPS, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 6, generator=g), torch.randint(0, 3, (size,), generator=g)) for _ in range(n)]


def by_name_groups(params: Any) -> torch.optim.Optimizer:
    """Parameter groups by the model's own names: no decay for biases and norms, a faster head."""
    params = list(params)
    head = [(n, p) for n, p in params if n.startswith("head.")]
    rest = [(n, p) for n, p in params if not n.startswith("head.")]
    groups = [*po.decay_groups(rest, weight_decay=0.05), {"params": head, "lr": 0.02, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=0.005)


# (id, psdist recipe, the same in plain torch: (named trainable params) -> (optimizer, scheduler), clip)
Plain = Callable[[list[tuple[str, torch.nn.Parameter]]], tuple[torch.optim.Optimizer, Any]]


def plain(make: Callable[..., torch.optim.Optimizer], sched: Callable[..., Any] | None = None, **kw: Any) -> Plain:
    def build(named: list[tuple[str, torch.nn.Parameter]]) -> tuple[torch.optim.Optimizer, Any]:
        opt = make([p for _, p in named], **kw)  # the user's habit: model.parameters(), torch's defaults
        return opt, None if sched is None else sched(opt)
    return build


STEP_LR = functools.partial(lr_scheduler.StepLR, step_size=4, gamma=0.5)
COSINE = functools.partial(lr_scheduler.CosineAnnealingLR, T_max=STEPS)
CASES: list[tuple[str, po.TorchOptimizer, Plain, float | None]] = [
    ("sgd-nesterov-decay", po.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
     plain(torch.optim.SGD, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3), None),
    ("sgd-momentum-steplr", po.SGD(lr=0.05, momentum=0.9, scheduler=STEP_LR),
     plain(torch.optim.SGD, STEP_LR, lr=0.05, momentum=0.9), None),
    ("adam", po.Adam(lr=0.01), plain(torch.optim.Adam, lr=0.01), None),
    ("adam-cosine", po.Adam(lr=0.01, scheduler=COSINE), plain(torch.optim.Adam, COSINE, lr=0.01), None),
    ("adamw", po.AdamW(lr=0.01, weight_decay=0.1), plain(torch.optim.AdamW, lr=0.01, weight_decay=0.1), None),
    ("rmsprop-centered", po.RMSprop(lr=0.005, momentum=0.5, centered=True),
     plain(torch.optim.RMSprop, lr=0.005, momentum=0.5, centered=True), None),
    ("adagrad-exponential", po.Adagrad(lr=0.05, scheduler=functools.partial(lr_scheduler.ExponentialLR, gamma=0.9)),
     plain(torch.optim.Adagrad, functools.partial(lr_scheduler.ExponentialLR, gamma=0.9), lr=0.05), None),
    ("param-groups-linearlr", po.TorchOptimizer(by_name_groups, scheduler=functools.partial(
        lr_scheduler.LinearLR, start_factor=0.5, total_iters=6)),
     lambda named: (lambda o: (o, lr_scheduler.LinearLR(o, start_factor=0.5, total_iters=6)))(by_name_groups(named)),
     None),
    ("sgd-clip", po.SGD(lr=0.1, momentum=0.9, clip_norm=0.05), plain(torch.optim.SGD, lr=0.1, momentum=0.9), 0.05),
]


def psdist_trajectory(recipe: po.TorchOptimizer) -> tuple[list[dict[str, torch.Tensor]], ServerState]:
    """One worker, a push per minibatch; the server's model after every push."""
    model = net()
    layout = Layout.of({"model": spec_of(model)})
    state = ServerState(layout, flatten(model, layout.groups[0].spec).copy(), {"model": recipe}, Downpour())
    replica = Replica("w", {"model": net()})
    worker = Downpour().worker_side({"model": recipe})
    worker.begin(replica, state.pull("w"))
    step = SupervisedStep(torch.nn.functional.cross_entropy)
    out = []
    replica.train(True)
    for x, y in batches():
        loss = step(replica, x, y)
        worker.communicate(replica, state, 1, len(x), float(loss))
        out.append({k: v.clone() for k, v in replica.models["model"].state_dict().items()})
    return out, state


def torch_trajectory(make: Plain, clip: float | None) -> list[dict[str, torch.Tensor]]:
    model = net()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt, sched = make(named)
    out = []
    model.train()
    for x, y in batches():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([p for _, p in named], clip)
        opt.step()
        if sched is not None:
            sched.step()
        out.append({k: v.clone() for k, v in model.state_dict().items()})
    return out


@pytest.mark.parametrize(("name", "recipe", "make", "clip"), CASES, ids=[c[0] for c in CASES])
def test_one_worker_equals_torch_optim_step_by_step(name: str, recipe: po.TorchOptimizer, make: Plain,
                                                    clip: float | None) -> None:
    ours, state = psdist_trajectory(recipe)
    theirs = torch_trajectory(make, clip)
    start = net().state_dict()
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for key in b:
            torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7, msg=f"step {step}: {key}")
        assert torch.equal(a[FROZEN], start[FROZEN])  # the frozen layer: bit-identical
    assert not torch.allclose(ours[-1]["head.weight"], start["head.weight"])  # it trained
    bound = state.optimizers["model"]
    handed = [p for g in bound.torch.param_groups for p in g["params"]]
    assert len(handed) == 7  # every parameter but the frozen one
    state.validate_state()  # the optimizer's parameters still view the server's weight vector


def test_the_scheduler_and_clipping_really_acted() -> None:
    """Guards the comparison above: without the scheduler or the clip the trajectory differs."""
    with_sched = psdist_trajectory(po.SGD(lr=0.05, momentum=0.9, scheduler=STEP_LR))[0][-1]["head.weight"]
    without = psdist_trajectory(po.SGD(lr=0.05, momentum=0.9))[0][-1]["head.weight"]
    clipped = psdist_trajectory(po.SGD(lr=0.05, momentum=0.9, clip_norm=0.05))[0][-1]["head.weight"]
    assert (with_sched - without).abs().max() > 1e-3
    assert (clipped - without).abs().max() > 1e-3


def test_server_uses_fused_kernels_where_torch_has_them() -> None:
    for recipe, flag in [(po.SGD(lr=0.1, momentum=0.9), "fused"), (po.Adam(lr=0.1), "fused"),
                         (po.AdamW(lr=0.1), "fused"), (po.Adagrad(lr=0.1), "fused"), (po.RMSprop(lr=0.1), "foreach")]:
        groups = psdist_trajectory(recipe)[1].optimizers["model"].torch.param_groups
        assert all(g[flag] for g in groups), (recipe, flag)
    chosen = psdist_trajectory(po.Adam(lr=0.1, foreach=False))[1].optimizers["model"].torch.param_groups
    assert not chosen[0]["foreach"] and not chosen[0]["fused"]  # the user's choice stays


def test_the_update_array_is_never_written() -> None:
    """Clipping scales a scratch copy; a read-only pushed array (from the wire) is accepted."""
    model = net()
    layout = Layout.of({"model": spec_of(model)})
    state = ServerState(layout, flatten(model, layout.groups[0].spec).copy(),
                        {"model": po.SGD(lr=0.1, clip_norm=1e-3)})
    update = np.random.default_rng(0).standard_normal(layout.size).astype(np.float32)
    update[layout.groups[0].buffers] = 0
    keep = update.copy()
    update.flags.writeable = False
    before = state.weights.copy()
    assert state.push(Push("w", 0, update, 4, 0.5), pull=False).applied
    assert update.tobytes() == keep.tobytes()
    moved = state.weights - before
    assert np.linalg.norm(moved) == pytest.approx(0.1 * 1e-3, rel=1e-3)  # lr * clip_norm
