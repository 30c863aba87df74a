"""Tests of psdist.optim: numpy server optimizers against torch.optim, schedules, configs."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch

from psdist.core.optim import (
    SGD,
    Adam,
    Constant,
    Cosine,
    Optimizer,
    RMSprop,
    StepDecay,
    Warmup,
    optimizer_from_config,
    schedule_from_config,
)
from psdist.errors import ConfigError

N = 37
STEPS = 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def problem(seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(N).astype(np.float32)
    grads = [rng.standard_normal(N).astype(np.float32) for _ in range(STEPS)]
    return w0, grads


def run_psdist(opt: Optimizer, w0: np.ndarray, grads: list[np.ndarray]) -> np.ndarray:
    w = w0.copy()
    for version, g in enumerate(grads):
        opt.step(w, g, version)
        assert w.dtype == np.float32
    return w


def run_torch(
    make: Callable[[list[torch.Tensor]], torch.optim.Optimizer], w0: np.ndarray, grads: list[np.ndarray]
) -> np.ndarray:
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt = make([p])
    for g in grads:
        p.grad = torch.from_numpy(g.copy())
        opt.step()
    return p.detach().numpy()


CASES = [
    ("sgd", lambda: SGD(lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    (
        "sgd-momentum",
        lambda: SGD(lr=0.1, momentum=0.9),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    ),
    (
        "sgd-momentum-dampening",
        lambda: SGD(lr=0.05, momentum=0.8, dampening=0.3),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, dampening=0.3),
    ),
    (
        "sgd-nesterov",
        lambda: SGD(lr=0.1, momentum=0.9, nesterov=True),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    ),
    (
        "sgd-weight-decay",
        lambda: SGD(lr=0.1, weight_decay=0.01),
        lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.01),
    ),
    (
        "sgd-momentum-weight-decay",
        lambda: SGD(lr=0.1, momentum=0.9, weight_decay=0.05),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.05),
    ),
    ("adam", lambda: Adam(lr=1e-2), lambda ps: torch.optim.Adam(ps, lr=1e-2)),
    (
        "adam-betas-weight-decay",
        lambda: Adam(lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
        lambda ps: torch.optim.Adam(ps, lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    ),
    ("rmsprop", lambda: RMSprop(lr=1e-2), lambda ps: torch.optim.RMSprop(ps, lr=1e-2)),
    (
        "rmsprop-alpha-weight-decay",
        lambda: RMSprop(lr=5e-3, alpha=0.9, eps=1e-6, weight_decay=0.1),
        lambda ps: torch.optim.RMSprop(ps, lr=5e-3, alpha=0.9, eps=1e-6, weight_decay=0.1),
    ),
]


@pytest.mark.parametrize(("name", "ours", "theirs"), CASES, ids=[c[0] for c in CASES])
def test_matches_torch_optim(name: str, ours, theirs) -> None:
    w0, grads = problem()
    got = run_psdist(ours(), w0, grads)
    want = run_torch(theirs, w0, grads)
    assert not np.allclose(want, w0)  # the steps did something
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sgd_momentum_differs_from_plain_sgd() -> None:
    # guards the comparison above: momentum must actually change the trajectory
    w0, grads = problem()
    plain = run_psdist(SGD(lr=0.1), w0, grads)
    mom = run_psdist(SGD(lr=0.1, momentum=0.9), w0, grads)
    assert np.abs(plain - mom).max() > 1e-2


def test_state_dict_resume_matches_uninterrupted_run() -> None:
    w0, grads = problem(1)
    full = run_psdist(Adam(lr=1e-2), w0, grads)

    first = Adam(lr=1e-2)
    w = w0.copy()
    for v, g in enumerate(grads[:2]):
        first.step(w, g, v)
    scalars, arrays = first.state_dict()
    scalars = json.loads(json.dumps(scalars))
    second = Adam(lr=1e-2)
    second.load_state_dict(scalars, {k: a.copy() for k, a in arrays.items()})
    assert second.steps == 2
    for v, g in enumerate(grads[2:], start=2):
        second.step(w, g, v)
    np.testing.assert_array_equal(w, full)


def test_lr_scale_and_schedule_scale_the_step() -> None:
    w0 = np.ones(4, dtype=np.float32)
    g = np.full(4, 2.0, dtype=np.float32)
    opt = SGD(lr=0.5, schedule=StepDecay(step=2, gamma=0.5))
    assert opt.lr_at(0) == 0.5
    assert opt.lr_at(2) == 0.25
    w = w0.copy()
    opt.step(w, g, version=2, lr_scale=0.5)  # lr 0.5 * 0.5 (schedule) * 0.5 (scale) = 0.125
    np.testing.assert_array_equal(w, np.full(4, 0.75, dtype=np.float32))


def test_set_lr() -> None:
    opt = SGD(lr=0.1)
    opt.set_lr(0.3)
    assert opt.lr == 0.3
    with pytest.raises(ConfigError, match="lr=0"):
        opt.set_lr(0)
    assert opt.lr == 0.3


# ----------------------------------------------------------------------------- schedules
def test_step_decay_factors() -> None:
    s = StepDecay(step=10, gamma=0.5)
    assert [s.factor(v) for v in (0, 9, 10, 19, 20, 35)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]


def test_cosine_factors() -> None:
    s = Cosine(total=100, floor=0.1)
    assert s.factor(0) == pytest.approx(1.0)
    assert s.factor(50) == pytest.approx(0.55)  # 0.1 + 0.9 * 0.5 * (1 + cos(pi/2))
    assert s.factor(25) == pytest.approx(0.1 + 0.45 * (1 + math.sqrt(0.5)))
    assert s.factor(100) == pytest.approx(0.1)
    assert s.factor(1000) == pytest.approx(0.1)
    assert Cosine(total=4).factor(2) == pytest.approx(0.5)


def test_warmup_factors() -> None:
    s = Warmup(steps=4)
    assert [s.factor(v) for v in (0, 1, 2, 3, 4, 100)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    chained = Warmup(steps=4, after=StepDecay(step=10, gamma=0.1))
    assert chained.factor(1) == pytest.approx(0.5)
    assert chained.factor(13) == pytest.approx(1.0)  # after.factor(9)
    assert chained.factor(14) == pytest.approx(0.1)  # after.factor(10)
    assert chained.factor(24) == pytest.approx(0.01)


def test_constant_factor() -> None:
    assert Constant().factor(12345) == 1.0


@pytest.mark.parametrize(
    "sched",
    [Constant(), StepDecay(step=7, gamma=0.3), Cosine(total=50, floor=0.2), Warmup(steps=3, after=Cosine(total=9))],
    ids=lambda s: s.name,
)
def test_schedule_config_round_trip(sched) -> None:
    cfg = json.loads(json.dumps(sched.to_config()))
    back = schedule_from_config(cfg)
    assert back == sched
    assert [back.factor(v) for v in range(30)] == [sched.factor(v) for v in range(30)]


def test_schedule_bad_input() -> None:
    with pytest.raises(ConfigError, match="'exponential'"):
        schedule_from_config({"name": "exponential"})
    with pytest.raises(ConfigError, match="step=0"):
        StepDecay(step=0)
    with pytest.raises(ConfigError, match=r"gamma=-0\.5"):
        StepDecay(gamma=-0.5)
    with pytest.raises(ConfigError, match="total=0"):
        Cosine(total=0)
    with pytest.raises(ConfigError, match="steps=-1"):
        Warmup(steps=-1)
    assert isinstance(schedule_from_config(None), Constant)


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "opt",
    [
        SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4, schedule=StepDecay(step=5, gamma=0.5)),
        SGD(lr=0.05, momentum=0.5, dampening=0.1),
        Adam(lr=2e-3, betas=(0.8, 0.95), eps=1e-7, schedule=Warmup(steps=10, after=Cosine(total=100))),
        RMSprop(lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=0.01),
    ],
    ids=["sgd", "sgd-dampening", "adam", "rmsprop"],
)
def test_optimizer_config_round_trip(opt: Optimizer) -> None:
    cfg = opt.to_config()
    back = optimizer_from_config(json.loads(json.dumps(cfg)))  # survives YAML/JSON too
    assert type(back) is type(opt)
    assert back.to_config() == cfg
    assert back.schedule == opt.schedule
    w0, grads = problem(2)
    np.testing.assert_array_equal(run_psdist(back, w0, grads), run_psdist(opt, w0, grads))


def test_optimizer_from_config_name_is_case_insensitive() -> None:
    opt = optimizer_from_config({"name": "SGD", "lr": 0.1, "momentum": 0.9})
    assert isinstance(opt, SGD)
    assert opt.momentum == 0.9


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: SGD(lr=0), "lr=0"),
        (lambda: SGD(lr=-1), "lr=-1"),
        (lambda: SGD(lr=float("nan")), "lr=nan"),
        (lambda: SGD(lr=float("inf")), "lr=inf"),
        (lambda: Adam(lr=0), "lr=0"),
        (lambda: RMSprop(lr=-1), "lr=-1"),
        (lambda: SGD(lr=0.1, momentum=1.5), "momentum=1.5"),
        (lambda: SGD(lr=0.1, momentum=-0.1), "momentum=-0.1"),
        (lambda: SGD(lr=0.1, weight_decay=-1), "weight_decay=-1"),
        (lambda: Adam(betas=(1.2, 0.999)), "betas[0]=1.2"),
        (lambda: RMSprop(alpha=1.0), "alpha=1.0"),
        (lambda: Adam(eps=0), "eps=0"),
        (lambda: optimizer_from_config({"name": "lbfgs", "lr": 0.1}), "'lbfgs'"),
        (lambda: optimizer_from_config({"lr": 0.1}), "unknown optimizer"),
        (lambda: optimizer_from_config({"name": "sgd", "lr": 0.1, "beta": 3}), "beta"),
        (lambda: optimizer_from_config({"name": "sgd", "lr": -2.0}), "lr=-2.0"),
        (lambda: SGD(lr=0.1, nesterov=True), "nesterov"),
    ],
)
def test_bad_config_raises_config_error(make, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)) as info:
        make()
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SGD(lr=0.1, momentum=0.9, weight_decay=0.1),
        lambda: SGD(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.1),
        lambda: SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
        lambda: Adam(lr=0.01, weight_decay=0.1),
        lambda: RMSprop(lr=0.01, weight_decay=0.1),
    ],
    ids=["momentum", "dampening", "nesterov", "adam", "rmsprop"],
)
def test_frozen_ranges_stay_bit_identical_and_the_rest_steps_as_alone(make: Callable[[], Optimizer]) -> None:
    """Frozen ranges: no decay, no momentum, no state; the other values step exactly as the
    same optimizer on the trainable values alone (elementwise formulas, one step count)."""
    w0, grads = problem(3)
    frozen = (slice(0, 5), slice(20, 21), slice(30, N))
    keep = np.ones(N, bool)
    for s in frozen:
        keep[s] = False
    with_frozen, alone = make(), make()
    w, w_alone = w0.copy(), w0[keep].copy()
    for v, g in enumerate(grads):
        with_frozen.step(w, g, v, frozen=frozen)
        alone.step(w_alone, g[keep], v)
    assert w[~keep].tobytes() == w0[~keep].tobytes()
    assert w[keep].tobytes() == w_alone.tobytes()
    for key, buf in with_frozen.state.items():  # one full-length buffer each, zero where frozen
        assert buf.shape == (N,) and not buf[~keep].any(), key
        assert buf[keep].tobytes() == alone.state[key].tobytes(), key
