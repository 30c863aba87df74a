"""Training on a real multi-process Dask cluster: accuracy, accounting, staleness, resume."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from distributed import Event

import psdist
from psdist.cluster.actor import ParameterServer
from psdist.core.layout import Layout
from psdist.core.protocol import Push
from psdist.hep.models import mlp
from psdist.optim import SGD
from psdist.replica.binding import flatten, spec_of
from psdist.rules import Downpour

CE = torch.nn.functional.cross_entropy
MLP_BN = functools.partial(mlp, inputs=20, hidden=32, classes=4, batchnorm=True)


def test_two_workers_reach_accuracy_and_account_for_every_chunk(client, blob_data):
    info = blob_data.describe()
    trainer = psdist.Trainer(
        MLP_BN, CE, blob_data, psdist.optim.SGD(lr=0.05, momentum=0.9),
        max_staleness=4, batch_size=64, push_every=2, client=client, seed=3,
    )
    history = trainer.fit(epochs=3)

    assert history.last["val_accuracy"] >= 0.95
    assert history.last["val_loss"] < history[0]["train_loss"]
    pushes_per_chunk = math.ceil(math.ceil(512 / 64) / 2)
    for rec in history:
        assert rec["chunks"] == len(info.train) == 8
        assert rec["samples"] == info.train_rows == 4096
        assert rec["pushes_applied"] + rec["pushes_rejected"] == pushes_per_chunk * len(info.train)
    assert trainer.version == sum(r["pushes_applied"] for r in history)
    # chunk tasks queued behind a running one had their rows read meanwhile
    # (every task waits for its slot in "constrained", so each can be; a third queued on one worker is not)
    assert all(r["chunks_read_ahead"] >= 1 for r in history)
    assert sum(r["chunks_read_ahead"] for r in history) >= 12

    # the returned module carries the server's weights, BatchNorm statistics included
    model = trainer.model().eval()
    g = blob_data.open_group()
    with torch.no_grad():
        out = model(torch.from_numpy(g["x_val"][:])).numpy()
    acc = psdist.metrics.accuracy(g["y_val"][:], out)
    assert acc == pytest.approx(history.last["val_accuracy"], abs=1e-6)
    bn = model[1]
    assert bn.num_batches_tracked.item() > 0 and not torch.all(bn.running_var == 1)


def test_overlap_keeps_a_push_in_flight_and_still_reaches_accuracy(client, blob_data):
    """overlap=True on CPU workers (opt-in there): every gradient is one push older, which the
    history shows, the auto bound doubles for it and rejects nothing, and the run still learns."""
    trainer = psdist.Trainer(MLP_BN, CE, blob_data, psdist.optim.SGD(lr=0.05, momentum=0.9),
                             batch_size=64, client=client, seed=3, overlap=True)
    history = trainer.fit(epochs=3)
    assert history.last["val_accuracy"] >= 0.95
    for rec in history:
        assert rec["overlap"] is True and rec["training_workers"] == 3
        assert rec["max_staleness"] == 4 * 3 + 2  # auto, doubled: one more round per push
        assert rec["pushes_rejected"] == 0
        assert rec["pushes_applied"] == 8 * 8  # 8 chunks of 8 minibatches, every one answered
        # a lone worker's pushes would be 1 stale; with others pushing too, more
        assert rec["staleness_mean"] >= 1.0
    assert trainer.version == sum(r["pushes_applied"] for r in history)
    # only a chunk's first push can be computed on the newest weights: the others left while
    # the worker's previous push was still in flight
    assert trainer.server_metrics["staleness_hist"][0] <= 3 * 8


def test_overlap_is_off_on_cpu_workers_by_default(client, blob_data):
    trainer = psdist.Trainer(MLP_BN, CE, blob_data, SGD(lr=0.05), batch_size=128, client=client)
    history = trainer.fit(epochs=1)
    assert history.last["overlap"] is False and history.last["max_staleness"] == 2 * 3 + 2


def _wire(dask_worker, plugin):
    run = dask_worker.plugins.get(plugin)
    plane = run.plane if run is not None else None
    return None if plane is None else (plane.backend, plane.wire_dtype)


def test_a_bf16_wire_over_tcp_trains_to_accuracy(client, blob_data):
    trainer = psdist.Trainer(MLP_BN, CE, blob_data, psdist.optim.SGD(lr=0.05, momentum=0.9), batch_size=64,
                             client=client, seed=3, data_plane="tcp", wire_dtype="bf16")
    seen: list = []

    def probe(ev):
        if ev["event"] == "chunk" and not seen:
            seen.append(client.run(_wire, plugin=f"psdist-run-{trainer.run_id}"))
    history = trainer.fit(epochs=3, progress=probe)
    assert history.last["val_accuracy"] >= 0.95
    assert ("tcp", "bf16") in seen[0].values()
    assert {v for v in seen[0].values() if v is not None} == {("tcp", "bf16")}
    # the master weights stay float32, not rounded to bf16's 8 bits of mantissa
    w = np.concatenate([p.detach().numpy().ravel() for p in trainer.model().parameters()])
    assert w.dtype == np.float32
    assert np.any(w.view(np.uint32) & 0xFFFF)


def test_parameter_server_gets_its_own_worker_when_asked(client, blob_data):
    trainer = psdist.Trainer(MLP_BN, CE, blob_data, SGD(lr=0.05), batch_size=128, client=client, dedicated_ps=True)
    events: list[dict] = []
    trainer.fit(epochs=1, progress=events.append)
    pushers = trainer.server_metrics["workers"]
    all_workers = set(client.scheduler_info()["workers"])
    assert trainer.ps_address in all_workers
    assert trainer.ps_address not in pushers  # no training task ran next to the PS
    assert set(pushers) == all_workers - {trainer.ps_address}
    assert all(w["info"]["device"] == "cpu" and w["info"]["threads"] == 1 for w in pushers.values())
    assert [e["done"] for e in events if e["event"] == "chunk"] == list(range(1, 9))


def _slow(ps, pulled: str, go: str, timeout: float) -> tuple:
    """Pull, announce it, wait until the fast worker is done, then push the stale update."""
    start = ps.pull("slow", -1).result()
    Event(pulled).set()
    assert Event(go).wait(timeout), "fast worker never finished"
    update = np.full(start.weights.shape, 0.5, np.float32)
    reply = ps.push(Push("slow", start.version, update, 10, 1.0)).result()
    return reply.applied, reply.staleness, reply.reason


def _fast(ps, pushes: int, pulled: str, go: str, timeout: float) -> int:
    assert Event(pulled).wait(timeout), "slow worker never pulled"
    version = ps.pull("fast", -1).result().version
    for _ in range(pushes):
        update = np.full(ps.pull("fast", -1).result().weights.shape, 0.01, np.float32)
        version = ps.push(Push("fast", version, update, 10, 1.0)).result().version
    Event(go).set()
    return version


def test_staleness_bound_with_scripted_slow_worker(client):
    """A worker held back by an Event pushes 6 versions late: rejected (bound 4), counted once."""
    model = mlp(inputs=4, hidden=8, classes=2)
    spec = spec_of(model)
    w0 = flatten(model, spec)
    layout = Layout.of({"model": spec})
    ps_future = client.submit(ParameterServer, layout.to_dict(), w0, {"model": SGD(lr=0.1)}, Downpour(), 4,
                              actor=True, key="ps-staleness-test")
    ps = ps_future.result()
    workers = list(client.scheduler_info()["workers"])
    slow = client.submit(_slow, ps, "pulled", "go", 60, workers=[workers[0]], pure=False)
    fast = client.submit(_fast, ps, 6, "pulled", "go", 60, workers=[workers[1]], pure=False)
    assert fast.result() == 6
    applied, staleness, reason = slow.result()
    assert (applied, staleness) == (False, 6)
    assert reason.startswith("stale: staleness 6 > max_staleness 4")

    m = ps.metrics().result()
    assert m["applied"] == 6 and m["rejected"] == {"stale": 1}
    assert m["staleness_hist"][6] == 1 and m["version"] == 6
    final = ps.pull("check", -1).result().weights
    np.testing.assert_allclose(final, w0 - 6 * 0.1 * 0.01, rtol=0, atol=1e-6)  # stale push left no trace
    ps_future.release()


@pytest.fixture(scope="module")
def small_blobs(tmp_path_factory):
    from conftest import blobs

    x, y = blobs(2048, seed=5)
    xv, yv = blobs(512, seed=6)
    return psdist.write_zarr(tmp_path_factory.mktemp("r") / "b.zarr", x, y, xv, yv, chunk_rows=256)


def test_save_load_fit_equals_uninterrupted_run(small_blobs, tmp_path):
    """One data worker, fixed seed: fit(2) == fit(1) → save → load → fit(1), bit for bit."""
    kwargs = dict(optimizer=SGD(lr=0.05, momentum=0.9), batch_size=64, workers=1, seed=11, max_staleness=2)
    straight = psdist.Trainer(MLP_BN, CE, small_blobs, **kwargs)
    straight.fit(epochs=2)

    first = psdist.Trainer(MLP_BN, CE, small_blobs, **kwargs)
    first.fit(epochs=1)
    first.save(tmp_path / "run.ckpt")
    resumed = psdist.Trainer.load(tmp_path / "run.ckpt", MLP_BN, CE, small_blobs, workers=1)
    assert resumed.epoch == 1 and resumed.version == first.version
    resumed.fit(epochs=1)

    a, b = straight.run.server_state[1], resumed.run.server_state[1]
    np.testing.assert_array_equal(a["weights"], b["weights"])
    moments = sorted(k for k in a if k.startswith("optim/model/"))
    assert moments and moments == sorted(k for k in b if k.startswith("optim/model/"))  # momentum buffers
    for key in moments:
        np.testing.assert_array_equal(a[key], b[key])
    assert resumed.version == straight.version
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history.last["val_loss"] == pytest.approx(straight.history.last["val_loss"], rel=1e-6)
    assert straight.history.last["val_accuracy"] >= 0.9


def test_mixed_precision_on_cpu_workers_matches_float32(client, blob_data):
    """precision= reaches the workers: bf16-mixed trains within a point of float32 on the same
    task, and 16-mixed runs its loss scaler there (the epoch record carries the scale)."""
    def run(precision: str):
        trainer = psdist.Trainer(MLP_BN, CE, blob_data, psdist.optim.SGD(lr=0.05, momentum=0.9), batch_size=64,
                                 client=client, seed=3, precision=precision)
        return trainer.fit(epochs=2)

    fp32, bf16 = run("32"), run("bf16-mixed")
    assert fp32.last["val_accuracy"] >= 0.95
    assert abs(bf16.last["val_accuracy"] - fp32.last["val_accuracy"]) <= 0.01
    assert "loss_scale" not in bf16.last and bf16.last["overflow_batches"] == 0
    fp16 = run("16-mixed")
    assert fp16.last["loss_scale"] >= 1.0  # the scaler ran on the workers (2**16 unless it backed off)
    assert fp16.last["val_accuracy"] >= 0.95
