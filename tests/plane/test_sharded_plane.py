"""A sharded server over real data-plane sockets equals one server, push by push.

Each shard is a :class:`ServerState` behind its own :class:`PlaneServer`; the worker's
:class:`ShardedClient` cuts pushes and gathers pulls. Adam with gradient clipping exercises
what must be whole-model on shards: the clipping norm (measured by the worker over the whole
update) and the NaN check (a NaN in one shard's slice is refused by every shard).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(20, 48), torch.nn.BatchNorm1d(48), torch.nn.ReLU(),
                               torch.nn.Linear(48, 48), torch.nn.ReLU(), torch.nn.Linear(48, 4))


OPT = {"model": psdist.optim.Adam(lr=1e-2, clip_norm=1.0)}  # updates of norm ~8: every push is clipped


@contextmanager
def sharded(shards: int, backend: str) -> Iterator[tuple[list[ServerState], ShardedClient, Layout]]:
    net = model()
    lay = Layout.of({"model": spec_of(net)})
    weights = flatten(net, lay.groups[0].spec)
    plan = ShardPlan.balanced(lay, shards)
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


@pytest.mark.parametrize(("shards", "backend"), [(2, "shm"), (3, "tcp")])
def test_a_sharded_server_equals_one_server_push_by_push(shards: int, backend: str) -> None:
    rng = np.random.default_rng(0)
    with sharded(shards, backend) as (states, client, lay):
        one = ServerState(lay, flatten(model(), lay.groups[0].spec), OPT)
        pull = client.pull("w1")
        assert pull.weights is not None and pull.weights.tobytes() == one.weights.tobytes()
        version, twin_version = pull.version, 0
        for _ in range(6):
            u = (3 * rng.standard_normal(lay.size)).astype(np.float32)
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
