"""A worker's handle on a sharded parameter server: one data-plane connection per shard.

:class:`ShardedClient` is a :class:`~psdist.core.protocol.ServerHandle` over ``S``
:class:`~psdist.plane.client.PlaneClient` connections, one per shard of the
:class:`~psdist.core.shards.ShardPlan`. A push cuts the update into the shards' slices and sends
them all at once (one thread per shard beyond the first); a pull gathers the slices into one
weight vector. The training loop and the rules see one server.

Versions: each shard counts its own. The loop holds one number, so the client answers the *sum*
of the shards' versions (it rises whenever any shard moves, and every worker sees each shard's
versions only rise, so a sum names one set of shard versions) and remembers which shard versions
each number it handed out stands for: a push's base version is translated back per shard.

Before a push leaves, the client checks the whole update once (the dot products the server's
own check does): NaN/Inf anywhere marks the push ``nonfinite`` for every shard, so no shard
applies a slice of an update another refuses; the per-model norms travel along for clipping.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch

from psdist.core.protocol import Pull, Push, PushReply
from psdist.core.server import NONFINITE_ELSEWHERE, WHOLE_NORMS
from psdist.core.shards import ShardPlan
from psdist.errors import ServerError
from psdist.plane.client import PlaneClient

__all__ = ["ShardedClient"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: the largest magnitude fp16 holds: beyond it a value crosses a 16-bit wire as Inf
_FP16_MAX = 65504.0
#: versions handed out that a later push or pull may still name (overlap keeps one push in flight)
_REMEMBERED = 16


class ShardedClient:
    """Push to and pull from every shard of a sharded parameter server, as one server.

    Parameters
    ----------
    clients
        One connected :class:`PlaneClient` per shard, in shard order.
    plan
        Where each shard's slice lies.

    Attributes
    ----------
    disagreed
        Pushes some shards applied and others refused (a stale push is judged by each shard on
        its own counter): the reply counts them as refused.
    """

    def __init__(self, clients: Sequence[PlaneClient], plan: ShardPlan) -> None:
        if len(clients) != plan.shards:
            raise ValueError(f"{len(clients)} connections for {plan.shards} shards")
        self.clients = list(clients)
        self.plan = plan
        self.size = plan.layout.size
        self.backend = clients[0].backend
        self.wire_dtype = clients[0].wire_dtype
        self._ranges = [plan.range(i) for i in range(plan.shards)]
        self._groups = [frozenset(layout.names) for layout in plan.layouts]
        # per model: its sections, and where it has frozen parameters the trainable tensors
        # (clipping measures only those, as the lone server's optimizer does)
        self._sections = [
            (g.name, g.params, g.buffers,
             [slice(g.offset + e.offset, g.offset + e.stop) for e in g.spec.entries if e.kind == "param" and e.trainable]
             if g.frozen else None)
            for g in plan.layout.groups
        ]
        self._weights = np.empty(self.size, np.float32)
        self._view = self._weights.view()
        self._view.flags.writeable = False
        self._versions: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        self._pool = ThreadPoolExecutor(max(1, plan.shards - 1), thread_name_prefix="psdist-shard")
        self.disagreed = 0

    @property
    def broken(self) -> bool:
        return any(c.broken for c in self.clients)

    # ------------------------------------------------------------------ fan-out
    def _fan(self, call: Callable[[int], T]) -> list[T]:
        """``call(i)`` for every shard at once (shard 0 on this thread); the first error raised
        once all have answered, so no connection is left mid-message."""
        futures = [self._pool.submit(call, i) for i in range(1, len(self.clients))]
        results: list[Any] = []
        error: BaseException | None = None
        try:
            results.append(call(0))
        except BaseException as e:  # re-raised below, after the other shards answered
            error = e
        for f in futures:
            try:
                results.append(f.result())
            except BaseException as e:  # the first one is re-raised below
                error = error or e
        if error is not None:
            raise error
        return results

    def _per_shard(self, version: int) -> tuple[int, ...] | None:
        return self._versions.get(version)

    def _name(self, versions: tuple[int, ...]) -> int:
        """The one number the loop holds for these shard versions (their sum), remembered."""
        v = sum(versions)
        self._versions[v] = versions
        self._versions.move_to_end(v)
        while len(self._versions) > _REMEMBERED:
            self._versions.popitem(last=False)
        return v

    def _place(self, i: int, pull: Pull | None) -> None:
        """Copy shard ``i``'s weights into the gathered vector (on its own thread, as its answer comes)."""
        if pull is not None and pull.weights is not None:
            self._weights[self._ranges[i]] = pull.weights

    def _gather(self, pulls: Sequence[Pull]) -> Pull:
        """One pull from the shards' pulls (their slices already placed), the missing ones current."""
        came = False
        for p in pulls:
            if p.weights is not None:
                came = True
        lrs: dict[str, float] = {}
        for p in pulls:
            lrs.update(p.lrs or {})
        version = self._name(tuple(p.version for p in pulls))
        return Pull(version, self._view if came else None, pulls[0].lr, lrs or None)

    # ------------------------------------------------------------------ the handle
    def _pull_all(self, ask: Callable[[PlaneClient, int], Pull], have_version: int) -> Pull:
        """``ask(client, its shard's version)`` of every shard at once, gathered into one pull."""
        have = self._per_shard(have_version)

        def one(i: int) -> Pull:
            p = ask(self.clients[i], have[i] if have else -1)
            self._place(i, p)
            return p

        return self._gather(self._fan(one))

    def pull(self, worker: str, have_version: int = -1) -> Pull:
        return self._pull_all(lambda c, v: c.pull(worker, v), have_version)

    def push(self, push: Push, pull: bool = True) -> PushReply:
        u = push.update
        if u.shape != (self.size,):
            raise ServerError(f"a push of {list(u.shape)} values; the sharded server holds {self.size}")
        base = self._per_shard(push.base_version)
        if base is None:
            raise ServerError(f"a push from base version {push.base_version}, which this worker never pulled from "
                              "the shards: pull first")
        info = {**push.info, **self._whole(u, push.loss)}

        def send(i: int) -> PushReply:
            groups = None if push.groups is None else tuple(g for g in push.groups if g in self._groups[i])
            part = Push(push.worker, base[i], u[self._ranges[i]], push.samples, push.loss, groups, info)
            reply = self.clients[i].push(part, pull)
            self._place(i, reply.pull)
            return reply

        replies = self._fan(send)
        applied = [r.applied for r in replies]
        refused = next((r.rejection for r in replies if r.rejection is not None), None)
        if refused is not None and any(applied):
            self.disagreed += 1
            logger.debug("psdist: shards disagreed on a push of %s: %s", push.worker, refused)
        version = self._name(tuple(r.version for r in replies))
        wait = any(r.wait for r in replies)
        gathered = None
        if pull and not wait:
            gathered = self._gather([r.pull for r in replies if r.pull is not None])
        return PushReply(refused is None, version, max(r.staleness for r in replies), refused, gathered, wait)

    def _whole(self, u: np.ndarray, loss: float) -> dict[str, Any]:
        """What every shard must know of the whole update: whether it is finite, each model's norm."""
        norms: dict[str, float] = {}
        finite = math.isfinite(loss)
        for name, params, buffers, trainable in self._sections:
            sq = float(np.dot(u[params], u[params]))  # as the server's own check: NaN/Inf or overflow
            b = u[buffers]
            finite = finite and math.isfinite(sq) and math.isfinite(float(np.dot(b, b)))
            norms[name] = math.sqrt(sq) if math.isfinite(sq) else math.inf
            if trainable is not None and finite:  # torch's measure over the trainable tensors, as the server's
                t = torch.from_numpy(u)
                parts = [t[sl] for sl in trainable]
                norms[name] = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(parts)))) if parts else 0.0
        if finite and self.wire_dtype == "fp16" and self.backend == "tcp" and u.size:
            finite = float(np.abs(u).max()) <= _FP16_MAX  # would cross one shard's wire as Inf
        return {WHOLE_NORMS: norms} if finite else {NONFINITE_ELSEWHERE: True}

    def run_version(self, version: int) -> int:
        """Shard 0's version behind a number this client handed out (its counters are the run's)."""
        versions = self._versions.get(version)
        return versions[0] if versions is not None else version

    def push_buffer(self) -> np.ndarray | None:
        return None  # the shards' slots are separate: a push is cut into them

    def join(self, worker: str) -> None:
        for c in self.clients:
            c.join(worker)  # rides on the next wait: no message of its own

    def leave(self, worker: str) -> None:
        self._fan(lambda i: self.clients[i].leave(worker))

    def wait(self, worker: str, have_version: int = -1) -> Pull:
        """Wait on every shard at once (a barrier releases a worker on each of them)."""
        return self._pull_all(lambda c, v: c.wait(worker, v), have_version)

    def close(self) -> None:
        try:
            for c in self.clients:
                c.close()
        finally:
            self._pool.shutdown(wait=False)
