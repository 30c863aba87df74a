"""The parameter server's side of the data plane: a TCP and a Unix-socket listener, a thread per worker.

The Dask actor stays the control plane (join, leave, wait, set_lr, metrics, checkpoints); pushes
and pulls arrive here instead, without pickle, on one persistent connection per worker. Each
connection owns its receive buffer (a push's gradient is read into it with ``recv_into``; over
shared memory it is the worker's gradient slot itself), so nothing is allocated per message.
A TCP connection whose hello chose a 16-bit wire (``"bf16"``, ``"fp16"``) also owns a 16-bit
buffer (:class:`~psdist.plane.wire.Narrow`): a push's gradient arrives there and is widened into
the float32 receive buffer before it is applied; a reply's weights are copied (float32, under the
lock) into that same receive buffer, which the push has left, and rounded into the 16-bit buffer
to be sent. The master weights and the optimizer state stay float32.
:class:`Served` is what the server needs from the actor: push and pull under its lock.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import socket
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from psdist.core.protocol import Pull, Push, PushReply
from psdist.errors import ServerError
from psdist.plane import wire
from psdist.plane.shm import Slots
from psdist.plane.wire import Frame, FrameError, Kind, Narrow

__all__ = ["PlaneServer", "Served"]

logger = logging.getLogger(__name__)

_SOCKET_BUFFER = 4 * 1024 * 1024  # a 1e6-float frame in a few system calls


class Served(Protocol):
    """The state behind the data plane (the actor, under its lock)."""

    def push(self, push: Push, pull: bool, into: np.ndarray | None) -> PushReply:
        """Apply ``push``; with ``pull``, answer the weights (copied ``into`` that array if given)."""

    def pull(self, worker: str, have_version: int, into: np.ndarray | None) -> Pull:
        """The weights (copied ``into`` that array if given), or none when ``have_version`` is current."""

    def join(self, worker: str) -> None:
        """``worker`` starts training (barriers count it)."""

    def leave(self, worker: str) -> None:
        """``worker`` stops training (barriers stop waiting for it)."""

    def wait_blocking(self, worker: str, have_version: int, into: np.ndarray | None, timeout: float) -> Pull:
        """Block this thread until the rule lets ``worker`` go on, then pull; ServerError past ``timeout``."""


@dataclass
class _Counters:
    connections: int = 0
    refused: int = 0  # connections closed for a bad hello or frame
    waiting: int = 0  # connection threads blocked in a barrier's wait now
    pushes: int = 0  # served over the plane (not the actor), answered
    pulls: int = 0
    waits: int = 0
    reasons: list[str] = field(default_factory=list)  # the last few, for tests and logs


def _info(info: Any) -> dict[str, Any]:
    """A push's rule numbers from its frame (a sharded server's: ``nonfinite``, per-model ``norms``),
    checked: small, plain and finite, or the frame is refused."""
    if info is None:
        return {}
    ok = isinstance(info, dict) and len(info) <= 8 and all(
        isinstance(k, str) and (isinstance(v, (bool, int, float)) or (
            isinstance(v, dict) and len(v) <= 64 and all(isinstance(n, (int, float)) for n in v.values())))
        for k, v in info.items())
    if not ok:
        raise FrameError(f"push info {str(info)[:200]!r} is not a small mapping of numbers")
    return info


class PlaneServer:
    """Listens for workers' data-plane connections; see :meth:`start`.

    Attributes
    ----------
    token
        The per-run secret every connection must present (compared in constant time).
    """

    def __init__(self, served: Served, size: int, token: str, tcp: socket.socket, unix: socket.socket | None,
                 ssl_context: Any = None) -> None:
        # weakly: when the actor holding the state goes (training over), so does this server
        self._served = weakref.ref(served, lambda _: self.close())
        self.size = size
        self.token = token
        self._tcp = tcp
        self._unix = unix
        self._ssl = ssl_context
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.counters = _Counters()

    @classmethod
    def start(cls, served: Served, size: int, host: str, ssl_context: Any = None, unix: bool = True) -> PlaneServer:
        """Bind a TCP port on ``host`` (and an abstract Unix socket) and serve in daemon threads.

        With ``ssl_context`` (the cluster's TLS, server side, mutual authentication) the TCP
        port speaks TLS only, and there is no Unix socket (same-host shared memory carries no
        TLS; the TCP backend serves every worker).
        """
        tcp = socket.create_server((host, 0), backlog=128)
        listener: socket.socket | None = None
        if unix and ssl_context is None:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind("\0psdist-plane-" + secrets.token_hex(8))  # abstract: no file to leak
            listener.listen(128)
        server = cls(served, size, secrets.token_hex(32), tcp, listener, ssl_context)
        for sock, shm in ((tcp, False), (listener, True)):
            if sock is not None:
                threading.Thread(target=server._accept, args=(sock, shm), daemon=True,
                                 name=f"psdist-plane-accept-{'unix' if shm else 'tcp'}").start()
        return server

    def endpoint(self) -> dict[str, Any]:
        """Where and how to connect: what a worker gets from the actor (the control plane)."""
        host, port = self._tcp.getsockname()[:2]
        unix = self._unix.getsockname() if self._unix is not None else None
        return {"host": host, "port": port, "unix": unix.decode() if isinstance(unix, bytes) else unix,
                "hostname": socket.gethostname(), "token": self.token, "size": self.size,
                "tls": self._ssl is not None}

    def close(self) -> None:
        """Stop listening and drop every connection (the threads end on their own)."""
        self._closed.set()
        for sock in (self._tcp, self._unix):
            if sock is not None:
                _shut(sock)
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            _shut(c)

    # ------------------------------------------------------------------ threads
    def _accept(self, listener: socket.socket, shm: bool) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn, shm), daemon=True, name="psdist-plane-conn").start()

    def _serve(self, conn: socket.socket, shm: bool) -> None:
        who, slots = "a worker", None
        try:
            if not shm:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                    conn.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER)
                if self._ssl is not None:
                    conn = self._ssl.wrap_socket(conn, server_side=True)  # refuses plaintext and strangers
            with self._lock:
                self._conns.add(conn)
            conn.settimeout(None)
            who, slots, wire_dtype = self._hello(conn, shm)
            with self._lock:
                self.counters.connections += 1
            try:
                self._loop(conn, who, slots, wire_dtype)
            finally:  # a worker whose connection drops stops training: barriers stop waiting for it
                served = self._served()
                if served is not None:
                    served.leave(who)
        except (FrameError, OSError, ValueError, ServerError) as e:
            if not self._closed.is_set():
                self._refuse(conn, who, e)
        finally:
            with self._lock:
                self._conns.discard(conn)
            if slots is not None:
                slots.close()
            _shut(conn)

    def _hello(self, conn: socket.socket, shm: bool) -> tuple[str, Slots | None, str]:
        header = bytearray(wire.HEADER.size)
        fds: list[int] = []
        if shm:  # the slots' fd rides with the first bytes of the hello
            data, fds, _, _ = socket.recv_fds(conn, wire.HEADER.size, 1)
            header[: len(data)] = data
            if len(data) < wire.HEADER.size:
                wire.read_exact(conn, memoryview(header)[len(data):])
            frame = wire.parse(header, frozenset({Kind.HELLO}), 0, conn)
        else:
            frame = wire.recv_frame(conn, header, frozenset({Kind.HELLO}), 0)
        try:
            meta = frame.meta or {}
            token = meta.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.token.encode()):
                raise FrameError("the connection did not present this run's token")
            who = str(meta.get("worker", "?"))[:200]
            if meta.get("size") != self.size:
                raise FrameError(f"{who} holds {meta.get('size')!r} floats, this server {self.size}")
            wire_dtype = meta.get("wire", "float32")
            if wire_dtype not in wire.WIRE_DTYPES:
                raise FrameError(f"{who} asks for wire dtype {wire_dtype!r}; this server speaks {wire.WIRE_DTYPES}")
            if shm and wire_dtype != "float32":  # the vectors never cross a wire there
                raise FrameError(f"{who} asks for wire dtype {wire_dtype!r} over shared memory, which is float32")
            slots = None
            if shm:
                if len(fds) != 1:
                    raise FrameError(f"{who} sent no shared-memory slots on the Unix socket")
                slots = Slots.map(fds.pop(), self.size)
            # the dtype confirmed: a client only sends 16-bit payloads to a server that said so
            wire.send_frame(conn, Frame(Kind.WELCOME, a=self.size, meta={"wire": wire_dtype}))
            return who, slots, wire_dtype
        finally:
            for fd in fds:
                _close_fd(fd)

    def _loop(self, conn: socket.socket, who: str, slots: Slots | None, wire_dtype: str) -> None:
        header = bytearray(wire.HEADER.size)
        unit = wire.value_bytes(wire_dtype)
        # every buffer of the connection, allocated once: nothing per message
        update = slots.grad if slots is not None else np.empty(self.size, np.float32)
        narrow = Narrow(wire_dtype, self.size) if unit == 2 else None
        update_t = torch.from_numpy(update) if narrow is not None else None
        # the reply's weights: the worker's shared slot; for a 16-bit wire the receive buffer (its
        # gradient is applied by then), to be rounded from outside the lock; else the snapshot
        into = slots.weights if slots is not None else update if narrow is not None else None
        max_payload = 0 if slots is not None else unit * self.size
        kinds = frozenset({Kind.PUSH, Kind.PULL, Kind.WAIT, Kind.LEAVE})
        while True:
            try:
                frame = wire.recv_frame(conn, header, kinds, max_payload, unit)
            except FrameError as e:
                if "closed after 0 of" in str(e):
                    return  # the worker hung up between frames: a normal end
                raise
            if frame.kind is Kind.PUSH:
                if slots is None:
                    if frame.payload != unit * self.size:
                        raise FrameError(f"a push of {frame.payload} bytes; the model has {unit * self.size} "
                                         f"({self.size} values of {wire_dtype})")
                    if narrow is not None:
                        assert update_t is not None
                        wire.read_exact(conn, narrow.data)
                        narrow.widen(update_t)
                    else:
                        wire.read_exact(conn, update.data.cast("B"))
                elif frame.payload:
                    raise FrameError("a push over shared memory carries no payload")
                groups = (frame.meta or {}).get("groups")
                if groups is not None and not (isinstance(groups, list) and all(isinstance(g, str) for g in groups)):
                    raise FrameError(f"groups {groups!r} is not a list of model names")
                if frame.b < 0:
                    raise FrameError(f"samples {frame.b} < 0")
                push = Push(who, frame.a, update, frame.b, frame.x, None if groups is None else tuple(groups),
                            _info((frame.meta or {}).get("info")))
                reply = self._state().push(push, bool(frame.flags & wire.WANT_PULL), into)
                self._reply(conn, reply.pull, reply, slots is not None, narrow)
                with self._lock:
                    self.counters.pushes += 1
            else:
                if frame.payload:
                    raise FrameError(f"a {frame.kind.name} frame carries no payload")
                served = self._state()
                if frame.kind is Kind.LEAVE:
                    served.leave(who)
                    wire.send_frame(conn, Frame(Kind.REPLY))
                    continue
                if frame.kind is Kind.WAIT:
                    if frame.flags & wire.JOIN:
                        served.join(who)
                    if not (0 < frame.x <= 7 * 86400):
                        raise FrameError(f"a wait of {frame.x} s")
                    with self._lock:
                        self.counters.waiting += 1
                        self.counters.waits += 1
                    try:
                        pull = served.wait_blocking(who, frame.a, into, frame.x)
                    finally:
                        with self._lock:
                            self.counters.waiting -= 1
                else:
                    pull = served.pull(who, frame.a, into)
                    with self._lock:
                        self.counters.pulls += 1
                self._reply(conn, pull, None, slots is not None, narrow)

    def _state(self) -> Served:
        served = self._served()
        if served is None:
            raise FrameError("the parameter server of this run is gone")
        return served

    def _reply(self, conn: socket.socket, pull: Pull | None, push: PushReply | None, shm: bool,
               narrow: Narrow | None) -> None:
        flags, payload = 0, None
        meta: dict[str, Any] = {}
        code, version, staleness = 0, pull.version if pull else 0, 0
        if push is not None:
            version, staleness = push.version, push.staleness
            flags |= wire.APPLIED if push.applied else 0
            flags |= wire.WAIT if push.wait else 0
            if push.rejection is not None:
                code = wire.REJECT_CODES.index(push.rejection.kind)
                meta["reason"] = push.rejection.reason
        if pull is not None:
            flags |= wire.HAS_PULL
            if pull.lrs:
                meta["lrs"] = pull.lrs
            if pull.weights is not None:
                flags |= wire.HAS_WEIGHTS
                if narrow is not None:  # copied into the receive buffer (float32): rounded for the wire
                    narrow.narrow(pull.weights)
                    payload = narrow.data
                elif not shm:  # over shared memory they were copied into the worker's slot
                    payload = pull.weights.data.cast("B")
        frame = Frame(Kind.REPLY, flags, code, version, staleness, pull.version if pull else 0,
                      pull.lr if pull else 0.0, len(payload) if payload is not None else 0, meta or None)
        wire.send_frame(conn, frame, payload)

    def _refuse(self, conn: socket.socket, who: str, error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"
        with self._lock:
            self.counters.refused += 1
            self.counters.reasons = [*self.counters.reasons[-9:], reason]
        logger.warning("psdist: data plane: closed the connection of %s: %s", who, reason)
        try:  # best effort: tell the peer why (it may be gone, or not speak the protocol)
            wire.send_frame(conn, Frame(Kind.ERROR, meta={"reason": reason[:1000]}))
        except OSError:
            pass


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass

