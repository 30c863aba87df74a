"""A sharded server over real data-plane sockets equals one server, push by push.

Each shard is a :class:`ServerState` behind its own :class:`PlaneServer`; the worker's
:class:`ShardedClient` cuts pushes and gathers pulls. Adam with gradient clipping exercises
what must be whole-model on shards: the clipping norm (measured by the worker over the whole
update) and the NaN check (a NaN in one shard's slice is refused by every shard).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch

import psdist
from psdist.core.inprocess import LocalServer
from psdist.core.layout import Layout
from psdist.core.protocol import Push, RejectKind
from psdist.core.server import ServerState
from psdist.core.shards import ShardPlan
from psdist.plane.client import PlaneClient
from psdist.plane.server import PlaneServer
from psdist.plane.sharded import ShardedClient
from psdist.replica.binding import flatten, spec_of


def model(frozen: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 48), torch.nn.BatchNorm1d(48), torch.nn.ReLU(),
                              torch.nn.Linear(48, 48), torch.nn.ReLU(), torch.nn.Linear(48, 4))
    if frozen:  # a frozen first layer: clipping measures the trainable tensors only
        net[0].requires_grad_(False)
    return net


OPT = {"model": psdist.optim.Adam(lr=1e-2, clip_norm=1.0)}  # updates of norm ~8: every push is clipped


@contextmanager
def sharded(shards: int, backend: str, cut: bool = False,
            frozen: bool = False) -> Iterator[tuple[list[ServerState], ShardedClient, Layout]]:
    net = model(frozen)
    lay = Layout.of({"model": spec_of(net)})
    weights = flatten(net, lay.groups[0].spec)
    plan = ShardPlan.balanced(lay, shards, frozenset({"model"}) if cut else frozenset())
    assert bool(plan.rows(0) or plan.rows(1)) == cut  # cut: some tensor's rows lie on two shards
    states = [ServerState(plan.layouts[i], weights[plan.range(i)].copy(), OPT) for i in range(shards)]
    locals_ = [LocalServer(s) for s in states]  # the planes hold them weakly: kept alive here
    planes = [PlaneServer.start(local, plan.sizes[i], "127.0.0.1") for i, local in enumerate(locals_)]
    client = ShardedClient([PlaneClient.connect(p.endpoint(), "w1", backend, timeout=10) for p in planes], plan)
    try:
        yield states, client, lay
    finally:
        client.close()
        for p in planes:
            p.close()


@pytest.mark.parametrize(("shards", "backend", "cut", "frozen"),
                         [(2, "shm", False, False), (3, "tcp", True, False), (3, "shm", True, True)])
def test_a_sharded_server_equals_one_server_push_by_push(shards: int, backend: str, cut: bool, frozen: bool) -> None:
    rng = np.random.default_rng(0)
    with sharded(shards, backend, cut, frozen) as (states, client, lay):
        one = ServerState(lay, flatten(model(frozen), lay.groups[0].spec), OPT)
        pull = client.pull("w1")
        assert pull.weights is not None and pull.weights.tobytes() == one.weights.tobytes()
        version, twin_version = pull.version, 0
        for _ in range(6):
            u = (3 * rng.standard_normal(lay.size)).astype(np.float32)
            if frozen:
                u[: 20 * 48 + 48] = 0  # a worker's gradient is zero on frozen tensors
            got = client.push(Push("w1", version, u, 32, 0.7))
            want = one.push(Push("w1", twin_version, u.copy(), 32, 0.7))
            assert got.applied and want.applied and got.staleness == want.staleness == 0
            assert got.pull is not None and got.pull.weights is not None
            # bit for bit: the same Adam step, clipped by the same whole-model norm
            assert got.pull.weights.tobytes() == one.weights.tobytes()
            version, twin_version = got.pull.version, want.version
        assert [s.version for s in states] == [6] * shards
        assert client.pull("w1", version).weights is None  # every shard current: nothing crosses


@pytest.mark.parametrize("where", ["first", "last"])
def test_a_nan_in_one_shards_slice_is_refused_by_every_shard(where: str) -> None:
    with sharded(3, "shm") as (states, client, lay):
        version = client.pull("w1").version
        before = [s.weights.copy() for s in states]
        u = np.full(lay.size, 0.01, np.float32)
        u[0 if where == "first" else lay.size - 1] = np.nan  # inside shard 0's or shard 2's slice only
        reply = client.push(Push("w1", version, u, 32, 0.7))
        assert not reply.applied and reply.kind is RejectKind.NONFINITE
        for s, w in zip(states, before, strict=True):
            assert s.rejected == {"nonfinite": 1} and s.applied == 0 and s.version == 0
            np.testing.assert_array_equal(s.weights, w)
        ok = client.push(Push("w1", version, np.full(lay.size, 0.01, np.float32), 32, 0.7))
        assert ok.applied and [s.version for s in states] == [1, 1, 1]


@pytest.mark.parametrize("rule", ["sync", "ssp"])
def test_barriers_hold_on_every_shard_and_rounds_stay_aligned(rule: str) -> None:
    """Two worker threads, three shards, Sync or SSP: a worker goes on only when every shard lets
    it; the shards close the same rounds (Sync) or apply every push (SSP) and end at one version,
    with the weights one server reaches from the same pushes (Sync sums in arrival order: close)."""
    from psdist.core.rules import SSP, Sync

    def make() -> Any:
        return Sync() if rule == "sync" else SSP(bound=1)

    net = model()
    lay = Layout.of({"model": spec_of(net)})
    weights = flatten(net, lay.groups[0].spec)
    plan = ShardPlan.balanced(lay, 3, frozenset({"model"}))
    sgd = {"model": psdist.optim.SGD(lr=0.1)}
    states = [ServerState(plan.layouts[i], weights[plan.range(i)].copy(), sgd, make()) for i in range(3)]
    locals_ = [LocalServer(s, timeout=30) for s in states]
    planes = [PlaneServer.start(local, plan.sizes[i], "127.0.0.1") for i, local in enumerate(locals_)]
    one = LocalServer(ServerState(lay, weights.copy(), sgd, make()), timeout=30)
    steps, both = 6, threading.Barrier(2)
    grads = {w: [np.random.default_rng(k + 10 * (w == "b")).standard_normal(lay.size).astype(np.float32) * 0.01
                 for k in range(steps)] for w in ("a", "b")}

    def work(name: str, server: Any) -> None:
        server.join(name)
        version = server.wait(name, -1).version
        both.wait(30)  # both are members before the first round
        for g in grads[name]:
            r = server.push(Push(name, version, g, 8, 0.5), pull=True)
            version = (r.pull if r.pull is not None else server.wait(name, version)).version
        server.leave(name)

    clients = {w: ShardedClient([PlaneClient.connect(p.endpoint(), w, "tcp", timeout=30) for p in planes], plan)
               for w in ("a", "b")}
    try:
        for servers in (clients, {"a": one, "b": one}):
            threads = [threading.Thread(target=work, args=(w, servers[w])) for w in ("a", "b")]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert not any(t.is_alive() for t in threads)
    finally:
        for c in clients.values():
            c.close()
        for p in planes:
            p.close()
    versions = {s.version for s in states}
    assert versions == {one.state.version} and versions == ({steps} if rule == "sync" else {2 * steps})
    assert all(not s.active for s in states) and [s.applied for s in states] == [one.state.applied] * 3
    whole = np.concatenate([s.weights for s in states])
    np.testing.assert_allclose(whole, one.state.weights, rtol=0, atol=1e-6)
