"""A training running in the background: what ``trainer.fit(..., block=False)`` returns.

In a notebook the cell returns at once; the progress bar (a widget under Jupyter) keeps
updating, ``handle.history`` grows epoch by epoch, ``trainer.set_lr`` acts on the live
parameter server, and ``handle.stop()`` ends the run cleanly with a checkpoint.
"""

from __future__ import annotations

import html
import logging
import threading
from typing import TYPE_CHECKING, Any

from psdist.progress import Progress, progress_bar

if TYPE_CHECKING:
    from psdist.run.history import History
    from psdist.trainer import Trainer

__all__ = ["TrainingHandle"]

logger = logging.getLogger(__name__)


class TrainingHandle:
    """Handle of a background ``fit``.

    Attributes
    ----------
    trainer
        The :class:`~psdist.trainer.Trainer` (its ``history`` grows as epochs finish).
    epochs
        Epochs this ``fit`` was asked for.
    """

    def __init__(self, trainer: Trainer, epochs: int) -> None:
        self.trainer = trainer
        self.epochs = epochs
        self.first_epoch = trainer.epoch
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()

    @classmethod
    def start(cls, trainer: Trainer, epochs: int, progress: Progress | None, prepared: Any,
              display: bool = True) -> TrainingHandle:
        """Run ``trainer``'s checked fit in a daemon thread (``Trainer.fit(block=False)`` calls this)."""
        handle = cls(trainer, epochs)
        bar = progress_bar(epochs, trainer.epoch) if display else None

        def report(event: dict[str, Any]) -> None:
            if bar is not None:
                bar(event)
            if progress is not None:
                progress(event)

        def run() -> None:
            try:
                trainer._run(epochs, report, prepared)
            except BaseException as e:  # handed to the caller by result()
                handle._error = e
                logger.error("psdist: background training failed: %r", e)
            finally:
                handle._done.set()

        handle._thread = threading.Thread(target=run, name=f"psdist-fit-{trainer.name}", daemon=True)
        handle._thread.start()
        return handle

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
        return not self._done.is_set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until the cluster and parameter server are up (or the run ended)."""
        return self.trainer._live.wait(timeout)

    def result(self, timeout: float | None = None) -> History:
        """Wait for the end of the training; its history (re-raises the training's error)."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the training is still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self.trainer.history

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
        state = "running" if self.running() else ("failed" if self._error else t.stopped_reason or "completed")
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
