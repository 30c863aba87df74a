"""The ParameterServer actor on an in-process cluster (distributed's gen_cluster): fast checks."""

from __future__ import annotations

import numpy as np
import pytest
from distributed.utils_test import gen_cluster

from psdist.cluster.actor import ParameterServer
from psdist.core.layout import Layout
from psdist.core.protocol import Push, RejectKind
from psdist.errors import ServerError
from psdist.hep.models import mlp
from psdist.optim import SGD
from psdist.replica.binding import flatten, spec_of
from psdist.rules import Downpour

# before any test starts the session's LocalCluster (see conftest.pytest_collection_modifyitems)
pytestmark = pytest.mark.in_process_cluster


def _server_args(max_staleness=2):
    model = mlp(inputs=3, hidden=4, classes=2, depth=1)
    spec = spec_of(model)
    w0 = flatten(model, spec)
    return (Layout.of({"model": spec}).to_dict(), w0, {"model": SGD(lr=0.5)}, Downpour(), max_staleness), w0


@gen_cluster(client=True)
async def test_pull_push_through_actor(c, s, a, b):
    args, w0 = _server_args()
    ps = await c.submit(ParameterServer, *args, actor=True, workers=[a.address])
    first = await ps.pull("w", -1)
    assert first.version == 0 and np.array_equal(first.weights, w0)
    current = await ps.pull("w", 0)
    assert current.weights is None  # the cheap answer: the caller is current

    g = np.linspace(-1, 1, w0.size).astype(np.float32)
    reply = await ps.push(Push("w", 0, g, 32, 0.7))
    assert reply.applied and reply.version == 1 and reply.staleness == 0
    np.testing.assert_array_equal(reply.pull.weights, w0 - np.float32(0.5) * g)


@gen_cluster(client=True)
async def test_nan_push_rejected_and_wrong_size_raises(c, s, a, b):
    args, w0 = _server_args()
    ps = await c.submit(ParameterServer, *args, actor=True)
    bad = np.zeros(w0.size, np.float32)
    bad[3] = np.nan
    reply = await ps.push(Push("w", 0, bad, 32, 0.5))
    assert not reply.applied and reply.kind is RejectKind.NONFINITE
    inf_loss = await ps.push(Push("w", 0, np.zeros(w0.size, np.float32), 32, float("inf")))
    assert not inf_loss.applied
    m = await ps.metrics()
    assert m["rejected"] == {"nonfinite": 2} and m["version"] == 0
    assert np.array_equal((await ps.pull("x", -1)).weights, w0)  # untouched

    with pytest.raises(ServerError, match=rf"shape \(7,\).*{w0.size} float32"):
        await ps.push(Push("w", 0, np.zeros(7, np.float32), 32, 0.5))


@gen_cluster(client=True)
async def test_set_lr_takes_effect_at_the_server(c, s, a, b):
    args, w0 = _server_args()
    ps = await c.submit(ParameterServer, *args, actor=True)
    assert await ps.set_lr(0.125) == 0.125
    g = np.ones(w0.size, np.float32)
    reply = await ps.push(Push("w", 0, g, 1, 0.1))
    np.testing.assert_array_equal(reply.pull.weights, w0 - np.float32(0.125))
    assert (await ps.metrics())["lr"] == 0.125
