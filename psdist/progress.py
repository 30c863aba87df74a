"""Progress display: a tqdm bar per epoch (a widget in Jupyter, text in a terminal)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Progress", "progress_bar"]

#: A callback receiving the trainer's progress events ({"event": "chunk"|"epoch", ...}).
Progress = Callable[[dict[str, Any]], None]


def progress_bar(epochs: int, first_epoch: int = 0, *, file: Any = None) -> Progress:
    """A callback drawing one bar per epoch: chunks done, loss, samples/s, then val metrics."""
    from tqdm.auto import tqdm

    state: dict[str, Any] = {"bar": None, "t0": 0.0, "samples": 0}

    out = file if file is not None else sys.stderr

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "start":
            if event.get("training_on"):  # which device each worker trains on
                print(f"psdist: {event['training_on']}", file=out, flush=True)
            if event.get("dashboard"):
                print(f"psdist: live dashboard {event['dashboard']}", file=out, flush=True)
        elif event["event"] == "chunk":
            if state["bar"] is None:
                state["bar"] = tqdm(total=event["total"], desc=f"epoch {event['epoch']}/{first_epoch + epochs}",
                                    unit="chunk", leave=True, file=out)
                state["t0"], state["samples"], state["first"] = time.perf_counter(), 0, 0
            state["bar"].update(1)
            if state["samples"] == 0:  # the clock starts at the first finished chunk
                state["t0"] = time.perf_counter()
                state["samples"] = state["first"] = event["samples"]
                state["bar"].set_postfix(loss=f"{event['loss']:.4f}")
                return
            state["samples"] += event["samples"]
            rate = (state["samples"] - state["first"]) / max(time.perf_counter() - state["t0"], 1e-9)
            state["bar"].set_postfix(loss=f"{event['loss']:.4f}", samples_s=f"{rate:.0f}")
        elif event["event"] == "epoch":
            bar, rec = state["bar"], event["record"]
            state["bar"] = None
            if bar is not None:
                extra = {k: f"{v:.4f}" for k, v in rec.items() if k.startswith("val_") and isinstance(v, float)}
                bar.set_postfix(loss=f"{rec['train_loss']:.4f}", samples_s=f"{rec['samples_per_s']:.0f}", **extra)
                bar.close()

    return progress
