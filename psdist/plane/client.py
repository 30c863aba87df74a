"""A worker's side of the data plane: one persistent connection to its parameter server.

:meth:`PlaneClient.connect` picks the backend: shared-memory slots with a Unix-socket doorbell
when the server runs on this host (and the cluster has no TLS), else one TCP connection (TLS with
the cluster's own certificates when it runs TLS). The weights of a reply land in a preallocated
buffer (``recv_into``) or in the worker's shared weights slot; :class:`~psdist.core.protocol.Pull`
hands them out as a read-only view, valid until the next call on this client (callers copy out:
``Replica.load`` does).

Over TCP the vectors may travel as 16-bit floats (``wire_dtype="bf16"`` or ``"fp16"``): half the
bytes across hosts, at the price of rounding the gradient and the weights the worker receives (to
nearest, ties to even). The server keeps its master weights and optimizer state in float32.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import numpy as np
import torch

from psdist.core.protocol import Pull, Push, PushReply, Rejection
from psdist.errors import ServerError
from psdist.plane import wire
from psdist.plane.shm import Slots
from psdist.plane.wire import WIRE_DTYPES, Frame, FrameError, Kind, Narrow

__all__ = ["BACKENDS", "WIRE_DTYPES", "PlaneClient"]

logger = logging.getLogger(__name__)

#: what ``data_plane=`` may force ("auto": shm on the same host, else tcp)
BACKENDS = ("auto", "shm", "tcp")
_WELCOME = frozenset({Kind.WELCOME, Kind.ERROR})
_REPLY = frozenset({Kind.REPLY, Kind.ERROR})  # built once: read on every call


class PlaneClient:
    """Push and pull over the data plane (see the module docstring); one caller at a time.

    Attributes
    ----------
    backend
        ``"shm"`` or ``"tcp"``: what :meth:`connect` chose.
    wire_dtype
        What the vectors travel as: ``"float32"``, or ``"bf16"``/``"fp16"`` on TCP when asked.
    """

    def __init__(self, sock: socket.socket, worker: str, size: int, backend: str, slots: Slots | None,
                 timeout: float, wire_dtype: str = "float32") -> None:
        self.sock = sock
        self.worker = worker
        self.size = size
        self.backend = backend
        self.slots = slots
        self.timeout = timeout
        self.wire_dtype = wire_dtype
        self._unit = wire.value_bytes(wire_dtype)
        self._header = bytearray(wire.HEADER.size)
        self._weights = slots.weights if slots is not None else np.empty(size, np.float32)
        # a 16-bit wire: one buffer for both directions (a push is sent before its reply comes)
        self._narrow = Narrow(wire_dtype, size) if self._unit == 2 else None
        self._weights_t = torch.from_numpy(self._weights) if self._narrow is not None else None
        self._view = self._weights.view()
        self._view.flags.writeable = False
        self._join = False  # a join waiting to ride on the next wait
        self.broken = False  # the connection failed: the server made this worker leave when it dropped

    @classmethod
    def connect(cls, endpoint: dict[str, Any], worker: str, backend: str = "auto", timeout: float = 300.0,
                ssl_context: Any = None, wire_dtype: str = "float32") -> PlaneClient:
        """Open the connection the ``endpoint`` (from the actor) offers, after its hello.

        Parameters
        ----------
        endpoint
            What the parameter server's actor answers (``plane_endpoint()``): addresses and token.
        worker
            This worker's name (the server's bookkeeping).
        backend
            ``"auto"`` (shared memory when the server runs on this host, else TCP), ``"shm"`` or
            ``"tcp"``.
        timeout
            Seconds to connect, and for an answer (a wait may take twice that).
        ssl_context
            The cluster's client-side TLS context, when the data plane runs TLS.
        wire_dtype
            What the gradient of a push and the weights of a reply travel as over TCP:
            ``"float32"`` (exact), ``"bf16"`` or ``"fp16"`` (2 bytes a value, rounded to nearest
            even; fp16 holds magnitudes up to 65504 only, a gradient beyond becomes infinite
            and is refused as non-finite). The saving is bandwidth between hosts: over shared
            memory the vectors never cross a wire and stay float32, so ``backend="auto"``
            ignores it when it picks shared memory, and ``backend="shm"`` refuses anything but
            ``"float32"``. The server's master weights and optimizer state stay float32.

        Returns
        -------
        PlaneClient
            Connected; :attr:`backend` and :attr:`wire_dtype` say what was chosen.

        Raises
        ------
        ValueError
            An unknown ``backend`` or ``wire_dtype``, or a 16-bit ``wire_dtype`` with ``backend="shm"``.
        ServerError
            The server refused the hello (wrong token, model size or wire dtype), or cannot be reached.
        """
        if backend not in BACKENDS:
            raise ValueError(f"data plane backend {backend!r}: choose one of {BACKENDS}")
        if wire_dtype not in WIRE_DTYPES:
            raise ValueError(f"wire_dtype {wire_dtype!r}: choose one of {WIRE_DTYPES}")
        if backend == "shm" and wire_dtype != "float32":
            raise ValueError(f"wire_dtype={wire_dtype!r} with backend='shm': over shared memory the vectors never "
                             "cross a wire and stay float32; a 16-bit wire saves bandwidth between hosts "
                             "(backend='tcp', or 'auto', which ignores it when it picks shared memory)")
        same_host = endpoint.get("unix") is not None and endpoint.get("hostname") == socket.gethostname()
        if backend == "auto" and same_host:
            try:
                return cls._open(endpoint, worker, "shm", timeout, ssl_context, "float32")
            except (OSError, ServerError) as e:  # another network namespace, no memfd, ...: TCP then
                logger.warning("psdist: %s: no shared-memory data plane (%s); trying TCP", worker, e)
                return cls._open(endpoint, worker, "tcp", timeout, ssl_context, wire_dtype)
        return cls._open(endpoint, worker, "shm" if backend == "shm" else "tcp", timeout, ssl_context, wire_dtype)

    @classmethod
    def _open(cls, endpoint: dict[str, Any], worker: str, backend: str, timeout: float,
              ssl_context: Any, wire_dtype: str) -> PlaneClient:
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
        client = cls(sock, worker, size, chosen, slots, timeout, wire_dtype)
        try:
            client._hello(endpoint["token"])
        except BaseException:
            client.close()
            raise
        return client

    def _hello(self, token: str) -> None:
        meta = {"token": token, "worker": self.worker, "size": self.size}
        if self.wire_dtype != "float32":  # a float32 hello stays what servers before 16-bit wires accept
            meta["wire"] = self.wire_dtype
        hello = wire.encode(Frame(Kind.HELLO, meta=meta))
        if self.slots is not None:
            socket.send_fds(self.sock, [hello], [self.slots.fd])
        else:
            self.sock.sendall(hello)
        frame = self._receive(_WELCOME, 0, "the hello")
        if frame.a != self.size:
            raise ServerError(f"the parameter server holds {frame.a} floats, this worker {self.size}")
        agreed = (frame.meta or {}).get("wire", "float32")
        if agreed != self.wire_dtype:
            raise ServerError(f"the parameter server answers wire dtype {agreed!r} to {self.wire_dtype!r}: "
                              "it predates 16-bit wires; use wire_dtype='float32'")

    def _receive(self, kinds: frozenset[Kind], max_payload: int, what: str) -> Frame:
        try:  # kinds: ERROR among them (the server says why it closes)
            frame = wire.recv_frame(self.sock, self._header, kinds, max_payload, self._unit)
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
        meta: dict[str, Any] | None = {"groups": list(push.groups)} if push.groups is not None else None
        if push.info:  # a sharded server's whole-update facts (psdist.plane.sharded)
            meta = {**(meta or {}), "info": push.info}
        frame = Frame(Kind.PUSH, wire.WANT_PULL if pull else 0, a=push.base_version, b=push.samples, x=push.loss,
                      meta=meta)
        try:
            if self.slots is not None:
                if u is not self.slots.grad:  # written there already (push_buffer): no copy
                    np.copyto(self.slots.grad, u)  # ours until the server's reply: then its turn to read
                wire.send_frame(self.sock, frame)
            elif self._narrow is not None:
                self._narrow.narrow(u)
                frame.payload = 2 * self.size
                wire.send_frame(self.sock, frame, self._narrow.data)
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
        self._receive(_REPLY, 0, "a leave")

    def _reply(self, push: bool, what: str | None = None) -> PushReply:
        what = what or ("a push" if push else "a pull")
        nbytes = self._unit * self.size
        frame = self._receive(_REPLY, 0 if self.slots is not None else nbytes, what)
        meta = frame.meta or {}
        weights = None
        if frame.flags & wire.HAS_WEIGHTS:
            if self.slots is None:
                if frame.payload != nbytes:
                    self.broken = True
                    raise ServerError(f"{what}: a reply of {frame.payload} bytes, the model has {nbytes} "
                                      f"({self.size} values of {self.wire_dtype})")
                try:
                    if self._narrow is not None:
                        assert self._weights_t is not None
                        wire.read_exact(self.sock, self._narrow.data)
                        self._narrow.widen(self._weights_t)
                    else:
                        wire.read_exact(self.sock, self._weights.data.cast("B"))
                except (FrameError, OSError) as e:
                    self.broken = True
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
