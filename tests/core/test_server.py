"""Tests of psdist.core.server.ServerState: admission, staleness, snapshots, buffers, checkpoints."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from psdist.core.layout import Entry, FlatSpec, Layout
from psdist.core.optim import SGD, Optimizer
from psdist.core.protocol import NONFINITE, STALE, Push, Rejection, RejectKind
from psdist.core.server import ServerState
from psdist.errors import ConfigError, ServerError
from psdist.run.checkpoint import read_checkpoint, write_checkpoint

N_PARAMS = 4
N_BUFFERS = 2


def spec(n_params: int = N_PARAMS, n_buffers: int = N_BUFFERS) -> FlatSpec:
    entries = [Entry("w", (n_params,), "float32", 0, "param")]
    if n_buffers:
        entries.append(Entry("running", (n_buffers,), "float32", n_params, "buffer"))
    return FlatSpec(tuple(entries), n_params)


W0 = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 20.0], dtype=np.float32)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def make_state(
    lr: float = 0.1,
    max_staleness: int | None = None,
    opt: Optimizer | None = None,
    weights: np.ndarray | None = None,
) -> ServerState:
    layout = Layout.of({"model": spec()})
    w = (W0 if weights is None else weights).copy()
    return ServerState(
        layout,
        w,
        {"model": opt if opt is not None else SGD(lr=lr)},
        max_staleness=max_staleness,
        clock=FakeClock(),
    )


def grad(seed: int, buffers: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = np.zeros(N_PARAMS + N_BUFFERS, dtype=np.float32)
    u[:N_PARAMS] = rng.standard_normal(N_PARAMS).astype(np.float32)
    u[N_PARAMS:] = buffers
    return u


def push(state: ServerState, worker: str, update: np.ndarray, base: int | None = None, **kw):
    base = state.version if base is None else base
    return state.push(Push(worker, base, update, samples=kw.pop("samples", 8), loss=kw.pop("loss", 0.5), **kw))


# ----------------------------------------------------------------------------- applying
def test_fresh_push_applies_sgd_step_exactly() -> None:
    state = make_state(lr=0.1)
    g = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 0.0], dtype=np.float32)
    reply = push(state, "a", g, base=0)
    assert reply.applied and reply.reason is None
    assert reply.staleness == 0
    assert reply.version == 1
    expected = np.array(
        [1.0 - 0.1 * 1.0, 2.0 + 0.1 * 2.0, 3.0 - 0.1 * 0.5, 4.0, 10.0, 20.0], dtype=np.float32
    )
    np.testing.assert_array_equal(state.weights, expected)
    # bit-exact against the float32 formula w - float32(lr) * g
    exact = W0.copy()
    exact[:N_PARAMS] -= np.float32(0.1) * g[:N_PARAMS]
    assert state.weights.tobytes() == exact.tobytes()
    # the reply carries the new weights
    assert reply.pull is not None and reply.pull.version == 1
    np.testing.assert_array_equal(reply.pull.weights, state.weights)


@pytest.mark.parametrize(
    "opt",
    [SGD(lr=0.1, momentum=0.9, weight_decay=0.1), SGD(lr=0.1, momentum=0.9, nesterov=True)],
    ids=["momentum-decay", "nesterov"],
)
def test_push_update_array_is_not_modified(opt: Optimizer) -> None:
    state = make_state(opt=opt)
    for i in range(3):
        g = grad(i, buffers=(1.0, 2.0))
        keep = g.copy()
        push(state, "a", g)
        assert g.tobytes() == keep.tobytes()


def test_version_counts_applied_pushes_and_counters() -> None:
    state = make_state()
    for i in range(5):
        push(state, f"w{i % 2}", grad(i), samples=10 + i, loss=float(i))
    assert state.version == 5
    assert state.applied == 5
    assert state.rejected == {}
    assert state.samples_applied == sum(10 + i for i in range(5))
    assert state.loss_sum == pytest.approx(sum(i * (10 + i) for i in range(5)))
    assert state.staleness_hist == [5]
    assert state.workers["w0"].applied == 3
    assert state.workers["w1"].applied == 2
    assert state.workers["w1"].last_loss == 3.0
    m = state.metrics()
    assert m["version"] == 5 and m["applied"] == 5
    json.dumps(m)  # JSON-safe


def test_staleness_is_recorded_in_histogram() -> None:
    state = make_state()
    push(state, "a", grad(0), base=0)  # tau 0 -> v1
    push(state, "b", grad(1), base=0)  # tau 1 -> v2
    push(state, "c", grad(2), base=0)  # tau 2 -> v3
    r = push(state, "d", grad(3), base=1)  # tau 2 -> v4
    assert r.staleness == 2
    assert state.staleness_hist == [1, 1, 2]
    m = state.metrics()
    assert m["staleness_max"] == 2
    assert m["staleness_mean"] == pytest.approx((0 + 1 + 2 + 2) / 4)


def test_stale_push_rejected_beyond_bound() -> None:
    state = make_state(max_staleness=2)
    a_pull = state.pull("A")
    assert a_pull.version == 0
    for i in range(3):
        b = state.pull("B")
        r = push(state, "B", grad(10 + i), base=b.version)
        assert r.applied and r.staleness == 0
    assert state.version == 3
    before = state.weights.copy()
    reply = push(state, "A", grad(99), base=a_pull.version, samples=32)
    assert not reply.applied
    assert reply.staleness == 3
    assert reply.kind is RejectKind.STALE
    assert reply.reason == "stale: staleness 3 > max_staleness 2; pull and recompute"
    assert state.rejected == {"stale": 1}
    assert state.samples_rejected == 32
    assert state.version == 3
    assert state.applied == 3
    assert state.weights.tobytes() == before.tobytes()
    assert state.staleness_hist == [3, 0, 0, 1]
    assert state.workers["A"].rejected == 1 and state.workers["A"].applied == 0
    # the rejected worker gets the current weights to recompute from
    assert reply.pull is not None and reply.pull.version == 3
    np.testing.assert_array_equal(reply.pull.weights, state.weights)


def test_push_exactly_at_staleness_bound_is_admitted() -> None:
    state = make_state(max_staleness=2)
    a_pull = state.pull("A")
    push(state, "B", grad(1))
    push(state, "B", grad(2))
    before = state.weights.copy()
    g = grad(3)
    reply = push(state, "A", g, base=a_pull.version)
    assert reply.applied
    assert reply.staleness == 2
    assert state.version == 3
    assert state.rejected == {}
    expected = before.copy()
    expected[:N_PARAMS] -= np.float32(0.1) * g[:N_PARAMS]
    np.testing.assert_array_equal(state.weights, expected)


def test_max_staleness_zero_admits_only_fresh() -> None:
    state = make_state(max_staleness=0)
    assert push(state, "a", grad(0), base=0).applied
    r = push(state, "b", grad(1), base=0)
    assert not r.applied and r.kind is STALE


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_push_rejected_and_weights_untouched(bad: float) -> None:
    state = make_state()
    push(state, "a", grad(0))
    before = state.weights.copy()
    g = grad(1)
    g[2] = bad
    reply = push(state, "a", g, samples=5)
    assert not reply.applied
    assert reply.rejection == Rejection(
        NONFINITE, "the update or loss holds NaN/Inf; lower the learning rate or check the data")
    assert state.rejected == {"nonfinite": 1}
    assert state.samples_rejected == 5
    assert state.version == 1 and state.applied == 1
    assert state.weights.tobytes() == before.tobytes()


def test_nonfinite_buffer_part_or_loss_rejected() -> None:
    state = make_state()
    before = state.weights.copy()
    g = grad(1, buffers=(np.nan, 0.0))
    assert push(state, "a", g).kind is NONFINITE
    assert push(state, "a", grad(2), loss=float("nan")).kind is NONFINITE
    assert state.rejected == {"nonfinite": 2}
    assert state.weights.tobytes() == before.tobytes()


def test_rejection_kinds_are_stable_keys_in_metrics_and_per_worker() -> None:
    state = make_state(max_staleness=0)
    m = state.metrics()
    assert m["nonfinite"] == 0 and m["rejected"] == {}  # there before the first NaN
    push(state, "a", grad(0))
    bad = grad(1)
    bad[0] = np.nan
    r1 = push(state, "a", bad)
    r2 = push(state, "b", grad(2), base=0)  # stale
    r3 = push(state, "b", grad(3), loss=float("inf"))
    assert [r.kind for r in (r1, r2, r3)] == [NONFINITE, STALE, NONFINITE]
    m = state.metrics()
    assert m["rejected"] == {"nonfinite": 2, "stale": 1} and m["nonfinite"] == 2
    # plain strings, not enum members: what JSON, msgpack and checkpoints hold
    assert [type(k) for k in m["rejected"]] == [str, str]
    assert (m["workers"]["a"]["nonfinite"], m["workers"]["b"]["nonfinite"]) == (1, 1)
    assert (m["workers"]["a"]["rejected"], m["workers"]["b"]["rejected"]) == (1, 2)
    json.dumps(m)


def test_wrong_size_push_raises_server_error() -> None:
    state = make_state()
    with pytest.raises(ServerError, match="5") as info:
        push(state, "a", np.zeros(5, dtype=np.float32))
    assert "6" in str(info.value)
    assert state.version == 0 and state.applied == 0
    with pytest.raises(ServerError, match="list"):
        push(state, "a", [0.0] * 6)


def test_push_from_the_future_raises() -> None:
    state = make_state()
    with pytest.raises(ServerError, match="base version 3"):
        push(state, "a", grad(0), base=3)


def test_push_naming_unknown_group_raises() -> None:
    state = make_state()
    with pytest.raises(ServerError, match="critic"):
        push(state, "a", grad(0), groups=("critic",))


# ----------------------------------------------------------------------------- pulls
def test_pull_when_current_returns_no_weights() -> None:
    state = make_state()
    push(state, "a", grad(0))
    p = state.pull("a", have_version=state.version)
    assert p.version == 1
    assert p.weights is None
    assert p.lr == pytest.approx(0.1)


def test_pull_returns_read_only_snapshot_unchanged_by_later_pushes() -> None:
    state = make_state()
    p = state.pull("a", have_version=-1)
    assert p.version == 0
    assert p.weights is not None
    snap = p.weights.copy()
    assert not p.weights.flags.writeable
    with pytest.raises(ValueError):
        p.weights[0] = 123.0
    np.testing.assert_array_equal(p.weights, W0)
    push(state, "b", grad(1))
    push(state, "b", grad(2, buffers=(1.0, 1.0)))
    assert not np.array_equal(state.weights, snap)
    assert p.weights.tobytes() == snap.tobytes()
    p2 = state.pull("a", have_version=0)
    assert p2.version == 2
    np.testing.assert_array_equal(p2.weights, state.weights)
    assert p2.weights is not state.weights


def test_push_without_pull_has_no_reply_weights() -> None:
    state = make_state()
    r = state.push(Push("a", 0, grad(0), 4, 0.1), pull=False)
    assert r.applied and r.pull is None


# ----------------------------------------------------------------------------- buffers, lr
def test_buffer_part_is_added_not_through_optimizer() -> None:
    state = make_state(lr=0.1)
    g = grad(0, buffers=(0.5, -2.0))
    push(state, "a", g)
    np.testing.assert_array_equal(state.weights[N_PARAMS:], np.array([10.5, 18.0], dtype=np.float32))
    expected = W0[:N_PARAMS] - np.float32(0.1) * g[:N_PARAMS]
    np.testing.assert_array_equal(state.weights[:N_PARAMS], expected)


def test_buffer_part_added_with_momentum_optimizer() -> None:
    state = make_state(opt=SGD(lr=0.1, momentum=0.9))
    push(state, "a", grad(0, buffers=(1.0, 1.0)))
    push(state, "a", grad(1, buffers=(1.0, 1.0)))
    np.testing.assert_array_equal(state.weights[N_PARAMS:], np.array([12.0, 22.0], dtype=np.float32))
    # the optimizer's state only covers the parameter section
    assert state.optimizers["model"].optimizer.state["momentum"].shape == (N_PARAMS,)


def test_set_lr_changes_the_rate_used() -> None:
    state = make_state(lr=0.1)
    state.set_lr(0.5)
    assert state.lr == 0.5
    assert state.pull("a").lr == 0.5
    g = grad(3)
    push(state, "a", g)
    expected = W0[:N_PARAMS] - np.float32(0.5) * g[:N_PARAMS]
    np.testing.assert_array_equal(state.weights[:N_PARAMS], expected)
    with pytest.raises(ConfigError):
        state.set_lr(-1.0)


# ----------------------------------------------------------------------------- checkpoints
def _drive(state: ServerState) -> None:
    push(state, "a", grad(0, buffers=(0.25, 0.5)))
    push(state, "b", grad(1))
    push(state, "a", grad(2), base=0)  # tau 2: stale
    bad = grad(3)
    bad[0] = np.nan
    push(state, "b", bad)
    push(state, "a", grad(4), base=1)  # tau 1


@pytest.mark.parametrize("via_file", [False, True], ids=["in-memory", "checkpoint-file"])
def test_state_dict_round_trip_restores_everything(tmp_path, via_file: bool) -> None:
    state = make_state(opt=SGD(lr=0.1, momentum=0.9), max_staleness=1)
    _drive(state)
    assert state.rejected == {"stale": 1, "nonfinite": 1}
    scalars, arrays = state.state_dict()
    assert "optim/model/momentum" in arrays
    if via_file:
        path = tmp_path / "server.ckpt"
        write_checkpoint(path, scalars, arrays)
        scalars, arrays = read_checkpoint(path)
    else:
        scalars = json.loads(json.dumps(scalars))

    fresh = make_state(opt=SGD(lr=0.1, momentum=0.9), max_staleness=1, weights=np.zeros(6, dtype=np.float32))
    fresh.load_state_dict(scalars, arrays)
    assert fresh.version == state.version == 3
    assert fresh.applied == state.applied
    assert fresh.rejected == state.rejected
    assert fresh.samples_applied == state.samples_applied
    assert fresh.samples_rejected == state.samples_rejected
    assert fresh.loss_sum == state.loss_sum
    assert fresh.staleness_hist == state.staleness_hist
    assert fresh.weights.tobytes() == state.weights.tobytes()
    np.testing.assert_array_equal(
        fresh.optimizers["model"].optimizer.state["momentum"], state.optimizers["model"].optimizer.state["momentum"]
    )
    assert fresh.optimizers["model"].steps == state.optimizers["model"].steps
    # a pull from the restored server sees the restored weights
    np.testing.assert_array_equal(fresh.pull("x").weights, state.weights)

    g = grad(7, buffers=(1.0, -1.0))
    r1, r2 = push(state, "a", g), push(fresh, "a", g)
    assert r1.applied and r2.applied and r1.version == r2.version == 4
    assert fresh.weights.tobytes() == state.weights.tobytes()
    # momentum really mattered: a fresh optimizer would have produced different weights
    no_momentum = make_state(opt=SGD(lr=0.1, momentum=0.9))
    no_momentum.load_state_dict(scalars, {k: v for k, v in arrays.items() if not k.startswith("optim/")})
    push(no_momentum, "a", g)
    assert not np.array_equal(no_momentum.weights, state.weights)


def test_state_dict_arrays_are_copies() -> None:
    state = make_state(opt=SGD(lr=0.1, momentum=0.9))
    push(state, "a", grad(0))
    _, arrays = state.state_dict()
    saved_w = arrays["weights"].copy()
    saved_m = arrays["optim/model/momentum"].copy()
    push(state, "a", grad(1))
    np.testing.assert_array_equal(arrays["weights"], saved_w)
    np.testing.assert_array_equal(arrays["optim/model/momentum"], saved_m)


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_bad_max_staleness_raises(bad) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"max_staleness={bad!r}")):
        make_state(max_staleness=bad)


def test_bad_construction_raises() -> None:
    layout = Layout.of({"model": spec()})
    with pytest.raises(ConfigError, match="float32"):
        ServerState(layout, W0.astype(np.float64), {"model": SGD(lr=0.1)})
    with pytest.raises(ConfigError, match=r"float32\[6\]"):
        ServerState(layout, np.zeros(5, dtype=np.float32), {"model": SGD(lr=0.1)})
    with pytest.raises(ConfigError, match="one optimizer per model"):
        ServerState(layout, W0.copy(), {"other": SGD(lr=0.1)})


# ----------------------------------------------------------------------------- multi-group
def two_groups() -> ServerState:
    layout = Layout.of({"f": spec(3, 1), "g": spec(2, 2)})
    assert layout.size == 8
    w = np.arange(1, 9, dtype=np.float32)
    return ServerState(layout, w, {"f": SGD(lr=0.1), "g": SGD(lr=0.5)}, clock=FakeClock())


def test_push_with_groups_only_changes_that_group() -> None:
    state = two_groups()
    before = state.weights.copy()
    u = np.ones(8, dtype=np.float32)
    r = state.push(Push("a", 0, u, 4, 0.1, groups=("g",)))
    assert r.applied and state.version == 1
    f, g = state.layout.group("f"), state.layout.group("g")
    np.testing.assert_array_equal(state.weights[f.whole], before[f.whole])
    np.testing.assert_array_equal(state.weights[g.params], before[g.params] - np.float32(0.5))
    np.testing.assert_array_equal(state.weights[g.buffers], before[g.buffers] + 1.0)
    assert state.optimizers["f"].steps == 0
    assert state.optimizers["g"].steps == 1


def test_push_without_groups_uses_each_groups_optimizer() -> None:
    state = two_groups()
    before = state.weights.copy()
    state.push(Push("a", 0, np.ones(8, dtype=np.float32), 4, 0.1))
    f, g = state.layout.group("f"), state.layout.group("g")
    np.testing.assert_array_equal(state.weights[f.params], before[f.params] - np.float32(0.1))
    np.testing.assert_array_equal(state.weights[g.params], before[g.params] - np.float32(0.5))
    np.testing.assert_array_equal(state.weights[f.buffers], before[f.buffers] + 1.0)
    assert state.lr == pytest.approx(0.1)  # the first group's rate
    state.set_lr(0.2, group="g")
    assert state.optimizers["g"].lr() == 0.2 and state.optimizers["f"].lr() == 0.1
