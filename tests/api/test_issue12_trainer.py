"""Issue 12 (silent failures), the trainer's items: each test fails on the code before the fix.

Items 1 (sticky stop), 2 (save during a background fit), 3 (EASGD's alpha from the real
training slots), 5 (every worker of a user's cluster trains), 10 (no global RNG side effect),
12 (a staleness bound by default) and 13 (recovery points: cost-aware interval, replayed pushes).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from test_handle import CE, MODEL, trainer  # the background-fit tests' model and trainer

import psdist
from psdist.optim import SGD
from psdist.rules import EASGD
from psdist.run.checkpoint import read_checkpoint
from psdist.run.recovery import Checkpoints

CHUNKS = 8  # blob_data: 8 training chunks of 512 rows


def test_item01_stop_is_not_sticky(client, blob_data):
    t = trainer(blob_data, client)
    handle = t.fit(epochs=50, block=False)
    handle.stop()
    handle.result(timeout=120)
    assert t.history.last["partial"] is True
    stopped = len(t.history)
    t.fit(epochs=2)  # a new fit: the old stop signal must not end it
    new = t.history.records[stopped:]
    assert [r.get("partial", False) for r in new] == [False, False]
    # the first new epoch finishes the stopped one; both have every chunk
    assert [r["epoch"] for r in new] == [1, 2]
    assert new[1]["chunks"] == CHUNKS and new[1]["samples"] == 4096
    assert t.epoch == 2


def test_item02_save_during_background_fit_is_one_consistent_snapshot(client, blob_data, tmp_path):
    t = trainer(blob_data, client)
    t.fit(epochs=1)  # an older server state the trainer holds
    mid = threading.Event()
    go_on = threading.Event()

    def progress(ev):  # runs on the fit thread: pause it after 3 chunks of the second epoch
        if ev["event"] == "chunk" and ev["epoch"] == 2 and ev["done"] == 3:
            mid.set()
            go_on.wait(60)

    handle = t.fit(epochs=3, block=False, progress=progress)
    assert mid.wait(120)
    ckpt = tmp_path / "mid.ckpt"
    saver = threading.Thread(target=t.save, args=(str(ckpt),))
    saver.start()  # from "the notebook" while the fit thread is between two chunks
    saver.join(60)
    go_on.set()
    handle.result(timeout=180)
    meta, _arrays = read_checkpoint(str(ckpt))
    prog = meta["progress"]
    assert meta["epoch"] == 1 and prog["epoch"] == 2 and len(prog["done"]) >= 3
    # the weights hold at least every push of the chunks the progress calls done
    applied = meta["server"]["applied"] - prog["server_start"]["applied"]
    assert applied >= sum(c["applied"] for c in prog["done"].values()) > 0
    assert len(meta["history"]) == 1  # the history of the same moment
    # resuming finishes epoch 2 with each chunk once, not skipping training that never happened
    resumed = psdist.Trainer.load(str(ckpt), MODEL, CE, blob_data, client=client)
    resumed.fit(epochs=1)
    rec = resumed.history.last
    assert rec["epoch"] == 2 and rec["chunks"] == CHUNKS and rec["samples"] == 4096 and rec["resumed"]


def test_item03_easgd_alpha_sized_from_the_training_slots(client, blob_data):
    n = len(client.scheduler_info(n_workers=-1)["workers"])  # every worker of a user's cluster trains
    t = trainer(blob_data, client, rule=EASGD(period=4), optimizer=SGD(lr=0.1, momentum=0.5), workers=2)
    t.fit(epochs=2)
    rec = t.history.last
    assert rec["training_workers"] == n == 3
    assert rec["alpha"] == pytest.approx(0.9 / 3)  # not 0.9 / 2 from workers=2
    assert t.history.last["val_accuracy"] >= 0.9


def test_item03_slots_count_what_the_cluster_plans():
    from psdist.cluster import training_slots
    from psdist.cluster.worker import PS_RESOURCE

    class Cluster:  # a SpecCluster whose batch jobs are still queued: 4 planned, 1 arrived
        plan = frozenset({"job-0", "job-1", "job-2", "job-3"})

    class Client:
        cluster = Cluster()

        def scheduler_info(self, n_workers=-1):
            return {"workers": {"tcp://a:1": {"name": "job-0", "resources": {}},
                                "tcp://ps:1": {"name": "psdist-ps", "resources": {PS_RESOURCE: 1}}}}

    assert training_slots(Client(), "tcp://ps:1", True) == 4


def test_item05_every_worker_of_a_user_cluster_trains(client, blob_data):
    workers = client.scheduler_info(n_workers=-1)["workers"]
    t = trainer(blob_data, client)
    t.fit(epochs=1)
    trained = {w for w, s in t.server_metrics["workers"].items() if s["pushes"] > 0}
    assert trained == set(workers)  # the PS's worker trains too
    assert t.history.last["training_workers"] == len(workers) == 3
    # asked for, the PS gets a worker of its own
    d = trainer(blob_data, client, dedicated_ps=True)
    d.fit(epochs=1)
    trained = {w for w, s in d.server_metrics["workers"].items() if s["pushes"] > 0}
    assert d.ps_address not in trained and len(trained) == 2
    assert d.history.last["training_workers"] == 2


def test_item10_model_leaves_the_global_rng_alone(blob_data):
    t = psdist.Trainer(MODEL, CE, blob_data, seed=7)
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    m1 = t.model()
    got = torch.rand(4)
    assert torch.equal(got, expected)
    m2 = t.model()  # still seeded: the same initial weights every time
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True))


def test_item12_staleness_is_bounded_by_default(client, blob_data):
    from psdist.cluster.session import auto_staleness

    assert auto_staleness(1) == 4 and auto_staleness(3) == 8 and auto_staleness(64) == 130
    t = trainer(blob_data, client)
    assert t.settings.algorithm.max_staleness == "auto"
    t.fit(epochs=1)
    assert t.history.last["max_staleness"] == 8  # 3 training slots
    assert t.history.last["pushes_rejected"] == 0  # a healthy run loses nothing to the bound
    with pytest.raises(psdist.ConfigError, match="'auto'"):
        trainer(blob_data, client, max_staleness="often")


def test_item13_points_stretch_with_their_cost():
    policy = Checkpoints(every_seconds=60)  # max_overhead 0.01 by default
    assert policy.due(10, 0, now=61.0, last_time=0.0, cost=0.1)  # a 0.1 s point: every 60 s
    assert not policy.due(10, 0, now=61.0, last_time=0.0, cost=2.0)  # a 2 s point: every 200 s
    assert policy.due(10, 0, now=200.0, last_time=0.0, cost=2.0)
    with pytest.raises(psdist.ConfigError, match="max_overhead"):
        Checkpoints(max_overhead=0)


def test_item13_pushes_of_running_chunks_are_counted_as_replayed():
    from psdist.run.recovery import RecoveryPoint

    # the point's server applied 30 pushes, 10 before the epoch, 8 + 4 by the chunks done then:
    # the other 8 came from chunks still running, which rerun after a restore
    progress = {"epoch": 2, "server_start": {"applied": 10, "rejected": 0, "waits": 0},
                "done": {"0": {"applied": 8}, "3": {"applied": 4}}}
    point = RecoveryPoint(({"applied": 30, "version": 30}, {"weights": np.zeros(1, np.float32)}), progress, 1, 1, 0.0)
    assert point.pushes_in_flight() == 8
    between = RecoveryPoint(({"applied": 30, "version": 30}, {}), None, 2, 2, 0.0)
    assert between.pushes_in_flight() == 0


def test_item07_resume_refuses_another_held_out_split(client, tmp_path):
    from conftest import blobs

    x, y = blobs(2048, seed=5)
    store = psdist.write_zarr(tmp_path / "held.zarr", x, y, chunk_rows=256)  # no x_val: chunks held out
    t = trainer(store, client)
    t.fit(epochs=1)
    t.save(str(tmp_path / "a.ckpt"))
    other = psdist.ZarrDataset(str(tmp_path / "held.zarr"), val_fraction=0.25)  # 2 chunks, not 1
    with pytest.raises(psdist.DataError, match="would validate on rows it trained on"):
        psdist.Trainer.load(str(tmp_path / "a.ckpt"), MODEL, CE, other, client=client).fit(epochs=1)
    same = psdist.Trainer.load(str(tmp_path / "a.ckpt"), MODEL, CE, store, client=client)
    same.fit(epochs=1)
    assert same.epoch == 2


def test_item08_load_with_an_optimizer_given_again_uses_it(client, blob_data, tmp_path):
    t = trainer(blob_data, client, optimizer=SGD(lr=0.1, momentum=0.5))
    t.fit(epochs=1)
    t.save(str(tmp_path / "o.ckpt"))
    slower = psdist.Trainer.load(str(tmp_path / "o.ckpt"), MODEL, CE, blob_data, client=client,
                                 optimizer=SGD(lr=0.02, momentum=0.5))
    slower.fit(epochs=1)
    assert slower.history.last["lr"] == pytest.approx(0.02)  # not the checkpoint's 0.1
    adam = psdist.Trainer.load(str(tmp_path / "o.ckpt"), MODEL, CE, blob_data, client=client,
                               optimizer=psdist.optim.Adam(lr=1e-3))
    adam.fit(epochs=1)  # another kind of optimizer starts with fresh state
    assert adam.history.last["lr"] == pytest.approx(1e-3) and adam.history.last["val_accuracy"] >= 0.9


def test_item10_simulate_leaves_the_global_rng_alone():
    from conftest import blobs

    from psdist.sim import simulate

    x, y = blobs(128, seed=1)
    xv, yv = blobs(64, seed=2)
    torch.manual_seed(11)
    expected = torch.rand(4)
    torch.manual_seed(11)
    simulate(MODEL, (x, y, xv, yv), workers=2, optimizer=SGD(lr=0.1), batch_size=32, epochs=1, seed=3)
    assert torch.equal(torch.rand(4), expected)
