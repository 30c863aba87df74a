"""Regression tests of issue 12 ("Silent failures"), server-side items 4, 9, 11, 14 and 15.

Each test is named after its item and failed on the code before the fix. The scripted
scenarios drive :class:`~psdist.core.server.ServerState` directly (no cluster), except one short
real-cluster training for item 4. Every state a test makes passes ``validate_state()`` at its end (the autouse fixture
``server_states`` of conftest.py).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import psdist
import psdist.core.inprocess
import psdist.optim as po
from psdist.core.layout import Entry, FlatSpec, Layout
from psdist.core.optim import SGD, Adam, Cosine, Optimizer, RMSprop, StepDecay, Warmup, optimizer_from_config
from psdist.core.protocol import Pull, Push, PushReply, RejectKind
from psdist.core.server import InvalidServerState, ServerState
from psdist.errors import ConfigError, ModelError, ServerError
from psdist.replica import Replica, as_model_dict, layout_of
from psdist.replica.binding import flatten, spec_of
from psdist.replica.loop import train_rows
from psdist.rules import DCASGD, EAMSGD, EASGD, GEM, SSP, Downpour, DynSGD, Rule, StalenessAware, Sync
from psdist.steps import SupervisedStep
from psdist.testing import train_plain


# ----------------------------------------------------------------------------- item 15 fixture
# ----------------------------------------------------------------------------- a model with frozen parts
class Frozen(torch.nn.Module):
    """A frozen backbone, a BatchNorm (buffers keep travelling), a head whose bias is frozen too:
    two frozen ranges, one at the start and one at the end of the parameter section."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Linear(4, 6)
        self.bn = torch.nn.BatchNorm1d(6)
        self.head = torch.nn.Linear(6, 3)
        for p in (*self.backbone.parameters(), self.head.bias):
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.backbone(x))))


def frozen_model() -> torch.nn.Module:
    return Frozen()


FROZEN_NAMES = ("backbone.weight", "backbone.bias", "head.bias")
# their ranges in the flat vector: backbone 24 + 6, then bn 6 + 6, head.weight 18, head.bias 3
FROZEN = (slice(0, 30), slice(60, 63))
STEP = SupervisedStep(torch.nn.functional.cross_entropy)


def rows(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n).astype(np.int64)


def seeded_model(seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return frozen_model()


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def interleave(
    state: ServerState, replicas: list[Replica], worker_rules: list[Any], period: int,
    x: np.ndarray, y: np.ndarray, batches: int = 8, batch: int = 16,
) -> None:
    """Two workers training minibatch by minibatch in turn (as train_rows does, deterministic):
    each one's pushes are computed before the other's last update, so they arrive stale."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    waiting = dict.fromkeys(r.worker for r in replicas)
    for r, wr in zip(replicas, worker_rules, strict=True):
        state.join(r.worker)
        wr.begin(r, state.wait(r.worker, r.version))
        r.train(True)
        r.zero_grad()
    for k in range(batches):
        lo = (k * batch) % len(x)
        for r, wr in zip(replicas, worker_rules, strict=True):
            if waiting[r.worker]:  # a barrier held it back: wait (the other one has pushed since)
                wr.resume(r, state)
            loss = STEP(r, xt[lo : lo + batch], yt[lo : lo + batch])
            wr.after_backward(r)
            if (k + 1) % period == 0:
                waiting[r.worker] = wr.communicate(r, state, period, batch * period, loss).wait
    for r in replicas:
        state.leave(r.worker)


DECAY = dict(weight_decay=0.1)
ITEM04_CASES = [
    (Downpour(), po.SGD(lr=0.1, momentum=0.9, **DECAY)),
    (Downpour(), po.Adam(lr=0.01, **DECAY)),
    (Downpour(), po.RMSprop(lr=0.01, **DECAY)),
    (StalenessAware(), po.SGD(lr=0.1, momentum=0.9, nesterov=True, **DECAY)),
    (DynSGD(), po.SGD(lr=0.1, momentum=0.9, **DECAY)),
    (DCASGD(lam=0.5), po.SGD(lr=0.1, momentum=0.9, **DECAY)),
    (Sync(), po.SGD(lr=0.1, momentum=0.9, **DECAY)),
    (SSP(bound=1), po.SGD(lr=0.1, momentum=0.9, **DECAY)),
    (EASGD(alpha=0.3, period=2), po.SGD(lr=0.1, momentum=0.9, **DECAY)),
    (EAMSGD(alpha=0.3, period=2, momentum=0.9), po.SGD(lr=0.1, **DECAY)),
    (GEM(), po.SGD(lr=0.1, **DECAY)),
    (None, po.SGD(lr=0.1, momentum=0.9, **DECAY)),  # None: the single-process reference loop
]


# ----------------------------------------------------------------------------- item 4
@pytest.mark.parametrize(
    "rule, opt", ITEM04_CASES,
    ids=lambda v: type(v).__name__ if isinstance(v, Rule) else v.cls.__name__ if isinstance(v, po.TorchOptimizer)
    else "train_plain",
)
def test_item04_frozen_parameters_stay_bit_identical(
    rule: Rule | None, opt: po.TorchOptimizer, tmp_path: Any, one_torch_thread: None
) -> None:
    """requires_grad=False parameters never move: not by weight decay, momentum, DC-ASGD's
    compensation, elastic deltas, GEM, nor a push that carries values for them; buffers move."""
    x, y = rows()
    initial = params(seeded_model())
    if rule is None:  # the reference loop of examples and benchmarks must not share the bug
        built: list[torch.nn.Module] = []

        def recording_model_fn() -> torch.nn.Module:
            built.append(frozen_model())
            return built[-1]

        xv, yv = rows(32, seed=1)
        data = psdist.write_zarr(tmp_path / "d.zarr", x, y, xv, yv, chunk_rows=32)
        train_plain(recording_model_fn, data, opt, loss_fn=torch.nn.functional.cross_entropy,
                    epochs=2, batch_size=16, seed=0)  # seeds torch with 0: seeded_model(0)'s weights
        final = params(built[0])
        for name in FROZEN_NAMES:
            assert torch.equal(final[name], initial[name]), name
        assert not torch.equal(final["head.weight"], initial["head.weight"])
        return

    rule = rule.for_workers(2)
    layout = layout_of(as_model_dict(seeded_model()))
    w0 = flatten(seeded_model(), layout.groups[0].spec)
    state = ServerState(layout, w0.copy(), {"model": opt}, rule)
    replicas = [Replica(w, as_model_dict(seeded_model(i + 1))) for i, w in enumerate("ab")]
    interleave(state, replicas, [rule.worker_side({"model": opt}) for _ in replicas], rule.comm_period(1), x, y)
    assert state.version >= 4
    if not isinstance(rule, (Sync, EASGD)):
        assert len(state.staleness_hist) > 1  # really stale pushes (DC-ASGD compensates them)
    # a push carrying values for the frozen ranges (a buggy custom step) changes nothing there
    state.push(Push("z", state.version, np.ones(layout.size, np.float32), 1, 0.1), pull=False)

    frozen_bytes = [w0[s].tobytes() for s in FROZEN]
    assert [state.weights[s].tobytes() for s in FROZEN] == frozen_bytes
    assert not np.array_equal(state.weights[30:60], w0[30:60])  # the trainable part moved
    g = layout.groups[0]
    assert not np.array_equal(state.weights[g.buffers], w0[g.buffers])  # BatchNorm statistics too
    for replica in replicas:  # and the workers after a pull
        replica.load(state.pull("check"))
        got = params(replica.module)
        for name in FROZEN_NAMES:
            assert torch.equal(got[name], initial[name]), name


def test_item04_frozen_layer_through_trainer(client: Any, tmp_path: Any, one_torch_thread: None) -> None:
    """A real training with weight decay and momentum leaves a frozen layer bit-identical."""
    x, y = rows(256)
    xv, yv = rows(64, seed=1)
    data = psdist.write_zarr(tmp_path / "frozen.zarr", x, y, xv, yv, chunk_rows=64)
    trainer = psdist.Trainer(frozen_model, torch.nn.functional.cross_entropy, data,
                             po.SGD(lr=0.1, momentum=0.9, weight_decay=0.1), batch_size=16,
                             client=client, seed=3)
    initial = params(trainer.model())
    trainer.fit(epochs=1)
    final = params(trainer.model())
    for name in FROZEN_NAMES:
        assert torch.equal(final[name], initial[name]), name
    assert not torch.equal(final["head.weight"], initial["head.weight"])
    assert not torch.equal(final["bn.weight"], initial["bn.weight"])


# ----------------------------------------------------------------------------- item 9
def vector_spec(n: int) -> FlatSpec:
    return FlatSpec((Entry("w", (n,), "float32", 0, "param"),), n)


@pytest.mark.parametrize("make", [lambda: SGD(lr=0.1, momentum=0.9), lambda: Adam(lr=0.01)],
                         ids=["sgd-momentum", "adam"])
def test_item09_shared_optimizer_object_gets_separate_state(make: Callable[[], Optimizer]) -> None:
    """A GAN given one optimizer object for both models trains exactly as with two objects,
    and the object the user holds is never changed (training, set_lr)."""
    layout = Layout.of({"generator": vector_spec(3), "discriminator": vector_spec(3)})
    w0 = np.array([1.0, -2.0, 0.5, 3.0, 0.25, -1.0], np.float32)
    shared = make()
    before = repr(shared)
    one = ServerState(layout, w0.copy(), {"generator": shared, "discriminator": shared})
    two = ServerState(layout, w0.copy(), {"generator": make(), "discriminator": make()})
    rng = np.random.default_rng(9)
    for groups in [("generator",), ("generator",), ("discriminator",), None, ("generator",)]:
        u = rng.standard_normal(6).astype(np.float32)
        for state in (one, two):
            state.push(Push("w", state.version, u, 4, 0.5, groups), pull=False)
    assert one.weights.tobytes() == two.weights.tobytes()
    assert [one.optimizers[n].steps for n in layout.names] == [4, 2]
    one.set_lr(0.5, group="discriminator")
    assert one.optimizers["discriminator"].lr() == 0.5 and one.optimizers["generator"].lr() == shared.lr
    # the user's object: no steps, no state, the same hyperparameters
    assert shared.steps == 0 and shared.state == {} and repr(shared) == before


# ----------------------------------------------------------------------------- item 14
def test_item14_dcasgd_drops_backup_on_leave() -> None:
    """One weight copy per *training* worker: gone when it leaves or is evicted; none for
    pulls outside training (validation, the client). Compensation still uses it while training."""
    now = [0.0]
    state = ServerState(Layout.of({"model": vector_spec(3)}), np.array([1.0, 2.0, 3.0], np.float32),
                        {"model": SGD(lr=0.1)}, DCASGD(lam=0.5), clock=lambda: now[0])
    backups = state.server_rule.pulled
    g = np.array([2.0, -1.0, 0.5], np.float32)
    for i in range(5):  # adapt/restarts: every chunk on a new worker address
        w = f"tcp://10.0.0.{i}:1"
        state.join(w)
        w_pulled = state.wait(w).weights.copy()
        assert list(backups) == [w]
        state.push(Push("other", state.version, np.ones(3, np.float32), 1, 0.5), pull=False)
        w_now = state.weights.copy()
        state.push(Push(w, state.version - 1, g, 1, 0.5))  # stale by 1: compensated
        compensated = g + np.float32(0.5) * g * g * (w_now - w_pulled)
        np.testing.assert_allclose(state.weights, w_now - np.float32(0.1) * compensated, rtol=1e-6)
        state.leave(w)
        assert backups == {}
    state.pull("validation")  # not training: no copy
    state.join("silent")
    state.wait("silent")
    now[0] = 100.0
    assert state.evict_silent(10.0) == ["silent"]
    assert backups == {}


class Interleaved:
    """A server handle on which worker ``b`` pushes right after ``a``'s pull: ``a``'s push,
    computed at the pulled version, arrives one version stale."""

    def __init__(self, state: ServerState, delta: np.ndarray) -> None:
        self.state, self.delta = state, delta

    def pull(self, worker: str, have_version: int = -1) -> Pull:
        pulled = self.state.pull(worker, have_version)
        self.state.push(Push("b", self.state.version, self.delta, 1, 0.5), pull=False)
        return pulled

    def push(self, push: Push, pull: bool = True) -> PushReply:
        return self.state.push(push, pull)


def test_item14_easgd_rejected_push_keeps_elastic_difference() -> None:
    """x ← x − E happens only when the centre took E: after a rejected (stale) exchange the
    local weights are bit-identical, and the next accepted one moves both sides by E."""
    alpha = 0.3  # not 0.5: that would put x exactly on the centre after the first exchange
    rule = EASGD(alpha=alpha, period=1)
    model = torch.nn.Linear(2, 1, bias=False)
    layout = layout_of(as_model_dict(model))
    c0 = np.array([0.5, -0.25], np.float32)
    state = ServerState(layout, c0.copy(), {"model": po.SGD(lr=0.1)}, rule, max_staleness=0)
    replica = Replica("a", as_model_dict(model))
    wr = rule.worker_side({"model": po.SGD(lr=0.1)})
    x, y = np.array([[1.0, 2.0]], np.float32), np.array([[1.0]], np.float32)
    step = SupervisedStep(torch.nn.functional.mse_loss)
    train_rows(replica, state, wr, step, x, y, batch_size=1, push_every=1, seed=0)
    local, centre = replica.weights_vector(), state.weights.copy()
    assert not np.array_equal(local, centre)

    delta_b = np.array([0.125, 0.0625], np.float32)
    reply = wr.communicate(replica, Interleaved(state, delta_b), 1, 1, 0.5)
    assert not reply.applied and reply.kind is RejectKind.STALE
    assert replica.weights_vector().tobytes() == local.tobytes()  # E kept
    assert state.weights.tobytes() == (centre + delta_b).tobytes()  # E not added

    centre = state.weights.copy()
    reply = wr.communicate(replica, state, 1, 1, 0.5)
    assert reply.applied
    e = np.float32(alpha) * (local - centre)
    assert replica.weights_vector().tobytes() == (local - e).tobytes()
    assert state.weights.tobytes() == (centre + e).tobytes()


# ----------------------------------------------------------------------------- item 11
# psdist.optim.SGD(lr=0.1), psdist.rules.EASGD(period=4), psdist.optim.Adam(betas=(0.9, 0.999))
CODE = re.compile(r"psdist\.[A-Za-z_][\w.]*(?:\((?:[^()]|\([^()]*\))*\))?")
KEYWORD = re.compile(r"e\.g\. (\w+)=(\([^)]*\)|[^\s,;)]+)")


def _sync_server_waiting() -> None:
    state = ServerState(Layout.of({"model": vector_spec(1)}), np.zeros(1, np.float32), {"model": SGD(lr=0.1)}, Sync())
    state.join("a")
    state.join("b")
    state.push(Push("a", 0, np.ones(1, np.float32), 1, 0.5))
    state.wait("a")


def _float64_model() -> None:
    spec_of(torch.nn.Linear(2, 1).double())


def _checks(rule: Rule, push_every: int = 1, opt: po.TorchOptimizer | None = None) -> Callable[..., Any]:
    """A call of ``rule.check`` whose suggested rule is checked the same way."""
    def call(candidate: Any = None) -> None:
        target = candidate if isinstance(candidate, Rule) else rule
        given = candidate if isinstance(candidate, po.TorchOptimizer) else opt
        info = None if given is None else given.info()
        target.check(push_every, None, None if info is None else {"model": info})
    return call


ITEM11_CASES: list[tuple[Callable[..., Any], dict[str, Any]]] = [
    # rules: the code shown is a rule or an optimizer that then passes the same check
    (_checks(GEM(), opt=po.SGD(lr=0.1, momentum=0.9)), {}),
    (_checks(EAMSGD(), opt=po.Adam(lr=0.01)), {}),
    (_checks(EASGD(alpha=0.2), push_every=4, opt=po.SGD(lr=0.1)), {}),
    (_checks(EAMSGD(momentum=0.5), push_every=5, opt=po.SGD(lr=0.1)), {}),
    (_checks(EASGD(period=0)), {}),
    (_checks(EASGD(alpha=-1.0)), {}),
    (_checks(EASGD(alpha=1.5)), {}),
    (_checks(EASGD(beta=0.0)), {}),
    (_checks(EAMSGD(momentum=1.0), opt=po.SGD(lr=0.1)), {}),
    (_checks(GEM(kappa=0.0)), {}),
    (_checks(GEM(pi_max=-1.0)), {}),
    (_checks(GEM(eps=0.0)), {}),
    (_checks(GEM(momentum=1.0)), {}),
    (_checks(DCASGD(lam=-1.0)), {}),
    (_checks(SSP(bound=-1)), {}),
    # optimizers and schedules: the keyword shown, given instead, builds it
    (SGD, {"lr": 0.1, "nesterov": True}),
    (SGD, {"lr": -1.0}),
    (SGD, {"lr": 0.1, "momentum": 1.5}),
    (SGD, {"lr": 0.1, "weight_decay": -1.0}),
    (Adam, {"betas": (1.2, 0.999)}),
    (Adam, {"eps": 0.0}),
    (RMSprop, {"alpha": 1.0}),
    (StepDecay, {"step": 0}),
    (StepDecay, {"gamma": 0.0}),
    (Cosine, {"total": 0}),
    (Warmup, {"steps": 0}),
]


def test_item11_rule_error_messages_suggest_valid_code() -> None:
    """Every fix an error message shows is valid code that fixes the error: ``psdist.*``
    expressions are evaluated (and used), ``e.g. name=value`` keywords passed instead."""
    namespace = {"psdist": psdist, "torch": torch, "functools": functools}
    for call, kwargs in ITEM11_CASES:
        with pytest.raises(ConfigError) as info:
            call(**kwargs)
        msg = str(info.value)
        snippets, keywords = CODE.findall(msg), KEYWORD.findall(msg)
        assert snippets or keywords, f"no fix shown in {msg!r}"
        for code in snippets:
            fixed = eval(code, namespace)
            if isinstance(call, type):
                assert isinstance(fixed, call), code
            else:
                call(fixed)  # the suggested rule or optimizer passes the check that failed
        for name, value in keywords:
            call(**{**kwargs, name: eval(value, namespace)})
    # messages that show other code: a YAML mapping, a model method, a class to use
    with pytest.raises(ConfigError) as info:
        optimizer_from_config({"name": "sgdx"})
    snippet = re.search(r"e\.g\. (optimizer: \{.*\})", str(info.value)).group(1)
    assert isinstance(optimizer_from_config(yaml.safe_load(snippet)["optimizer"]), SGD)
    with pytest.raises(ModelError, match=r"return model\.float\(\) from your model_fn"):
        _float64_model()
    model = torch.nn.Linear(2, 1).double()
    spec_of(eval("model.float()", {"model": model}))
    with pytest.raises(ServerError) as info:
        _sync_server_waiting()
    (code,) = CODE.findall(str(info.value))
    assert eval(code, namespace) is psdist.core.inprocess.LocalServer


# ----------------------------------------------------------------------------- item 15
def _healthy() -> ServerState:
    """A scripted scenario touching every counter: joins, leaves, a rejoin, stale and non-finite
    rejections, a snapshot, an eviction, a checkpoint round trip."""
    now = [0.0]
    layout = layout_of(as_model_dict(seeded_model()))
    w0 = flatten(seeded_model(), layout.groups[0].spec)
    rule = DCASGD(lam=0.1)
    state = ServerState(layout, w0.copy(), {"model": SGD(lr=0.1, momentum=0.9, weight_decay=0.1)}, rule,
                        max_staleness=1, clock=lambda: now[0])
    u = np.linspace(-1, 1, layout.size, dtype=np.float32)
    for w in ("a", "b"):
        state.join(w)
        state.wait(w)
    state.push(Push("a", 0, u, 4, 0.5))
    state.push(Push("b", 0, u, 4, 0.5))  # stale by 1: admitted
    state.push(Push("b", 0, u, 4, 0.5))  # stale by 2: rejected
    bad = u.copy()
    bad[3] = np.nan
    state.push(Push("a", state.version, bad, 4, 0.5))  # non-finite: rejected
    state.leave("a")
    state.join("a")  # a rejoin: active again, no longer among the left
    state.validate_state()
    scalars, arrays = state.state_dict()
    restored = ServerState(layout, w0.copy(), {"model": SGD(lr=0.1, momentum=0.9, weight_decay=0.1)}, rule,
                           max_staleness=1, clock=lambda: now[0])
    restored.load_state_dict(scalars, arrays)
    restored.validate_state()  # restored counters, an empty worker table
    restored.join("c")
    restored.push(Push("c", restored.version, u, 4, 0.5))
    restored.validate_state()
    now[0] = 100.0
    assert sorted(state.evict_silent(10.0)) == ["a", "b"]
    return state


BREAKERS: dict[str, Callable[[ServerState], None]] = {
    "frozen parameters unchanged": lambda s: s.weights.__setitem__(0, s.weights[0] + 1),
    "finite weights": lambda s: s.weights.__setitem__(40, np.inf),
    "snapshot is current": lambda s: (s.pull("x"), s.weights.__setitem__(40, 7.0)),
    "one version per applied push": lambda s: setattr(s, "version", s.version + 1),
    "per-worker pushes = applied + rejected": lambda s: setattr(s.workers["a"], "pushes", 99),
    "workers' samples sum to the total": lambda s: setattr(s, "samples_applied", s.samples_applied + 1),
    "pushes = applied + rejected": lambda s: s.staleness_hist.append(1),
    "active and left disjoint": lambda s: (s.join("a"), s._left_clock.__setitem__("a", 0)),
    "clocks non-negative": lambda s: s._left_clock.__setitem__("z", -1),
    "one optimizer per group": lambda s: None,  # one group: see the GAN state below
    "DC-ASGD backups only for active workers": lambda s: s.server_rule.pulled.__setitem__("gone", s.weights.copy()),
    "optimizer state shape": lambda s: s.optimizers["model"].optimizer.state.__setitem__(  # type: ignore[attr-defined]
        "momentum", np.zeros(2, np.float32)),
}


def test_item15_validate_state_catches_broken_invariant(server_states: list[ServerState]) -> None:
    """A healthy scripted history passes; each corruption raises InvalidServerState naming it."""
    _healthy().validate_state()
    for invariant, corrupt in BREAKERS.items():
        if invariant == "one optimizer per group":
            layout = Layout.of({"g": vector_spec(2), "d": vector_spec(2)})
            state = ServerState(layout, np.zeros(4, np.float32), {"g": SGD(lr=0.1), "d": SGD(lr=0.1)})
            state.optimizers["d"] = state.optimizers["g"]
        else:
            state = _healthy()
            corrupt(state)
        with pytest.raises(InvalidServerState, match=re.escape(f"invariant {invariant!r} broken")):
            state.validate_state()
        assert issubclass(InvalidServerState, AssertionError)
    sync = ServerState(Layout.of({"model": vector_spec(1)}), np.zeros(1, np.float32), {"model": SGD(lr=0.1)}, Sync())
    sync.join("a")
    sync.push(Push("a", 0, np.ones(1, np.float32), 1, 0.5))
    sync.validate_state()  # one round of one contribution
    sync.server_rule.contributed.add("a")  # a contribution without its sum
    with pytest.raises(InvalidServerState, match="Sync round bookkeeping"):
        sync.validate_state()
    server_states.clear()  # the corrupted states above are not for the end-of-test check
