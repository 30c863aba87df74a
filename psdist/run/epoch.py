"""One epoch's bookkeeping: which chunks are done, and the history record they add up to.

The trainer keeps an :class:`EpochProgress` while an epoch runs. It is what makes recovery
exact: a checkpoint stores it (JSON), so after a lost parameter server or a restarted client
the epoch goes on with the chunks not yet done, and the record still counts every chunk once.
Only a small summary of each chunk is kept (no staleness lists, no timelines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from psdist.replica.loop import ChunkResult

__all__ = ["FAULT_FIELDS", "EpochProgress", "summarize"]

#: Per-chunk counters that some ChunkResults carry (bad data, NaN, fp16 overflow); summed when present.
OPTIONAL_COUNTS = ("nonfinite_batches", "pushes_nonfinite", "bad_chunks", "chunks_read_ahead", "overflow_batches")

#: Record fields that say what went wrong and what it cost (0 on a clean epoch).
FAULT_FIELDS = ("chunks_rerun", "workers_lost", "chunks_hung", "ps_restarts", "versions_lost",
                "chunks_redone", "pushes_orphaned", "pushes_replayed")


def summarize(r: ChunkResult) -> dict[str, Any]:
    """The part of a chunk's result the epoch record needs (JSON-safe)."""
    taus = r.staleness
    out: dict[str, Any] = {
        "worker": r.worker,
        "samples": r.samples,
        "loss_sum": r.loss_sum,
        "losses": dict(r.losses),
        "pushes": r.pushes,
        "applied": r.applied,
        "tau_n": len(taus),
        "tau_sum": int(sum(taus)),
        "tau_max": int(max(taus)) if taus else 0,
        "version": r.version,
        "compute_s": r.compute_s,
        "comm_s": r.comm_s,
        "read_s": r.read_s,
        "wait_s": r.wait_s,
    }
    for name in OPTIONAL_COUNTS:
        out[name] = int(getattr(r, name, 0) or 0)
    scale = getattr(r, "loss_scale", None)
    if scale is not None:  # "16-mixed" only
        out["loss_scale"] = float(scale)
    return out


@dataclass
class EpochProgress:
    """The finished chunks of epoch ``epoch`` (1-based) and what recovering cost so far.

    Parameters
    ----------
    epoch
        The epoch this progress belongs to (1-based, as in the history).
    done
        Chunk index → :func:`summarize` of its result.
    faults
        Counters of :data:`FAULT_FIELDS` accumulated over this epoch's recoveries.
    resumed
        The epoch was continued from a checkpoint by another trainer process.
    train_s
        Seconds spent training the chunks in ``done`` (each attempt's share).
    server_start
        The server's ``applied``/``rejected``/``waits`` counters when the epoch began.
    """

    epoch: int
    done: dict[int, dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_FIELDS, 0))
    resumed: bool = False
    train_s: float = 0.0  # training time of the attempts so far (recoveries excluded)
    server_start: dict[str, Any] | None = None  # the server's counters when the epoch began

    def add(self, r: ChunkResult) -> None:
        self.done[r.chunk] = summarize(r)

    def copy(self) -> EpochProgress:
        return EpochProgress.from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "done": {str(k): v for k, v in self.done.items()},
                "faults": dict(self.faults), "resumed": self.resumed, "train_s": self.train_s,
                "server_start": self.server_start}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochProgress:
        faults = dict.fromkeys(FAULT_FIELDS, 0)
        faults.update({k: int(v) for k, v in d.get("faults", {}).items()})
        return cls(int(d["epoch"]), {int(k): dict(v) for k, v in d["done"].items()}, faults,
                   bool(d.get("resumed", False)), float(d.get("train_s", 0.0)), d.get("server_start"))

    @property
    def samples(self) -> int:
        return sum(s["samples"] for s in self.done.values())

    @property
    def pushes(self) -> int:
        return sum(s["pushes"] for s in self.done.values())

    def record(self) -> dict[str, Any]:
        """The worker-side fields of the epoch's history record (server fields come separately)."""
        done = list(self.done.values())
        samples = self.samples
        n_tau = sum(s["tau_n"] for s in done)
        names = sorted({k for s in done for k in s["losses"]})
        rec: dict[str, Any] = {
            "epoch": self.epoch,
            "train_loss": sum(s["loss_sum"] for s in done) / max(samples, 1) if done else math.nan,
            "samples": samples,
            "samples_per_s": samples / self.train_s if self.train_s > 0 else math.nan,
            "staleness_mean": sum(s["tau_sum"] for s in done) / n_tau if n_tau else 0.0,
            "staleness_max": max((s["tau_max"] for s in done), default=0),
            "chunks": len(done),
            **{f"train_{k}": sum(s["losses"].get(k, 0.0) for s in done) / max(samples, 1) for k in names},
            "compute_s": sum(s["compute_s"] for s in done),
            "comm_s": sum(s["comm_s"] for s in done),
            "read_s": sum(s["read_s"] for s in done),
            "wait_s": sum(s["wait_s"] for s in done),  # held back by a barrier rule
            **{k: sum(s.get(k, 0) for s in done) for k in OPTIONAL_COUNTS},
            **self.faults,
        }
        scales = [s["loss_scale"] for s in done if "loss_scale" in s]
        if scales:  # "16-mixed": the smallest of the workers' loss scales at the end of a chunk
            rec["loss_scale"] = min(scales)
        if self.resumed:
            rec["resumed"] = True
        return rec
