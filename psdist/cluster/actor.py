"""The parameter server as a Dask actor: a thin shell around :class:`~psdist.core.server.ServerState`.

Plain methods run one at a time in the actor's worker thread (Dask runs every plain actor
method of a worker in one thread), so the state needs no lock. They are short numpy work.

The one exception is :meth:`ParameterServer.wait` (barrier rules): a coroutine, so Dask runs it
on the worker's event loop and a waiting worker never occupies the actor thread. It touches the
state only through the actor thread's executor, and sleeps on an :class:`asyncio.Event` that
every state change (push, join, leave) sets from the actor thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import torch
from distributed import get_worker

from psdist.core.layout import Layout
from psdist.core.optim.port import OptimizerSpec
from psdist.core.protocol import Pull, Push, PushReply
from psdist.core.rules import Rule
from psdist.core.server import ServerState
from psdist.errors import ServerError
from psdist.run.events import TOPIC, ServerSnapshot, Throttle

__all__ = ["ParameterServer"]


class ParameterServer:
    """Dask actor holding the master weights; see :class:`~psdist.core.server.ServerState`.

    Created by the trainer with ``client.submit(ParameterServer, ..., actor=True)`` on the
    worker chosen for it.
    """

    def __init__(
        self,
        layout: dict[str, Any],
        weights: np.ndarray,
        optimizers: dict[str, OptimizerSpec],
        rule: Rule,
        max_staleness: int | None,
        run_id: str | None = None,
        publish_every: float = 0.5,
    ) -> None:
        # the server step is torch's fused kernels: give them the threads of this worker (torch
        # would take every core of the machine, which the other workers of the host share)
        torch.set_num_threads(max(1, get_worker().state.nthreads))
        self.state = ServerState(Layout.from_dict(layout), weights, optimizers, rule, max_staleness)
        self.run_id = run_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._throttle = Throttle(publish_every)
        self._worker: Any = None

    def pull(self, worker: str, have_version: int = -1) -> Pull:
        return self.state.pull(worker, have_version)

    def push(self, push: Push, pull: bool = True) -> PushReply:
        reply = self.state.push(push, pull)
        self._notify()
        if self._throttle.due():
            self.publish()
        return reply

    def publish(self) -> int:
        """Log a snapshot of the counters for the dashboard (throttled on pushes); the version."""
        if self.run_id is not None:
            if self._worker is None:
                self._worker = get_worker()
            snapshot = ServerSnapshot(run=self.run_id, **self.state.metrics())
            self._worker.log_event(TOPIC, snapshot.to_message())
        return self.state.version

    def join(self, worker: str) -> None:
        self.state.join(worker)
        self._notify()

    def leave(self, worker: str) -> None:
        self.state.leave(worker)
        self._notify()

    def _notify(self) -> None:
        # actor thread -> event loop: wake the waiters, who re-check on the actor thread
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait(self, worker: str, have_version: int, timeout: float) -> Pull:
        """Answer a pull once the rule lets ``worker`` go on; evict silent workers at ``timeout``."""
        loop = self._loop = asyncio.get_running_loop()
        actor_thread = get_worker().executors["actor"]
        deadline = loop.time() + timeout
        evicted = False
        while True:
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed  # taken before the check, so no wake-up is missed
            pull = await loop.run_in_executor(actor_thread, self.state.pull_if_ready, worker, have_version)
            if pull is not None:
                return pull
            left = deadline - loop.time()
            if left <= 0:
                if evicted:
                    raise ServerError(
                        f"{worker} waited {timeout} s for workers {sorted(self.state.active)} under "
                        f"{type(self.state.rule).__name__}; none of them moved"
                    )
                await loop.run_in_executor(actor_thread, self.state.evict_silent, timeout)
                evicted, deadline = True, loop.time() + 1.0
                continue
            try:
                await asyncio.wait_for(changed.wait(), left)
            except asyncio.TimeoutError:  # builtin TimeoutError from 3.11 on
                pass

    def register(self, worker: str, info: dict[str, Any]) -> None:
        self.state.register(worker, **info)

    def set_lr(self, lr: float, group: str | None = None) -> float:
        self.state.set_lr(lr, group)
        self.publish()
        return self.state.lr

    def metrics(self) -> dict[str, Any]:
        return self.state.metrics()

    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return self.state.state_dict()

    def load_state_dict(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> int:
        self.state.load_state_dict(scalars, arrays)
        return self.state.version
