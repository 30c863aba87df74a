"""Bad data: corrupted, truncated and missing Zarr chunks; NaN/Inf in the inputs, the loss, the pushes.

Every store here is a real Zarr v3 store on disk, written by psdist and then damaged the way a
disk, a copy or a converter damages one; training runs the real loop against the real server
state. No cluster: the Dask task functions run in-process against a stand-in actor.
"""

from __future__ import annotations

import math
import os
import pickle
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr
from bokeh.document import Document

from psdist.cluster import worker as worker_mod
from psdist.core.inprocess import LocalServer
from psdist.core.protocol import Pull, Push, PushReply
from psdist.core.server import ServerState
from psdist.dashboard import Runs
from psdist.dashboard.page import document
from psdist.data import EVERY_CHUNK_ATTR, Chunk, ZarrDataset, write_zarr
from psdist.errors import BadChunkError, ConfigError, DataError
from psdist.optim import SGD
from psdist.replica import Replica
from psdist.replica.binding import flatten
from psdist.replica.loop import ChunkResult, batch_bounds, train_rows
from psdist.rules import Downpour
from psdist.run.events import event
from psdist.run.guard import NonfiniteGuard, is_nonfinite_only, nonfinite_verdict
from psdist.steps import SupervisedStep

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D, K = 6, 3  # features, classes


def rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    x = (np.eye(K, D)[y] * 2 + rng.standard_normal((n, D))).astype(np.float32)
    return x, y.astype(np.int64)


@pytest.fixture
def store(tmp_path) -> ZarrDataset:
    """4 chunks of 50 rows (compressed with a checksum, as psdist writes them)."""
    x, y = rows(200)
    write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=50)
    return ZarrDataset(tmp_path / "d.zarr", val_fraction=0)


def chunk_file(ds: ZarrDataset, array: str, i: int) -> str:
    """The file of the i-th Zarr chunk of ``array`` (v3 default key encoding: c/i[/0...])."""
    ndim = zarr.open_group(str(ds.path), mode="r")[array].ndim
    return os.path.join(os.fspath(ds.path), array, "c", str(i), *["0"] * (ndim - 1))


def overwrite(path: str, at: int, n: int = 16) -> None:
    b = bytearray(open(path, "rb").read())
    b[at : at + n] = bytes(255 - v for v in b[at : at + n])
    open(path, "wb").write(bytes(b))


def truncate(path: str) -> None:
    b = open(path, "rb").read()
    open(path, "wb").write(b[: len(b) // 2])


def chunks(ds: ZarrDataset) -> tuple[Chunk, ...]:
    return ds.describe().train


# ----------------------------------------------------------------------------- read
@pytest.mark.parametrize(
    ("array", "damage", "cause"),
    [("x", "overwrite", "checksum"), ("y", "overwrite", "checksum"), ("x", "truncate", "checksum"),
     ("y", "truncate", "checksum"), ("x", "delete", "missing"), ("y", "delete", "missing")],
)
def test_a_damaged_chunk_names_store_array_chunk_and_fix(store, array, damage, cause) -> None:
    path = chunk_file(store, array, 2)
    {"overwrite": lambda p: overwrite(p, 20), "truncate": truncate, "delete": os.remove}[damage](path)
    c = chunks(store)
    for good in (c[0], c[1], c[3]):
        store.read(good)  # the other chunks read as before
    with pytest.raises(BadChunkError) as info:
        store.read(c[2])
    e = info.value
    assert (e.array, e.chunk, e.rows, e.path) == (array, 2, (100, 150), os.fspath(store.path))
    assert e.store_chunk == ((2, 0) if array == "x" else (2,))
    msg = str(e)
    assert f"array {array!r}, chunk 2 (rows 100:150)" in msg and os.fspath(store.path) in msg
    assert cause in msg.lower() and "skip_bad_chunks=True" in msg and "Re-convert" in msg
    assert isinstance(e, DataError) and isinstance(e, ValueError)


def test_bad_chunk_error_survives_pickling_as_dask_sends_it() -> None:
    from distributed.protocol.pickle import dumps, loads

    e = BadChunkError("bad chunk in 'd.zarr': array 'x' ...", "d.zarr", "x", 3, (150, 200), (3, 0))
    for copy in (pickle.loads(pickle.dumps(e)), loads(dumps(e))):
        assert type(copy) is BadChunkError and str(copy) == str(e)
        assert (copy.path, copy.array, copy.chunk, copy.rows, copy.store_chunk) == ("d.zarr", "x", 3, (150, 200), (3, 0))


def test_a_task_spanning_several_store_chunks_names_the_bad_one(tmp_path) -> None:
    x, y = rows(200)
    write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=25)
    ds = ZarrDataset(tmp_path / "d.zarr", val_fraction=0, chunk_rows=100)
    overwrite(chunk_file(ds, "x", 5), 30)  # rows 125:150, inside task chunk 1 (rows 100:200)
    with pytest.raises(BadChunkError) as info:
        ds.read(chunks(ds)[1])
    assert info.value.store_chunk == (5, 0) and info.value.rows == (100, 200)
    assert "Zarr chunk (5, 0) (key 'c/5/0')" in str(info.value)


def test_missing_label_chunks_of_other_writers_read_as_fill_value(tmp_path) -> None:
    """Zarr leaves out chunks equal to the fill value (class 0 labels); only x or psdist's own arrays must be whole."""
    x, _ = rows(40)
    y = np.zeros(40, dtype=np.int64)
    y[:10] = 1
    g = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    g.create_array("x", shape=x.shape, dtype=x.dtype, chunks=(10, D))[...] = x
    g.create_array("y", shape=y.shape, dtype=y.dtype, chunks=(10,))[...] = y  # chunks 1..3 not written
    assert sorted(os.listdir(tmp_path / "d.zarr" / "y" / "c")) == ["0"]
    ds = ZarrDataset(tmp_path / "d.zarr", val_fraction=0)
    for c in chunks(ds):
        _, ys = ds.read(c)
        np.testing.assert_array_equal(ys, y[c.start : c.stop])
    os.remove(tmp_path / "d.zarr" / "x" / "c" / "3" / "0")
    with pytest.raises(BadChunkError, match="missing"):
        ds.read(chunks(ds)[3])
    # psdist writes every chunk (even all-zero labels) and says so: there a missing one is lost
    write_zarr(tmp_path / "p.zarr", x, y, chunk_rows=10)
    assert sorted(os.listdir(tmp_path / "p.zarr" / "y" / "c")) == ["0", "1", "2", "3"]
    assert zarr.open_group(str(tmp_path / "p.zarr"), mode="r")["y"].attrs[EVERY_CHUNK_ATTR] is True


def test_skip_option_is_checked_and_scan_lists_bad_chunks_and_nan_rows(tmp_path) -> None:
    with pytest.raises(ConfigError, match="skip_bad_chunks"):
        ZarrDataset("d.zarr", skip_bad_chunks="yes")  # type: ignore[arg-type]
    x, y = rows(200)
    x[[7, 8, 160]] = np.nan
    x[161, 2] = np.inf
    xv, yv = rows(50, seed=1)
    ds = write_zarr(tmp_path / "d.zarr", x, y, xv, yv, chunk_rows=50)
    overwrite(chunk_file(ds, "y", 1), 20)
    os.remove(chunk_file(ds, "x_val", 0))
    report = ds.scan()
    assert (report.chunks, report.rows, report.ok) == (5, 250, False)
    assert sorted(report.bad) == [1, 4] and "array 'y', chunk 1" in report.bad[1] and "'x_val'" in report.bad[4]
    assert report.nonfinite == {0: 2, 3: 2}
    assert "2 bad chunks, 4 rows with NaN/Inf in 2 chunks" in str(report)
    with pytest.raises(BadChunkError):
        ds.read_validation()
    skip = ZarrDataset(tmp_path / "d.zarr", skip_bad_chunks=True)
    with pytest.raises(DataError, match="every validation chunk"):
        skip.read_validation()


# ----------------------------------------------------------------------------- the Dask tasks, in-process
class Done:
    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self, timeout: Any = None) -> Any:
        return self.value


class FakeActor:
    """What ActorServer calls on the actor, answered at once by a ServerState."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def pull(self, worker: str, have: int = -1) -> Done:
        return Done(self.state.pull(worker, have))

    def push(self, push: Push, pull: bool = True) -> Done:
        return Done(self.state.push(push, pull))

    def join(self, worker: str) -> Done:
        return Done(self.state.join(worker))

    def leave(self, worker: str) -> Done:
        return Done(self.state.leave(worker))

    def wait(self, worker: str, have: int = -1, timeout: float = 0.0) -> Done:
        return Done(self.state.wait(worker, have))


def mlp(seed: int = 0, batchnorm: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = [torch.nn.Linear(D, 16)]
    layers += [torch.nn.BatchNorm1d(16)] if batchnorm else []
    return torch.nn.Sequential(*layers, torch.nn.ReLU(), torch.nn.Linear(16, K))


def server_for(replica: Replica, lr: float = 0.05) -> ServerState:
    weights = np.concatenate([flatten(replica.models[g.name], g.spec) for g in replica.layout.groups])
    opts = {g.name: SGD(lr=lr) for g in replica.layout.groups}
    return ServerState(replica.layout, weights.astype(np.float32), opts, clock=lambda: 0.0)


def plugin_for(ds: ZarrDataset, monkeypatch) -> tuple[worker_mod.RunPlugin, ServerState]:
    """A real RunPlugin (read/skip as on a worker) with its replica and actor filled in."""
    run = worker_mod.RunPlugin("t", mlp, SupervisedStep(F.cross_entropy), Downpour(), ds, "ps", False,
                               data_plane="actor")  # the fake actor offers no data plane
    replica = Replica("tcp://w:1", {"model": mlp()})
    state = server_for(replica)
    run._replica, run._worker_rule, run._ps = replica, Downpour().worker_side(), FakeActor(state)
    monkeypatch.setattr(worker_mod, "_plugin", lambda name: run)
    return run, state


def test_tasks_fail_on_a_bad_chunk_or_skip_and_count_it(store, monkeypatch, caplog) -> None:
    os.remove(chunk_file(store, "x", 1))
    c = chunks(store)
    run, state = plugin_for(store, monkeypatch)
    with pytest.raises(BadChunkError, match=r"array 'x', chunk 1 \(rows 50:100\)"):
        worker_mod.train_task("p", c[1], 0, 7, 25, 1, 5.0)
    with pytest.raises(BadChunkError):
        worker_mod.evaluate_task("p", c[1], 25, 5.0)

    run.data = ZarrDataset(store.path, val_fraction=0, skip_bad_chunks=True)
    with caplog.at_level("WARNING", logger="psdist.cluster.worker"):
        r = worker_mod.train_task("p", c[1], 0, 7, 25, 1, 5.0)
    assert (r.chunk, r.samples, r.pushes, r.bad_chunks, r.batches) == (1, 0, 0, 1, 0)
    assert "chunk 1 (rows 50:100)" in r.bad[0] and "missing" in r.bad[0]
    assert "skipping bad training chunk 1" in caplog.text and "array 'x'" in caplog.text
    assert state.version == 0 and sum(state.staleness_hist) == 0  # nothing reached the server
    good = worker_mod.train_task("p", c[0], 0, 7, 25, 1, 5.0)
    assert (good.samples, good.pushes, good.applied, good.bad_chunks) == (50, 2, 2, 0)
    ev = worker_mod.evaluate_task("p", c[1], 25, 5.0)
    assert (ev.bad_chunks, ev.samples, ev.outputs, len(ev.targets)) == (1, 0, None, 0) and "missing" in ev.bad[0]
    ok = worker_mod.evaluate_task("p", c[2], 25, 5.0)
    assert (ok.bad_chunks, ok.samples, ok.outputs.shape) == (0, 50, (50, K))


# ----------------------------------------------------------------------------- NaN/Inf while training
def nan_in_batches(x: np.ndarray, seed: int, batch_size: int, batches: list[int], value: float) -> None:
    """Put ``value`` into one row of each of ``batches`` as train_rows will cut them."""
    perm = np.random.default_rng(seed).permutation(len(x))
    for j in batches:
        x[perm[j * batch_size + 3], 1] = value


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_input_batches_are_skipped_and_counted_exactly(tmp_path, value) -> None:
    x, y = rows(256)
    seed, bs = 11, 32
    nan_in_batches(x, seed, bs, [1, 4, 6], value)
    ds = write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=256)
    xs, ys = ZarrDataset(ds.path, val_fraction=0).read(Chunk(0, "x", "y", 0, 256))
    replica = Replica("w", {"model": mlp(batchnorm=True)})  # BatchNorm would keep NaN statistics
    server = LocalServer(server_for(replica))
    r = train_rows(replica, server, Downpour().worker_side(), SupervisedStep(F.cross_entropy), xs, ys,
                   batch_size=bs, push_every=1, seed=seed)
    assert (r.batches, r.nonfinite_batches, r.nonfinite_inputs) == (8, 3, 3)
    assert (r.pushes, r.applied, r.samples, r.pushes_nonfinite) == (5, 5, 5 * bs, 0)
    assert math.isfinite(r.loss_sum)
    assert server.state.version == 5 and np.isfinite(server.state.weights).all()
    assert not is_nonfinite_only(r)


class Recorder:
    def __init__(self, state: ServerState) -> None:
        self.state, self.pushes = state, []

    def pull(self, worker: str, have_version: int = -1) -> Pull:
        return self.state.pull(worker, have_version)

    def push(self, push: Push, pull: bool = True) -> PushReply:
        self.pushes.append(push.update.copy())
        return self.state.push(push, pull)

    def join(self, worker: str) -> None:
        self.state.join(worker)

    def leave(self, worker: str) -> None:
        self.state.leave(worker)

    def wait(self, worker: str, have_version: int = -1) -> Pull:
        return self.state.wait(worker, have_version)


POISON = 1e30  # a finite input the step turns into a NaN loss


def poisoned_step(replica: Replica, xb: torch.Tensor, yb: torch.Tensor) -> float:
    loss = F.cross_entropy(replica.module(xb), yb)
    if (xb.abs() >= POISON).any():
        loss = loss * float("nan")
    loss.backward()  # NaN into the flat gradient, on top of the window's good batches
    return float(loss.detach())


def test_a_nan_loss_does_not_poison_the_other_batches_of_its_push() -> None:
    x, y = rows(128, seed=2)
    seed, bs = 5, 16
    nan_in_batches(x, seed, bs, [2, 5], POISON)
    replica = Replica("w", {"model": mlp(1)})
    state = server_for(replica)
    rec = Recorder(state)
    start = state.weights.copy()
    r = train_rows(replica, rec, Downpour().worker_side(), poisoned_step, x, y,
                   batch_size=bs, push_every=8, seed=seed)  # one push for all 8 batches
    assert (r.batches, r.nonfinite_batches, r.nonfinite_inputs, r.pushes, r.applied) == (8, 2, 0, 1, 1)
    assert r.samples == 6 * bs and math.isfinite(r.loss_sum)
    # the push is exactly the mean gradient of the 6 good batches at the starting weights
    model = mlp(1)
    perm = np.random.default_rng(seed).permutation(len(x))
    xs, ys = torch.from_numpy(x[perm]), torch.from_numpy(y[perm])
    grads = []
    for j, (lo, hi) in enumerate(batch_bounds(len(x), bs)):
        if j in (2, 5):
            continue
        model.zero_grad()
        F.cross_entropy(model(xs[lo:hi]), ys[lo:hi]).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy().copy())
    np.testing.assert_allclose(rec.pushes[0], np.mean(grads, axis=0), rtol=1e-5, atol=1e-7)
    assert np.isfinite(state.weights).all() and not np.array_equal(state.weights, start)


def nan_gradient_step(replica: Replica, xb: torch.Tensor, yb: torch.Tensor) -> float:
    loss = F.cross_entropy(replica.module(xb), yb)
    loss.backward()
    with torch.no_grad():
        next(replica.module.parameters()).grad[0, 0] = float("inf")  # finite loss, Inf gradient
    return float(loss.detach())


def test_nonfinite_pushes_rejected_by_the_server_are_counted_exactly(tmp_path) -> None:
    x, y = rows(96)
    ds = write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=48)
    replica = Replica("w", {"model": mlp()})
    server = LocalServer(server_for(replica))
    before = server.state.weights.copy()
    results = []
    for c in ZarrDataset(ds.path, val_fraction=0).describe().train:
        xs, ys = ds.read(c)
        results.append(train_rows(replica, server, Downpour().worker_side(), nan_gradient_step, xs, ys,
                                  batch_size=16, push_every=1, seed=c.index, chunk=c.index))
    assert [(r.pushes, r.pushes_nonfinite, r.applied, r.nonfinite_batches) for r in results] == [(3, 3, 0, 0)] * 2
    m = server.state.metrics()
    assert m["rejected"] == {"nonfinite": 6} and m["nonfinite"] == 6 and m["applied"] == 0
    assert server.state.weights.tobytes() == before.tobytes()
    assert all(is_nonfinite_only(r) for r in results)
    verdict = nonfinite_verdict(results)
    assert verdict is not None and "last 2 chunks produced only NaN/Inf" in verdict
    assert "all 6 of 6 pushes" in verdict and "since the start" in verdict and "learning rate" in verdict


# ----------------------------------------------------------------------------- the stop rule
def result(applied: int = 0, pushes: int = 0, rejected_nonfinite: int = 0, nonfinite: int = 0,
           inputs: int = 0, batches: int = 4, bad: int = 0) -> ChunkResult:
    r = ChunkResult(0, 0, "w", "cpu", pushes=pushes, applied=applied, batches=0 if bad else batches,
                    nonfinite_batches=nonfinite, nonfinite_inputs=inputs, bad_chunks=bad,
                    bad=["bad chunk in 'd.zarr': array 'x'"] if bad else [])
    if rejected_nonfinite:
        r.rejected["nonfinite"] = rejected_nonfinite
    return r


def test_guard_stops_only_runs_that_produce_nothing_but_nan() -> None:
    good = result(applied=4, pushes=4)
    nan_inputs = result(nonfinite=4, inputs=4)
    nan_pushes = result(pushes=4, rejected_nonfinite=4)
    mixed = result(applied=1, pushes=2, rejected_nonfinite=1, nonfinite=2)
    stale = result(pushes=4)  # rejected as stale, not NaN: not this guard's business
    skipped = result(bad=1)
    assert nonfinite_verdict([]) is None and nonfinite_verdict([nan_inputs]) is None
    assert nonfinite_verdict([good, mixed, stale, nan_pushes]) is None
    assert nonfinite_verdict([nan_inputs, good, nan_pushes]) is None  # progress in between
    v = nonfinite_verdict([nan_inputs, skipped, nan_inputs])  # bad chunks neither count nor reset
    assert v is not None and "8 minibatches, 8 were skipped (8 for NaN/Inf inputs, 0 for a NaN/Inf loss)" in v
    assert "dataset.scan()" in v and "learning rate" not in v
    v = nonfinite_verdict([good, nan_pushes, nan_pushes])
    assert v is not None and "diverged" in v and "learning rate" in v and "scan" not in v
    guard = NonfiniteGuard(patience=3)
    assert [guard.update(r) is None for r in (nan_pushes, nan_pushes, nan_pushes)] == [True, True, False]
    assert nonfinite_verdict([skipped]) is None
    v = nonfinite_verdict([skipped, skipped])
    assert v is not None and "every chunk read so far (2) was bad" in v and "array 'x'" in v
    assert nonfinite_verdict([good, skipped, skipped, skipped]) is None


# ----------------------------------------------------------------------------- dashboard
def test_dashboard_shows_nan_and_bad_chunk_counts() -> None:
    runs = Runs(clock=lambda: 100.0)
    runs.consume(event("start", "r", name="nan-run"))
    doc = Document()
    page = document(runs, doc)
    page.update()
    summary = doc.get_model_by_name("psdist-summary").data
    assert (summary["pushes_nonfinite"], summary["nonfinite_batches"], summary["bad_chunks"]) == ([0], [0], [0])
    runs.consume(event("chunk", "r", epoch=1, chunk=0, worker="tcp://w:1", samples=96, loss=0.5,
                       nonfinite_batches=3, pushes_nonfinite=2, bad_chunks=0))
    runs.consume(event("chunk", "r", epoch=1, chunk=1, worker="tcp://w:1", samples=0, nonfinite_batches=0,
                       bad_chunks=1, bad=["bad chunk in 'd.zarr': array 'y', chunk 1 (rows 50:100)"]))
    table = {"tcp://w:1": {"pushes": 5, "applied": 3, "rejected": 2, "nonfinite": 2, "samples": 96}}
    runs.consume(event("server", "r", version=3, applied=3, rejected={"nonfinite": 2}, nonfinite=2,
                       samples_applied=96, loss_sum=40.0, workers=table))
    r = runs.get("r")
    assert (r.nonfinite, r.nonfinite_batches, r.bad_chunks, r.bad_data) == (2, 3, 1, True)
    page.update()
    summary = doc.get_model_by_name("psdist-summary").data
    assert (summary["pushes_nonfinite"], summary["nonfinite_batches"], summary["bad_chunks"]) == ([2], [3], [1])
    text = doc.get_model_by_name("psdist-status").text
    assert "3 minibatches skipped, 2 pushes rejected" in text and "nonfinite: 2" in text
    assert "array &#x27;y&#x27;, chunk 1" in text and "psdist-alarm" in text
    rows = doc.get_model_by_name("psdist-workers").data
    assert (rows["nonfinite"], rows["nonfinite_batches"], rows["bad_chunks"]) == ([2], [3], [1])
    # an older PS without the "nonfinite" key: read from rejected
    runs.consume(event("server", "old", version=1, rejected={"nonfinite": 4}))
    assert runs.get("old").nonfinite == 4


# ----------------------------------------------------------------------------- on a real cluster
def small_mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(D, 16), torch.nn.ReLU(), torch.nn.Linear(16, K))


def test_on_a_cluster_a_bad_chunk_fails_by_name_or_is_skipped(tmp_path, client) -> None:
    import psdist

    x, y = rows(1024)
    xv, yv = rows(256, seed=1)
    write_zarr(tmp_path / "d.zarr", x, y, xv, yv, chunk_rows=128)
    ds = ZarrDataset(tmp_path / "d.zarr")
    os.remove(chunk_file(ds, "x", 3))
    # the error crosses the worker process and Dask's pickling with its fields
    with pytest.raises(BadChunkError) as info:
        client.submit(ds.read, ds.describe().train[3], pure=False).result()
    assert (info.value.array, info.value.chunk, info.value.rows) == ("x", 3, (384, 512))

    data = ZarrDataset(ds.path, skip_bad_chunks=True)
    trainer = psdist.Trainer(small_mlp, F.cross_entropy, data=data, optimizer=psdist.optim.SGD(lr=0.05),
                             batch_size=64, client=client, seed=0)
    history = trainer.fit(epochs=1)
    rec = history[0]
    assert rec["samples"] == 7 * 128 and rec["bad_chunks"] == 1 and rec["chunks"] == 8 and math.isfinite(rec["val_loss"])
