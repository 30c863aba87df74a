"""The worker's inner loops: train on one chunk, evaluate one chunk. No Dask here.

The same functions run inside Dask tasks (:mod:`psdist.cluster.worker`), in unit tests against an
in-process :class:`~psdist.core.server.ServerState`, and in the simulator.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from psdist.core.finite import nonfinite_rows
from psdist.core.protocol import PushReply, RejectKind, ServerHandle, run_version
from psdist.core.rules import WorkerRule
from psdist.core.tree import concat, leaves, rows, tree_map
from psdist.replica.overlap import InFlight
from psdist.replica.replica import Replica
from psdist.replica.steps import reported_loss

__all__ = [
    "ChunkResult",
    "EvalResult",
    "as_labels",
    "batch_bounds",
    "concat_outputs",
    "evaluate_rows",
    "nonfinite_rows",
    "train_rows",
]

logger = logging.getLogger(__name__)


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
    rejected: dict[str, int] = field(default_factory=dict)  # by RejectKind value ("stale", ...)
    staleness: list[int] = field(default_factory=list)
    version: int = 0
    compute_s: float = 0.0
    comm_s: float = 0.0
    wait_s: float = 0.0  # held back by a barrier rule (SSP, Sync)
    read_s: float = 0.0
    # (phase, start, stop) wall-clock spans for the timeline (pull/compute/push)
    spans: list[tuple[str, float, float]] = field(default_factory=list)
    batches: int = 0  # minibatches of the chunk, skipped ones included
    nonfinite_batches: int = 0  # skipped, no gradient: NaN/Inf in their inputs or their loss
    nonfinite_inputs: int = 0  # of those, skipped for their inputs (before the forward pass)
    # "16-mixed": skipped, no gradient: the scaled gradients overflowed float16 (the scale halved)
    overflow_batches: int = 0
    loss_scale: float | None = None  # "16-mixed": the worker's loss scale when the chunk ended
    bad_chunks: int = 0  # 1: the chunk could not be read and was skipped (skip_bad_chunks)
    bad: list[str] = field(default_factory=list)  # why (the read errors of skipped chunks)
    chunks_read_ahead: int = 0  # 1: the rows were read while the worker's previous chunk trained

    @property
    def pushes_nonfinite(self) -> int:
        """Pushes the server rejected because the update or loss held NaN/Inf."""
        return self.rejected.get(RejectKind.NONFINITE, 0)

    @classmethod
    def skipped(cls, chunk: int, epoch: int, worker: str, device: str, error: BaseException) -> ChunkResult:
        """The result of a chunk that could not be read and was skipped: 0 samples, counted."""
        return cls(chunk, epoch, worker, device, bad_chunks=1, bad=[str(error)])


@dataclass
class EvalResult:
    """Summed loss and raw outputs (an array, or a dict of arrays) of one validation chunk."""

    chunk: int
    samples: int
    loss_sum: float
    outputs: Any
    targets: Any  # an array, or a tuple/dict of them (several targets)
    version: int
    worker: str = ""
    start: float = 0.0  # wall-clock span of the evaluation (timeline)
    stop: float = 0.0
    bad_chunks: int = 0  # 1: the chunk could not be read and was skipped; leave it out of metrics
    bad: list[str] = field(default_factory=list)

    @classmethod
    def skipped(cls, chunk: int, worker: str, error: BaseException) -> EvalResult:
        """A validation chunk that could not be read: no samples, no outputs (``None``)."""
        now = time.time()
        return cls(chunk, 0, 0.0, None, np.empty(0), -1, worker, now, now, bad_chunks=1, bad=[str(error)])


def _numpy(out: Any) -> Any:
    """Outputs as numpy float32: metric functions and ``np.concatenate`` know no bfloat16 (and
    a mixed-precision forward pass answers bfloat16 or float16). Tuples and dicts of outputs
    (a model with several heads, a custom step) keep their structure."""
    if isinstance(out, (dict, tuple, list)):
        return tree_map(_numpy, out)
    out = out.detach().cpu()
    return (out.float() if out.is_floating_point() else out).numpy()


def concat_outputs(parts: list[Any]) -> Any:
    """Concatenate per-batch outputs (or targets): arrays, or tuples/dicts of them."""
    if isinstance(parts[0], (dict, tuple, list)):
        return concat(parts, concat_outputs)
    return np.concatenate(parts)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Minibatch row ranges; a 1-row tail joins the previous batch (BatchNorm needs 2 rows)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2] = (bounds[-2][0], n)
        bounds.pop()
    return bounds


def as_labels(y: Any) -> Any:
    """Integer labels as int64 (what torch's classification losses expect); each target of a
    tuple or dict of them."""
    def one(a: np.ndarray) -> np.ndarray:
        return a.astype(np.int64) if a.dtype.kind in "iub" and a.dtype != np.int64 else a
    return tree_map(one, y)


def _to_device(a: Any, device: torch.device) -> Any:
    """Rows (an array, or a tuple/dict of arrays) as tensors on ``device``, dtypes kept."""
    def one(arr: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(arr))
        return t.to(device, non_blocking=True) if device.type != "cpu" else t
    return tree_map(one, a)


def _rows(tree: Any, index: Any) -> Any:
    """The rows ``index`` (a permutation, a slice) of every array of ``tree``."""
    return tree_map(lambda a: a[index], tree)


def train_rows(
    replica: Replica,
    server: ServerHandle,
    rule: WorkerRule,
    step: Callable[[Replica, torch.Tensor, torch.Tensor], float],
    x: Any,
    y: Any,
    *,
    batch_size: int,
    push_every: int,
    seed: int,
    chunk: int = 0,
    epoch: int = 0,
    overlap: bool = False,
) -> ChunkResult:
    """Train on the rows of one chunk, shuffled with ``seed``, pushing every ``push_every``.

    With ``overlap`` one push is in flight while the next window computes
    (:mod:`psdist.replica.overlap`; only for rules that allow it, ``Rule.overlaps``).

    A minibatch with NaN/Inf in its inputs (``x``, or float labels) is skipped before the
    forward pass; one whose loss comes out NaN/Inf has its gradient (and BatchNorm statistics)
    taken back, so the other minibatches of the same push are not poisoned. Both are counted
    in ``nonfinite_batches`` and send nothing; a push window left without a good minibatch is
    not sent. Pushes the server rejects as non-finite (a NaN gradient behind a finite loss) are
    counted in ``pushes_nonfinite``.

    The step runs under the replica's precision (:meth:`Replica.run_step`). Under ``"16-mixed"``
    a minibatch with a finite loss whose scaled gradients are not finite (float16 overflowed)
    is taken back the same way and counted in ``overflow_batches``; the loss scale halves and
    the gradients the window kept are halved with it, so they stay in the scale's units. When
    the scale cannot go lower (:attr:`LossScaler.at_floor`) such a minibatch counts as
    non-finite instead: scaling does not explain it. ``loss_scale`` is the scale at the end.
    """
    res = ChunkResult(chunk, epoch, replica.worker, str(replica.device))
    # one permutation for every array: the rows of a sample stay together
    perm = np.random.default_rng(seed).permutation(rows(x))
    xt, yt = _to_device(_rows(x, perm), replica.device), _to_device(as_labels(_rows(y, perm)), replica.device)
    bad = nonfinite_rows(*leaves(x), *leaves(y))  # float arrays only: masks and ids have no NaN
    bad_before = np.concatenate([[0], np.cumsum(bad[perm])]) if bad.any() else None

    t0 = time.time()
    inflight = InFlight(replica, server) if overlap else None
    server.join(replica.worker)
    try:
        rule.begin(replica, server.wait(replica.worker, replica.version))
        t1 = time.time()
        res.spans.append(("pull", t0, t1))
        res.comm_s += t1 - t0
        _train_batches(replica, server, rule, step, xt, yt, batch_size, push_every, res, bad_before, inflight)
    finally:
        if inflight is not None:  # the connection quiet before the leave crosses it
            inflight.close()
        server.leave(replica.worker)
    res.version = run_version(server, replica.version)  # the run's count (a sharded handle sums shards)
    res.loss_scale = replica.precision.loss_scale
    if res.overflow_batches:  # expected now and then under fp16 (each growth of the scale probes)
        logger.debug("psdist: chunk %d (epoch %d) on %s: %d of %d minibatches overflowed float16; loss scale %g",
                     chunk, epoch, replica.worker, res.overflow_batches, res.batches, res.loss_scale)
    if res.nonfinite_batches:
        logger.warning(
            "psdist: chunk %d (epoch %d) on %s: %d of %d minibatches skipped for NaN/Inf (%d in the "
            "inputs, %d in the loss)", chunk, epoch, replica.worker, res.nonfinite_batches, res.batches,
            res.nonfinite_inputs, res.nonfinite_batches - res.nonfinite_inputs,
        )
    return res


def _save(replica: Replica, grads: bool) -> list[tuple[Any, Any, list[torch.Tensor]]]:
    """What a minibatch may change besides the weights: gradients (if asked) and buffers."""
    saved = []
    for b in replica.bindings.values():
        assert b.weights is not None and b.grads is not None
        n = b.spec.n_params
        ints = [t.clone() for t in b.module.buffers() if not t.is_floating_point()]
        saved.append((b.grads.clone() if grads else None, b.weights[n:].clone() if b.spec.n_buffers else None, ints))
    return saved


@torch.no_grad()
def _restore(replica: Replica, saved: list[tuple[Any, Any, list[torch.Tensor]]]) -> None:
    """Undo a minibatch: gradients back to ``saved`` (zero when not saved), buffers too."""
    for b, (grads, buffers, ints) in zip(replica.bindings.values(), saved, strict=True):
        assert b.weights is not None and b.grads is not None
        if grads is None:
            b.grads.zero_()
        else:
            b.grads.copy_(grads)
        if buffers is not None:
            b.weights[b.spec.n_params :].copy_(buffers)
        for t, old in zip([t for t in b.module.buffers() if not t.is_floating_point()], ints, strict=True):
            t.copy_(old)


def _finite(loss: float, named: dict[str, float]) -> bool:
    return math.isfinite(loss) and all(math.isfinite(v) for v in named.values())


def _overflowed(replica: Replica, saved: list[tuple[Any, Any, list[torch.Tensor]]], res: ChunkResult) -> bool:
    """Under a loss scaler: book the minibatch just computed; ``True`` if it was taken back.

    The flat gradients hold the window's accumulation in units of the current scale. A
    non-finite sum means this minibatch's scaled gradients overflowed (the ones kept before it
    were finite): it is taken back, and the scale and the kept gradients are multiplied by the
    backoff factor. A good minibatch may grow the scale; the kept gradients follow.
    """
    scaler = replica.precision.scaler
    if scaler is None:
        return False
    if replica.grads_finite():
        replica.scale_grads(scaler.update(True))
        return False
    _restore(replica, saved)
    if scaler.at_floor:
        res.nonfinite_batches += 1  # not float16's range: NaN that no scale removes
    else:
        res.overflow_batches += 1
    replica.scale_grads(scaler.update(False))
    return True


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
    bad_before: np.ndarray | None = None,
    inflight: InFlight | None = None,
) -> None:
    replica.train(True)
    replica.zero_grad()
    # a rule with local optimizer steps (elastic averaging) reads .grad itself: true gradients
    local_steps = (replica.precision.scaler is not None
                   and type(rule).after_backward is not WorkerRule.after_backward)
    bounds = batch_bounds(rows(xt), batch_size)
    acc_batches = acc_samples = 0
    acc_loss = 0.0
    sent: deque[tuple[int, float]] = deque()  # (samples, loss sum) of pushes not answered yet
    t_compute = time.time()
    for i, (lo, hi) in enumerate(bounds):
        last = i == len(bounds) - 1
        res.batches += 1
        if bad_before is not None and bad_before[hi] > bad_before[lo]:
            res.nonfinite_batches += 1  # NaN/Inf inputs: no forward pass at all
            res.nonfinite_inputs += 1
        else:
            saved = _save(replica, grads=acc_batches > 0)
            loss, named = reported_loss(replica.run_step(step, _rows(xt, slice(lo, hi)), _rows(yt, slice(lo, hi))))
            if not _finite(loss, named):
                _restore(replica, saved)
                res.nonfinite_batches += 1
            elif not _overflowed(replica, saved, res):
                for k, v in named.items():
                    res.losses[k] = res.losses.get(k, 0.0) + v * (hi - lo)
                if local_steps:
                    with replica.true_grads():
                        rule.after_backward(replica)
                else:
                    rule.after_backward(replica)
                acc_batches += 1
                acc_samples += hi - lo
                acc_loss += loss * (hi - lo)
        if acc_batches == 0 or (acc_batches < push_every and not last):
            continue
        t_comm = time.time()
        res.spans.append(("compute", t_compute, t_comm))
        res.compute_s += t_comm - t_compute
        sent.append((acc_samples, acc_loss))
        if inflight is None:
            reply: PushReply | None = rule.communicate(replica, server, acc_batches, acc_samples,
                                                       acc_loss / acc_samples)
        else:  # the answer is the previous push's (None at the first)
            reply = inflight.communicate(acc_batches, acc_samples, acc_loss / acc_samples)
        t_push = time.time()
        res.spans.append(("push", t_comm, t_push))
        if reply is not None and reply.wait and not last:  # a barrier holds us; the last push needs no weights
            rule.resume(replica, server)
            t_compute = time.time()
            res.spans.append(("wait", t_push, t_compute))
            res.wait_s += t_compute - t_push
        else:
            t_compute = t_push
        res.comm_s += t_push - t_comm
        if reply is not None:
            _count(res, reply, *sent.popleft())
        acc_batches = acc_samples = 0
        acc_loss = 0.0
    if inflight is not None:
        t_comm = time.time()
        reply = inflight.finish()
        t_push = time.time()
        res.spans.append(("push", t_comm, t_push))
        res.comm_s += t_push - t_comm
        if reply is not None:
            _count(res, reply, *sent.popleft())
    assert not sent, f"{len(sent)} push(es) without an answer"


def _count(res: ChunkResult, reply: PushReply, samples: int, loss_sum: float) -> None:
    """Book the server's answer to one push of ``samples`` rows (loss summed over them)."""
    res.pushes += 1
    res.samples += samples
    res.loss_sum += loss_sum
    res.staleness.append(reply.staleness)
    if reply.applied:
        res.applied += 1
        res.samples_applied += samples
    elif reply.rejection is not None:  # always, when not applied (PushReply checks)
        kind = reply.rejection.kind.value  # plain strings: the result travels and is published
        res.rejected[kind] = res.rejected.get(kind, 0) + 1


@torch.no_grad()
def evaluate_rows(
    replica: Replica,
    server: ServerHandle,
    evaluate: Callable[[Replica, torch.Tensor, torch.Tensor], tuple[float, Any]],
    x: Any,
    y: Any,
    *,
    batch_size: int,
    chunk: int = 0,
    keep_local: bool = False,
) -> EvalResult:
    """Evaluate the server's current weights on one chunk; outputs come back for metrics.

    ``evaluate`` runs under the replica's autocast (its precision); the outputs come back as
    float32 arrays, whatever dtype the forward pass computed in.

    With ``keep_local`` (rules whose workers hold local weights, e.g. EASGD) the replica's own
    weights and version are put back afterwards.
    """
    t0 = time.time()
    saved = (replica.weights_vector(), replica.version) if keep_local and replica.version >= 0 else None
    pulled = server.pull(replica.worker, -1 if saved else replica.version)
    try:
        replica.load(pulled)
        version = run_version(server, replica.version)
        replica.train(False)
        xt, yt = _to_device(x, replica.device), _to_device(as_labels(y), replica.device)
        loss_sum, outs = 0.0, []
        for lo, hi in batch_bounds(rows(x), batch_size):
            with replica.autocast():
                ls, out = evaluate(replica, _rows(xt, slice(lo, hi)), _rows(yt, slice(lo, hi)))
            loss_sum += float(ls)
            outs.append(_numpy(out))
    finally:
        if saved is not None:
            replica.set_weights(saved[0])
            replica.version = saved[1]
    return EvalResult(chunk, rows(x), loss_sum, concat_outputs(outs), tree_map(np.asarray, y), version,
                      replica.worker, t0, time.time())
