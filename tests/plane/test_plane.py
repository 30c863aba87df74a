"""The data plane on real sockets: TCP and shared memory give the actor path's answers, bit for bit."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import psdist.core.optim as flat
from psdist.core.inprocess import LocalServer
from psdist.core.layout import Entry, FlatSpec, Layout
from psdist.core.protocol import Push, RejectKind
from psdist.core.server import ServerState
from psdist.errors import ServerError
from psdist.plane import PlaneClient, PlaneServer, wire

N = 1000


def state(max_staleness: int | None = 2) -> ServerState:
    lay = Layout.of({"model": FlatSpec((Entry("w", (N - 10,), "float32", 0, "param"),
                                        Entry("b", (10,), "float32", N - 10, "buffer")), N - 10)})
    return ServerState(lay, np.linspace(-1, 1, N).astype(np.float32), {"model": flat.SGD(lr=0.5)},
                       max_staleness=max_staleness)


@pytest.fixture
def served() -> Iterator[tuple[LocalServer, PlaneServer]]:
    local = LocalServer(state())
    plane = PlaneServer.start(local, N, "127.0.0.1")
    yield local, plane
    plane.close()


def updates(k: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(N).astype(np.float32) for _ in range(k)]


@pytest.mark.parametrize("backend", ["tcp", "shm"])
def test_pushes_and_pulls_equal_the_state_driven_directly(served: Any, backend: str) -> None:
    local, plane = served
    twin = state()
    client = PlaneClient.connect(plane.endpoint(), "w1", backend, timeout=10)
    assert client.backend == backend
    try:
        first = client.pull("w1")
        assert first.version == 0 and first.weights.tobytes() == twin.pull("w1").weights.tobytes()
        version = 0
        for i, u in enumerate(updates(6)):
            base = version if i != 4 else version - 3  # one push too stale: rejected
            got = client.push(Push("w1", base, u, 8, 0.25), pull=True)
            want = twin.push(Push("w1", base, u.copy(), 8, 0.25), pull=True)
            assert (got.applied, got.version, got.staleness, got.kind) == (
                want.applied, want.version, want.staleness, want.kind)
            if got.rejection is not None:
                assert got.rejection.reason == want.rejection.reason and got.kind is RejectKind.STALE
            assert got.pull.version == want.pull.version and got.pull.weights.tobytes() == want.pull.weights.tobytes()
            version = got.version
        assert client.pull("w1", version).weights is None  # current: no weights cross
        assert local.state.weights.tobytes() == twin.weights.tobytes()
    finally:
        client.close()


def test_a_connection_without_the_token_is_refused_and_the_server_goes_on(served: Any) -> None:
    _, plane = served
    bad = {**plane.endpoint(), "token": "0" * 64}
    with pytest.raises(ServerError, match="did not present this run's token"):
        PlaneClient.connect(bad, "intruder", "tcp", timeout=10)
    with pytest.raises(ServerError, match="holds 999 floats"):
        PlaneClient.connect({**plane.endpoint(), "size": 999}, "w", "tcp", timeout=10)
    good = PlaneClient.connect(plane.endpoint(), "w", "tcp", timeout=10)
    assert good.pull("w").version == 0
    good.close()
    assert plane.counters.refused == 2


def _garbage(rng: np.random.Generator, token: str, i: int) -> tuple[bool, bytes]:
    """(after a valid hello?, bytes): random, truncated or oversized frames."""
    h = wire.HEADER
    kind = i % 5
    if kind == 0:  # random bytes
        return bool(rng.integers(2)), rng.bytes(int(rng.integers(1, 200)))
    if kind == 1:  # a push header announcing too much payload
        return True, h.pack(wire.MAGIC, wire.Kind.PUSH, 1, 0, 0, 0, 1, 0, 0.5, 4 * N + 4 * int(rng.integers(1, 1 << 20)))
    if kind == 2:  # a truncated push: header, then half the gradient, then hang up
        return True, h.pack(wire.MAGIC, wire.Kind.PUSH, 1, 0, 0, 0, 1, 0, 0.5, 4 * N) + rng.bytes(2 * N)
    if kind == 3:  # oversized or non-JSON meta
        size = int(rng.choice([wire.MAX_META + 1, 10]))
        return True, h.pack(wire.MAGIC, wire.Kind.PULL, 0, 0, size, 0, 0, 0, 0.0, 0) + b"\xff" * min(size, 10)
    # a header with a wrong field: bad magic, unknown kind, flags, code
    fields = [wire.MAGIC, wire.Kind.PULL, 0, 0, 0, -1, 0, 0, 0.0, 0]
    which = int(rng.integers(4))
    fields[which] = [b"XXXX", 99, 0xFF, 999][which]
    return True, h.pack(*fields)


def test_a_thousand_malformed_frames_each_close_their_connection_only(served: Any) -> None:
    local, plane = served
    endpoint = plane.endpoint()
    keeper = PlaneClient.connect(endpoint, "keeper", "tcp", timeout=10)  # stays connected throughout
    rng = np.random.default_rng(7)
    hello = wire.encode(wire.Frame(wire.Kind.HELLO, meta={"token": endpoint["token"], "worker": "fuzz", "size": N}))
    for i in range(1000):
        authed, data = _garbage(rng, endpoint["token"], i)
        with socket.create_connection((endpoint["host"], endpoint["port"]), timeout=10) as s:
            if authed:
                s.sendall(hello)
                assert wire.recv_frame(s, bytearray(wire.HEADER.size), frozenset({wire.Kind.WELCOME}), 0).a == N
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)  # truncated: nothing more comes
                while s.recv(65536):
                    pass  # the server's ERROR frame (if it got that far), then it closes
            except OSError:
                pass  # it closed while we were still sending: refused all the same
        if i % 100 == 0:
            assert keeper.pull("keeper").version == local.state.version  # still answering
    assert plane.counters.refused == 1000
    assert keeper.push(Push("keeper", local.state.version, np.zeros(N, np.float32), 1, 0.1)).applied
    keeper.close()


def test_sixteen_concurrent_pushers_exact_final_weights() -> None:
    """applied + rejected = sent, and the final weights are exact: updates of small integers
    times a power-of-two rate sum exactly in any order."""
    s = state(max_staleness=None)
    s.weights[:] = 0.0
    local = LocalServer(s)
    plane = PlaneServer.start(local, N, "127.0.0.1")
    sent = {}

    def pusher(k: int) -> None:
        client = PlaneClient.connect(plane.endpoint(), f"w{k}", "shm" if k % 2 else "tcp", timeout=30)
        version, n = client.pull(f"w{k}").version, 0
        for j in range(20):
            u = np.full(N, float((k + j) % 7 - 3), np.float32)
            u[N - 10:] = 0.0
            if j == 10 and k == 3:
                u[0] = np.nan  # refused: non-finite
            r = client.push(Push(f"w{k}", version, u, 1, 0.1), pull=True)
            version = r.pull.version
            n += 1
        sent[k] = n
        client.close()

    threads = [threading.Thread(target=pusher, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    plane.close()
    assert sum(sent.values()) == 320 == s.applied + sum(s.rejected.values())
    assert s.rejected == {"nonfinite": 1}
    total = sum(float((k + j) % 7 - 3) for k in range(16) for j in range(20) if not (k == 3 and j == 10))
    np.testing.assert_array_equal(s.weights[: N - 10], np.float32(-0.5 * total))


def test_tls_plane_refuses_plaintext_and_serves_the_cluster_certificate() -> None:
    """With the cluster's TLS (mutual authentication), a plaintext client gets nothing; a client
    with the cluster's certificate pushes and pulls."""
    pytest.importorskip("cryptography")
    from distributed.security import Security

    sec = Security.temporary()
    local = LocalServer(state())
    plane = PlaneServer.start(local, N, "127.0.0.1", sec.get_listen_args("worker")["ssl_context"])
    try:
        endpoint = plane.endpoint()
        assert endpoint["tls"] and endpoint["unix"] is None  # no shared memory without TLS
        with pytest.raises(ServerError, match="runs TLS; this worker has no cluster certificate"):
            PlaneClient.connect(endpoint, "w", "tcp", timeout=10)
        with pytest.raises(ServerError, match="the hello over the data plane failed"):
            PlaneClient.connect({**endpoint, "tls": False}, "plaintext", "tcp", timeout=10)  # lies about TLS
        client = PlaneClient.connect(endpoint, "w", "tcp", timeout=10,
                                     ssl_context=sec.get_connection_args("worker")["ssl_context"])
        reply = client.push(Push("w", 0, updates(1)[0], 1, 0.5), pull=True)
        assert reply.applied and reply.pull.weights.tobytes() == local.state.weights.tobytes()
        client.close()
        assert plane.counters.refused >= 1
    finally:
        plane.close()


def test_barrier_rounds_over_the_plane_and_a_dropped_worker_leaves() -> None:
    """Sync over the data plane: join rides on the first wait, waits block only their own
    connection, and a worker whose connection drops leaves (the other is not held forever)."""
    from psdist.core.rules import Sync

    s = state(max_staleness=None)
    s.rule = Sync()
    s.server_rule = s.rule.server_side()
    local = LocalServer(s)
    plane = PlaneServer.start(local, N, "127.0.0.1")
    endpoint = plane.endpoint()
    u = np.zeros(N, np.float32)
    u[0] = 1.0
    rounds: dict[str, int] = {}
    both_joined = threading.Barrier(2)

    def worker(name: str, backend: str, pushes: int, together: bool = True) -> None:
        c = PlaneClient.connect(endpoint, name, backend, timeout=30)
        c.join(name)
        version = c.wait(name, -1).version
        if together:  # both are members before the first round
            both_joined.wait(30)
        for _ in range(pushes):
            r = c.push(Push(name, version, u, 1, 0.5), pull=True)
            version = (r.pull if r.pull is not None else c.wait(name, version)).version
        c.leave(name)
        rounds[name] = version
        c.close()

    threads = [threading.Thread(target=worker, args=("a", "tcp", 5)), threading.Thread(target=worker, args=("b", "shm", 5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert rounds == {"a": 5, "b": 5} and s.version == 5 and not s.active

    # a worker joins over the plane, then its process dies: the other goes on once the drop is seen
    dead = PlaneClient.connect(endpoint, "dead", "tcp", timeout=30)
    dead.join("dead")
    dead.wait("dead", -1)
    assert "dead" in s.active
    dead.sock.close()  # as a killed process's socket would be
    worker("c", "tcp", 3, together=False)
    assert rounds["c"] == s.version and "dead" not in s.active
    plane.close()


def test_closing_a_client_wakes_a_wait_blocked_in_another_thread() -> None:
    """A task waiting at a barrier when its run's plugin is torn down gets a ServerError at once."""
    from psdist.core.rules import Sync

    s = state(max_staleness=None)
    s.rule = Sync()
    s.server_rule = s.rule.server_side()
    local = LocalServer(s)
    plane = PlaneServer.start(local, N, "127.0.0.1")
    other = PlaneClient.connect(plane.endpoint(), "other", "tcp", timeout=30)
    other.join("other")
    other.wait("other", -1)  # a member that never pushes: the next round cannot close
    c = PlaneClient.connect(plane.endpoint(), "w", "tcp", timeout=30)
    c.join("w")
    version = c.wait("w", -1).version
    assert c.push(Push("w", version, np.zeros(N, np.float32), 1, 0.5)).wait  # held back
    errors: list[Exception] = []

    def wait_there() -> None:
        try:
            c.wait("w", version)
        except ServerError as e:
            errors.append(e)

    blocked = threading.Thread(target=wait_there)
    blocked.start()
    deadline = time.monotonic() + 10
    while plane.counters.waiting == 0 and time.monotonic() < deadline:  # its WAIT reached the server
        time.sleep(0.001)
    assert plane.counters.waiting == 1
    c.close()
    blocked.join(10)
    # woken at once (EOF or EBADF, depending on which the kernel reports first), not at the timeout
    assert not blocked.is_alive() and "a wait over the data plane failed" in str(errors[0])
    other.close()
    plane.close()
