"""16-bit wires on the TCP data plane: the gradient and the reply's weights travel as bf16/fp16,
rounded to nearest even; the server applies the rounded gradient in float32 and keeps its master
weights and optimizer state float32, bit for bit what a state driven directly with the rounded
gradients holds."""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

import psdist.optim
from psdist.core.inprocess import LocalServer
from psdist.core.layout import Entry, FlatSpec, Layout
from psdist.core.protocol import Push, RejectKind
from psdist.core.server import ServerState
from psdist.errors import ServerError
from psdist.plane import WIRE_DTYPES, PlaneClient, PlaneServer, wire

N = 1001  # odd: a 16-bit payload (2 * N bytes) is no multiple of 4


def state() -> ServerState:
    lay = Layout.of({"model": FlatSpec((Entry("w", (N - 11,), "float32", 0, "param"),
                                        Entry("b", (11,), "float32", N - 11, "buffer")), N - 11)})
    # torch's SGD with momentum, as a real server runs it: the momentum buffer must stay float32 too
    return ServerState(lay, np.linspace(-1, 1, N).astype(np.float32),
                       {"model": psdist.optim.SGD(lr=0.5, momentum=0.9)}, max_staleness=2)


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 -> float32, to nearest even, with integer arithmetic (no torch): the reference."""
    assert np.isfinite(x).all()
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32)


def round_fp16(x: np.ndarray) -> np.ndarray:
    """float32 -> fp16 -> float32 (numpy's cast rounds to nearest even, subnormals included)."""
    return x.astype(np.float16).astype(np.float32)


ROUND: dict[str, Callable[[np.ndarray], np.ndarray]] = {"bf16": round_bf16, "fp16": round_fp16}


def updates(k: int, seed: int = 0) -> list[np.ndarray]:
    """Gradients with values no 16-bit float holds, ties to round to even, and fp16 subnormals."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        u = (rng.standard_normal(N) * 0.1).astype(np.float32)
        u[:4] = [1 + 2.0**-8, 1 + 3 * 2.0**-8, 1 + 2.0**-11, 1 + 3 * 2.0**-11]  # bf16 ties, then fp16 ties
        u[4:8] = [3e-6, -4.5e-7, 6.1e-5, 1e-8]  # fp16 subnormals (and one that rounds to zero)
        out.append(u)
    return out


@pytest.fixture
def served() -> Iterator[tuple[LocalServer, PlaneServer]]:
    local = LocalServer(state())
    plane = PlaneServer.start(local, N, "127.0.0.1")
    yield local, plane
    plane.close()


def test_the_reference_rounding_rounds_ties_to_even() -> None:
    x = np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8, -(1 + 2.0**-8), 1 + 2.0**-7], np.float32)
    assert round_bf16(x).tolist() == [1.0, 1 + 2.0**-6, -1.0, 1 + 2.0**-7]
    t = torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()
    assert t.tobytes() == round_bf16(x).tobytes()


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_16bit_pushes_equal_rounded_gradients_applied_in_float32(served: Any, dtype: str) -> None:
    local, plane = served
    twin = state()
    rnd = ROUND[dtype]
    client = PlaneClient.connect(plane.endpoint(), "w1", "tcp", timeout=10, wire_dtype=dtype)
    assert (client.backend, client.wire_dtype) == ("tcp", dtype)
    try:
        first = client.pull("w1")
        assert first.version == 0 and first.weights.dtype == np.float32
        assert first.weights.tobytes() == rnd(twin.pull("w1").weights).tobytes()
        version = 0
        for i, u in enumerate(updates(6)):
            base = version if i != 4 else version - 3  # one push too stale: rejected
            sent = u.copy()
            got = client.push(Push("w1", base, u, 8, 0.25), pull=True)
            assert u.tobytes() == sent.tobytes()  # the caller's gradient is not rounded in place
            want = twin.push(Push("w1", base, rnd(u), 8, 0.25), pull=True)
            assert (got.applied, got.version, got.staleness, got.kind) == (
                want.applied, want.version, want.staleness, want.kind)
            assert got.pull.version == want.pull.version
            assert got.pull.weights.tobytes() == rnd(want.pull.weights).tobytes()  # the master's, rounded
            version = got.version
        assert client.pull("w1", version).weights is None  # current: no weights cross
        assert client.pull("w1").weights.tobytes() == rnd(local.state.weights).tobytes()
        master = local.state.weights
        assert master.dtype == np.float32 and master.tobytes() == twin.weights.tobytes()
        assert (rnd(master) != master).any()  # the master itself is not rounded
        ours, theirs = (s.optimizers["model"].torch for s in (local.state, twin))
        (p,), (q,) = (o.param_groups[0]["params"] for o in (ours, theirs))
        m, n = ours.state[p]["momentum_buffer"], theirs.state[q]["momentum_buffer"]
        assert m.dtype == torch.float32 and torch.equal(m, n)
    finally:
        client.close()


def test_a_read_only_gradient_travels_the_same(served: Any) -> None:
    local, plane = served
    twin = state()
    client = PlaneClient.connect(plane.endpoint(), "w1", "tcp", timeout=10, wire_dtype="bf16")
    u = updates(1)[0]
    u.flags.writeable = False  # torch views no read-only memory: staged in the connection's buffer
    got = client.push(Push("w1", 0, u, 8, 0.25), pull=True)
    want = twin.push(Push("w1", 0, round_bf16(u), 8, 0.25), pull=True)
    assert got.applied and got.pull.weights.tobytes() == round_bf16(want.pull.weights).tobytes()
    strided = np.repeat(updates(1, seed=1)[0], 2)[::2]  # not contiguous
    got = client.push(Push("w1", 1, strided, 8, 0.25), pull=True)
    want = twin.push(Push("w1", 1, round_bf16(strided), 8, 0.25), pull=True)
    assert got.applied and local.state.weights.tobytes() == twin.weights.tobytes()
    client.close()


def test_an_fp16_gradient_beyond_its_range_is_refused_as_non_finite(served: Any) -> None:
    local, plane = served
    client = PlaneClient.connect(plane.endpoint(), "w1", "tcp", timeout=10, wire_dtype="fp16")
    u = np.zeros(N, np.float32)
    u[3] = 1e5  # fp16 holds 65504 at most: infinite on the wire
    before = local.state.weights.copy()
    got = client.push(Push("w1", 0, u, 8, 0.25), pull=True)
    assert not got.applied and got.kind is RejectKind.NONFINITE
    assert local.state.weights.tobytes() == before.tobytes()
    client.close()


def _hello(endpoint: dict[str, Any], **extra: Any) -> bytes:
    meta = {"token": endpoint["token"], "worker": "raw", "size": N, **extra}
    return wire.encode(wire.Frame(wire.Kind.HELLO, meta=meta))


def _refused(endpoint: dict[str, Any], data: bytes, **hello: Any) -> str:
    """Send a hello (with ``hello`` in its meta) and ``data``; the reason of the server's ERROR frame."""
    with socket.create_connection((endpoint["host"], endpoint["port"]), timeout=10) as s:
        s.sendall(_hello(endpoint, **hello))
        header = bytearray(wire.HEADER.size)
        kinds = frozenset({wire.Kind.WELCOME, wire.Kind.ERROR})
        frame = wire.recv_frame(s, header, kinds, 0)
        if frame.kind is wire.Kind.WELCOME:
            assert frame.meta == {"wire": hello.get("wire", "float32")}
            try:
                s.sendall(data)
            except OSError:
                pass  # it closed while we were still sending
            frame = wire.recv_frame(s, header, kinds, 0)
        assert frame.kind is wire.Kind.ERROR
        assert s.recv(1) == b""  # and the connection closed
        return str(frame.meta["reason"])


def test_a_payload_that_does_not_match_the_negotiated_dtype_is_refused(served: Any) -> None:
    local, plane = served
    endpoint = plane.endpoint()
    keeper = PlaneClient.connect(endpoint, "keeper", "tcp", timeout=10, wire_dtype="bf16")
    h = wire.HEADER

    def push(nbytes: int) -> bytes:
        return h.pack(wire.MAGIC, wire.Kind.PUSH, 1, 0, 0, 0, 1, 0, 0.5, nbytes) + bytes(nbytes)

    # a bf16 connection sending a float32 gradient; a float32 one sending bf16; one value short
    assert "payload of 4004 bytes: at most 2002" in _refused(endpoint, push(4 * N), wire="bf16")
    assert "payload of 2002 bytes: at most 4004, a multiple of 4" in _refused(endpoint, push(2 * N))
    assert "a push of 2000 bytes; the model has 4004" in _refused(endpoint, push(2 * N - 2))
    assert "a push of 2000 bytes; the model has 2002 (1001 values of fp16)" in _refused(
        endpoint, push(2 * N - 2), wire="fp16")
    assert "asks for wire dtype 'int8'" in _refused(endpoint, b"", wire="int8")
    assert plane.counters.refused == 5
    # the server went on serving the keeper throughout
    reply = keeper.push(Push("keeper", 0, updates(1)[0], 1, 0.1), pull=True)
    assert reply.applied and reply.pull.weights.tobytes() == round_bf16(local.state.weights).tobytes()
    keeper.close()


def test_shared_memory_stays_float32(served: Any) -> None:
    _, plane = served
    endpoint = plane.endpoint()
    with pytest.raises(ValueError, match=r"backend='shm'.*stay float32"):
        PlaneClient.connect(endpoint, "w", "shm", timeout=10, wire_dtype="bf16")
    auto = PlaneClient.connect(endpoint, "w", "auto", timeout=10, wire_dtype="bf16")  # same host: shm
    assert (auto.backend, auto.wire_dtype) == ("shm", "float32")
    auto.close()
    # a hello on the Unix socket that asks for 16 bits anyway is refused
    fd = os.memfd_create("t")
    try:
        os.ftruncate(fd, 8 * N)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect("\0" + endpoint["unix"][1:])
            socket.send_fds(s, [_hello(endpoint, wire="bf16")], [fd])
            frame = wire.recv_frame(s, bytearray(wire.HEADER.size), frozenset({wire.Kind.ERROR}), 0)
            assert "over shared memory, which is float32" in frame.meta["reason"]
    finally:
        os.close(fd)


@pytest.mark.parametrize("bad", ["float64", "bfloat16", "", None])
def test_an_unknown_wire_dtype_is_a_value_error(served: Any, bad: Any) -> None:
    _, plane = served
    with pytest.raises(ValueError, match=re.escape(f"wire_dtype {bad!r}: choose one of {WIRE_DTYPES}")):
        PlaneClient.connect(plane.endpoint(), "w", "tcp", timeout=10, wire_dtype=bad)
    assert plane.counters.connections == 0  # refused before connecting


def test_a_server_that_does_not_confirm_the_dtype_is_not_sent_16_bits() -> None:
    """A server from before 16-bit wires ignores the hello's ``wire`` and welcomes without it: the
    client stops there rather than send payloads that server would take for float32."""
    listener = socket.create_server(("127.0.0.1", 0))
    hellos: list[wire.Frame] = []

    def old_server() -> None:
        conn, _ = listener.accept()
        with conn:
            hellos.append(wire.recv_frame(conn, bytearray(wire.HEADER.size), frozenset({wire.Kind.HELLO}), 0))
            wire.send_frame(conn, wire.Frame(wire.Kind.WELCOME, a=N))  # no meta
            conn.recv(1)  # until the client hangs up

    thread = threading.Thread(target=old_server)
    thread.start()
    host, port = listener.getsockname()
    endpoint = {"host": host, "port": port, "unix": None, "hostname": "elsewhere", "token": "t", "size": N}
    with pytest.raises(ServerError, match="answers wire dtype 'float32' to 'bf16': it predates 16-bit wires"):
        PlaneClient.connect(endpoint, "w", "auto", timeout=10, wire_dtype="bf16")
    thread.join(10)
    listener.close()
    assert hellos[0].meta is not None and hellos[0].meta["wire"] == "bf16"


def test_the_16bit_buffers_are_the_connections_own_for_every_message(served: Any) -> None:
    """No allocation per message: the pulled weights view the client's one float32 buffer, which
    its one 16-bit buffer is widened into, push after push."""
    _, plane = served
    client = PlaneClient.connect(plane.endpoint(), "w1", "tcp", timeout=10, wire_dtype="fp16")
    assert client._narrow is not None
    raw, weights = client._narrow.raw.ctypes.data, client._weights.ctypes.data
    version = client.pull("w1").version
    for u in updates(3):
        reply = client.push(Push("w1", version, u, 8, 0.25), pull=True)
        version = reply.version
        assert reply.pull.weights.ctypes.data == weights and not reply.pull.weights.flags.writeable
        assert client._narrow.raw.ctypes.data == raw
    client.close()


def test_a_tls_plane_carries_bf16() -> None:
    pytest.importorskip("cryptography")
    from distributed.security import Security

    sec = Security.temporary()
    local = LocalServer(state())
    plane = PlaneServer.start(local, N, "127.0.0.1", sec.get_listen_args("worker")["ssl_context"])
    twin = state()
    try:
        client = PlaneClient.connect(plane.endpoint(), "w", "tcp", timeout=10, wire_dtype="bf16",
                                     ssl_context=sec.get_connection_args("worker")["ssl_context"])
        u = updates(1)[0]
        reply = client.push(Push("w", 0, u, 1, 0.5), pull=True)
        want = twin.push(Push("w", 0, round_bf16(u), 1, 0.5), pull=True)
        assert reply.applied and reply.pull.weights.tobytes() == round_bf16(want.pull.weights).tobytes()
        assert local.state.weights.tobytes() == twin.weights.tobytes()
        client.close()
    finally:
        plane.close()
