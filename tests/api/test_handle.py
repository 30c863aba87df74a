"""Non-blocking training: the handle, stop with a checkpoint, set_lr on the live server, traces."""

from __future__ import annotations

import functools
import json

import pytest
import torch

import psdist
from psdist.handle import TrainingHandle
from psdist.hep.models import mlp
from psdist.optim import SGD

MODEL = functools.partial(mlp, inputs=20, hidden=32, classes=4)
CE = torch.nn.functional.cross_entropy


def trainer(data, client, **kw):
    kw.setdefault("batch_size", 64)
    return psdist.Trainer(MODEL, CE, data, kw.pop("optimizer", SGD(lr=0.1)), client=client, seed=3, **kw)


def test_background_fit_returns_a_handle_and_its_result(client, blob_data):
    t = trainer(blob_data, client)
    handle = t.fit(epochs=2, block=False)
    assert isinstance(handle, TrainingHandle)
    history = handle.result(timeout=120)
    assert handle.done() and not handle.running()
    assert len(history) == 2 and history.last["val_accuracy"] >= 0.95
    frame = handle.history.to_pandas()
    assert list(frame["epoch"]) == [1, 2] and "val_loss" in frame.columns
    assert "completed" in repr(handle) and "2/2 epochs" in repr(handle)


def test_set_lr_reaches_the_running_server(client, blob_data):
    seen = []
    t = trainer(blob_data, client)

    def progress(ev):  # change the rate from "the notebook" once epoch 1 is done
        if ev["event"] == "epoch" and ev["record"]["epoch"] == 1:
            seen.append(t.set_lr(0.02))

    handle = t.fit(epochs=2, block=False, progress=progress)
    handle.result(timeout=120)
    assert seen == [pytest.approx(0.02)]  # the server answered with the rate now in force
    assert [r["lr"] for r in t.history] == [pytest.approx(0.1), pytest.approx(0.02)]
    assert t.server_metrics["lr"] == pytest.approx(0.02)
    assert t.set_lr(0.005) == 0.005  # not running: the next fit starts with it
    t.fit(epochs=1)
    assert t.history.last["lr"] == pytest.approx(0.005)


def test_stop_ends_after_running_chunks_with_a_checkpoint(client, blob_data, tmp_path):
    t = trainer(blob_data, client)
    chunks = []

    def progress(ev):
        if ev["event"] == "chunk":
            chunks.append(ev)
            if len(chunks) == 2:  # mid-epoch, from "the notebook"
                t.stop()

    handle = t.fit(epochs=20, block=False, progress=progress)
    ckpt = tmp_path / "stopped.ckpt"
    history = handle.stop(checkpoint=str(ckpt), timeout=120)
    rec = history.last
    assert t.stopped_reason == "stopped by the user" and rec["partial"] is True
    assert 2 <= rec["chunks"] < 8 and rec["chunks"] == len(chunks), rec  # in-flight tasks finished, no new one
    assert t.epoch == 0 and len(history) == 1  # the partial epoch is not counted as done
    m = t.server_metrics
    assert m["samples_applied"] + m["samples_rejected"] == rec["samples"]  # every pushed sample accounted
    resumed = psdist.Trainer.load(str(ckpt), MODEL, CE, blob_data, client=client)
    assert resumed.epoch == 0 and resumed.version == t.version


def test_bad_input_raises_in_the_caller_before_any_thread(client, tmp_path):
    t = psdist.Trainer(MODEL, CE, str(tmp_path / "missing.zarr"), client=client)
    with pytest.raises(psdist.DataError):
        t.fit(epochs=1, block=False)
    with pytest.raises(psdist.DataError):  # not "already training": the failed fit left nothing running
        t.fit(epochs=1, block=False)


def test_chrome_trace_has_every_phase_per_worker(client, blob_data, tmp_path):
    t = trainer(blob_data, client, rule=psdist.rules.SSP(bound=0))
    t.fit(epochs=1)
    path = tmp_path / "trace.json"
    t.trace(str(path))
    trace = json.loads(path.read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    threads = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    pushed = {w for w, s in t.server_metrics["workers"].items() if s["pushes"] > 0}
    assert threads == pushed  # one row per data worker that trained (the scheduler picks which)
    phases = {e["name"] for e in spans}
    assert {"read", "pull", "compute", "push", "validate"} <= phases
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in spans)
    computes = [e for e in spans if e["name"] == "compute"]
    assert len(computes) == t.history.last["pushes_applied"] + t.history.last["pushes_rejected"]


def test_stop_ends_the_fit_when_the_whole_epoch_is_in_flight(client, tmp_path):
    """4 chunks, 3 training slots: the window (6) holds the whole epoch, so no chunk is left to
    hold back; the stop must then end the fit after that epoch (it once trained on to the end)."""
    from conftest import blobs

    x, y = blobs(1024, seed=4)
    xv, yv = blobs(256, seed=5)
    data = psdist.write_zarr(tmp_path / "small.zarr", x, y, xv, yv, chunk_rows=256)
    t = trainer(data, client)

    def progress(ev):
        if ev["event"] == "chunk" and ev["done"] == 1:
            t.stop()

    handle = t.fit(epochs=200, block=False, progress=progress)
    history = handle.result(timeout=120)
    assert t.stopped_reason == "stopped by the user"
    assert len(history) == 1 and t.epoch == 1 and history.last["chunks"] == 4  # complete, then ended
