"""The parameter server as a Dask actor: a thin shell around :class:`~psdist.core.server.ServerState`.

Plain methods run one at a time in the actor's worker thread (Dask runs every plain actor
method of a worker in one thread). Pushes and pulls may also arrive on the data plane
(:mod:`psdist.plane`, started when a worker first asks for its endpoint), whose threads serve one
worker each: every access to the state therefore holds the actor's lock. They are short numpy work.

The one exception is :meth:`ParameterServer.wait` (barrier rules, on the actor path): a coroutine,
so Dask runs it on the worker's event loop and a waiting worker never occupies the actor thread
(a wait on the data plane blocks only its own connection's thread: :meth:`wait_blocking`). It touches the
state only through the actor thread's executor, and sleeps on an :class:`asyncio.Event` that
every state change (push, join, leave) sets from the actor thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from distributed import get_worker

from psdist.core.layout import Layout
from psdist.core.optim.port import OptimizerSpec
from psdist.core.protocol import Pull, Push, PushReply
from psdist.core.rules import Rule
from psdist.core.server import ServerState
from psdist.plane.server import PlaneServer
from psdist.run.events import TOPIC, ServerSnapshot, Throttle

__all__ = ["HOLD_LIMIT", "ParameterServer"]

#: seconds a cut over shards may hold pushes before they go on without it
HOLD_LIMIT = 60.0


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
        shard: int = 0,
        shards: int = 1,
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
        self._lock = threading.RLock()  # the actor thread and the data plane's threads
        self._changes = threading.Condition(self._lock)  # data-plane waits sleep on it
        self._plane: PlaneServer | None = None
        self.shard, self.shards = shard, shards  # this server's slice of a sharded training (0 of 1: all)
        # a consistent cut over shards (hold_at): None lets pushes through; a dict admits each
        # worker's pushes until it has pushed that many times here, and holds the rest
        self._hold: dict[str, int] | None = None

    def pull(self, worker: str, have_version: int = -1, into: np.ndarray | None = None) -> Pull:
        with self._lock:
            return self.state.pull(worker, have_version, into)

    def push(self, push: Push, pull: bool = True, into: np.ndarray | None = None) -> PushReply:
        with self._changes:
            if self._hold is not None:  # a sharded checkpoint is being cut (data-plane threads only)
                self._held(push.worker)
            reply = self.state.push(push, pull, into)
            due = self._throttle.due()
        self._notify()
        if due:
            self.publish()
        return reply

    # ------------------------------------------------------------------ consistent cuts over shards
    def _pushes(self, worker: str) -> int:
        stats = self.state.workers.get(worker)
        return stats.pushes if stats is not None else 0

    def _held(self, worker: str) -> None:
        """Block this data-plane thread while a cut holds ``worker``'s next push (under ``_changes``).

        A cut that is never resumed (its caller died) lets pushes go after :data:`HOLD_LIMIT`
        seconds: training goes on, and that cut's counts show it was not kept."""
        deadline = time.monotonic() + HOLD_LIMIT
        while self._hold is not None and self._pushes(worker) >= self._hold.get(worker, 0):
            left = deadline - time.monotonic()
            if left <= 0:
                self._hold = None
                self._changes.notify_all()
                break
            self._changes.wait(left)

    def pause(self) -> dict[str, int]:
        """Hold every push from now on (the first step of a cut); the pushes counted per worker."""
        with self._changes:
            self._hold = {}
            return {w: s.pushes for w, s in self.state.workers.items()}

    def hold_at(self, target: dict[str, int], timeout: float) -> tuple[dict[str, int], tuple[dict[str, Any], dict[str, np.ndarray]]]:
        """Admit each worker's pushes until it has pushed ``target[worker]`` times, then the state.

        Every shard is cut at the same per-worker counts, so each push is in all of the shards'
        states or in none. A worker whose push never arrives (it died between two shards) is
        waited for ``timeout`` seconds; the counts returned say where this shard was cut.
        """
        deadline = time.monotonic() + timeout
        with self._changes:
            self._hold = dict(target)
            self._changes.notify_all()
            while any(self._pushes(w) < n for w, n in target.items()) and time.monotonic() < deadline:
                self._changes.wait(max(0.0, deadline - time.monotonic()))
            counts = {w: s.pushes for w, s in self.state.workers.items()}
            return counts, self.state.state_dict()

    def resume(self) -> None:
        """Let held pushes go on (the end of a cut)."""
        with self._changes:
            self._hold = None
            self._changes.notify_all()

    def plane_endpoint(self) -> dict[str, Any]:
        """Where this server's data plane listens (started on the first call), with the run's token.

        Its TCP port binds the worker's own address; with TLS on the cluster it speaks TLS with
        the worker's certificates (mutual authentication) and offers no shared memory.
        """
        with self._lock:
            if self._plane is None:
                worker = self._worker = get_worker()  # the plane's threads publish through it
                host = urlsplit(worker.address).hostname or "127.0.0.1"
                ssl = None
                if worker.address.startswith("tls://"):
                    ssl = worker.security.get_listen_args("worker")["ssl_context"]
                self._plane = PlaneServer.start(self, self.state.layout.size, host, ssl)
            return self._plane.endpoint()

    def plane_counters(self) -> dict[str, Any]:
        """What the data plane served (read-only): connections accepted and refused (with the
        last reasons), and the pushes, pulls and waits that came over it rather than the actor."""
        with self._lock:
            plane = self._plane
            c = plane.counters if plane is not None else None
            return {"open": plane is not None, "connections": c.connections if c else 0,
                    "refused": c.refused if c else 0, "reasons": list(c.reasons) if c else [],
                    "pushes": c.pushes if c else 0, "pulls": c.pulls if c else 0, "waits": c.waits if c else 0}

    def close_plane(self) -> None:
        """Stop the data plane (its connections close; workers fall back or reconnect)."""
        with self._lock:
            if self._plane is not None:
                self._plane.close()
                self._plane = None

    def publish(self) -> int:
        """Log a snapshot of the counters for the dashboard (throttled on pushes); the version."""
        with self._lock:
            metrics = self.state.metrics()
        if self.run_id is not None:
            if self._worker is None:
                self._worker = get_worker()
            self._worker.log_event(TOPIC, ServerSnapshot(run=self.run_id, shard=self.shard, shards=self.shards,
                                                         size=self.state.layout.size, **metrics).to_message())
        return int(metrics["version"])

    def _locked(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            return fn(*args)

    def join(self, worker: str) -> None:
        self._locked(self.state.join, worker)
        self._notify()

    def leave(self, worker: str) -> None:
        self._locked(self.state.leave, worker)
        self._notify()

    def _notify(self) -> None:
        # actor or data-plane thread -> event loop: wake the waiters, who re-check on the actor thread;
        # and the data plane's waiting threads
        with self._changes:
            self._changes.notify_all()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake)

    def wait_blocking(self, worker: str, have_version: int, into: np.ndarray | None, timeout: float) -> Pull:
        """:meth:`wait` for the data plane's threads: blocks the calling thread, not the loop."""
        deadline = time.monotonic() + timeout
        evicted = False
        with self._changes:
            while True:
                pull = self.state.pull_if_ready(worker, have_version, into)
                if pull is not None:
                    return pull
                left = deadline - time.monotonic()
                if left <= 0:
                    if evicted:
                        raise self.state.held_too_long(worker, timeout)
                    self.state.evict_silent(timeout)
                    self._changes.notify_all()
                    evicted, deadline = True, time.monotonic() + 1.0
                    continue
                self._changes.wait(left)

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
            pull = await loop.run_in_executor(actor_thread, self._locked, self.state.pull_if_ready, worker,
                                              have_version)
            if pull is not None:
                return pull
            left = deadline - loop.time()
            if left <= 0:
                if evicted:
                    raise self.state.held_too_long(worker, timeout)
                await loop.run_in_executor(actor_thread, self._locked, self.state.evict_silent, timeout)
                evicted, deadline = True, loop.time() + 1.0
                continue
            try:
                await asyncio.wait_for(changed.wait(), left)
            except asyncio.TimeoutError:  # builtin TimeoutError from 3.11 on
                pass

    def register(self, worker: str, info: dict[str, Any]) -> None:
        with self._lock:
            self.state.register(worker, **info)

    def set_lr(self, lr: float, group: str | None = None) -> float:
        with self._lock:
            self.state.set_lr(lr, group)
            now = self.state.lr
        self.publish()
        return now

    def metrics(self) -> dict[str, Any]:
        return self._locked(self.state.metrics)

    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return self._locked(self.state.state_dict)

    def load_state_dict(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> int:
        with self._lock:
            self.state.load_state_dict(scalars, arrays)
            return self.state.version

