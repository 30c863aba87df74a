"""The typed monitoring feed of psdist.run.events: records, messages, parsing, the builder."""

from __future__ import annotations

import json
import math

import msgpack
import numpy as np
import pytest

from psdist.core.layout import Entry, FlatSpec, Layout
from psdist.core.protocol import Push
from psdist.core.server import ServerState
from psdist.optim import SGD
from psdist.run.events import (
    KINDS,
    BadEvent,
    ChunkEvent,
    EndEvent,
    EpochEvent,
    LrEvent,
    RecoveryEvent,
    ServerSnapshot,
    StartEvent,
    Throttle,
    UnknownEvent,
    event,
    from_message,
    parse,
)

RECORDS = [
    StartEvent(run="r", time=1.0, name="mlp", ps="tcp://ps:1", epochs=3, config={"batch_size": 32}),
    ServerSnapshot(run="r", time=2.0, version=7, applied=6, rejected={"stale": 1}, staleness_hist=[4, 3],
                   nonfinite=0, lr=0.1, active=["tcp://w:1"], workers={"tcp://w:1": {"pushes": 7}}),
    ChunkEvent(run="r", time=3.0, epoch=1, chunk=4, worker="tcp://w:1", samples=512, loss=0.5, done=1, total=8,
               bad=["chunk 4 unreadable"]),
    EpochEvent(run="r", time=4.0, record={"epoch": 1, "train_loss": 0.5, "val_loss": 0.625}),
    LrEvent(run="r", time=5.0, lr=0.05, model="generator"),
    RecoveryEvent(run="r", time=6.0, error="ParameterServerLost('gone')", version=40, versions_lost=3,
                  ps="tcp://w:2"),
    EndEvent(run="r", time=7.0, reason="completed"),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.KIND)
def test_every_record_travels_and_comes_back_the_same(record):
    message = record.to_message()
    assert (message["kind"], message["run"], message["time"]) == (record.KIND, "r", record.time)
    wire = msgpack.unpackb(msgpack.packb(message), use_list=False)  # tuples, as the scheduler gets them
    assert from_message(wire) == record == from_message(json.loads(json.dumps(message)))


def test_the_message_of_a_record_is_flat_and_plain():
    assert LrEvent(run="r", time=5.0, lr=0.05).to_message() == {
        "kind": "lr", "run": "r", "time": 5.0, "lr": 0.05, "model": None,
    }
    assert EndEvent(run="r", time=7.0, reason="stopped").to_message() == {
        "kind": "end", "run": "r", "time": 7.0, "reason": "stopped",
    }
    assert sorted(KINDS) == ["chunk", "end", "epoch", "lr", "recovery", "server", "start"]


def test_nan_travels_as_none_and_reads_back_as_nan():
    chunk = ChunkEvent(run="r", time=math.inf, epoch=1, chunk=0, worker="w", samples=0, loss=math.nan,
                       compute_s=np.float64(0.25))
    message = chunk.to_message()
    assert (message["time"], message["loss"], message["compute_s"]) == (None, None, 0.25)
    assert type(message["compute_s"]) is float
    back = from_message(message)
    assert math.isnan(back.time) and math.isnan(back.loss) and back.compute_s == 0.25


def _server_state() -> ServerState:
    layout = Layout.of({"model": FlatSpec((Entry("w", (2,), "float32", 0, "param"),), 2)})
    state = ServerState(layout, np.zeros(2, np.float32), {"model": SGD(lr=0.1)}, max_staleness=0,
                        clock=lambda: 100.0)
    state.push(Push("tcp://w:1", 0, np.ones(2, np.float32), 8, 0.5))
    state.push(Push("tcp://w:1", 1, np.array([np.nan, 0], np.float32), 8, 0.5))  # nonfinite
    state.push(Push("tcp://w:2", 0, np.ones(2, np.float32), 8, 0.5))  # stale
    return state


def test_the_servers_metrics_are_exactly_a_snapshot():
    """The actor publishes ServerSnapshot(run=..., **state.metrics()): a metric added to the
    server without a field here fails this test (and would fail the actor's push)."""
    snap = ServerSnapshot(run="r", **_server_state().metrics())
    message = snap.to_message()
    assert (message["version"], message["applied"], message["rejected"], message["nonfinite"]) == (
        1, 1, {"nonfinite": 1, "stale": 1}, 1)
    assert [type(k) for k in message["rejected"]] == [str, str]
    assert (message["time"], message["staleness_hist"], message["workers"]["tcp://w:1"]["pushes"]) == (
        100.0, [2, 1], 2)
    assert message["workers"]["tcp://w:2"]["last_loss"] is None  # NaN: no applied push yet
    json.dumps(message)
    assert from_message(message).to_message() == message


def test_reading_ignores_new_fields_and_refuses_missing_or_wrong_ones(caplog):
    newer = {**LrEvent(run="r", time=5.0, lr=0.05).to_message(), "warmup": 3}
    assert parse(newer) == LrEvent(run="r", time=5.0, lr=0.05)
    with caplog.at_level("DEBUG", logger="psdist.run.events"):
        assert parse({"kind": "lr", "run": "r", "lr": None}) is None
        assert parse({"kind": "chunk", "run": "r", "epoch": 1, "chunk": 2.5, "worker": "w", "samples": 3}) is None
        assert parse({"kind": "server", "run": "r", "version": True}) is None
        assert parse({"kind": "gauge", "run": "r"}) is None
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "psdist: dropping a feed message: 'lr' message of run 'r' lacks the required field(s) ['lr']"),
        ("WARNING", "psdist: dropping a feed message: 'chunk' message of run 'r': field 'chunk' is 2.5, "
                    "expected an integer"),
        ("WARNING", "psdist: dropping a feed message: 'server' message of run 'r': field 'version' is True, "
                    "expected an integer"),
        ("DEBUG", "psdist: ignoring a feed message: message of run 'r' has kind 'gauge'; known kinds are "
                  "['chunk', 'end', 'epoch', 'lr', 'recovery', 'server', 'start']"),
    ]
    # whole floats are integers (a JSON round trip may make them so); missing time is NaN
    got = from_message({"kind": "end", "run": "r", "reason": "completed"})
    assert got.reason == "completed" and math.isnan(got.time)
    assert from_message({"kind": "server", "run": "r", "version": 4.0}).version == 4
    # None (NaN on the wire, or "not known") leaves a field at its default
    chunk = from_message({"kind": "chunk", "run": "r", "epoch": 1, "chunk": 0, "worker": "w", "samples": 3,
                          "compute_s": None, "pushes": None, "bad": None})
    assert (chunk.compute_s, chunk.pushes, chunk.bad, math.isnan(chunk.loss)) == (0.0, 0, [], True)


def test_the_builder_checks_at_the_producer(monkeypatch):
    monkeypatch.setattr("psdist.run.events.time.time", lambda: 50.0)
    assert event("lr", "r", lr=np.float32(0.5)) == LrEvent(run="r", time=50.0, lr=0.5).to_message()
    with pytest.raises(BadEvent, match=r"'lr' message of run 'r' has unknown field\(s\) \['rate'\]; LrEvent has "
                                       r"\['lr', 'model', 'run', 'time'\]"):
        event("lr", "r", rate=0.5)
    with pytest.raises(BadEvent, match=r"lacks the required field\(s\) \['reason'\]"):
        event("end", "r")
    with pytest.raises(UnknownEvent, match="has kind 'stop'"):
        event("stop", "r")


def test_the_trainers_calls_make_records():
    """Each call psdist/trainer.py makes today (Trainer._publish), with its field set."""
    run, prog_done, total = "r", 3, 8
    calls = [
        ("start", dict(name="mlp", ps="tcp://ps:1", epochs=2, config={"rule": {"name": "Downpour"}})),
        ("epoch", dict(record={"epoch": 1, "train_loss": 0.5})),
        ("end", dict(reason="error: RuntimeError('x')")),
        ("lr", dict(lr=0.01, model=None)),
        ("recovery", dict(error=repr(RuntimeError("lost")), version=12, versions_lost=4, ps="tcp://w:2")),
        ("chunk", dict(epoch=1, chunk=5, worker="tcp://w:1", samples=256, loss=0.75, compute_s=1.0, comm_s=0.5,
                       wait_s=0.0, read_s=0.25, done=prog_done, total=total, pushes=8, batches=8,
                       nonfinite_batches=0, nonfinite_inputs=0, pushes_nonfinite=0, bad_chunks=0, bad=[])),
    ]
    types = [type(from_message(event(kind, run, **fields))) for kind, fields in calls]
    assert types == [StartEvent, EpochEvent, EndEvent, LrEvent, RecoveryEvent, ChunkEvent]


def test_throttle_is_due_once_per_interval():
    now = [0.0]
    throttle = Throttle(0.5, clock=lambda: now[0])
    due = []
    for t in (0.0, 0.25, 0.5, 0.75, 1.25):
        now[0] = t
        due.append(throttle.due())
    assert due == [True, False, True, False, True]
