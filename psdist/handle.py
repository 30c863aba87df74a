"""A training running in the background: what ``trainer.fit(..., block=False)`` returns.

In a notebook the cell returns at once; the progress bar (a widget under Jupyter) keeps
updating, ``handle.history`` grows epoch by epoch, ``trainer.set_lr`` acts on the live
parameter server, and ``handle.stop()`` ends the run cleanly with a checkpoint. The handle is
a thin view of a :class:`concurrent.futures.Future` and of the trainer's public interface.
"""

from __future__ import annotations

import html
import logging
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psdist.run.history import History
    from psdist.trainer import Trainer

__all__ = ["TrainingHandle"]

logger = logging.getLogger(__name__)


class TrainingHandle:
    """Handle of a background ``fit``.

    Parameters
    ----------
    trainer
        The :class:`~psdist.trainer.Trainer` (its ``history`` grows as epochs finish).
    future
        Resolves to the fit's history, or to its error.
    epochs
        Epochs this ``fit`` was asked for.
    """

    def __init__(self, trainer: Trainer, future: Future[History], epochs: int) -> None:
        self.trainer = trainer
        self.future = future
        self.epochs = epochs
        self.first_epoch = trainer.epoch

    # ------------------------------------------------------------------ state
    @property
    def history(self) -> History:
        """The trainer's history so far (``.to_pandas()``, ``.to_csv()``, ``.to_json()``)."""
        return self.trainer.history

    @property
    def dashboard_url(self) -> str | None:
        """The psdist page of this run in the Dask dashboard (once the run has started)."""
        return self.trainer.dashboard_url

    def running(self) -> bool:
        return not self.future.done()

    def done(self) -> bool:
        return self.future.done()

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until the cluster and parameter server are up (or the run ended)."""
        return self.trainer.wait_started(timeout)

    def result(self, timeout: float | None = None) -> History:
        """Wait for the end of the training; its history (re-raises the training's error)."""
        try:
            return self.future.result(timeout)
        except FutureTimeout:
            raise TimeoutError(f"the training is still running after {timeout} s") from None

    # ------------------------------------------------------------------ control
    def set_lr(self, lr: float, model: str | None = None) -> float:
        """Same as :meth:`psdist.Trainer.set_lr`."""
        return self.trainer.set_lr(lr, model)

    def stop(self, checkpoint: str | None = None, timeout: float | None = None) -> History:
        """End the training after the chunk tasks already running, then save ``checkpoint``.

        No new chunk is started; the tasks in flight finish and push their updates; the
        partial epoch is validated and recorded (``partial: True``); the server state is
        fetched. ``Trainer.load(checkpoint, ...)`` later resumes at the start of that epoch.
        """
        self.trainer.stop()
        history = self.result(timeout)
        if checkpoint is not None:
            self.trainer.save(checkpoint)
            logger.info("psdist: checkpoint written to %s", checkpoint)
        return history

    # ------------------------------------------------------------------ display
    def _status(self) -> str:
        t = self.trainer
        failed = self.future.done() and self.future.exception() is not None
        state = "running" if self.running() else ("failed" if failed else t.stopped_reason or "completed")
        last = t.history.records[-1] if len(t.history) else {}
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k.startswith("val_") and isinstance(v, float))
        return (f"psdist training {t.name}: {state}, {t.epoch - self.first_epoch}/{self.epochs} epochs"
                f"{', ' + metrics if metrics else ''}")

    def __repr__(self) -> str:
        return f"<TrainingHandle {self._status()}>"

    def _repr_html_(self) -> str:
        url = self.dashboard_url
        link = f' — <a href="{html.escape(url)}" target="_blank">live dashboard</a>' if url else ""
        return f"<div><b>{html.escape(self._status())}</b>{link}</div>"
