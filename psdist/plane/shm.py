"""Same-host slots: one anonymous shared-memory file per worker, passed to the server as an fd.

The worker makes a ``memfd`` (no name in ``/dev/shm`` to leak, not bounded by a container's small
``/dev/shm``, freed with the last mapping when either process dies) holding two float32 vectors:
its *gradient slot* and its *weights slot*. Ownership, not a seqlock: the worker writes its
gradient, then sends a small frame on the Unix socket; the server reads the gradient slot, applies
it, writes the new weights into the weights slot and replies. The socket message is the barrier
on both sides, so neither reads memory the other is writing, on any CPU architecture.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

import numpy as np

__all__ = ["Slots"]


@dataclass
class Slots:
    """The two vectors of one worker, mapped in this process."""

    fd: int
    size: int  # floats per vector
    memory: mmap.mmap
    grad: np.ndarray
    weights: np.ndarray

    @classmethod
    def create(cls, size: int) -> Slots:
        """New slots for ``size`` floats each (the worker's side)."""
        fd = os.memfd_create("psdist-slots", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, 8 * size)
            return cls.map(fd, size)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def map(cls, fd: int, size: int) -> Slots:
        """Map slots received as ``fd`` (the server's side); their length must be ``8 * size``."""
        have = os.fstat(fd).st_size
        if have != 8 * size:
            raise ValueError(f"shared slots of {have} bytes, expected {8 * size} for {size} floats")
        memory = mmap.mmap(fd, 8 * size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        both = np.frombuffer(memory, dtype=np.float32, count=2 * size)
        return cls(fd, size, memory, both[:size], both[size:])

    def close(self) -> None:
        """Unmap and close the fd: the memory goes once the other side has done the same."""
        self.grad = self.weights = np.empty(0, np.float32)  # drop the views before the mapping
        try:
            self.memory.close()
        except BufferError:  # a view still exported elsewhere: the mapping goes with it
            pass
        os.close(self.fd)
