"""Tests of psdist.replica.loop against an in-process ServerState (no Dask)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from psdist.core.protocol import Pull, Push, PushReply
from psdist.core.server import ServerState
from psdist.metrics import accuracy
from psdist.optim import SGD
from psdist.replica import Replica
from psdist.replica.binding import flatten
from psdist.replica.loop import as_labels, batch_bounds, evaluate_rows, train_rows
from psdist.rules import Downpour
from psdist.steps import SupervisedStep

N_FEATURES = 20
N_CLASSES = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(n: int, seed: int, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of 4 Gaussian blobs in 20 dimensions (fixed centres, seeded noise)."""
    centres = np.random.default_rng(1234).normal(0.0, 0.6, (N_CLASSES, N_FEATURES))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    x = centres[y] + spread * rng.standard_normal((n, N_FEATURES))
    return x.astype(np.float32), y.astype(np.int32)


def mlp(seed: int = 0, batchnorm: bool = True) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = [torch.nn.Linear(N_FEATURES, 32)]
    if batchnorm:
        layers.append(torch.nn.BatchNorm1d(32))
    layers += [torch.nn.ReLU(), torch.nn.Linear(32, N_CLASSES)]
    return torch.nn.Sequential(*layers)


def server_for(replica: Replica, lr: float, momentum: float = 0.0) -> ServerState:
    models = replica.models
    weights = np.concatenate([flatten(models[g.name], g.spec) for g in replica.layout.groups])
    opts = {g.name: SGD(lr=lr, momentum=momentum) for g in replica.layout.groups}
    return ServerState(replica.layout, weights.astype(np.float32), opts, clock=lambda: 0.0)


class Recorder:
    """A ServerHandle that forwards to a ServerState and keeps copies of every push."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.pushes: list[Push] = []

    def pull(self, worker: str, have_version: int = -1) -> Pull:
        return self.state.pull(worker, have_version)

    def push(self, push: Push, pull: bool = True) -> PushReply:
        self.pushes.append(copy.deepcopy(push))
        return self.state.push(push, pull)

    def join(self, worker: str) -> None:
        self.state.join(worker)

    def leave(self, worker: str) -> None:
        self.state.leave(worker)

    def wait(self, worker: str, have_version: int = -1) -> Pull:
        return self.state.wait(worker, have_version)


# ----------------------------------------------------------------------------- batch_bounds
@pytest.mark.parametrize(
    ("n", "bs", "expected"),
    [
        (128, 64, [(0, 64), (64, 128)]),
        (129, 64, [(0, 64), (64, 129)]),  # a 1-row tail joins the previous batch
        (130, 64, [(0, 64), (64, 128), (128, 130)]),  # a 2-row tail stays
        (65, 64, [(0, 65)]),
        (1, 64, [(0, 1)]),  # a lone row has nothing to join
        (10, 3, [(0, 3), (3, 6), (6, 10)]),
        (0, 8, []),
    ],
)
def test_batch_bounds(n: int, bs: int, expected: list[tuple[int, int]]) -> None:
    bounds = batch_bounds(n, bs)
    assert bounds == expected
    assert sum(hi - lo for lo, hi in bounds) == n


def test_as_labels() -> None:
    assert as_labels(np.array([1, 2], dtype=np.int32)).dtype == np.int64
    assert as_labels(np.array([1, 0], dtype=np.uint8)).dtype == np.int64
    assert as_labels(np.array([0.5], dtype=np.float32)).dtype == np.float32


# ----------------------------------------------------------------------------- training
def test_train_rows_learns_blobs() -> None:
    x, y = blobs(2048, seed=0)
    xv, yv = blobs(512, seed=1)
    replica = Replica("w0", {"model": mlp(0)})
    state = server_for(replica, lr=0.1, momentum=0.9)
    rule = Downpour().worker_side()
    step = SupervisedStep(F.cross_entropy)

    before = evaluate_rows(replica, state, step.evaluate, xv, yv, batch_size=256)
    assert accuracy(before.targets, before.outputs) < 0.6

    chunks = [(s, s + 512) for s in range(0, 2048, 512)]
    losses = []
    for epoch in range(2):
        loss_sum = samples = 0.0
        for c, (lo, hi) in enumerate(chunks):
            res = train_rows(
                replica, state, rule, step, x[lo:hi], y[lo:hi],
                batch_size=32, push_every=2, seed=100 * epoch + c, chunk=c, epoch=epoch,
            )
            assert res.chunk == c and res.epoch == epoch and res.worker == "w0"
            assert res.samples == 512 and res.applied == res.pushes == 8
            loss_sum += res.loss_sum
            samples += res.samples
        losses.append(loss_sum / samples)
    assert losses[-1] < losses[0]

    ev = evaluate_rows(replica, state, step.evaluate, xv, yv, batch_size=256)
    assert ev.samples == 512
    assert ev.outputs.shape == (512, N_CLASSES)
    np.testing.assert_array_equal(ev.targets, yv)
    assert ev.version == state.version == 2 * 4 * 8
    assert accuracy(ev.targets, ev.outputs) >= 0.9
    assert ev.loss_sum / ev.samples < math.log(N_CLASSES)

    # the replica holds exactly the server's weights, BatchNorm statistics included
    np.testing.assert_array_equal(replica.bindings["model"].weights.numpy(), state.weights)
    spec = replica.layout.groups[0].spec
    nbt = next(e for e in spec.entries if e.name.endswith("num_batches_tracked"))
    # 16 minibatches per chunk, 4 chunks, 2 epochs: every buffer delta reached the server
    assert state.weights[nbt.offset] == 2 * 4 * 16


def test_push_accounting() -> None:
    x, y = blobs(1000, seed=2)
    replica = Replica("w0", {"model": mlp(1)})
    state = server_for(replica, lr=0.05)
    server = Recorder(state)
    res = train_rows(
        replica, server, Downpour().worker_side(), SupervisedStep(F.cross_entropy), x, y,
        batch_size=64, push_every=3, seed=7,
    )
    n_batches = math.ceil(1000 / 64)
    assert n_batches == 16
    expected_pushes = math.ceil(n_batches / 3)
    assert res.pushes == expected_pushes == 6
    assert res.samples == 1000
    assert res.applied == expected_pushes
    assert res.samples_applied == 1000
    assert res.rejected == {}
    assert res.overflow_batches == 0 and res.loss_scale is None  # precision "32": nothing scaled
    assert res.staleness == [0] * expected_pushes
    assert res.version == replica.version == expected_pushes
    assert state.applied == expected_pushes
    assert state.version == expected_pushes
    assert state.samples_applied == 1000
    assert [p.samples for p in server.pushes] == [192] * 5 + [40]
    assert [p.base_version for p in server.pushes] == list(range(6))
    assert res.loss_sum == pytest.approx(sum(p.loss * p.samples for p in server.pushes), rel=1e-6)
    assert state.loss_sum == pytest.approx(res.loss_sum, rel=1e-6)
    assert [s[0] for s in res.spans][:3] == ["pull", "compute", "push"]


def _nan_step(replica: Replica, xb: torch.Tensor, yb: torch.Tensor) -> float:
    loss = F.cross_entropy(replica.module(xb), yb) * float("nan")
    loss.backward()
    return float(loss.detach())


def _nan_gradient_step(replica: Replica, xb: torch.Tensor, yb: torch.Tensor) -> float:
    """A finite loss behind a NaN gradient: only the server can tell."""
    loss = F.cross_entropy(replica.module(xb), yb)
    loss.backward()
    with torch.no_grad():
        next(replica.module.parameters()).grad[0, 0] = float("nan")  # .grad is a view: edit in place
    return float(loss.detach())


def test_nonfinite_loss_is_skipped_on_the_worker() -> None:
    x, y = blobs(256, seed=3)
    replica = Replica("w0", {"model": mlp(2, batchnorm=False)})
    state = server_for(replica, lr=0.05)
    before = state.weights.copy()
    res = train_rows(
        replica, state, Downpour().worker_side(), _nan_step, x, y,
        batch_size=64, push_every=1, seed=0,
    )
    # every loss is NaN: nothing is sent at all (it used to be sent and rejected)
    assert (res.batches, res.nonfinite_batches, res.nonfinite_inputs) == (4, 4, 0)
    assert res.pushes == 0 and res.applied == 0 and res.samples == 0 and res.loss_sum == 0.0
    assert state.version == 0 and sum(state.staleness_hist) == 0
    assert state.weights.tobytes() == before.tobytes()


def test_nonfinite_pushes_are_rejected_and_counted() -> None:
    x, y = blobs(256, seed=3)
    replica = Replica("w0", {"model": mlp(2, batchnorm=False)})
    state = server_for(replica, lr=0.05)
    before = state.weights.copy()
    res = train_rows(
        replica, state, Downpour().worker_side(), _nan_gradient_step, x, y,
        batch_size=64, push_every=1, seed=0,
    )
    assert res.pushes == 4 and res.nonfinite_batches == 0
    assert res.applied == 0
    assert res.rejected == {"nonfinite": 4} and res.pushes_nonfinite == 4
    assert res.samples == 256 and res.samples_applied == 0
    assert state.version == 0
    assert state.weights.tobytes() == before.tobytes()
    m = state.metrics()
    assert m["rejected"] == {"nonfinite": 4} and m["nonfinite"] == 4
    assert m["workers"]["w0"]["nonfinite"] == 4 and m["workers"]["w0"]["rejected"] == 4


# ----------------------------------------------------------------------------- mean gradient
def _hand_mean_gradient(
    model: torch.nn.Module, x: np.ndarray, y: np.ndarray, bounds: list[tuple[int, int]], seed: int
) -> np.ndarray:
    perm = np.random.default_rng(seed).permutation(len(x))
    xs, ys = torch.from_numpy(x[perm]), torch.from_numpy(y[perm])
    grads = []
    for lo, hi in bounds:
        model.zero_grad(set_to_none=True)
        F.mse_loss(model(xs[lo:hi]), ys[lo:hi]).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy().copy())
    return np.mean(grads, axis=0)


@pytest.mark.parametrize(("n", "batch_size", "k"), [(12, 4, 3), (10, 4, 3), (9, 3, 2)])
def test_pushed_gradient_is_mean_of_minibatch_gradients(n: int, batch_size: int, k: int) -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    y = rng.standard_normal((n, 2)).astype(np.float32)
    torch.manual_seed(5)
    model = torch.nn.Linear(3, 2)
    unbound = copy.deepcopy(model)
    replica = Replica("w0", {"model": model})
    lr = 0.5
    state = server_for(replica, lr=lr, momentum=0.0)
    w0 = state.weights.copy()
    server = Recorder(state)
    seed = 3
    res = train_rows(
        replica, server, Downpour().worker_side(), SupervisedStep(F.mse_loss), x, y,
        batch_size=batch_size, push_every=k, seed=seed,
    )
    bounds = batch_bounds(n, batch_size)
    first = bounds[:k]
    mean_grad = _hand_mean_gradient(unbound, x, y, first, seed)
    sum_grad = mean_grad * len(first)

    # the first push carries the mean of the first k minibatch gradients
    np.testing.assert_allclose(server.pushes[0].update, mean_grad, rtol=1e-5, atol=1e-6)
    assert not np.allclose(server.pushes[0].update, sum_grad, rtol=1e-3)
    assert server.pushes[0].samples == first[-1][1]

    # and the server took one plain SGD step with it
    if len(bounds) <= k:
        assert res.pushes == 1
        np.testing.assert_allclose(state.weights, w0 - np.float32(lr) * mean_grad, rtol=1e-5, atol=1e-6)
    else:
        # a later push starts from the updated weights; check the first step through the recorder
        assert res.pushes == math.ceil(len(bounds) / k)
        probe = ServerState(state.layout, w0.copy(), {"model": SGD(lr=lr)})
        probe.push(server.pushes[0])
        np.testing.assert_allclose(probe.weights, w0 - np.float32(lr) * mean_grad, rtol=1e-5, atol=1e-6)
