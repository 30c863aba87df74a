"""Live monitoring feed: what a training publishes for the dashboard page, as typed records.

Everything travels as Dask structured events on one topic, :data:`TOPIC`, so it needs no extra
connection and works on any cluster: the parameter server logs a :class:`ServerSnapshot` at
most every ``interval`` seconds (``Worker.log_event``), the trainer logs the start, every
finished chunk, every epoch record, learning-rate changes, recoveries and the end
(``Client.log_event``). The dashboard's scheduler plugin (:mod:`psdist.dashboard`) reads them
back with :func:`parse` and keeps the recent ones per run.

One dataclass per kind is the contract between producer and consumer. What travels is
:meth:`Event.to_message`: a flat, msgpack- and JSON-safe dict with ``kind``, ``run`` and
``time`` keys (NaN/Inf as ``None``, tuples as lists). Reading is tolerant of fields a newer
producer added and strict about the required ones: a message without them (or with a value of
the wrong type) is refused with the reason, never half-read.

The kinds, their records and fields besides ``run`` and ``time`` (required ones first):

- ``start``, :class:`StartEvent`: ``name``, ``ps`` (address), ``epochs``, ``config``
- ``server``, :class:`ServerSnapshot`: ``version``; the rest of
  :meth:`psdist.core.server.ServerState.metrics`
- ``chunk``, :class:`ChunkEvent`: ``epoch``, ``chunk``, ``worker``, ``samples``; ``loss``,
  timings, progress (``done`` of ``total``), bad-data counts
- ``epoch``, :class:`EpochEvent`: ``record``, the history record of the epoch
- ``lr``, :class:`LrEvent`: ``lr`` set by hand (``trainer.set_lr``); ``model``
- ``recovery``, :class:`RecoveryEvent`: ``error``, ``version`` restored; ``versions_lost``, ``ps``
- ``end``, :class:`EndEvent`: ``reason``: "completed", "stopped", "early stop: ...", the error
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "KINDS",
    "TOPIC",
    "BadEvent",
    "ChunkEvent",
    "EndEvent",
    "EpochEvent",
    "Event",
    "LrEvent",
    "RecoveryEvent",
    "ServerSnapshot",
    "StartEvent",
    "Throttle",
    "UnknownEvent",
    "event",
    "from_message",
    "parse",
]

logger = logging.getLogger(__name__)

#: The Dask event topic of every psdist message.
TOPIC = "psdist"

_NAN = math.nan


class BadEvent(ValueError):
    """A feed message that does not make a typed record; the message says which field and why."""


class UnknownEvent(BadEvent):
    """A feed message of a kind this version does not know (a newer producer's, or junk)."""


# ---------------------------------------------------------------------------------- records
@dataclass(frozen=True, kw_only=True)
class Event:
    """Fields every feed message has; the base of the typed records.

    Parameters
    ----------
    run
        The training's run id (``Session.run_id``).
    time
        When it happened, on the producer's clock (``time.time()``; NaN: not said).
    """

    #: The ``kind`` key of the message.
    KIND: ClassVar[str] = ""

    run: str
    time: float = field(default_factory=time.time)

    def to_message(self) -> dict[str, Any]:
        """The message that travels: ``kind``, ``run``, ``time`` and the fields, msgpack/JSON-safe."""
        message: dict[str, Any] = _safe(
            {"kind": self.KIND, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}
        )
        return message


@dataclass(frozen=True, kw_only=True)
class StartEvent(Event):
    """A training started: its name, where the parameter server is, what it was asked to do."""

    KIND: ClassVar[str] = "start"

    name: str = ""
    ps: str | None = None
    epochs: int | None = None  # epochs this fit was asked for
    config: dict[str, Any] = field(default_factory=dict)  # rule, optimizers, batch size, ...


@dataclass(frozen=True, kw_only=True)
class ServerSnapshot(Event):
    """The parameter server's counters: :meth:`~psdist.core.server.ServerState.metrics` as sent.

    Cumulative; the dashboard takes differences between two snapshots (on ``time``, the
    server's clock). Counters an older server did not send read as 0 (NaN for floats).

    A server sharded over several actors (``ps_shards``) sends one snapshot per shard, each
    with that shard's own counters and ``shard``, ``shards`` and ``size`` set; every push
    reaches every shard, so shard 0's counters stand for the run. A single server (and an
    older one) reads as shard 0 of 1, of unknown size.
    """

    KIND: ClassVar[str] = "server"

    version: int
    applied: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # by RejectKind value
    samples_applied: int = 0
    samples_rejected: int = 0
    loss_sum: float = _NAN  # sample-weighted, over the applied pushes
    staleness_hist: list[int] = field(default_factory=list)
    nonfinite: int | None = None  # None: an older server; read rejected["nonfinite"]
    lr: float = _NAN
    staleness_mean: float = _NAN
    staleness_max: int = 0
    active: list[str] = field(default_factory=list)
    clock_gap_max: int = 0
    waits: int = 0
    evicted: int = 0
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)  # WorkerStats as dicts
    worker: str | None = None  # the PS address: added by the scheduler to worker events
    shard: int = 0  # this shard's index (0 to shards - 1)
    shards: int = 1  # how many shards the run's server has
    size: int = 0  # float32 values this shard holds (0: not said)


@dataclass(frozen=True, kw_only=True)
class ChunkEvent(Event):
    """One finished chunk task (:class:`psdist.replica.loop.ChunkResult`, summed up)."""

    KIND: ClassVar[str] = "chunk"

    epoch: int  # 1-based
    chunk: int
    worker: str
    samples: int
    loss: float = _NAN  # mean training loss of its pushes
    compute_s: float = 0.0
    comm_s: float = 0.0
    wait_s: float = 0.0
    read_s: float = 0.0
    done: int | None = None  # chunks of the epoch finished, of ``total``
    total: int | None = None
    pushes: int = 0
    batches: int = 0
    nonfinite_batches: int = 0
    nonfinite_inputs: int = 0
    pushes_nonfinite: int = 0
    bad_chunks: int = 0
    bad: list[str] = field(default_factory=list)  # why the chunk could not be read


@dataclass(frozen=True, kw_only=True)
class EpochEvent(Event):
    """The history record of a finished (or stopped) epoch."""

    KIND: ClassVar[str] = "epoch"

    record: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class LrEvent(Event):
    """A learning rate set by hand while training (``model``: one model, ``None``: all)."""

    KIND: ClassVar[str] = "lr"

    lr: float
    model: str | None = None


@dataclass(frozen=True, kw_only=True)
class RecoveryEvent(Event):
    """The parameter server was lost and restarted from a recovery point."""

    KIND: ClassVar[str] = "recovery"

    error: str  # what was lost, as the trainer saw it
    version: int  # the version restored
    versions_lost: int = 0  # this epoch so far
    ps: str | None = None  # where the new server runs


@dataclass(frozen=True, kw_only=True)
class EndEvent(Event):
    """The training ended, and why."""

    KIND: ClassVar[str] = "end"

    reason: str


#: The record class of each message kind.
KINDS: dict[str, type[Event]] = {
    c.KIND: c for c in (StartEvent, ServerSnapshot, ChunkEvent, EpochEvent, LrEvent, RecoveryEvent, EndEvent)
}


# ---------------------------------------------------------------------------------- building
def event(kind: str, run: str, **fields: Any) -> dict[str, Any]:
    """One feed message, checked against its record (the builder of the keyword-style producers).

    ``event("lr", run, lr=0.1)`` is ``LrEvent(run=run, lr=0.1).to_message()``, and fails the
    same way: an unknown kind, an unknown or missing field or a wrong type raises
    :class:`BadEvent` here, at the producer, instead of a dropped message at the dashboard.
    """
    return from_message(_safe({"kind": kind, "run": run, "time": time.time(), **fields}), strict=True).to_message()


# ---------------------------------------------------------------------------------- reading
def parse(message: object) -> Event | None:
    """The typed record of a feed message, or ``None`` (logged) when it makes none.

    Fields a newer producer added are ignored; an unknown kind is logged at debug level, a
    message lacking a required field or holding a wrong type as a warning with the reason.
    """
    try:
        return from_message(message)
    except UnknownEvent as e:
        logger.debug("psdist: ignoring a feed message: %s", e)
    except BadEvent as e:
        logger.warning("psdist: dropping a feed message: %s", e)
    return None


def from_message(message: object, *, strict: bool = False) -> Event:
    """The typed record of a feed message; :class:`BadEvent` naming the problem if none.

    Parameters
    ----------
    message
        What came off the topic: a mapping with ``kind`` and ``run``.
    strict
        Refuse fields the record does not have (the producer's check); by default they are
        ignored (a newer producer's additions).
    """
    if not isinstance(message, Mapping):
        raise BadEvent(f"a feed message is a mapping with 'kind' and 'run', not {_show(message)}")
    kind, run = message.get("kind"), message.get("run")
    if not isinstance(run, str):
        raise BadEvent(f"{kind!r} message without a run id (run={_show(run)})")
    if not isinstance(kind, str):
        raise BadEvent(f"message of run {run!r} without a kind (kind={_show(kind)})")
    cls = KINDS.get(kind)
    if cls is None:
        raise UnknownEvent(f"message of run {run!r} has kind {_show(kind)}; known kinds are {sorted(KINDS)}")
    where = f"{kind!r} message of run {run!r}"
    hints, required = _schema(cls)
    extra = sorted(str(k) for k in message if k not in hints and k != "kind")
    if strict and extra:
        raise BadEvent(f"{where} has unknown field(s) {extra}; {cls.__name__} has {sorted(hints)}")
    missing = [name for name in required if message.get(name) is None]
    if missing:
        raise BadEvent(f"{where} lacks the required field(s) {missing}")
    values: dict[str, Any] = {"time": _NAN}  # a message without a time: the reader's clock decides
    for name, hint in hints.items():
        # None is how NaN travels, and what a producer may send for "not known": the field
        # keeps its default (NaN for loss and lr, 0 for timings and counters)
        if message.get(name) is not None:
            try:
                values[name] = _coerce(message[name], hint)
            except _Mismatch as e:
                raise BadEvent(f"{where}: field {name!r} is {_show(message[name])}, expected {e}") from None
    return cls(**values)


# ---------------------------------------------------------------------------------- helpers
def _schema(cls: type[Event]) -> tuple[dict[str, Any], list[str]]:
    """(field -> resolved type, required field names) of a record class (cached)."""
    cached = _SCHEMAS.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        cached = _SCHEMAS[cls] = ({n: hints[n] for n in names}, required)
    return cached


_SCHEMAS: dict[type[Event], tuple[dict[str, Any], list[str]]] = {}


class _Mismatch(Exception):
    """A value that is not of the field's type (the message: what was expected)."""


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as the field type ``hint`` (the few types records use), or :class:`_Mismatch`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):  # X | None
        inner = next(a for a in args if a is not type(None))
        return None if value is None else _coerce(value, inner)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch("a mapping")
        return {str(k): _coerce(v, args[1]) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):  # msgpack turns lists into tuples
            raise _Mismatch("a list")
        return [_coerce(v, args[0]) for v in value]
    return _SCALARS[hint](value)


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Mismatch("text")
    return value


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Mismatch("an integer")
    if isinstance(value, float) and not value.is_integer():
        raise _Mismatch("an integer")
    return int(value)


def _as_float(value: Any) -> float:
    if value is None:  # how NaN/Inf travel (see _safe)
        return _NAN
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Mismatch("a number")
    return float(value)


_SCALARS: dict[Any, Callable[[Any], Any]] = {str: _as_str, int: _as_int, float: _as_float}


def _show(value: Any) -> str:
    """A short repr for error messages (a bad message may be large)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _safe(v: Any) -> Any:
    """msgpack-safe copy: str keys, finite floats (NaN/Inf as None), lists for tuples."""
    if isinstance(v, dict):
        return {str(k): _safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_safe(x) for x in v]
    if isinstance(v, float):
        return float(v) if math.isfinite(v) else None  # numpy's float64 is a float too
    if isinstance(v, str):
        return str.__str__(v)  # plain text, also of str enums (RejectKind)
    if isinstance(v, (int, bool)) or v is None:
        return v
    if hasattr(v, "item"):  # numpy scalars
        return _safe(v.item())
    return str(v)


class Throttle:
    """True at most once per ``interval`` seconds (the first call is always due)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last = -math.inf

    def due(self) -> bool:
        """Whether the interval since the last due call has passed (and start a new one if so)."""
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False
