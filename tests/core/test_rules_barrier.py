"""Sync and SSP: hand-computed rounds, membership, and real waiting (threads and Dask actor)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from distributed import Event

import psdist
from psdist.cluster.actor import ParameterServer
from psdist.core.inprocess import LocalServer
from psdist.core.layout import Entry, FlatSpec, Layout
from psdist.core.protocol import Push, RejectKind
from psdist.core.server import ServerState
from psdist.optim import SGD
from psdist.rules import SSP, Sync

W0 = np.array([1.0, 2.0, 3.0], np.float32)


def server(rule, lr=0.1):
    spec = FlatSpec((Entry("w", (3,), "float32", 0, "param"),), 3)
    return ServerState(Layout.of({"model": spec}), W0.copy(), {"model": SGD(lr=lr)}, rule)


def push(worker, base, g, samples=1):
    return Push(worker, base, np.asarray(g, np.float32), samples, 0.5)


# ----------------------------------------------------------------------------- Sync by hand
def test_sync_applies_the_sample_weighted_mean_once_per_round():
    s = server(Sync())
    s.join("a")
    s.join("b")
    g1, g2 = np.array([1.0, 0.0, -1.0]), np.array([3.0, 2.0, 1.0])
    r1 = s.push(push("a", 0, g1, samples=2))
    assert r1.applied and r1.wait and r1.pull is None  # accepted, held until b contributes
    assert s.version == 0 and not s.may_proceed("a") and s.may_proceed("b")
    r2 = s.push(push("b", 0, g2, samples=6))
    assert r2.applied and not r2.wait and r2.pull.version == 1
    mean = (2 * g1 + 6 * g2) / 8  # the gradient of the 8 concatenated rows
    np.testing.assert_allclose(s.weights, W0 - 0.1 * mean, rtol=1e-6)
    assert s.may_proceed("a") and s.wait("a").version == 1


def test_sync_does_not_wait_for_a_worker_that_leaves():
    s = server(Sync())
    for w in "abc":
        s.join(w)
    s.push(push("a", 0, [1, 1, 1]))
    s.push(push("b", 0, [3, 3, 3]))
    assert s.version == 0  # c still owes its gradient
    s.leave("c")  # e.g. its chunk ended: the round closes with a and b
    assert s.version == 1
    np.testing.assert_allclose(s.weights, W0 - 0.1 * 2.0, rtol=1e-6)


def test_sync_rejects_stale_and_duplicate_gradients():
    s = server(Sync())
    s.join("a")
    s.join("b")
    s.push(push("a", 0, [1, 1, 1]))
    dup = s.push(push("a", 0, [1, 1, 1]))
    assert not dup.applied and dup.kind is RejectKind.DUPLICATE
    s.push(push("b", 0, [1, 1, 1]))
    stale = s.push(push("a", 0, [5, 5, 5]))  # computed on round 0 weights, round 1 is open
    assert not stale.applied and stale.kind is RejectKind.STALE
    assert stale.reason == ("stale: computed at version 0, the round is at 1; "
                            "synchronous SGD takes only gradients of the current weights")
    assert s.rejected == {"duplicate": 1, "stale": 1} and s.version == 1


# ----------------------------------------------------------------------------- SSP by hand
def test_ssp_holds_the_fast_worker_within_the_bound_and_applies_every_push():
    s = server(SSP(bound=1))
    s.join("fast")
    s.join("slow")
    g = [0.1, 0.1, 0.1]
    assert not s.push(push("fast", 0, g)).wait  # clock 1, gap 1 <= 1
    r = s.push(push("fast", 1, g))  # clock 2, gap 2 > 1: applied, but must wait
    assert r.applied and r.wait and s.version == 2
    with pytest.raises(psdist.ServerError, match="must wait"):
        s.wait("fast")
    s.push(push("slow", 0, g))  # slowest at 1: gap 1, fast may go on
    assert s.wait("fast").version == 3
    assert s.clock_gap_max == 1 and s.waits == 1 and s.applied == 3


def test_a_worker_rejoining_starts_at_the_slowest_clock():
    s = server(SSP(bound=0))
    s.join("a")
    s.push(push("a", 0, [0, 0, 0]))
    s.push(push("a", 1, [0, 0, 0]))
    s.join("b")  # enters at a's clock: nobody waits for work b never had
    assert s.active == {"a": 2, "b": 2}
    s.leave("a")
    s.join("a")
    assert s.active["a"] == 2


def test_ssp_with_threads_never_exceeds_the_bound():
    """Real threads, one scripted slow: the fast one blocks in wait(), never more than s ahead."""
    bound = 2
    handle = LocalServer(server(SSP(bound=bound)), timeout=30)
    gaps: list[int] = []
    slow_turn = [threading.Event() for _ in range(6)]

    def fast():
        v = 0
        for i in range(8):
            r = handle.push(push("fast", v, [0.01, 0, 0]))
            gaps.append(handle.state.clock_gap("fast"))
            v = r.version
            if r.wait and i < 7:
                v = handle.wait("fast", v).version
        handle.leave("fast")

    def slow():
        for turn in slow_turn:
            assert turn.wait(30)
            handle.push(push("slow", handle.pull("slow").version, [0, 0.01, 0]))
        handle.leave("slow")

    handle.join("fast")  # both train from the start
    handle.join("slow")
    threads = [threading.Thread(target=fast), threading.Thread(target=slow)]
    for t in threads:
        t.start()
    for k, turn in enumerate(slow_turn):
        _until(lambda k=k: handle.state.waits >= min(k + 1, 6))
        turn.set()
    for t in threads:
        t.join(30)
    st = handle.state
    assert st.applied == 14 and st.rejected == {} and st.version == 14
    assert st.clock_gap_max == bound  # reached, never exceeded
    assert st.waits == 6  # 1 at the start + 1 per slow push while fast still had work
    np.testing.assert_allclose(st.weights, W0 - 0.1 * np.array([0.08, 0.06, 0]), rtol=1e-5)


def _until(cond, timeout=30.0):
    """Synchronise on a counter (no fixed sleeps): poll until ``cond()`` holds."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition never reached"
        time.sleep(0.005)


def test_sync_threads_leaving_worker_does_not_hang_the_other():
    handle = LocalServer(server(Sync()), timeout=30)
    handle.join("a")
    handle.join("b")
    got = []
    t = threading.Thread(target=lambda: got.append(handle.wait("a", handle.push(push("a", 0, [1, 1, 1])).version)))
    t.start()
    _until(lambda: handle.state.waits == 1)
    handle.leave("b")  # b quits without pushing (its chunk ended, or it died)
    t.join(30)
    assert got and got[0].version == 1


def test_silent_worker_is_evicted_after_the_wait_timeout():
    clock = [0.0]
    st = server(Sync())
    st.clock = lambda: clock[0]
    handle = LocalServer(st, timeout=0.2)
    handle.join("a")
    handle.join("dead")
    handle.push(push("a", 0, [1, 1, 1]))
    clock[0] = 10.0  # "dead" has been silent for 10 s > 0.2 s
    assert handle.wait("a").version == 1
    assert st.evicted == 1 and "dead" not in st.active


# ----------------------------------------------------------------------------- SSP through the actor
def _fast_worker(ps, pushes: int, timeout: float) -> list[int]:
    version, waited = 0, []
    for i in range(pushes):
        reply = ps.push(Push("fast", version, np.full(3, 0.01, np.float32), 1, 0.5)).result()
        version = reply.version
        if reply.wait and i < pushes - 1:
            waited.append(i)
            version = ps.wait("fast", version, timeout).result().version
    ps.leave("fast").result()
    return waited


def _slow_worker(ps, turns: list[str], timeout: float) -> None:
    for name in turns:
        assert Event(name).wait(timeout)
        version = ps.pull("slow", -1).result().version
        ps.push(Push("slow", version, np.zeros(3, np.float32), 1, 0.5)).result()
    ps.leave("slow").result()


def test_ssp_actor_waits_on_the_event_loop_not_the_actor_thread(client):
    spec = FlatSpec((Entry("w", (3,), "float32", 0, "param"),), 3)
    layout = Layout.of({"model": spec})
    fut = client.submit(ParameterServer, layout.to_dict(), W0.copy(), {"model": SGD(lr=0.1)}, SSP(bound=2),
                        None, actor=True, key="ps-ssp-test")
    ps = fut.result()
    ps.join("fast").result()  # both train from the start
    ps.join("slow").result()
    workers = list(client.scheduler_info()["workers"])
    turns = [f"ssp-turn-{k}" for k in range(6)]
    slow = client.submit(_slow_worker, ps, turns, 60, workers=[workers[0]], pure=False)
    fast = client.submit(_fast_worker, ps, 8, 60, workers=[workers[1]], pure=False)
    for k, name in enumerate(turns):
        # metrics() is a plain actor method: it answers while "fast" sits in wait()
        _until(lambda k=k: ps.metrics().result()["waits"] >= min(k + 1, 6))
        if k == 0:
            m = ps.metrics().result()
            assert m["version"] == 3 and m["active"] == ["fast", "slow"]  # 3 pushes, then held
        Event(name).set()
    assert fast.result() == [2, 3, 4, 5, 6]  # held after its 3rd push, then once per slow push
    slow.result()
    m = ps.metrics().result()
    assert m["applied"] == 14 and m["rejected"] == {} and m["clock_gap_max"] == 2 and m["waits"] == 6
    np.testing.assert_allclose(ps.pull("check", -1).result().weights, W0 - 0.1 * 8 * 0.01, rtol=1e-5)
    fut.release()
