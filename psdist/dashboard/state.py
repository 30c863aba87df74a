"""What the dashboard knows of each training: the feed of :mod:`psdist.run.events` folded into series.

Pure Python (no Bokeh, no Dask): the scheduler plugin feeds every message of topic
:data:`psdist.run.events.TOPIC` to :meth:`Runs.consume`, which reads it into its typed record
(:func:`psdist.run.events.from_message`) and folds that into the :class:`RunState` of its run;
the page's components read the state of the run they show. Every history is bounded
(:class:`~psdist.dashboard.series.Series`).

Times on the plots are seconds since the run's first message. Rates (pushes/s, samples/s) are
differences of the server's cumulative counters between two snapshots, over the difference of
the snapshots' own timestamps (the parameter server's clock), so clock skew between the
machines of a cluster does not distort them.

A server sharded over several actors sends one snapshot per shard. The run's figures come from
shard 0's snapshots alone (every push reaches every shard, so its counters are the run's, and
two shards' clocks and counters must never be differenced against each other); each shard's own
load is kept apart (:class:`ShardLoad`, :attr:`RunState.shards`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from psdist.core.protocol import NONFINITE
from psdist.dashboard.series import Series, as_float, as_int
from psdist.run.events import (
    BadEvent,
    ChunkEvent,
    EndEvent,
    EpochEvent,
    Event,
    LrEvent,
    RecoveryEvent,
    ServerSnapshot,
    StartEvent,
    UnknownEvent,
    from_message,
)

__all__ = ["BYTES_PER_VALUE", "RunState", "Runs", "ShardLoad"]

logger = logging.getLogger(__name__)

#: Bad-chunk messages a run keeps for the page.
BAD_KEPT = 5

#: Bytes of one weight value on the wire (the server's vector is float32).
BYTES_PER_VALUE = 4


@dataclass(frozen=True)
class ShardLoad:
    """One parameter-server shard as its latest snapshot shows it: a row of the shard table.

    Parameters
    ----------
    shard
        The shard's index (0 for a server that is not sharded).
    worker
        Address of the worker its actor runs on (``""``: not known yet).
    size
        float32 values it holds (0: the server did not say).
    version
        Its version (each shard counts its own).
    applied, rejected
        Pushes it applied and rejected, in total.
    staleness_mean
        Mean staleness of the pushes it received (NaN: not said).
    pushes_per_s
        Pushes (applied and rejected) per second between its last two snapshots, on its own
        clock (NaN until it has sent two).
    time
        Its clock when it took the latest snapshot (NaN: none yet).
    """

    shard: int
    worker: str = ""
    size: int = 0
    version: int = 0
    applied: int = 0
    rejected: int = 0
    staleness_mean: float = math.nan
    pushes_per_s: float = math.nan
    time: float = math.nan

    @property
    def mb_per_s(self) -> float:
        """Megabytes (10⁶ bytes) of updates per second pushed into it: pushes/s × size × 4 bytes.

        NaN while its size or its rate is not known. Only the update vector counts (the part
        that grows with the model), not the few bytes of each push's header.
        """
        if self.size <= 0:
            return math.nan
        return self.pushes_per_s * self.size * BYTES_PER_VALUE / 1e6

    def row(self) -> dict[str, Any]:
        """Its fields and :attr:`mb_per_s`, as a table row."""
        return {**asdict(self), "mb_per_s": self.mb_per_s}

    def after(self, e: ServerSnapshot, t: float) -> ShardLoad:
        """This shard once ``e`` (one of its snapshots, taken at ``t``) arrived; itself if ``e`` is older."""
        if t < self.time:  # out of order: older than what is shown (a NaN time compares False)
            return self
        rejected = sum(e.rejected.values())
        rate = self.pushes_per_s
        if t > self.time:
            # max(0, ...): a restarted shard counts from its recovery point, which may be lower
            rate = max(0, e.applied + rejected - self.applied - self.rejected) / (t - self.time)
        return replace(
            self, worker=e.worker or self.worker, size=e.size or self.size, version=e.version,
            applied=e.applied, rejected=rejected, staleness_mean=e.staleness_mean, pushes_per_s=rate, time=t,
        )


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
        self.server: ServerSnapshot | None = None  # the last snapshot of shard 0 as received
        self.shard_count = 1  # shards of the run's parameter server (the most any snapshot said)
        self._shards: dict[int, ShardLoad] = {}  # shard index -> its latest load
        self.recoveries = 0  # parameter-server restarts
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

    def consume(self, event: Event) -> None:
        """Fold one typed feed record (:mod:`psdist.run.events`) into the state."""
        t = event.time if math.isfinite(event.time) else self.clock()
        self.elapsed(t)
        self.last_seen = self.clock()
        match event:
            case StartEvent():
                self._on_start(event)
            case ServerSnapshot():
                self._on_server(event, t)
            case ChunkEvent():
                self._on_chunk(event, t)
            case EpochEvent():
                self._on_epoch(event, t)
            case LrEvent():
                self._set_lr(event.lr, t)
            case RecoveryEvent():
                self.ps = event.ps or self.ps  # the restarted server's address
                self.recoveries += 1
            case EndEvent():
                self.status, self.end_reason = "ended", event.reason
                self.active = set()
            case _:  # a record kind newer than this page
                logger.debug("psdist dashboard: ignoring %s of run %s", type(event).__name__, self.run)
                return
        self.seq += 1

    def _on_start(self, e: StartEvent) -> None:
        self.name = e.name
        self.ps = e.ps or self.ps
        self.config = dict(e.config)
        self.epochs_planned = e.epochs or None
        self.status, self.end_reason = "running", None

    def _set_lr(self, lr: float, t: float) -> None:
        if math.isnan(lr):
            return
        if self.lr != lr:
            self.lr_series.append(version=self.version, t=self.elapsed(t), lr=lr)
        self.lr = lr

    def _on_chunk(self, e: ChunkEvent, t: float) -> None:
        row = self._row(e.worker)
        busy = sum(s for s in (e.compute_s, e.comm_s, e.wait_s, e.read_s) if math.isfinite(s))
        row["chunks"] += 1
        self.epoch = e.epoch
        if e.total is not None:
            self.chunks = (e.done or 0, e.total)
        if busy > 0:
            row["chunk_samples_per_s"] = e.samples / busy
        self.nonfinite_batches += e.nonfinite_batches
        self.bad_chunks += e.bad_chunks
        row["nonfinite_batches"] += e.nonfinite_batches
        row["bad_chunks"] += e.bad_chunks
        if e.bad_chunks and e.bad:
            self.bad = (self.bad + e.bad)[-BAD_KEPT:]
        self.chunk_loss.append(version=self.version, t=self.elapsed(t), loss=e.loss, epoch=float(e.epoch))

    def _on_epoch(self, e: EpochEvent, t: float) -> None:
        record = dict(e.record)
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

    def _on_server(self, e: ServerSnapshot, t: float) -> None:
        """Rates from the difference to the previous snapshot; counters unless it is older.

        Every snapshot updates its shard's row; only shard 0's make the run's figures.
        """
        if e.shard < 0:  # a producer's bug: there is no row to put it in
            logger.debug("psdist dashboard: ignoring a snapshot of shard %d of run %s", e.shard, self.run)
            return
        self.shard_count = max(self.shard_count, e.shards, e.shard + 1)
        self._shards[e.shard] = self._shards.get(e.shard, ShardLoad(e.shard)).after(e, t)
        if e.shard != 0:
            return
        self.server = e
        self.ps = self.ps or e.worker
        workers = e.workers
        now = {
            "time": t, "applied": e.applied, "rejected": sum(e.rejected.values()), "loss_sum": e.loss_sum,
            "samples": e.samples_applied, "workers": {w: as_int(s.get("samples")) for w, s in workers.items()},
        }
        prev = self._prev
        if prev is not None and t > prev["time"]:
            self._rates(prev, now, e.version)
        if prev is not None and t < prev["time"]:  # out of order: older than what is shown
            return
        self._prev = now
        self.version, self.applied, self.samples_applied = e.version, e.applied, e.samples_applied
        self.rejected = dict(e.rejected)
        self.staleness_hist = list(e.staleness_hist)
        self.staleness_mean, self.staleness_max, self.waits = e.staleness_mean, e.staleness_max, e.waits
        # an older server sends no "nonfinite": the count is in rejected then
        self.nonfinite = e.nonfinite if e.nonfinite is not None else e.rejected.get(NONFINITE, 0)
        self.active = set(e.active)
        self._server_time, self._server_seen = t, self.clock()
        self._set_lr(e.lr, t)
        for w, s in workers.items():
            self._server_row(w, s)

    def _rates(self, prev: dict[str, Any], now: dict[str, Any], version: int) -> None:
        """Pushes/s, the loss of the pushes between two snapshots, samples/s per worker."""
        dt, x = now["time"] - prev["time"], self.elapsed(now["time"])
        self.pushes.append(
            t=x, applied=max(0, now["applied"] - prev["applied"]) / dt,
            rejected=max(0, now["rejected"] - prev["rejected"]) / dt,
        )
        ds = now["samples"] - prev["samples"]
        if ds > 0:
            self.loss.append(version=version, t=x, loss=(now["loss_sum"] - prev["loss_sum"]) / ds)
        for w, n in now["workers"].items():
            series = self.worker_rates.setdefault(w, Series(("t", "samples_per_s"), self.maxlen))
            rate = max(0, n - prev["workers"].get(w, 0)) / dt
            series.append(t=x, samples_per_s=rate)
            self._row(w)["samples_per_s"] = rate

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
        raw = s.get("info")
        info: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
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
    def shards(self) -> list[ShardLoad]:
        """The load of each shard that has reported, by index (one row for a server not sharded)."""
        return [self._shards[k] for k in sorted(self._shards)]

    @property
    def sharded(self) -> bool:
        """Whether the run's parameter server is split over several shards."""
        return self.shard_count > 1

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
        last = as_float(row.get("last_push"))
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
        self.dropped: Counter[str] = Counter()  # messages that made no record, by kind

    def consume(self, msg: object) -> RunState | None:
        """Fold one feed message (or typed record) into its run, created on first sight.

        A message that makes no record (:func:`psdist.run.events.from_message`) is dropped and
        counted in :attr:`dropped` by kind, with a warning giving the reason the first time per
        kind; one of an unknown kind (a newer producer's) is skipped quietly. Nothing a message
        holds may break the scheduler's event handling.
        """
        if isinstance(msg, Event):
            event = msg
        else:
            try:
                event = from_message(msg)
            except UnknownEvent as e:
                logger.debug("psdist dashboard: %s", e)
                return None
            except BadEvent as e:
                self._drop(msg, e)
                return None
        state = self.runs.get(event.run)
        if state is None:
            state = self.runs[event.run] = RunState(event.run, self.maxlen, self.clock)
            self.seq += 1
            self._trim()
        try:
            state.consume(event)
        except Exception:  # a bug here must not break the scheduler either
            logger.warning("psdist dashboard: could not fold a %r message", event.KIND, exc_info=True)
        return state

    def _drop(self, msg: object, error: BadEvent) -> None:
        kind = str(msg.get("kind")) if isinstance(msg, Mapping) else type(msg).__name__
        self.dropped[kind] += 1
        # a producer that sends bad messages sends many: say why once per kind
        log = logger.warning if self.dropped[kind] == 1 else logger.debug
        log("psdist dashboard: dropping a feed message: %s", error)

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
