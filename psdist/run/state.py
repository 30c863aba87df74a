"""One training's state as the trainer keeps it: history, epoch, progress, the server's last state.

Two threads touch it while ``fit(block=False)`` runs: the one that trains (adding chunk results,
closing epochs, taking recovery points) and the user's (``save``, ``model``, ``set_lr``). Every
change, and every read that must be consistent (a checkpoint), holds :attr:`RunState.lock`, so a
snapshot never pairs the weights of one moment with the progress of another.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from psdist.replica.loop import ChunkResult
from psdist.run.epoch import EpochProgress
from psdist.run.history import History
from psdist.run.recovery import Checkpoints, PointKeeper, RecoveryPoint

__all__ = ["MAX_SPANS", "RunState", "ServerSnapshot"]

#: Timeline spans kept for the Chrome trace (the oldest are dropped beyond this).
MAX_SPANS = 500_000

#: A parameter server's ``state_dict()``: (JSON-safe scalars, arrays).
ServerSnapshot = tuple[dict[str, Any], dict[str, np.ndarray]]


class RunState:
    """The bookkeeping of one trainer across its fits.

    Parameters
    ----------
    checkpoints
        When recovery points are due (:class:`~psdist.run.recovery.Checkpoints`).

    Attributes
    ----------
    history
        One record per epoch (partial ones included).
    epoch
        Epochs completed.
    progress
        The running (or interrupted) epoch's progress, ``None`` between epochs.
    server_state
        The server's last fetched ``state_dict()`` (the initial weights' owner is the model
        factory until the first fit ends).
    server_metrics
        The server's counters at the end of the last fit.
    points
        Recovery points of the running fit.
    held_out
        Held-out validation chunks of the checkpoint this state was loaded from (a resume
        checks the dataset holds out the same).
    timeline
        (worker, phase, start, stop, epoch, chunk) of every span, for the Chrome trace.
    stopped_reason
        Why the last fit ended early (``None``: it ran all its epochs).
    """

    def __init__(self, checkpoints: Checkpoints) -> None:
        self.lock = threading.RLock()
        self.history = History()
        self.epoch = 0
        self.progress: EpochProgress | None = None
        self.server_state: ServerSnapshot | None = None
        self.server_metrics: dict[str, Any] = {}
        self.points = PointKeeper(checkpoints)
        self.held_out: list[int] | None = None
        self.timeline: deque[tuple[str, str, float, float, int, int]] = deque(maxlen=MAX_SPANS)
        self.stopped_reason: str | None = None

    # ------------------------------------------------------------------ while training
    def epoch_progress(self) -> EpochProgress:
        """The progress of the epoch to train next: the interrupted one, or a fresh one."""
        with self.lock:
            if self.progress is None or self.progress.epoch != self.epoch + 1:
                self.progress = EpochProgress(self.epoch + 1)
            return self.progress

    def chunk_done(self, progress: EpochProgress, result: ChunkResult) -> None:
        """Count a finished chunk (a snapshot sees it done or not, never half)."""
        with self.lock:
            progress.add(result)
        self.points.seen(result.version)
        self.timeline.extend((result.worker, phase, a, b, progress.epoch, result.chunk)
                             for phase, a, b in result.spans)

    def epoch_done(self, record: dict[str, Any]) -> None:
        """Append the epoch's record; a complete epoch is counted and its progress dropped."""
        with self.lock:
            self.history.append(record)
            if not record.get("partial"):
                self.epoch += 1
                self.progress = None

    def snapshot(self, fetch: Callable[[], ServerSnapshot]) -> RecoveryPoint:
        """The server's state (``fetch()``) and this bookkeeping, taken at one moment."""
        with self.lock:
            t0 = time.monotonic()
            state = fetch()
            cost = time.monotonic() - t0
            progress = self.progress.to_dict() if self.progress is not None else None
            return RecoveryPoint(state, progress, self.epoch, len(self.history), t0, cost)

    def at_rest(self) -> RecoveryPoint:
        """The state between fits as a point (what ``save`` writes when nothing trains)."""
        with self.lock:
            assert self.server_state is not None
            progress = self.progress.to_dict() if self.progress is not None else None
            return RecoveryPoint(self.server_state, progress, self.epoch, len(self.history), time.monotonic())

    def fetched(self, state: ServerSnapshot, metrics: dict[str, Any]) -> None:
        """The server's final state of a fit."""
        with self.lock:
            self.server_state = state
            self.server_metrics = metrics

    def back_to_last_point(self) -> None:
        """After a failure that lost the server's final state: the bookkeeping of the last point.

        So that ``save`` never pairs older weights with a newer epoch count or progress.
        """
        with self.lock:
            point = self.points.last
            if point is None:
                return
            self.server_state = point.state
            self.epoch = point.epoch
            self.progress = EpochProgress.from_dict(point.progress) if point.progress else None
            self.history = History(self.history.records[: point.history_len])

    # ------------------------------------------------------------------ questions
    @property
    def resumes_mid_epoch(self) -> bool:
        """Whether the next fit first finishes an epoch a checkpoint interrupted."""
        return self.progress is not None and bool(self.progress.done)

    @property
    def version(self) -> int:
        """Server version reached (0 before any training)."""
        return int(self.server_state[0]["version"]) if self.server_state is not None else 0

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, point: RecoveryPoint, trainer: dict[str, Any], held_out: list[int],
                   early_stopping: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(meta, arrays) of a checkpoint of ``point``: what :meth:`restore` reads back."""
        scalars, arrays = point.state
        meta = {
            "epoch": point.epoch,
            "val_chunks": held_out,
            "progress": point.progress,
            "history": self.history.records[: point.history_len],
            "server": scalars,
            "trainer": trainer,
            "early_stopping": early_stopping,
        }
        return meta, arrays

    def restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Take a checkpoint's state (:meth:`checkpoint` output, or an older checkpoint's)."""
        with self.lock:
            self.server_state = (meta["server"], arrays)
            self.epoch = int(meta["epoch"])
            self.history = History(meta["history"])
            self.held_out = meta.get("val_chunks")
            if meta.get("progress"):  # saved mid-epoch: the epoch goes on with the chunks not done
                self.progress = EpochProgress.from_dict(meta["progress"])
                self.progress.resumed = True
                # pushes of the chunks running at the save are in the weights; they rerun
                point = RecoveryPoint((meta["server"], arrays), meta["progress"], self.epoch, len(self.history), 0.0)
                self.progress.faults["pushes_replayed"] += point.pushes_in_flight()
