"""Read ahead: a queued chunk's rows are read and decoded on a thread while the current one trains.

Reading a chunk (Zarr decompression, the integrity checks) took a third of a fast model's
worker time, with the worker's cores idle on I/O part of it. :class:`ReadAhead` starts the
read of a chunk as soon as its task is known to be next (the Dask worker plugin hears it
queued) and hands the rows to the task when it starts; the task then waits only for what is
not read yet. Errors of the read (a bad chunk) reach the task exactly as a direct read's would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from psdist.data.dataset import Chunk

__all__ = ["ReadAhead"]

Rows = tuple[Chunk, np.ndarray, np.ndarray]


class ReadAhead:
    """Background reads of chunks by index, at most ``depth`` held at a time.

    Parameters
    ----------
    read
        Reads the chunk of an index: ``(chunk, x, y)``, or ``None`` when the index is no
        training chunk of this dataset (nothing is read then).
    depth
        Chunks read ahead and held at most (their rows stay in memory until taken or dropped).
    """

    def __init__(self, read: Callable[[int], Rows | None], depth: int = 2) -> None:
        self._read = read
        self._depth = depth
        self._lock = threading.Lock()
        self._pending: dict[int, Future[Rows | None]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.started = 0  # reads begun (tests and logs)
        self.taken = 0  # chunks whose task found its rows read ahead

    def start(self, index: int) -> None:
        """Begin reading chunk ``index`` unless it is under way or ``depth`` chunks are held."""
        with self._lock:
            if index in self._pending or len(self._pending) >= self._depth:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="psdist-read-ahead")
            self._pending[index] = self._pool.submit(self._read, index)
            self.started += 1

    def take(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray] | None:
        """The rows of ``chunk`` if they were read ahead (waiting for the read to finish), else
        ``None``; the read's own error (a bad chunk) is raised here."""
        with self._lock:
            fut = self._pending.pop(chunk.index, None)
        if fut is None:
            return None
        got = fut.result()
        if got is None or got[0] != chunk:  # another dataset's index: read it directly
            return None
        self.taken += 1
        return got[1], got[2]

    def drop(self, index: int) -> None:
        """Forget chunk ``index`` (its task was cancelled or released): its rows are freed."""
        with self._lock:
            fut = self._pending.pop(index, None)
        if fut is not None:
            fut.cancel()

    def close(self) -> None:
        """Drop everything and stop the thread (a read under way finishes on its own)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            pool, self._pool = self._pool, None
        for fut in pending.values():
            fut.cancel()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
