"""The data plane's frames: a fixed binary header, a small JSON meta blob, raw float32 payload.

No pickle crosses this port: a frame is a 52-byte header (:data:`HEADER`), ``meta_len`` bytes of
UTF-8 JSON (rare fields: a push's model groups, a rejection's reason, the models' base rates) and
``payload`` bytes of values (a gradient, or the weights of a reply): float32, or 16-bit floats
(bf16, fp16) on a TCP connection whose hello chose them (:data:`WIRE_DTYPES`, :class:`Narrow`).
Every field is bounds-checked against the layout before a byte of payload is read (:func:`parse`);
a frame that fails closes its connection with the reason, and the server goes on serving the others.
"""

from __future__ import annotations

import enum
import json
import socket
import ssl
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from psdist.core.protocol import RejectKind

__all__ = ["HEADER", "MAGIC", "MAX_META", "WIRE_DTYPES", "Frame", "FrameError", "Kind", "Narrow", "parse",
           "read_exact", "recv_frame", "send_frame", "value_bytes"]

MAGIC = b"PSD1"
#: magic, kind, flags, code, meta_len, a, b, c, x, payload
HEADER = struct.Struct("<4sBBHIqqqdQ")
MAX_META = 64 * 1024  # a reason, groups, rates: never more

# reply flags
APPLIED, WAIT, HAS_PULL, HAS_WEIGHTS = 1, 2, 4, 8
# push flags
WANT_PULL = 1
# wait flags
JOIN = 1
#: rejection kinds on the wire (0: none), in a fixed order
REJECT_CODES: tuple[RejectKind | None, ...] = (None, *RejectKind)
#: what the vectors of a TCP connection travel as (its hello's ``"wire"``); master weights and
#: optimizer state stay float32 on the server whatever a connection chose
WIRE_DTYPES = ("float32", "bf16", "fp16")
_TORCH_16 = {"bf16": torch.bfloat16, "fp16": torch.float16}


def value_bytes(wire_dtype: str) -> int:
    """Bytes per value of a payload in ``wire_dtype`` (one of :data:`WIRE_DTYPES`)."""
    return 4 if wire_dtype == "float32" else 2


class Kind(enum.IntEnum):
    """What a frame is."""

    HELLO = 1  # client: token, worker, size, backend (shm: the slots' fd rides along)
    WELCOME = 2  # server: accepted
    PUSH = 3  # a: base version, b: samples, x: loss; flags: WANT_PULL; payload: the update (TCP)
    PULL = 4  # a: the version the caller holds
    REPLY = 5  # a: version, b: staleness, c: pull version, x: lr; code: rejection; payload: weights (TCP)
    ERROR = 6  # code 0; meta: {"reason": ...}; the sender closes the connection
    WAIT = 7  # a: the version held, x: seconds; flags: JOIN (join first); answered when the rule lets go
    LEAVE = 8  # the worker stops training (end of its chunk); answered by an empty REPLY


class FrameError(ConnectionError):
    """A frame that breaks the protocol: the connection it came on is closed."""


@dataclass
class Frame:
    """One decoded header (and its meta), before the payload is read."""

    kind: Kind
    flags: int = 0
    code: int = 0
    a: int = 0
    b: int = 0
    c: int = 0
    x: float = 0.0
    payload: int = 0
    meta: dict[str, Any] | None = None


def encode(frame: Frame) -> bytes:
    """The header and meta of ``frame`` (payload bytes are sent after, from the array itself)."""
    meta = b"" if not frame.meta else json.dumps(frame.meta, separators=(",", ":")).encode()
    return HEADER.pack(MAGIC, frame.kind, frame.flags, frame.code, len(meta), frame.a, frame.b, frame.c,
                       frame.x, frame.payload) + meta


def read_exact(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from ``sock`` (``recv_into``: no allocation); EOF mid-frame is a FrameError."""
    got, n = 0, len(view)
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise FrameError(f"connection closed after {got} of {n} bytes of a frame")
        got += k


def recv_frame(sock: socket.socket, header: bytearray, allowed: frozenset[Kind], max_payload: int,
               unit: int = 4) -> Frame:
    """Read one header (into the caller's ``header`` buffer) and its meta; check every field.

    ``unit``: the bytes of one payload value on this connection (4, or 2 for 16-bit floats).

    Raises
    ------
    FrameError
        Wrong magic, a kind not ``allowed`` here, meta or payload out of bounds, meta that is
        not a JSON object, a connection closed mid-frame.
    """
    read_exact(sock, memoryview(header))
    return parse(header, allowed, max_payload, sock, unit)


def parse(header: bytearray, allowed: frozenset[Kind], max_payload: int, sock: socket.socket,
          unit: int = 4) -> Frame:
    """Check a header already read (and read its meta from ``sock``); see :func:`recv_frame`."""
    magic, kind, flags, code, meta_len, a, b, c, x, payload = HEADER.unpack(header)
    if magic != MAGIC:
        raise FrameError(f"bad magic {magic!r}: not a psdist data-plane frame")
    if kind not in allowed:  # an IntEnum member equals (and hashes as) its int
        raise FrameError(f"frame kind {kind} not expected here (expected {sorted(k.name for k in allowed)})")
    if flags > 0xF or code >= len(REJECT_CODES):
        raise FrameError(f"flags {flags:#x} or code {code} out of range")
    if meta_len > MAX_META:
        raise FrameError(f"meta of {meta_len} bytes exceeds {MAX_META}")
    if payload > max_payload or payload % unit:
        raise FrameError(f"payload of {payload} bytes: at most {max_payload}, a multiple of {unit}")
    meta = None
    if meta_len:
        raw = bytearray(meta_len)
        read_exact(sock, memoryview(raw))
        try:
            meta = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FrameError(f"meta is not JSON: {e}") from None
        if not isinstance(meta, dict):
            raise FrameError(f"meta is a {type(meta).__name__}, not an object")
    return Frame(Kind(kind), flags, code, a, b, c, x, payload, meta)


def send_frame(sock: socket.socket, frame: Frame, payload: memoryview | None = None) -> None:
    """Header, meta and payload in one ``sendmsg`` where the kernel takes it all (no joined copy)."""
    parts: list[bytes | memoryview] = [encode(frame)]
    if payload is not None and len(payload):
        parts.append(payload)
    if isinstance(sock, ssl.SSLSocket):  # TLS has no sendmsg: the record layer copies anyway
        for part in parts:
            sock.sendall(part)
        return
    total = sum(len(p) for p in parts)
    sent = sock.sendmsg(parts)
    if sent < total:  # a partial send: finish the rest piece by piece
        flat = [memoryview(p).cast("B") for p in parts]
        for part in flat:
            if sent >= len(part):
                sent -= len(part)
                continue
            sock.sendall(part[sent:])
            sent = 0


class Narrow:
    """One connection's 16-bit copy of a vector, allocated once, and its float32 conversions.

    The conversions are torch ``copy_`` between preallocated tensors: float32 to bf16/fp16
    rounds to nearest, ties to even (values beyond fp16's range become infinities, which the
    server refuses as non-finite), and 16-bit to float32 is exact. Nothing is allocated per
    message but the small tensor headers viewing a caller's array.

    Parameters
    ----------
    wire_dtype
        ``"bf16"`` or ``"fp16"``.
    size
        Values in the vector.
    """

    def __init__(self, wire_dtype: str, size: int) -> None:
        if wire_dtype not in _TORCH_16:
            raise ValueError(f"wire_dtype {wire_dtype!r} is not 16-bit: choose one of {tuple(_TORCH_16)}")
        self.wire_dtype = wire_dtype
        self.raw = np.zeros(size, np.int16)  # numpy has no bf16: the bits, viewed as one by torch
        #: the bytes that cross (``recv_into``/``sendmsg`` them)
        self.data = self.raw.data.cast("B")
        self._wire = torch.from_numpy(self.raw).view(_TORCH_16[wire_dtype])
        self._staging: np.ndarray | None = None  # for a caller's read-only or strided array only

    def narrow(self, src: np.ndarray | torch.Tensor) -> None:
        """Round ``src`` (float32, one value per element of the buffer) into the 16-bit buffer."""
        if isinstance(src, np.ndarray):
            if not (src.flags.writeable and src.flags.c_contiguous):
                # torch views neither (it warns on read-only memory): staged once per connection
                if self._staging is None:
                    self._staging = np.empty(len(self.raw), np.float32)
                np.copyto(self._staging, src)
                src = self._staging
            src = torch.from_numpy(src)
        self._wire.copy_(src)

    def widen(self, dst: torch.Tensor) -> None:
        """Write the buffer's values, exactly, into ``dst`` (float32, preallocated)."""
        dst.copy_(self._wire)
