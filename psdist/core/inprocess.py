"""An in-process, thread-safe parameter server handle (threads instead of Dask workers).

:class:`LocalServer` wraps a :class:`~psdist.core.server.ServerState` with a lock and a condition
variable, so several Python threads can train against one server, barriers included. Tests use
it to check rule semantics with real concurrency and no network; the Dask actor does the same
job across processes.
"""

from __future__ import annotations

import threading

import numpy as np

from psdist.core.protocol import Pull, Push, PushReply
from psdist.core.server import ServerState

__all__ = ["LocalServer"]


class LocalServer:
    """:class:`~psdist.core.protocol.ServerHandle` over a shared state, for threads.

    Parameters
    ----------
    state
        The server state (owned by this handle from now on).
    timeout
        Seconds a :meth:`wait` may block; past it, silent workers are evicted once and, if the
        barrier still holds, :class:`~psdist.errors.ServerError` is raised.
    """

    def __init__(self, state: ServerState, timeout: float = 60.0) -> None:
        self.state = state
        self.timeout = timeout
        self._cond = threading.Condition()

    def pull(self, worker: str, have_version: int = -1, into: np.ndarray | None = None) -> Pull:
        with self._cond:
            return self.state.pull(worker, have_version, into)

    def push(self, push: Push, pull: bool = True, into: np.ndarray | None = None) -> PushReply:
        with self._cond:
            reply = self.state.push(push, pull, into)
            self._cond.notify_all()
            return reply

    def join(self, worker: str) -> None:
        with self._cond:
            self.state.join(worker)
            self._cond.notify_all()

    def leave(self, worker: str) -> None:
        with self._cond:
            self.state.leave(worker)
            self._cond.notify_all()

    def wait_blocking(self, worker: str, have_version: int, into: np.ndarray | None, timeout: float) -> Pull:
        """:meth:`wait` with its own timeout, answering ``into`` an array (the data plane's form)."""
        with self._cond:
            got: list[Pull] = []

            def ready() -> bool:
                p = self.state.pull_if_ready(worker, have_version, into)
                if p is not None:
                    got.append(p)
                return p is not None

            if self._cond.wait_for(ready, timeout):
                return got[0]
            raise self.state.held_too_long(worker, timeout)

    def wait(self, worker: str, have_version: int = -1) -> Pull:
        with self._cond:
            got: list[Pull] = []

            def ready() -> bool:
                p = self.state.pull_if_ready(worker, have_version)
                if p is not None:
                    got.append(p)
                return p is not None

            if self._cond.wait_for(ready, self.timeout):
                return got[0]
            self.state.evict_silent(self.timeout)
            self._cond.notify_all()
            if ready():
                return got[0]
            raise self.state.held_too_long(worker, self.timeout)
