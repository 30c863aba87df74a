"""The simulator with one push in flight per worker (``simulate(..., overlap=True)``).

Event times, hence versions and staleness, depend only on the simulated clock and the seeds and
are pinned exactly (read from one run where not derived by hand); accuracies go through float32
training and are asserted as bounds.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import test_sim
import torch
from test_sim import MODEL

import psdist
from psdist.optim import SGD
from psdist.rules import DCASGD, EAMSGD, EASGD, GEM, SSP, Downpour, DynSGD, StalenessAware, Sync
from psdist.sim import SimWorker, heterogeneous, simulate

data = test_sim.data  # the simulator tests' data fixture


def delayed_sgd(data, batch, lr, seed):
    """One worker with one push in flight, by hand: gradient k on the server's weights after
    push k − 2 (the initial weights for the first two), applied by SGD at the server."""
    x, y = data[0], data[1]
    torch.manual_seed(seed)
    server = MODEL()
    worker = copy.deepcopy(server)
    opt = torch.optim.SGD(server.parameters(), lr=lr)
    reply = None  # the server's answer to the previous push
    perm = np.random.default_rng([seed, 0]).permutation(len(x))
    for lo in range(0, len(x), batch):
        idx = perm[lo : lo + batch]
        worker.zero_grad()
        torch.nn.functional.cross_entropy(worker(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])).backward()
        for ps, pw in zip(server.parameters(), worker.parameters(), strict=True):
            ps.grad = pw.grad.clone()
        if reply is not None:  # loaded only now that this gradient is computed
            worker.load_state_dict(reply)
        opt.step()  # the push arrives
        reply = copy.deepcopy(server.state_dict())
    return torch.cat([p.detach().flatten() for p in server.parameters()]).numpy()


def test_one_overlapped_worker_computes_on_the_reply_two_pushes_back(data, one_torch_thread):
    r = simulate(MODEL, data, rule=Downpour(), optimizer=SGD(lr=0.1), workers=1, batch_size=32, epochs=1,
                 seed=2, overlap=True)
    # every push after the first is exactly one version stale (its own previous push)
    assert r.server["staleness_hist"] == [1, 15] and r.server["applied"] == 16
    assert r.overlap and r.to_dict()["overlap"]
    np.testing.assert_allclose(r.weights, delayed_sgd(data, 32, 0.1, seed=2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("delay, plain, overlapped", [
    # step 1, no jitter, 16 pushes. Without overlap every period is compute + round trip:
    # 16 + 33 d. With it the round trip hides behind the next compute while 2d <= 1 (16 + 3d),
    # and the round trip paces the worker when it is longer (1 + 33 d: 15 computes saved).
    (0.25, 24.25, 16.75),
    (1.0, 49.0, 34.0),
])
def test_overlap_hides_the_round_trip(data, delay, plain, overlapped):
    times = {}
    for overlap in (False, True):
        r = simulate(MODEL, data, rule=Downpour(), optimizer=SGD(lr=0.1), workers=[SimWorker(1.0, 0.0, delay)],
                     batch_size=32, epochs=1, overlap=overlap)
        assert r.server["applied"] == 16
        times[overlap] = r.server["time"]
    assert times == {False: pytest.approx(plain, rel=1e-12), True: pytest.approx(overlapped, rel=1e-12)}


def test_overlap_adds_about_n_to_the_staleness_of_n_workers(data, one_torch_thread):
    means = {}
    for n in (2, 4, 8):
        for overlap in (False, True):
            r = simulate(MODEL, data, rule=Downpour(), optimizer=SGD(lr=0.05), workers=n, batch_size=8, epochs=2,
                         overlap=overlap)
            assert r.server["applied"] == 128 and r.server["rejected"] == {}
            means[n, overlap] = r.server["staleness_mean"]
        # n − 1 without overlap, about 2n − 1 with it (the start, when every worker's first
        # pushes are fresher, pulls both means down a little)
        assert n - 1 >= means[n, False] > n - 1.3
        assert 2 * n - 1 >= means[n, True] > 2 * n - 2
        assert n - 1 < means[n, True] - means[n, False] <= n
    # pinned from one run
    assert means == {(2, False): 0.9921875, (2, True): 2.953125, (4, False): 2.953125, (4, True): 6.78125,
                     (8, False): 6.78125, (8, True): 14.0390625}


def test_overlapped_simulation_is_deterministic_for_a_seed(data, one_torch_thread):
    kw = dict(rule=StalenessAware(), optimizer=SGD(lr=0.1, momentum=0.5), batch_size=16, epochs=1, eval_every=8,
              overlap=True)
    a = simulate(MODEL, data, workers=heterogeneous(8, seed=1), seed=5, **kw)
    b = simulate(MODEL, data, workers=heterogeneous(8, seed=1), seed=5, **kw)
    c = simulate(MODEL, data, workers=heterogeneous(8, seed=1), seed=6, **kw)
    assert a.history == b.history and a.server == b.server
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.history != c.history
    # pinned from one run (the same workers without overlap: mean 6.125 and time 5.02, test_sim.py)
    assert a.server["version"] == a.server["applied"] == 32
    assert a.server["staleness_hist"] == [1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 2, 1, 1, 1, 3, 3, 3, 3, 3]
    assert a.server["staleness_mean"] == 11.21875
    assert a.server["time"] == pytest.approx(4.766854633230322, rel=1e-9)
    assert [h["version"] for h in a.history] == [0, 8, 16, 24, 32]


def test_overlapped_training_reaches_the_target(data, one_torch_thread):
    r = simulate(MODEL, data, rule=Downpour(), optimizer=SGD(lr=0.1), workers=4, batch_size=16, epochs=3,
                 eval_every=4, target=0.9, overlap=True)
    assert r.server["version"] == 96 and r.server["staleness_mean"] > 6  # staler than the 2.94 without overlap
    # one run: 0.9 first reached at version 48 (44 without overlap), 98.8 % at the end
    assert r.updates_to_target is not None and r.updates_to_target <= 56
    assert r.final["val_metric"] >= 0.97


@pytest.mark.parametrize("rule", [SSP(bound=2), Sync(), DCASGD(), EASGD(), EAMSGD(), GEM()])
def test_rules_that_cannot_overlap_refuse_it(data, rule):
    assert not rule.overlaps
    name = type(rule).__name__
    with pytest.raises(psdist.ConfigError, match=rf"{name} does not: use overlap=False with rule=psdist\.rules\.{name}"):
        simulate(MODEL, data, rule=rule, optimizer=SGD(lr=0.1), workers=2, overlap=True)


def test_overlap_setting_is_checked(data, one_torch_thread):
    assert all(r.overlaps for r in (Downpour(), StalenessAware(), DynSGD()))
    with pytest.raises(psdist.ConfigError, match="overlap='yes' must be True or False"):
        simulate(MODEL, data, optimizer=SGD(lr=0.1), overlap="yes")
    r = simulate(MODEL, data, rule=DynSGD(), optimizer=SGD(lr=0.1), workers=3, batch_size=32, epochs=1, overlap=True)
    assert r.server["applied"] == 16 and r.server["staleness_max"] >= 3
