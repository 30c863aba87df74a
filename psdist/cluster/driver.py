"""The epoch driver: one fit's epochs on a live session, recovering a lost parameter server.

The :class:`~psdist.trainer.Trainer` (the facade) checks everything and opens the session; the
:class:`EpochDriver` trains the epochs through a :class:`~psdist.cluster.tasks.ChunkRunner`,
takes recovery points, replaces a lost server from the last one, validates, and writes each
result into the run's :class:`~psdist.run.state.RunState` (under its lock).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psdist.cluster.session import ParameterServerLost, Session
from psdist.cluster.tasks import ChunkRunner
from psdist.data.dataset import DatasetInfo
from psdist.data.split import epoch_order
from psdist.errors import DataError, ServerError
from psdist.replica.loop import ChunkResult, concat_outputs
from psdist.run.epoch import EpochProgress
from psdist.run.events import ChunkEvent, Event, RecoveryEvent
from psdist.run.guard import NonfiniteGuard
from psdist.run.recovery import RecoveryPoint
from psdist.run.state import RunState

__all__ = ["EpochDriver", "Progress"]

logger = logging.getLogger(__name__)

#: A callback receiving the fit's progress events (``{"event": "chunk", ...}``).
Progress = Callable[[dict[str, Any]], None]


@dataclass
class EpochDriver:
    """Train one fit's epochs on ``runner``'s session, bookkept in ``run``.

    Parameters
    ----------
    runner
        Submits and watches the chunk tasks (its session may get a new server meanwhile).
    run
        The run's state: progress, history, recovery points, timeline.
    info
        The dataset's training and validation chunks.
    metrics
        Validation metrics ``{name: fn(targets, outputs)}``.
    seed
        Seeds the epochs' chunk order.
    max_restarts
        Parameter servers the fit may lose before it fails.
    publish
        Sends a monitoring record (:mod:`psdist.run.events`) to the dashboard.
    write_point
        Writes a recovery point as a checkpoint file (``None``: points stay in memory).
    progress
        The caller's progress callback, if any.
    data_name
        The dataset, for error messages.
    """

    runner: ChunkRunner
    run: RunState
    info: DatasetInfo
    metrics: dict[str, Callable[[np.ndarray, Any], float]]
    seed: int
    max_restarts: int
    publish: Callable[[Event], None]
    write_point: Callable[[RecoveryPoint], None] | None = None
    progress: Progress | None = None
    data_name: str = ""
    guard: NonfiniteGuard = field(default_factory=NonfiniteGuard)

    @property
    def sess(self) -> Session:
        return self.runner.sess

    # ------------------------------------------------------------------ recovery points
    def take_point(self, write: bool) -> None:
        """A recovery point now; written as a checkpoint too when asked and a file is set."""
        point = self.run.snapshot(lambda: self.sess.call("state_dict", timeout=self.runner.timeout))
        self.run.points.keep(point)
        logger.debug("psdist: recovery point at version %d took %.1f ms", point.version, 1e3 * point.cost_s)
        if write and self.write_point is not None:
            self.write_point(point)

    def epoch(self) -> dict[str, Any]:
        """One epoch's record; a lost parameter server is replaced from the last point and it goes on."""
        while True:
            try:
                return self._epoch()
            except Exception as exc:
                if isinstance(exc, ParameterServerLost) or not self.sess.ps_alive():
                    self._recover(exc)
                    continue
                raise

    def _recover(self, exc: BaseException) -> None:
        sess, run = self.sess, self.run
        if sess.restarts >= self.max_restarts:
            raise ServerError(
                f"lost the parameter server {sess.restarts + 1} times (max_restarts={self.max_restarts}); "
                f"last: {exc!r}. Check the PS worker's memory and logs, or allow more with "
                "psdist.Checkpoints(max_restarts=...)"
            ) from exc
        point = run.points.last
        assert point is not None
        before = run.epoch_progress()
        point_version = sess.restart_ps(point.state)
        same_epoch = point.progress is not None and point.progress["epoch"] == before.epoch
        after = EpochProgress.from_dict(point.progress) if same_epoch and point.progress else EpochProgress(before.epoch)
        after.faults = dict(before.faults)  # what went wrong so far this epoch stays counted
        after.faults["ps_restarts"] += 1
        after.faults["versions_lost"] += max(0, run.points.seen_version - point_version)
        after.faults["chunks_redone"] += len(set(before.done) - set(after.done))
        # the point's weights hold pushes of chunks that were running then: they rerun
        after.faults["pushes_replayed"] += point.pushes_in_flight() if same_epoch else 0
        after.train_s = before.train_s
        with run.lock:
            run.progress = after
        run.points.restored(point_version, time.monotonic())
        self.publish(RecoveryEvent(run=sess.run_id, error=repr(exc), version=point_version,
                                   versions_lost=after.faults["versions_lost"], ps=sess.ps_address))
        logger.warning(
            "psdist: parameter server lost (%r); restarted on %s from version %d; this epoch so far: "
            "%d updates lost, %d finished chunks redone", exc, sess.ps_address, point_version,
            after.faults["versions_lost"], after.faults["chunks_redone"],
        )

    # ------------------------------------------------------------------ one epoch
    def _epoch(self) -> dict[str, Any]:
        sess, run, timeout = self.sess, self.run, self.runner.timeout
        t0, wall0 = time.perf_counter(), time.time()
        prog = run.epoch_progress()
        epoch = prog.epoch - 1  # 0-based, as the chunk order and the task keys count
        if prog.server_start is None:
            m0 = sess.call("metrics", timeout=timeout)
            prog.server_start = {"applied": m0["applied"], "rejected": sum(m0["rejected"].values()),
                                 "waits": m0["waits"]}
        order = epoch_order(self.info.train, self.seed, epoch)
        todo = [(i, c) for i, c in enumerate(order) if c.index not in prog.done]
        try:
            for r in self.runner.train(todo, epoch, prog):
                run.chunk_done(prog, r)
                self._report(r, prog, len(order))
                verdict = self.guard.update(r)
                if verdict is not None:  # only NaN (or only unreadable chunks): stop, do not spin
                    raise DataError(verdict)
                if run.points.due(time.monotonic()):
                    self.take_point(write=True)
        finally:
            prog.train_s += time.perf_counter() - t0
            self.runner.count_worker_losses(prog, epoch, wall0)
        record = self._record(prog, len(order))
        if self.info.val:
            record.update(self._validate(prog))
        record["wall_s"] = time.perf_counter() - t0
        logger.info("psdist: epoch %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
        return record

    def _report(self, r: ChunkResult, prog: EpochProgress, total: int) -> None:
        loss = r.loss_sum / max(r.samples, 1)
        self.publish(ChunkEvent(run=self.sess.run_id, epoch=prog.epoch, chunk=r.chunk, worker=r.worker,
                                samples=r.samples, loss=loss, compute_s=r.compute_s, comm_s=r.comm_s,
                                wait_s=r.wait_s, read_s=r.read_s, done=len(prog.done), total=total,
                                pushes=r.pushes, batches=r.batches, nonfinite_batches=r.nonfinite_batches,
                                nonfinite_inputs=r.nonfinite_inputs, pushes_nonfinite=r.pushes_nonfinite,
                                bad_chunks=r.bad_chunks, bad=list(r.bad)))
        if self.progress is not None:
            self.progress({"event": "chunk", "epoch": prog.epoch, "done": len(prog.done), "chunk": r.chunk,
                           "total": total, "loss": loss, "samples": r.samples, "worker": r.worker,
                           "pushes": r.pushes})

    def _record(self, prog: EpochProgress, total: int) -> dict[str, Any]:
        """The epoch's history record: the workers' sums and the server's counters."""
        m1 = self.sess.call("metrics", timeout=self.runner.timeout)
        start = prog.server_start
        assert start is not None
        received = m1["applied"] + sum(m1["rejected"].values()) - start["applied"] - start["rejected"]
        record: dict[str, Any] = prog.record()
        record.update({
            "pushes_applied": m1["applied"] - start["applied"],
            "pushes_rejected": sum(m1["rejected"].values()) - start["rejected"],
            "pushes_orphaned": prog.faults["pushes_orphaned"] + max(0, received - prog.pushes),
            "version": m1["version"],
            "lr": m1["lr"],
            "waits": m1["waits"] - start["waits"],
            "clock_gap_max": m1["clock_gap_max"],
            **self.sizing(),
        })
        if len(prog.done) < total:  # stop() was called: this epoch is not complete
            record["partial"] = True
        return record

    def sizing(self) -> dict[str, Any]:
        """What this fit sized from its cluster, for every epoch record: which alpha, which bound."""
        sess = self.sess
        kinds = Counter(d.split(":")[0] for d in sess.devices.values())
        out: dict[str, Any] = {"training_workers": sess.slots, "max_staleness": sess.max_staleness,
                               "overlap": sess.overlap, "devices": " ".join(f"{k}x{n}" for k, n in sorted(kinds.items()))}
        alpha = getattr(sess.rule, "alpha", None)
        if alpha is not None:
            out["alpha"] = float(alpha)
        return out

    def _validate(self, prog: EpochProgress) -> dict[str, float]:
        gathered = self.runner.validate(self.info.val, prog.epoch - 1, prog)
        self.run.timeline.extend((r.worker, "validate", r.start, r.stop, prog.epoch, r.chunk) for r in gathered)
        # chunks skipped as unreadable (skip_bad_chunks) are left out of the metrics, and counted
        results = [r for r in gathered if not r.bad_chunks]
        if not results:
            raise DataError(f"every validation chunk of {self.data_name!r} is unreadable: "
                            + "; ".join(b for r in gathered for b in r.bad[:1]))
        n = sum(r.samples for r in results)
        outputs = concat_outputs([r.outputs for r in results])
        targets = concat_outputs([r.targets for r in results])  # an array, or a tuple/dict of them
        out = {"val_loss": sum(r.loss_sum for r in results) / n,
               "val_bad_chunks": sum(r.bad_chunks for r in gathered)}
        for name, fn in self.metrics.items():
            out[f"val_{name}"] = float(fn(targets, outputs))
        return out
