"""A sharded parameter server on the cluster: ``S`` actors, started, called and cut together.

Each shard is an ordinary :class:`~psdist.cluster.actor.ParameterServer` over its slice
(:class:`~psdist.core.shards.ShardPlan`). The session calls them through :func:`call_all`;
control calls (``leave``, ``set_lr``, ``publish``) go to every shard, ``metrics`` answers shard
0's counters (every push reaches every shard: they are the run's) with each shard's own load
beside them, and ``state_dict`` is a *consistent cut* (:func:`gather_state`).

Why a cut: shards apply pushes independently, so at any instant a push may have reached shard 0
but not yet shard 1. The cut pauses every shard, reads how many pushes each worker has made on
each, and lets each shard apply up to the largest of those counts (a worker's push sent to all
shards arrives at all of them: a worker has at most one push in flight) before it reads its
state; then all resume. Every push is then in all the states or in none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from psdist.cluster.actor import ParameterServer
from psdist.cluster.waiting import wait_sliced
from psdist.core.shards import ShardPlan, merge_states, split_state
from psdist.optim.sharding import merge_scalars, split_scalars

__all__ = ["CUT_WAIT", "ShardServer", "call_all", "gather_state", "merge_metrics", "shard_states", "start_shard", "wait_future"]

logger = logging.getLogger(__name__)

#: seconds a cut waits for a push that reached some shards to reach the others
CUT_WAIT = 10.0

State = tuple[dict[str, Any], dict[str, np.ndarray]]


@dataclass
class ShardServer:
    """One shard's actor: its handle, its worker and the task that holds it."""

    ps: Any  # distributed.Actor of ParameterServer
    address: str
    future: Any
    exclusive: bool = False


def start_shard(client: Any, plan: ShardPlan, i: int, weights: np.ndarray, optimizers: dict[str, Any],
                rule: Any, max_staleness: int | None, run_id: str, address: str, state: State | None,
                timeout: float, suffix: str = "") -> tuple[Any, Any]:
    """Start shard ``i``'s actor on ``address`` holding its slice of ``weights`` (or of ``state``)."""
    layout = plan.layouts[i]
    future = client.submit(
        ParameterServer, layout.to_dict(), np.ascontiguousarray(weights[plan.range(i)]),
        {name: optimizers[name] for name in layout.names}, rule, max_staleness, run_id,
        shard=i, shards=plan.shards, actor=True, workers=[address], key=f"psdist-ps-{run_id}-s{i}{suffix}",
    )
    ps = future.result(timeout=timeout)
    if state is not None:
        ps.load_state_dict(*state).result(timeout=timeout)
    return ps, future


def shard_states(plan: ShardPlan, state: State) -> list[State]:
    """A whole server state (a checkpoint, a recovery point) cut for each shard."""
    return [split_state(plan, i, state[0], state[1], split_scalars) for i in range(plan.shards)]


def call_all(servers: Sequence[Any], method: str, *args: Any, timeout: float, alive: Callable[[], None],
             what: str | None = None) -> list[Any]:
    """``method(*args)`` on every shard's actor at once; the answers in shard order."""
    futures = [getattr(ps, method)(*args) for ps in servers]
    return [wait_future(f, what or f"{method}() on shard {i}", timeout, alive) for i, f in enumerate(futures)]


def wait_future(future: Any, what: str, timeout: float, alive: Callable[[], None]) -> Any:
    """One actor call's answer, waited for in slices (a lost shard raises between them)."""
    def poll(s: float) -> Any:
        return future.result(timeout=s)

    return wait_sliced(poll, what=what, timeout=timeout, alive=alive)


def gather_state(plan: ShardPlan, servers: Sequence[Any], timeout: float, alive: Callable[[], None]) -> State:
    """Every shard's state at one consistent cut, merged into one server's state (see the module)."""
    try:
        counts = call_all(servers, "pause", timeout=timeout, alive=alive)
        target: dict[str, int] = {}
        for c in counts:
            for w, n in c.items():
                target[w] = max(target.get(w, 0), n)
        cut = call_all(servers, "hold_at", target, CUT_WAIT, timeout=timeout + CUT_WAIT, alive=alive)
    finally:
        call_all(servers, "resume", timeout=timeout, alive=alive)
    reached = [c for c, _ in cut]
    if any(r != reached[0] for r in reached):
        # a worker died between sending its push to two shards: its last push is in some states only
        logger.warning("psdist: the shards' states were cut at different pushes %s (a worker lost mid-push)", reached)
    return merge_states(plan, [s for _, s in cut], merge_scalars)


def merge_metrics(plan: ShardPlan, addresses: Sequence[str], metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Shard 0's counters (the run's) with each shard's own load under ``"shards"``."""
    out = dict(metrics[0])
    out["shards"] = [
        {"shard": i, "address": a, "size": plan.sizes[i], "version": m["version"], "applied": m["applied"],
         "rejected": sum(m["rejected"].values()), "staleness_mean": m["staleness_mean"]}
        for i, (a, m) in enumerate(zip(addresses, metrics, strict=True))
    ]
    return out
