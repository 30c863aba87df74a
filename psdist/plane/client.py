"""A worker's side of the data plane: one persistent connection to its parameter server.

:meth:`PlaneClient.connect` picks the backend: shared-memory slots with a Unix-socket doorbell
when the server runs on this host (and the cluster has no TLS), else one TCP connection (TLS with
the cluster's own certificates when it runs TLS). The weights of a reply land in a preallocated
buffer (``recv_into``) or in the worker's shared weights slot; :class:`~psdist.core.protocol.Pull`
hands them out as a read-only view, valid until the next call on this client (callers copy out:
``Replica.load`` does).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import numpy as np

from psdist.core.protocol import Pull, Push, PushReply, Rejection
from psdist.errors import ServerError
from psdist.plane import wire
from psdist.plane.shm import Slots
from psdist.plane.wire import Frame, FrameError, Kind

__all__ = ["BACKENDS", "PlaneClient"]

logger = logging.getLogger(__name__)

#: what ``data_plane=`` may force ("auto": shm on the same host, else tcp)
BACKENDS = ("auto", "shm", "tcp")


class PlaneClient:
    """Push and pull over the data plane (see the module docstring); one caller at a time."""

    def __init__(self, sock: socket.socket, worker: str, size: int, backend: str, slots: Slots | None,
                 timeout: float) -> None:
        self.sock = sock
        self.worker = worker
        self.size = size
        self.backend = backend
        self.slots = slots
        self.timeout = timeout
        self._header = bytearray(wire.HEADER.size)
        self._weights = slots.weights if slots is not None else np.empty(size, np.float32)
        self._view = self._weights.view()
        self._view.flags.writeable = False
        self._join = False  # a join waiting to ride on the next wait
        self.broken = False  # the connection failed: the server made this worker leave when it dropped

    @classmethod
    def connect(cls, endpoint: dict[str, Any], worker: str, backend: str = "auto", timeout: float = 300.0,
                ssl_context: Any = None) -> PlaneClient:
        """Open the connection the ``endpoint`` (from the actor) offers, after its hello.

        Raises
        ------
        ServerError
            The server refused the hello (wrong token or model size), or cannot be reached.
        """
        if backend not in BACKENDS:
            raise ValueError(f"data plane backend {backend!r}: choose one of {BACKENDS}")
        same_host = endpoint.get("unix") is not None and endpoint.get("hostname") == socket.gethostname()
        if backend == "auto" and same_host:
            try:
                return cls._open(endpoint, worker, "shm", timeout, ssl_context)
            except (OSError, ServerError) as e:  # another network namespace, no memfd, ...: TCP then
                logger.warning("psdist: %s: no shared-memory data plane (%s); trying TCP", worker, e)
                return cls._open(endpoint, worker, "tcp", timeout, ssl_context)
        return cls._open(endpoint, worker, "shm" if backend == "shm" else "tcp", timeout, ssl_context)

    @classmethod
    def _open(cls, endpoint: dict[str, Any], worker: str, backend: str, timeout: float,
              ssl_context: Any) -> PlaneClient:
        size = int(endpoint["size"])
        if backend == "shm":
            if endpoint.get("unix") is None:
                raise ServerError("the parameter server offers no shared memory (a TLS cluster, or another host)")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            slots: Slots | None = Slots.create(size)
            name = endpoint["unix"]
            address = "\0" + name[1:] if name.startswith("@") or name.startswith("\0") else name
            try:
                sock.settimeout(timeout)
                sock.connect(address)
            except OSError:
                sock.close()
                assert slots is not None
                slots.close()
                raise
            chosen = "shm"
        else:
            sock = socket.create_connection((endpoint["host"], endpoint["port"]), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if endpoint.get("tls"):
                if ssl_context is None:
                    sock.close()
                    raise ServerError("the data plane runs TLS; this worker has no cluster certificate")
                sock = ssl_context.wrap_socket(sock, server_hostname=None)
            slots, chosen = None, "tcp"
        sock.settimeout(2 * timeout + 10)  # a wait may take the server's full timeout
        client = cls(sock, worker, size, chosen, slots, timeout)
        try:
            client._hello(endpoint["token"])
        except BaseException:
            client.close()
            raise
        return client

    def _hello(self, token: str) -> None:
        hello = wire.encode(Frame(Kind.HELLO, meta={"token": token, "worker": self.worker, "size": self.size}))
        if self.slots is not None:
            socket.send_fds(self.sock, [hello], [self.slots.fd])
        else:
            self.sock.sendall(hello)
        frame = self._receive(frozenset({Kind.WELCOME}), 0, "the hello")
        if frame.a != self.size:
            raise ServerError(f"the parameter server holds {frame.a} floats, this worker {self.size}")

    def _receive(self, kinds: frozenset[Kind], max_payload: int, what: str) -> Frame:
        try:
            frame = wire.recv_frame(self.sock, self._header, kinds | {Kind.ERROR}, max_payload)
        except TimeoutError:
            self.broken = True
            raise ServerError(f"{what} over the data plane got no answer in {self.timeout} s") from None
        except (FrameError, OSError) as e:
            self.broken = True
            raise ServerError(f"{what} over the data plane failed: {e}") from e
        if frame.kind is Kind.ERROR:
            self.broken = True
            raise ServerError(f"the parameter server refused {what}: {(frame.meta or {}).get('reason')}")
        return frame

    # ------------------------------------------------------------------ the handle
    def push(self, push: Push, pull: bool = True) -> PushReply:
        u = push.update
        if u.shape != (self.size,) or u.dtype != np.float32:
            raise ServerError(f"a push of {u.dtype}{list(u.shape)}; the data plane carries float32[{self.size}]")
        meta = {"groups": list(push.groups)} if push.groups is not None else None
        frame = Frame(Kind.PUSH, wire.WANT_PULL if pull else 0, a=push.base_version, b=push.samples, x=push.loss,
                      meta=meta)
        try:
            if self.slots is not None:
                if u is not self.slots.grad:  # written there already (push_buffer): no copy
                    np.copyto(self.slots.grad, u)  # ours until the server's reply: then its turn to read
                wire.send_frame(self.sock, frame)
            else:
                frame.payload = 4 * self.size
                wire.send_frame(self.sock, frame, np.ascontiguousarray(u).data.cast("B"))
        except OSError as e:
            self.broken = True
            raise ServerError(f"a push over the data plane failed: {e}") from e
        return self._reply(push=True)

    def pull(self, worker: str, have_version: int = -1) -> Pull:
        try:
            wire.send_frame(self.sock, Frame(Kind.PULL, a=have_version))
        except OSError as e:
            raise ServerError(f"a pull over the data plane failed: {e}") from e
        reply = self._reply(push=False)
        assert reply.pull is not None
        return reply.pull

    def push_buffer(self) -> np.ndarray | None:
        """The shared gradient slot (over shared memory): write the next push's update there."""
        return self.slots.grad if self.slots is not None else None

    def join(self, worker: str) -> None:
        """Joins with the next :meth:`wait` (its first message of a chunk): no round trip of its own."""
        self._join = True

    def wait(self, worker: str, have_version: int = -1) -> Pull:
        """Wait (on the server's connection thread) until the rule lets this worker go on; pull."""
        flags = wire.JOIN if self._join else 0
        try:
            wire.send_frame(self.sock, Frame(Kind.WAIT, flags, a=have_version, x=float(self.timeout)))
        except OSError as e:
            raise ServerError(f"a wait over the data plane failed: {e}") from e
        self._join = False
        reply = self._reply(push=False, what="a wait")
        assert reply.pull is not None
        return reply.pull

    def leave(self, worker: str) -> None:
        """This worker stops training: one small frame and its empty answer."""
        if self._join or self.broken:  # never joined there, or its connection dropped: the server
            self._join = False          # made this worker leave when it did
            return
        try:
            wire.send_frame(self.sock, Frame(Kind.LEAVE))
        except OSError as e:
            raise ServerError(f"a leave over the data plane failed: {e}") from e
        self._receive(frozenset({Kind.REPLY}), 0, "a leave")

    def _reply(self, push: bool, what: str | None = None) -> PushReply:
        what = what or ("a push" if push else "a pull")
        frame = self._receive(frozenset({Kind.REPLY}), 0 if self.slots is not None else 4 * self.size, what)
        meta = frame.meta or {}
        weights = None
        if frame.flags & wire.HAS_WEIGHTS:
            if self.slots is None:
                if frame.payload != 4 * self.size:
                    raise ServerError(f"{what}: a reply of {frame.payload} bytes, the model has {4 * self.size}")
                try:
                    wire.read_exact(self.sock, self._weights.data.cast("B"))
                except (FrameError, OSError) as e:
                    raise ServerError(f"{what} over the data plane failed: {e}") from e
            weights = self._view
        pull = Pull(frame.c, weights, frame.x, meta.get("lrs")) if frame.flags & wire.HAS_PULL else None
        if not push:
            return PushReply(True, frame.a, 0, None, pull)
        kind = wire.REJECT_CODES[frame.code]
        rejection = None if kind is None else Rejection(kind, str(meta.get("reason", "")))
        return PushReply(bool(frame.flags & wire.APPLIED), frame.a, frame.b, rejection, pull,
                         bool(frame.flags & wire.WAIT))

    def close(self) -> None:
        """Close the connection; a call blocked on it in another thread (a task's wait when the
        run's plugin is torn down) returns at once with a ServerError."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # close() alone does not wake a blocked recv
        except OSError:
            pass  # not connected any more
        try:
            self.sock.close()
        finally:
            if self.slots is not None:
                self.slots.close()
                self.slots = None
