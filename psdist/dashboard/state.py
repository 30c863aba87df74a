"""What the dashboard knows of each training: the feed of :mod:`psdist.run.events` folded into series.

Pure Python (no Bokeh, no Dask): the scheduler plugin feeds every message of topic
:data:`psdist.run.events.TOPIC` to :meth:`Runs.consume`, the page's components read the
:class:`RunState` of the run they show. Every history is bounded
(:class:`~psdist.dashboard.series.Series`).

Times on the plots are seconds since the run's first message. Rates (pushes/s, samples/s) are
differences of the server's cumulative counters between two snapshots, over the difference of
the snapshots' own timestamps (the parameter server's clock), so clock skew between the
machines of a cluster does not distort them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from psdist.core.protocol import NONFINITE
from psdist.dashboard.series import Series, as_float, as_int

__all__ = ["RunState", "Runs"]

logger = logging.getLogger(__name__)

#: Bad-chunk messages a run keeps for the page.
BAD_KEPT = 5


class RunState:
    """Everything the page shows of one training, built from its feed messages.

    Parameters
    ----------
    run
        The run id (the ``run`` key of its messages).
    maxlen
        Most points per series.
    clock
        Local time source (``time.time``), for the age of the last push.
    """

    def __init__(self, run: str, maxlen: int = 2000, clock: Callable[[], float] = time.time) -> None:
        self.run = run
        self.maxlen = maxlen
        self.clock = clock
        self.name = ""
        self.config: dict[str, Any] = {}
        self.ps: str | None = None
        self.status = "running"
        self.end_reason: str | None = None
        self.epochs_planned: int | None = None  # epochs this fit was asked for
        self.epoch = 0  # the epoch being trained (1-based; 0 before the first chunk)
        self.chunks: tuple[int, int] | None = None  # (done, total) of the current epoch
        self.t0: float | None = None  # time of the first message (producer's clock)
        self.last_seen = clock()  # local time of the last message
        self.seq = 0  # bumped on every consumed message: components skip unchanged runs
        # server snapshot
        self.version = 0
        self.lr: float | None = None
        self.applied = 0
        self.rejected: dict[str, int] = {}
        self.samples_applied = 0
        self.staleness_hist: list[int] = []
        self.staleness_mean = 0.0
        self.staleness_max = 0
        self.active: set[str] = set()
        self.waits = 0
        self.nonfinite = 0  # pushes the server rejected for NaN/Inf (its snapshot)
        # bad data, from the chunk messages (summed over the run)
        self.nonfinite_batches = 0  # minibatches skipped on the workers for NaN/Inf inputs or loss
        self.bad_chunks = 0  # chunks that could not be read and were skipped
        self.bad: list[str] = []  # the last few bad-chunk messages, newest last
        self.server: dict[str, Any] = {}
        self._server_time: float | None = None  # PS clock of the last snapshot
        self._server_seen = 0.0  # local clock when it arrived
        self._prev: dict[str, Any] | None = None
        # histories
        self.loss = Series(("version", "t", "loss"), maxlen)  # mean loss of the pushes applied between snapshots
        self.chunk_loss = Series(("version", "t", "loss", "epoch"), maxlen)
        self.epochs = Series(("epoch", "version", "t", "train_loss", "val_loss"), maxlen)
        self.records: list[dict[str, Any]] = []  # epoch records as published (bounded by maxlen)
        self.pushes = Series(("t", "applied", "rejected"), maxlen)  # per second
        self.lr_series = Series(("version", "t", "lr"), maxlen)
        self.worker_rates: dict[str, Series] = {}  # worker -> (t, samples_per_s)
        self.workers: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ consuming
    def elapsed(self, t: float) -> float:
        """Seconds since the run's first message."""
        if self.t0 is None:
            self.t0 = t
        return t - self.t0

    def consume(self, msg: Mapping[str, Any]) -> None:
        """Fold one feed message (any ``kind``) into the state; unknown kinds are ignored."""
        t = as_float(msg.get("time"))
        t = self.clock() if math.isnan(t) else t
        self.elapsed(t)
        self.last_seen = self.clock()
        kind = msg.get("kind")
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            logger.debug("psdist dashboard: ignoring message kind %r of run %s", kind, self.run)
            return
        handler(msg, t)
        self.seq += 1

    def _on_start(self, msg: Mapping[str, Any], t: float) -> None:
        self.name = str(msg.get("name") or "")
        self.ps = msg.get("ps") or self.ps
        config = msg.get("config")
        self.config = dict(config) if isinstance(config, Mapping) else {}
        self.epochs_planned = as_int(msg.get("epochs"), 0) or None
        self.status, self.end_reason = "running", None

    def _on_end(self, msg: Mapping[str, Any], t: float) -> None:
        self.status = "ended"
        self.end_reason = str(msg.get("reason") or "")
        self.active = set()

    def _on_lr(self, msg: Mapping[str, Any], t: float) -> None:
        self._set_lr(as_float(msg.get("lr")), t)

    def _set_lr(self, lr: float, t: float) -> None:
        if math.isnan(lr):
            return
        if self.lr != lr:
            self.lr_series.append(version=self.version, t=self.elapsed(t), lr=lr)
        self.lr = lr

    def _on_chunk(self, msg: Mapping[str, Any], t: float) -> None:
        worker = str(msg.get("worker") or "?")
        row = self._row(worker)
        samples = as_float(msg.get("samples"))
        busy = sum(as_float(msg.get(k)) for k in ("compute_s", "comm_s", "wait_s", "read_s") if msg.get(k) is not None)
        row["chunks"] += 1
        self.epoch = as_int(msg.get("epoch"), self.epoch)
        if msg.get("total") is not None:
            self.chunks = (as_int(msg.get("done")), as_int(msg.get("total")))
        if busy > 0 and not math.isnan(samples):
            row["chunk_samples_per_s"] = samples / busy
        nonfinite, bad = as_int(msg.get("nonfinite_batches")), as_int(msg.get("bad_chunks"))
        self.nonfinite_batches += nonfinite
        self.bad_chunks += bad
        row["nonfinite_batches"] += nonfinite
        row["bad_chunks"] += bad
        why = msg.get("bad")
        if bad and isinstance(why, (list, tuple)):
            self.bad = (self.bad + [str(w) for w in why])[-BAD_KEPT:]
        loss = as_float(msg.get("loss"))
        self.chunk_loss.append(version=self.version, t=self.elapsed(t), loss=loss, epoch=as_float(msg.get("epoch")))

    def _on_epoch(self, msg: Mapping[str, Any], t: float) -> None:
        record = msg.get("record")
        if not isinstance(record, Mapping):
            return
        record = dict(record)
        self.records.append(record)
        if len(self.records) > self.maxlen:
            del self.records[0]
        version = record.get("version")
        self.epochs.append(
            epoch=as_float(record.get("epoch")),
            version=as_float(version if version is not None else self.version),
            t=self.elapsed(t),
            train_loss=as_float(record.get("train_loss")),
            val_loss=as_float(record.get("val_loss")),
        )

    def _on_server(self, msg: Mapping[str, Any], t: float) -> None:
        self.server = dict(msg)
        self.ps = self.ps or msg.get("worker")  # the scheduler adds the PS address to worker events
        st = as_float(msg.get("time"))
        st = t if math.isnan(st) else st
        version = as_int(msg.get("version"), self.version)
        applied = as_int(msg.get("applied"), self.applied)
        rejected = msg.get("rejected")
        rejected = {str(k): as_int(v) for k, v in rejected.items()} if isinstance(rejected, Mapping) else {}
        loss_sum = as_float(msg.get("loss_sum"))
        samples = as_int(msg.get("samples_applied"), self.samples_applied)
        workers = msg.get("workers")
        workers = {str(w): s for w, s in workers.items() if isinstance(s, Mapping)} if isinstance(workers, Mapping) else {}
        now = {
            "time": st, "applied": applied, "rejected": sum(rejected.values()), "loss_sum": loss_sum,
            "samples": samples, "workers": {w: as_int(s.get("samples")) for w, s in workers.items()},
        }
        prev, x = self._prev, self.elapsed(st)
        if prev is not None and st > prev["time"]:
            dt = st - prev["time"]
            self.pushes.append(
                t=x, applied=max(0, applied - prev["applied"]) / dt,
                rejected=max(0, now["rejected"] - prev["rejected"]) / dt,
            )
            ds = samples - prev["samples"]
            if ds > 0:
                self.loss.append(version=version, t=x, loss=(loss_sum - prev["loss_sum"]) / ds)
            for w, n in now["workers"].items():
                series = self.worker_rates.setdefault(w, Series(("t", "samples_per_s"), self.maxlen))
                rate = max(0, n - prev["workers"].get(w, 0)) / dt
                series.append(t=x, samples_per_s=rate)
                self._row(w)["samples_per_s"] = rate
        if prev is None or st >= prev["time"]:
            self._prev = now
            self.version, self.applied, self.rejected, self.samples_applied = version, applied, rejected, samples
            hist = msg.get("staleness_hist")
            self.staleness_hist = [as_int(c) for c in hist] if isinstance(hist, (list, tuple)) else []
            self.staleness_mean = as_float(msg.get("staleness_mean"))
            self.staleness_max = as_int(msg.get("staleness_max"))
            self.waits = as_int(msg.get("waits"))
            self.nonfinite = as_int(msg.get("nonfinite"), rejected.get(NONFINITE, 0))
            active = msg.get("active")
            self.active = {str(a) for a in active} if isinstance(active, (list, tuple)) else set()
            self._server_time, self._server_seen = st, self.clock()
            self._set_lr(as_float(msg.get("lr")), st)
            for w, s in workers.items():
                self._server_row(w, s)

    def _row(self, worker: str) -> dict[str, Any]:
        row = self.workers.get(worker)
        if row is None:
            row = self.workers[worker] = {
                "worker": worker, "name": "", "host": "", "device": "", "threads": math.nan,
                "chunks": 0, "pushes": 0, "applied": 0, "rejected": 0, "samples": 0,
                "samples_per_s": math.nan, "chunk_samples_per_s": math.nan, "last_loss": math.nan,
                "last_push": math.nan, "nonfinite": 0, "nonfinite_batches": 0, "bad_chunks": 0,
            }
        return row

    def _server_row(self, worker: str, s: Mapping[str, Any]) -> None:
        row = self._row(worker)
        info = s.get("info") if isinstance(s.get("info"), Mapping) else {}
        for key in ("name", "host", "device"):
            if info.get(key) is not None:
                row[key] = str(info[key])
        row["threads"] = as_float(info.get("threads")) if "threads" in info else row["threads"]
        for key in ("pushes", "applied", "rejected", "nonfinite", "samples"):
            row[key] = as_int(s.get(key))
        row["last_loss"] = as_float(s.get("last_loss"))
        last = as_float(s.get("last_push"))
        row["last_push"] = last if last > 0 else math.nan

    # ------------------------------------------------------------------ reading
    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def bad_data(self) -> bool:
        """Whether the run met NaN/Inf or bad chunks (the page then shows them in red)."""
        return bool(self.nonfinite or self.nonfinite_batches or self.bad_chunks)

    @property
    def title(self) -> str:
        """``name (run)`` or the run id alone."""
        return f"{self.name} ({self.run})" if self.name else self.run

    def metric_names(self) -> list[str]:
        """The ``val_<metric>`` keys of the epoch records (besides ``val_loss``), in first-seen order."""
        names: list[str] = []
        for r in self.records:
            names += [k for k, v in r.items() if k.startswith("val_") and k != "val_loss"
                      and isinstance(v, (int, float)) and k not in names]
        return names

    def metric_series(self, name: str) -> tuple[list[float], list[float]]:
        """(epochs, values) of one epoch-record key."""
        pts = [(as_float(r.get("epoch")), as_float(r.get(name))) for r in self.records if name in r]
        return [p[0] for p in pts], [p[1] for p in pts]

    def push_age(self, row: Mapping[str, Any], now: float | None = None) -> float:
        """Seconds since the worker's last push, on the PS clock carried to the local one."""
        last = row.get("last_push", math.nan)
        if self._server_time is None or math.isnan(last):
            return math.nan
        now = self.clock() if now is None else now
        return max(0.0, self._server_time - last + (now - self._server_seen))

    def worker_rows(self, now: float | None = None) -> list[dict[str, Any]]:
        """One row per worker (sorted by name, then address) for the worker table."""
        rows = []
        for w, row in self.workers.items():
            state = "training" if w in self.active else ("done" if self.status == "ended" else "idle")
            rows.append({**row, "state": state, "last_push_age": self.push_age(row, now)})
        return sorted(rows, key=lambda r: (r["name"] or "~", r["worker"]))


class Runs:
    """The recent trainings seen on the feed, newest last.

    Parameters
    ----------
    max_runs
        Runs kept; past it the oldest ended run (else the oldest) is dropped.
    maxlen
        Most points per series of each run.
    clock
        Local time source.
    """

    def __init__(self, max_runs: int = 20, maxlen: int = 2000, clock: Callable[[], float] = time.time) -> None:
        self.max_runs = max(1, int(max_runs))
        self.maxlen = maxlen
        self.clock = clock
        self.runs: dict[str, RunState] = {}
        self.seq = 0  # bumped when a run appears or goes

    def consume(self, msg: Any) -> RunState | None:
        """Fold one feed message into its run (created on first sight); junk is ignored."""
        if not isinstance(msg, Mapping) or not isinstance(msg.get("run"), str) or "kind" not in msg:
            logger.debug("psdist dashboard: ignoring malformed message %r", msg)
            return None
        run = msg["run"]
        state = self.runs.get(run)
        if state is None:
            state = self.runs[run] = RunState(run, self.maxlen, self.clock)
            self.seq += 1
            self._trim()
        try:
            state.consume(msg)
        except Exception:  # a bad message must never break the scheduler's event handling
            logger.warning("psdist dashboard: could not read a %r message", msg.get("kind"), exc_info=True)
        return state

    def _trim(self) -> None:
        while len(self.runs) > self.max_runs:
            ended = [r for r, s in self.runs.items() if s.status == "ended"]
            del self.runs[ended[0] if ended else next(iter(self.runs))]

    def get(self, run: str | None) -> RunState | None:
        return self.runs.get(run) if run is not None else None

    def latest(self) -> RunState | None:
        """The newest running training, else the newest one."""
        running = [s for s in self.runs.values() if s.status == "running"]
        pool = running or list(self.runs.values())
        return pool[-1] if pool else None

    def ids(self) -> list[str]:
        return list(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __contains__(self, run: object) -> bool:
        return run in self.runs
