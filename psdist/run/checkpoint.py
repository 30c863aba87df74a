"""Checkpoint files: atomic, verified, and free of pickle.

A checkpoint is a zip archive holding ``meta.json`` (numbers, strings, the layout, the history)
and one ``.npy`` member per array, each with its SHA-256 recorded in the metadata. It is written
to a temporary file in the same directory, synced, and renamed over the target, so a crash
mid-write leaves the previous checkpoint intact (and the next write removes the leftover). Loading reads arrays with
``allow_pickle=False``: a checkpoint can never run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from psdist.errors import CheckpointError

__all__ = ["FORMAT", "read_checkpoint", "write_checkpoint"]

FORMAT = "psdist-checkpoint/1"


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    a = np.asarray(a)  # ascontiguousarray would turn 0-d arrays into shape (1,)
    np.lib.format.write_array(buf, a if a.flags.c_contiguous else a.copy(order="C"), allow_pickle=False)
    return buf.getvalue()


def write_checkpoint(path: str | os.PathLike[str], meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Atomically write ``meta`` (JSON-safe) and ``arrays`` to ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    blobs = {name: _npy_bytes(a) for name, a in arrays.items()}
    meta = dict(meta, format=FORMAT, arrays={n: hashlib.sha256(b).hexdigest() for n, b in blobs.items()})
    try:
        header = json.dumps(meta, allow_nan=True).encode()
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint metadata is not JSON-serialisable: {e}") from e
    prefix = f".psdist-ckpt-{os.path.basename(path)}-"
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
                z.writestr("meta.json", header)
                for name, b in blobs.items():
                    z.writestr(f"arrays/{name}.npy", b)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    # a writer killed mid-write (SIGKILL, node lost) leaves its temporary file; one checkpoint
    # file has one writer at a time, so the next successful write removes what earlier ones left
    for name in os.listdir(directory):
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:  # removed meanwhile: nothing left to do
                pass


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a checkpoint; :class:`CheckpointError` on any damage."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path!r}; check the path or train first")
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("meta.json"))
            if not isinstance(meta, dict) or not isinstance(meta.get("arrays"), dict):
                raise CheckpointError(f"{path!r} has no psdist metadata: not a psdist checkpoint")
            if meta.get("format") != FORMAT:
                raise CheckpointError(
                    f"{path!r} is format {meta.get('format')!r}, this psdist reads {FORMAT!r}"
                )
            arrays = {}
            for name, digest in meta["arrays"].items():
                blob = z.read(f"arrays/{name}.npy")
                if hashlib.sha256(blob).hexdigest() != digest:
                    raise CheckpointError(f"checkpoint {path!r} is corrupted: array {name!r} fails its checksum")
                arrays[name] = np.lib.format.read_array(io.BytesIO(blob), allow_pickle=False)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as e:
        raise CheckpointError(
            f"{path!r} is truncated or not a psdist checkpoint ({type(e).__name__}: {e})"
        ) from e
    return meta, arrays
