"""The worker's inner loops: train on one chunk, evaluate one chunk. No Dask here.

The same functions run inside Dask tasks (:mod:`psdist.worker`), in unit tests against an
in-process :class:`~psdist.server.ServerState`, and in the simulator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from psdist.protocol import ServerHandle
from psdist.replica import Replica
from psdist.rules import WorkerRule
from psdist.steps import reported_loss

__all__ = ["ChunkResult", "EvalResult", "as_labels", "batch_bounds", "concat_outputs", "evaluate_rows", "train_rows"]


@dataclass
class ChunkResult:
    """What one training task reports back (the history's raw material)."""

    chunk: int
    epoch: int
    worker: str
    device: str
    samples: int = 0
    samples_applied: int = 0
    loss_sum: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)  # named losses of a custom step, summed
    pushes: int = 0
    applied: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    staleness: list[int] = field(default_factory=list)
    version: int = 0
    compute_s: float = 0.0
    comm_s: float = 0.0
    wait_s: float = 0.0  # held back by a barrier rule (SSP, Sync)
    read_s: float = 0.0
    # (phase, start, stop) wall-clock spans for the timeline (pull/compute/push)
    spans: list[tuple[str, float, float]] = field(default_factory=list)


@dataclass
class EvalResult:
    """Summed loss and raw outputs (an array, or a dict of arrays) of one validation chunk."""

    chunk: int
    samples: int
    loss_sum: float
    outputs: Any
    targets: np.ndarray
    version: int
    worker: str = ""
    start: float = 0.0  # wall-clock span of the evaluation (timeline)
    stop: float = 0.0


def _numpy(out: Any) -> Any:
    if isinstance(out, dict):
        return {k: _numpy(v) for k, v in out.items()}
    return out.detach().float().cpu().numpy()


def concat_outputs(parts: list[Any]) -> Any:
    """Concatenate per-batch outputs: arrays, or dicts of arrays (custom steps)."""
    if isinstance(parts[0], dict):
        return {k: concat_outputs([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Minibatch row ranges; a 1-row tail joins the previous batch (BatchNorm needs 2 rows)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2] = (bounds[-2][0], n)
        bounds.pop()
    return bounds


def as_labels(y: np.ndarray) -> np.ndarray:
    """Integer labels as int64 (what torch's classification losses expect)."""
    return y.astype(np.int64) if y.dtype.kind in "iub" and y.dtype != np.int64 else y


def _to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device, non_blocking=True) if device.type != "cpu" else t


def train_rows(
    replica: Replica,
    server: ServerHandle,
    rule: WorkerRule,
    step: Callable[[Replica, torch.Tensor, torch.Tensor], float],
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    push_every: int,
    seed: int,
    chunk: int = 0,
    epoch: int = 0,
) -> ChunkResult:
    """Train on the rows of one chunk, shuffled with ``seed``, pushing every ``push_every``."""
    res = ChunkResult(chunk, epoch, replica.worker, str(replica.device))
    perm = np.random.default_rng(seed).permutation(len(x))
    xt, yt = _to_device(x[perm], replica.device), _to_device(as_labels(y[perm]), replica.device)

    t0 = time.time()
    server.join(replica.worker)
    try:
        rule.begin(replica, server.wait(replica.worker, replica.version))
        t1 = time.time()
        res.spans.append(("pull", t0, t1))
        res.comm_s += t1 - t0
        _train_batches(replica, server, rule, step, xt, yt, batch_size, push_every, res)
    finally:
        server.leave(replica.worker)
    res.version = replica.version
    return res


def _train_batches(
    replica: Replica,
    server: ServerHandle,
    rule: WorkerRule,
    step: Callable[[Replica, torch.Tensor, torch.Tensor], float],
    xt: torch.Tensor,
    yt: torch.Tensor,
    batch_size: int,
    push_every: int,
    res: ChunkResult,
) -> None:
    replica.train(True)
    replica.zero_grad()
    bounds = batch_bounds(len(xt), batch_size)
    acc_batches = acc_samples = 0
    acc_loss = 0.0
    t_compute = time.time()
    for i, (lo, hi) in enumerate(bounds):
        loss, named = reported_loss(step(replica, xt[lo:hi], yt[lo:hi]))
        for k, v in named.items():
            res.losses[k] = res.losses.get(k, 0.0) + v * (hi - lo)
        rule.after_backward(replica)
        acc_batches += 1
        acc_samples += hi - lo
        acc_loss += loss * (hi - lo)
        last = i == len(bounds) - 1
        if acc_batches < push_every and not last:
            continue
        t_comm = time.time()
        res.spans.append(("compute", t_compute, t_comm))
        res.compute_s += t_comm - t_compute
        reply = rule.communicate(replica, server, acc_batches, acc_samples, acc_loss / acc_samples)
        t_push = time.time()
        res.spans.append(("push", t_comm, t_push))
        if reply.wait and not last:  # a barrier holds us; the chunk's last push needs no weights
            rule.resume(replica, server)
            t_compute = time.time()
            res.spans.append(("wait", t_push, t_compute))
            res.wait_s += t_compute - t_push
        else:
            t_compute = t_push
        res.comm_s += t_push - t_comm
        res.pushes += 1
        res.samples += acc_samples
        res.loss_sum += acc_loss
        res.staleness.append(reply.staleness)
        if reply.applied:
            res.applied += 1
            res.samples_applied += acc_samples
        else:
            kind = (reply.reason or "rejected").split(":", 1)[0]
            res.rejected[kind] = res.rejected.get(kind, 0) + 1
        acc_batches = acc_samples = 0
        acc_loss = 0.0


@torch.no_grad()
def evaluate_rows(
    replica: Replica,
    server: ServerHandle,
    evaluate: Callable[[Replica, torch.Tensor, torch.Tensor], tuple[float, Any]],
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    chunk: int = 0,
    keep_local: bool = False,
) -> EvalResult:
    """Evaluate the server's current weights on one chunk; outputs come back for metrics.

    With ``keep_local`` (rules whose workers hold local weights, e.g. EASGD) the replica's own
    weights and version are put back afterwards.
    """
    t0 = time.time()
    saved = (replica.weights_vector(), replica.version) if keep_local and replica.version >= 0 else None
    pulled = server.pull(replica.worker, -1 if saved else replica.version)
    try:
        replica.load(pulled)
        version = replica.version
        replica.train(False)
        xt, yt = _to_device(x, replica.device), _to_device(as_labels(y), replica.device)
        loss_sum, outs = 0.0, []
        for lo, hi in batch_bounds(len(x), batch_size):
            ls, out = evaluate(replica, xt[lo:hi], yt[lo:hi])
            loss_sum += ls
            outs.append(_numpy(out))
    finally:
        if saved is not None:
            replica.set_weights(saved[0])
            replica.version = saved[1]
    return EvalResult(chunk, len(x), loss_sum, concat_outputs(outs), np.asarray(y), version,
                      replica.worker, t0, time.time())
