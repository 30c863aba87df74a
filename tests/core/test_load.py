"""Load test of the parameter server: 16 concurrent pushers, every push accounted for.

Bounded in count (16 pushers x a fixed number of pushes) and time (every wait has a timeout, so
a deadlock fails the test instead of hanging it), loopback only. The updates are exact in
float32: pusher ``p``'s ``k``-th push is the integer vector with ``k + 1`` at index ``p`` and 1 in
the last element, and the server optimizer is plain SGD with lr = 1, so the final weights must
equal the initial ones minus the sum of exactly the pushes the server said it applied — and the
last element counts them. Every pusher's first push claims base version 0 (the weights it
started from), so at most ``MAX_STALENESS + 1`` of those 16 can be admitted: rejections are
certain, not left to timing.

Two drivers: the real Dask actor on a multi-process LocalCluster (16 tasks on two worker
processes of 8 threads), and the in-process :class:`~psdist.core.inprocess.LocalServer` (the thread-safe
handle around ``ServerState``) from 16 threads released together by a barrier.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from psdist.core.inprocess import LocalServer
from psdist.core.layout import Entry, FlatSpec, Layout
from psdist.core.protocol import Push
from psdist.core.server import ServerState
from psdist.optim import SGD
from psdist.rules import SSP, Downpour, Rule

PUSHERS = 16
PUSHES = 30  # per pusher
MAX_STALENESS = 3
DIM = PUSHERS + 1  # one element per pusher, and a counter of applied pushes
TIMEOUT = 60.0  # seconds any single wait may take before the test calls it a deadlock
LOSS = 0.5

# (pusher, k, applied, staleness, version after, reason)
Row = tuple[int, int, bool, int, int, "str | None"]


def layout() -> Layout:
    return Layout.of({"model": FlatSpec((Entry("w", (DIM,), "float32", 0, "param"),), DIM)})


def initial_weights() -> np.ndarray:
    return (np.arange(DIM, dtype=np.float32) * 1000.0).astype(np.float32)


def update(pusher: int, k: int) -> np.ndarray:
    u = np.zeros(DIM, np.float32)
    u[pusher] = k + 1
    u[PUSHERS] = 1.0
    return u


def name(pusher: int) -> str:
    return f"pusher-{pusher:02d}"


def push_many(ps: Any, pusher: int, n: int, timeout: float, actor: bool = False) -> list[Row]:
    """One pusher: ``n`` pushes, each from the version the previous reply brought back.

    ``ps`` is a LocalServer or, with ``actor``, a Dask actor handle (its futures resolved with a
    timeout). A reply that says ``wait`` (SSP) is followed by ``wait``, as a worker does.
    """
    def get(x: Any) -> Any:
        return x.result(timeout=timeout) if actor else x

    def wait(worker: str, have: int) -> Any:
        return ps.wait(worker, have, timeout).result(timeout=2 * timeout) if actor else ps.wait(worker, have)

    worker, base, rows = name(pusher), 0, []
    get(ps.join(worker))
    try:
        for k in range(n):
            reply = get(ps.push(Push(worker, base, update(pusher, k), 1, LOSS)))
            rows.append((pusher, k, bool(reply.applied), int(reply.staleness), int(reply.version), reply.reason))
            pull = wait(worker, base) if reply.wait else reply.pull
            base = pull.version
    finally:
        get(ps.leave(worker))
    return rows


def push_many_on_worker(ps: Any, pusher: int, n: int, timeout: float) -> list[Row]:
    """Task body on a Dask worker: the actor's futures resolved with a timeout."""
    return push_many(ps, pusher, n, timeout, actor=True)


def check(rows: list[Row], metrics: dict[str, Any], final: np.ndarray, w0: np.ndarray,
          max_staleness: int | None) -> tuple[int, int, int]:
    """Every push accounted for, by the replies, the counters and the weights; (sent, applied, rejected)."""
    sent = len(rows)
    applied = [r for r in rows if r[2]]
    rejected = [r for r in rows if not r[2]]
    assert sent == PUSHERS * PUSHES
    assert sorted((r[0], r[1]) for r in rows) == [(p, k) for p in range(PUSHERS) for k in range(PUSHES)]
    assert len(applied) + len(rejected) == sent

    # the server's counters agree with the replies
    kinds = {r[5].split(":", 1)[0] for r in rejected}
    assert metrics["applied"] == len(applied) == metrics["version"]
    assert sum(metrics["rejected"].values()) == len(rejected)
    assert metrics["applied"] + sum(metrics["rejected"].values()) == sent
    assert sum(metrics["staleness_hist"]) == sent
    assert metrics["samples_applied"] == len(applied) and metrics["samples_rejected"] == len(rejected)
    assert metrics["loss_sum"] == LOSS * len(applied)
    for p in range(PUSHERS):
        mine = [r for r in rows if r[0] == p]
        stats = metrics["workers"][name(p)]
        assert stats["pushes"] == PUSHES
        assert stats["applied"] == sum(r[2] for r in mine) and stats["rejected"] == sum(not r[2] for r in mine)

    # admission follows the bound exactly; every applied push made exactly one new version
    if max_staleness is not None:
        assert kinds <= {"stale"}
        assert all((r[3] <= max_staleness) == r[2] for r in rows)
        assert len(rejected) >= PUSHERS - (max_staleness + 1)  # the first pushes all claim version 0
    assert sorted(r[4] for r in applied) == list(range(1, len(applied) + 1))

    # the weights: initial minus the sum of exactly the applied updates (integers: exact in float32)
    expected = w0.astype(np.float64)
    for r in applied:
        expected -= update(r[0], r[1])
    np.testing.assert_array_equal(final, expected.astype(np.float32))
    assert -(final[PUSHERS] - w0[PUSHERS]) == len(applied)
    return sent, len(applied), len(rejected)


def make_state(rule: Rule, max_staleness: int | None) -> tuple[ServerState, np.ndarray]:
    w0 = initial_weights()
    return ServerState(layout(), w0.copy(), {"model": SGD(lr=1.0)}, rule, max_staleness), w0


# ----------------------------------------------------------------------------- in-process threads
@pytest.mark.timeout(120)
@pytest.mark.parametrize("rule", [Downpour(), SSP(bound=2)], ids=["downpour", "ssp"])
def test_sixteen_threads_against_one_server_state(rule: Rule) -> None:
    state, w0 = make_state(rule, MAX_STALENESS)
    server = LocalServer(state, timeout=TIMEOUT)
    start = threading.Barrier(PUSHERS, timeout=TIMEOUT)

    def pusher(p: int) -> list[Row]:
        start.wait()  # all 16 begin together
        return push_many(server, p, PUSHES, TIMEOUT)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(PUSHERS) as pool:
        futures = [pool.submit(pusher, p) for p in range(PUSHERS)]
        rows = [row for f in futures for row in f.result(timeout=TIMEOUT)]
    elapsed = time.perf_counter() - t0
    sent, applied, rejected = check(rows, state.metrics(), state.weights.copy(), w0, MAX_STALENESS)
    assert applied >= 1 and rejected >= 1 and elapsed < TIMEOUT
    print(f"\nthreads/{type(rule).__name__}: sent {sent}, applied {applied}, rejected {rejected}, {elapsed:.2f} s")


# ----------------------------------------------------------------------------- the Dask actor
@pytest.fixture(scope="module")
def load_cluster():
    """Three worker processes of 8 threads on loopback: the PS on one, 16 pusher tasks on the others."""
    from psdist.cluster import embedded_cluster, pick_ps_worker

    cluster, client = embedded_cluster(workers=2, threads_per_worker=8, dashboard_address=None)
    try:
        assert all(a.startswith("tcp://127.0.0.1:") for a in client.scheduler_info()["workers"])
        ps_address, _ = pick_ps_worker(client)
        yield client, ps_address
    finally:
        client.close()
        cluster.close()


@pytest.mark.slow  # 5-25 s per case on 2 busy cores
@pytest.mark.timeout(180)
@pytest.mark.parametrize("rule", [Downpour(), SSP(bound=2)], ids=["downpour", "ssp"])
def test_sixteen_pushers_against_the_actor(load_cluster, rule: Rule) -> None:
    from distributed import wait

    from psdist.cluster.actor import ParameterServer

    client, ps_address = load_cluster
    data_workers = sorted(set(client.scheduler_info()["workers"]) - {ps_address})
    w0 = initial_weights()
    actor = client.submit(ParameterServer, layout().to_dict(), w0.copy(), {"model": SGD(lr=1.0)}, rule,
                          MAX_STALENESS, actor=True, workers=[ps_address], pure=False)
    ps = actor.result(timeout=TIMEOUT)
    try:
        t0 = time.perf_counter()
        futures = [
            client.submit(push_many_on_worker, ps, p, PUSHES, TIMEOUT, workers=data_workers, pure=False,
                          key=f"load-{type(rule).__name__}-{p}")
            for p in range(PUSHERS)
        ]
        _, not_done = wait(futures, timeout=3 * TIMEOUT)
        assert not not_done, f"{len(not_done)} of {PUSHERS} pushers did not finish within {3 * TIMEOUT:g} s"
        elapsed = time.perf_counter() - t0
        rows = [row for f in futures for row in f.result()]
        metrics = ps.metrics().result(timeout=TIMEOUT)
        final = ps.pull("check", -1).result(timeout=TIMEOUT).weights
        sent, applied, rejected = check(rows, metrics, final, w0, MAX_STALENESS)
        assert applied >= 1 and rejected >= 1
        print(f"\nactor/{type(rule).__name__}: sent {sent}, applied {applied}, rejected {rejected}, "
              f"{elapsed:.2f} s")
    finally:
        client.cancel([actor])
