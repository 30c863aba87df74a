"""The simulator: exact equivalences, determinism, and the staleness it produces."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from conftest import blobs

import psdist
from psdist.hep.models import mlp
from psdist.optim import SGD
from psdist.rules import SSP, Downpour, StalenessAware, Sync
from psdist.sim import SimWorker, heterogeneous, simulate

MODEL = functools.partial(mlp, inputs=20, hidden=16, classes=4)


@pytest.fixture(scope="module")
def data():
    x, y = blobs(512, seed=1)
    xv, yv = blobs(256, seed=2)
    return x, y, xv, yv


def plain_sgd(data, batch, lr, epochs, seed):
    """Single-process SGD over the simulator's batch order (same permutation per epoch)."""
    x, y = data[0], data[1]
    torch.manual_seed(seed)
    model = MODEL()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for epoch in range(epochs):
        perm = np.random.default_rng([seed, epoch]).permutation(len(x))
        for lo in range(0, len(x), batch):
            idx = perm[lo : lo + batch]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])).backward()
            opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()


def sim_weights(data, **kw):
    result = simulate(MODEL, data, **kw)
    return result.weights, result


@pytest.mark.parametrize("n", [2, 4])
def test_sync_with_n_workers_equals_single_process_batch_n_times_b(data, n, one_torch_thread):
    b, lr = 16, 0.1
    speeds = heterogeneous(n, spread=0.5, seed=3)  # timing must not matter under Sync
    w, result = sim_weights(data, rule=Sync(), optimizer=SGD(lr=lr), workers=speeds, batch_size=b, epochs=2,
                            seed=7)
    expected = plain_sgd(data, n * b, lr, epochs=2, seed=7)
    np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-6)
    assert result.server["version"] == 2 * 512 // (n * b)  # one step per round
    assert result.server["staleness_max"] == 0 and result.server["waits"] > 0


def test_one_async_worker_equals_single_process_sgd(data, one_torch_thread):
    w, _ = sim_weights(data, rule=Downpour(), optimizer=SGD(lr=0.1), workers=1, batch_size=32, epochs=1, seed=2)
    np.testing.assert_allclose(w, plain_sgd(data, 32, 0.1, epochs=1, seed=2), rtol=1e-5, atol=1e-6)


def test_simulation_is_deterministic_for_a_seed(data, one_torch_thread):
    kw = dict(rule=StalenessAware(), optimizer=SGD(lr=0.1, momentum=0.5), batch_size=16, epochs=1, eval_every=8)
    a = simulate(MODEL, data, workers=heterogeneous(8, seed=1), seed=5, **kw)
    b = simulate(MODEL, data, workers=heterogeneous(8, seed=1), seed=5, **kw)
    c = simulate(MODEL, data, workers=heterogeneous(8, seed=1), seed=6, **kw)
    assert a.history == b.history and a.server == b.server
    assert a.history != c.history


def test_async_staleness_grows_with_the_number_of_workers(data, one_torch_thread):
    means = []
    for n in (1, 4, 16):
        r = simulate(MODEL, data, rule=Downpour(), optimizer=SGD(lr=0.05), workers=n, batch_size=8, epochs=1)
        means.append(r.server["staleness_mean"])
    assert means[0] == 0
    assert 2.5 <= means[1] <= 3.5 and 13 <= means[2] <= 16  # E[τ] ≈ n − 1 for identical workers


def test_ssp_bound_holds_with_a_slow_worker(data, one_torch_thread):
    workers = [SimWorker(step_time=1.0)] * 5 + [SimWorker(step_time=8.0)]
    r = simulate(MODEL, data, rule=SSP(bound=2), optimizer=SGD(lr=0.05), workers=workers, batch_size=8, epochs=1)
    assert r.server["clock_gap_max"] == 2 and r.server["waits"] > 0
    assert r.server["applied"] == 512 // 8  # fast workers wait, nobody is rejected


def test_reaches_target_and_reports_updates(data, one_torch_thread):
    r = simulate(MODEL, data, rule=Downpour(), optimizer=SGD(lr=0.1), workers=2, batch_size=16, epochs=3,
                 eval_every=4, target=0.9)
    assert r.final["val_metric"] >= 0.95
    assert r.updates_to_target is not None and r.updates_to_target <= r.server["version"]
    first = next(h for h in r.history if h["val_metric"] >= 0.9)
    assert first["version"] == r.updates_to_target


def test_bad_simulation_input(data):
    with pytest.raises(psdist.ConfigError, match="workers=0"):
        heterogeneous(0)
    with pytest.raises(psdist.ConfigError, match="batch_size=0"):
        simulate(MODEL, data, optimizer=SGD(lr=0.1), batch_size=0)
