"""Waiting on the cluster in slices: between two slices, look whether waiting still makes sense.

A Dask future whose answer can never come (an actor call to a worker that died, a task whose
parameter server is gone) waits forever, or until its timeout. Every blocking wait of psdist
therefore waits at most :data:`SLICE` seconds at a time; between slices it asks whether the
other side is still there (and fails at once if not), whether the deadline passed, and does
its housekeeping. :func:`wait_sliced` is that loop, for the session's calls to the parameter
server (:meth:`psdist.cluster.session.Session.call`), the workers' calls
(:class:`psdist.cluster.worker.ActorServer`) and the trainer's wait for chunk tasks
(:class:`psdist.cluster.tasks.ChunkRunner`).

It needs no Dask: ``poll`` is any callable that waits up to the seconds it is given and raises
:class:`TimeoutError` when nothing came.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import TypeVar

from psdist.errors import ServerError

__all__ = ["MIN_SLICE", "SLICE", "wait_sliced"]

T = TypeVar("T")

#: Seconds a wait blocks before it looks again (how late a lost parameter server is noticed).
SLICE = 1.0
#: The shortest slice: a wait close to its deadline still gives the answer a moment to come.
MIN_SLICE = 0.01

# the same class from Python 3.11 on; distinct classes on 3.10, where Dask raises either
_TIMEOUTS = (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError)


def wait_sliced(
    poll: Callable[[float], T],
    *,
    what: str,
    timeout: float | None = None,
    alive: Callable[[], None] | None = None,
    on_idle: Callable[[], None] | None = None,
    slice_s: float = SLICE,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``poll``'s answer, waited for in slices of at most ``slice_s`` seconds.

    After every slice without an answer, in this order: ``alive()`` (raises when the answer
    can no longer come), the deadline, ``on_idle()`` (housekeeping, e.g. restarting hung
    workers).

    Parameters
    ----------
    poll
        Waits up to the given seconds; returns the answer, or raises :class:`TimeoutError`.
        Other exceptions (the call failed) go through unchanged.
    what
        The call waited for, as the error names it: ``"a pull"``, ``"metrics()"``.
    timeout
        Seconds from now; ``None`` waits as long as ``alive`` lets it.
    alive
        Raises (e.g. :class:`~psdist.cluster.session.ParameterServerLost`) when the other side
        is gone.
    on_idle
        Called between slices once ``alive`` and the deadline let the wait go on.
    slice_s
        Longest single wait; the last one is cut to the deadline (at least :data:`MIN_SLICE`).
    clock
        Monotonic time source (injectable for tests).

    Returns
    -------
    T
        What ``poll`` returned.

    Raises
    ------
    ServerError
        No answer within ``timeout`` seconds; the message names ``what`` and the fix.
    """
    deadline = None if timeout is None else clock() + timeout
    while True:
        wait_s = slice_s if deadline is None else min(slice_s, max(MIN_SLICE, deadline - clock()))
        try:
            return poll(wait_s)
        except _TIMEOUTS:
            pass
        if alive is not None:
            alive()
        if deadline is not None and clock() >= deadline:
            raise ServerError(
                f"the parameter server did not answer {what} within {timeout} s; "
                "raise Trainer(timeout=...) if it is overloaded"
            )
        if on_idle is not None:
            on_idle()
