"""One push in flight (psdist.replica.overlap): the weights each gradient sees, the bookkeeping,
a failing push, and training that still learns. In process: a ServerState behind a handle."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_loop import Recorder, blobs, mlp, server_for

from psdist.core.protocol import Pull, Push, PushReply
from psdist.errors import ServerError
from psdist.metrics import accuracy
from psdist.replica import Replica
from psdist.replica.loop import batch_bounds, evaluate_rows, train_rows
from psdist.rules import Downpour
from psdist.steps import SupervisedStep

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Threaded(Recorder):
    """A Recorder that notes the thread of every push (the communication thread's, with overlap)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.threads: list[str] = []

    def push(self, push: Push, pull: bool = True) -> PushReply:
        self.threads.append(threading.current_thread().name)
        return super().push(push, pull)


def test_each_gradient_is_computed_on_the_weights_one_push_older() -> None:
    """Against a hand-written loop: batch k's gradient at w_{k-1}, applied to w_k (SGD)."""
    x, y = blobs(640, seed=3)
    lr, bs, seed = 0.1, 64, 11
    replica = Replica("w0", {"model": mlp(2, batchnorm=False)})
    reference = copy.deepcopy(replica.models["model"])
    server = Threaded(server_for(replica, lr=lr))
    res = train_rows(replica, server, Downpour().worker_side(), SupervisedStep(F.cross_entropy), x, y,
                     batch_size=bs, push_every=1, seed=seed, overlap=True)

    perm = np.random.default_rng(seed).permutation(len(x))
    xs, ys = torch.from_numpy(x[perm]), torch.from_numpy(y[perm].astype(np.int64))
    params = [p.detach().clone() for p in reference.parameters()]
    seen = [q.clone() for q in params]  # the weights the worker holds: loaded one reply late
    for k, (lo, hi) in enumerate(batch_bounds(len(x), bs)):
        with torch.no_grad():
            for p, s in zip(reference.parameters(), seen, strict=True):
                p.copy_(s)
        reference.zero_grad()
        F.cross_entropy(reference(xs[lo:hi]), ys[lo:hi]).backward()
        grads = [p.grad.clone() for p in reference.parameters()]  # type: ignore[union-attr]
        # what the worker loads now is the reply to the previous push: weights before this step
        seen = [q.clone() for q in params] if k >= 1 else seen
        params = [q - lr * g for q, g in zip(params, grads, strict=True)]
    final = torch.cat([q.reshape(-1) for q in params]).numpy()
    np.testing.assert_allclose(server.state.weights, final, rtol=1e-5, atol=1e-6)

    n = len(batch_bounds(len(x), bs))
    assert [p.base_version for p in server.pushes] == [0, *list(range(n - 1))]
    assert res.staleness == [0] + [1] * (n - 1)  # one version more than without overlap
    assert res.pushes == res.applied == n and res.samples == res.samples_applied == 640
    # the pushes ran on the communication thread, and the replica ends on the last reply
    assert set(server.threads) == {"psdist-comm-w0_0"}
    assert replica.version == server.state.version == n
    np.testing.assert_array_equal(replica.weights_vector(), server.state.weights)


def test_without_overlap_the_same_loop_has_no_extra_staleness() -> None:
    """The guard of the test above: its staleness and base versions need the overlap."""
    x, y = blobs(640, seed=3)
    replica = Replica("w0", {"model": mlp(2, batchnorm=False)})
    server = Threaded(server_for(replica, lr=0.1))
    res = train_rows(replica, server, Downpour().worker_side(), SupervisedStep(F.cross_entropy), x, y,
                     batch_size=64, push_every=1, seed=11)
    assert res.staleness == [0] * 10
    assert [p.base_version for p in server.pushes] == list(range(10))
    assert set(server.threads) == {threading.current_thread().name}


def test_overlap_keeps_buffer_deltas_and_accumulation_exact() -> None:
    """BatchNorm statistics and push_every windows travel intact through the thread."""
    x, y = blobs(1000, seed=2)
    replica = Replica("w0", {"model": mlp(1)})
    state = server_for(replica, lr=0.05)
    server = Recorder(state)
    res = train_rows(replica, server, Downpour().worker_side(), SupervisedStep(F.cross_entropy), x, y,
                     batch_size=64, push_every=3, seed=7, overlap=True)
    assert res.pushes == res.applied == 6 and res.samples == res.samples_applied == 1000
    assert [p.samples for p in server.pushes] == [192] * 5 + [40]
    assert res.loss_sum == pytest.approx(sum(p.loss * p.samples for p in server.pushes), rel=1e-6)
    spec = replica.layout.groups[0].spec
    nbt = next(e for e in spec.entries if e.name.endswith("num_batches_tracked"))
    assert state.weights[nbt.offset] == 16  # every minibatch's buffer delta reached the server
    np.testing.assert_array_equal(replica.weights_vector(), state.weights)


class FailsAt(Recorder):
    """Refuses the ``n``-th push with a ServerError (a broken connection), counts the leaves."""

    def __init__(self, state: object, n: int) -> None:
        super().__init__(state)  # type: ignore[arg-type]
        self.n, self.left = n, 0

    def push(self, push: Push, pull: bool = True) -> PushReply:
        if len(self.pushes) + 1 == self.n:
            self.pushes.append(push)
            raise ServerError("the connection broke")
        return super().push(push, pull)

    def leave(self, worker: str) -> None:
        self.left += 1
        super().leave(worker)


@pytest.mark.parametrize("n", [1, 3, 10])  # the first, a middle one, the last (10 batches)
def test_a_push_that_fails_on_the_thread_fails_the_chunk_and_the_worker_leaves(n: int) -> None:
    x, y = blobs(640, seed=3)
    replica = Replica("w0", {"model": mlp(2, batchnorm=False)})
    server = FailsAt(server_for(replica, lr=0.1), n)
    with pytest.raises(ServerError, match="the connection broke"):
        train_rows(replica, server, Downpour().worker_side(), SupervisedStep(F.cross_entropy), x, y,
                   batch_size=64, push_every=1, seed=11, overlap=True)
    assert server.left == 1
    assert len(server.pushes) == n  # nothing sent after the failure was seen
    assert not [t for t in threading.enumerate() if t.name.startswith("psdist-comm-")]


def test_overlap_still_learns() -> None:
    x, y = blobs(2048, seed=0)
    xv, yv = blobs(512, seed=1)
    replica = Replica("w0", {"model": mlp(0)})
    state = server_for(replica, lr=0.1, momentum=0.9)
    step = SupervisedStep(F.cross_entropy)
    for epoch in range(2):
        for c, lo in enumerate(range(0, 2048, 512)):
            train_rows(replica, state, Downpour().worker_side(), step, x[lo:lo + 512], y[lo:lo + 512],
                       batch_size=32, push_every=2, seed=100 * epoch + c, overlap=True)
    ev = evaluate_rows(replica, state, step.evaluate, xv, yv, batch_size=256)
    assert accuracy(ev.targets, ev.outputs) >= 0.9


def test_pull_reply_weights_are_read_before_the_next_push_overwrites_them() -> None:
    """A handle that answers every push in one reused buffer (as the data plane's TCP client
    does): the replica must copy a reply out before the next push is sent."""

    class OneBuffer(Recorder):
        def __init__(self, state: object) -> None:
            super().__init__(state)  # type: ignore[arg-type]
            self.buf = np.empty(state.weights.size, np.float32)  # type: ignore[attr-defined]

        def push(self, push: Push, pull: bool = True) -> PushReply:
            reply = super().push(push, pull)
            assert reply.pull is not None and reply.pull.weights is not None
            np.copyto(self.buf, reply.pull.weights)
            reply.pull = Pull(reply.pull.version, self.buf, reply.pull.lr, reply.pull.lrs)
            return reply

    x, y = blobs(640, seed=3)
    replica = Replica("w0", {"model": mlp(2, batchnorm=False)})
    plain = Replica("w0", {"model": mlp(2, batchnorm=False)})
    a, b = OneBuffer(server_for(replica, lr=0.1)), Recorder(server_for(plain, lr=0.1))
    for r, s in ((replica, a), (plain, b)):
        train_rows(r, s, Downpour().worker_side(), SupervisedStep(F.cross_entropy), x, y,
                   batch_size=64, push_every=1, seed=11, overlap=True)
    np.testing.assert_array_equal(a.state.weights, b.state.weights)
