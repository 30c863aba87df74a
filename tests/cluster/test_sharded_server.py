"""A sharded parameter server on real clusters: the same training as one server, and a shard's
worker SIGKILLed mid-epoch restores every shard from the last consistent point."""

from __future__ import annotations

import pytest
import torch
from conftest import blobs
from test_faults import BATCH, CE, CHUNK, ROWS, KillAt, mlp

import psdist
from psdist.cluster import embedded_cluster


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> psdist.ZarrDataset:
    x, y = blobs(ROWS, seed=1)
    xv, yv = blobs(1024, seed=2)
    return psdist.write_zarr(tmp_path_factory.mktemp("shards") / "blobs.zarr", x, y, xv, yv, chunk_rows=CHUNK)


@pytest.mark.slow
def test_two_and_three_shards_train_exactly_as_one_server_with_one_worker(data: psdist.ZarrDataset) -> None:
    """One worker, a fixed seed: every push reaches the shards in the same order as the lone
    server, so the weights after two epochs are the same bits (the embedded cluster: one
    training worker plus one worker per shard; Adam cuts the layers between rows)."""
    weights, records = {}, {}
    for shards in (1, 2, 3):
        t = psdist.Trainer(mlp, CE, data, optimizer=psdist.optim.Adam(lr=1e-2, clip_norm=0.5), batch_size=BATCH,
                           workers=1, seed=0, ps_shards=shards)
        records[shards] = t.fit(2).last
        weights[shards] = t.state_dict()
        assert len(set(t.ps_addresses)) == shards
    for shards in (2, 3):
        assert records[shards]["training_workers"] == 1 and records[shards]["pushes_applied"] == ROWS // BATCH
        assert records[shards]["version"] == records[1]["version"] == 2 * ROWS // BATCH
        for name, w in weights[1].items():
            assert torch.equal(w, weights[shards][name]), (shards, name)
        assert records[shards]["val_accuracy"] == records[1]["val_accuracy"] >= 0.95


@pytest.mark.slow
def test_two_workers_on_two_shards_reach_one_servers_accuracy(data: psdist.ZarrDataset) -> None:
    """Asynchronous: the order of pushes differs from run to run, the accuracy does not."""
    acc = {}
    for shards in (1, 2):
        t = psdist.Trainer(mlp, CE, data, optimizer=psdist.optim.SGD(lr=0.1), batch_size=BATCH, workers=2, seed=0,
                           ps_shards=shards)
        rec = t.fit(2).last
        assert rec["training_workers"] == 2 and rec["chunks"] == ROWS // CHUNK and rec["samples"] == ROWS
        acc[shards] = rec["val_accuracy"]
    assert acc[2] >= 0.95 and abs(acc[2] - acc[1]) <= 0.02


@pytest.mark.slow
def test_killed_shard_worker_restores_every_shard_and_every_chunk_is_accounted(data: psdist.ZarrDataset) -> None:
    """Two workers train on two shards; shard 1's worker is SIGKILLed mid-epoch 1. Both shards
    restart from the last recovery point (a cut consistent over shards), the epoch finishes,
    every chunk is reported, and the accuracy is a lone server's (>= 0.95 as test_faults)."""
    every = 8
    cluster, client = embedded_cluster(workers=2, threads_per_worker=1, dashboard_address=None, ps_workers=2)
    try:
        t = psdist.Trainer(mlp, CE, data, optimizer=psdist.optim.SGD(lr=0.1), batch_size=BATCH, client=client,
                           seed=0, ps_shards=2, dedicated_ps=True, checkpoints=psdist.Checkpoints(every_versions=every))
        kill = KillAt(t, 7, target=lambda t: t.ps_addresses[1])
        history = t.fit(2, progress=kill)
        first, last = history[0], history[1]
        assert kill.killed and first["ps_restarts"] == 1 and first["training_workers"] == 2
        assert kill.killed[0] not in t.ps_addresses  # the shard lives on a new worker
        # lost: what was applied since the last point, at most one interval plus the chunks in flight
        assert 0 <= first["versions_lost"] <= every + 4 * 4
        assert sum(ev["epoch"] == 1 for ev in kill.chunks) == ROWS // CHUNK + first["chunks_redone"]
        for rec in history:
            assert rec["chunks"] == ROWS // CHUNK and rec["samples"] == ROWS
        assert last["ps_restarts"] == 0 and last["val_accuracy"] >= 0.95
        shards = t.server_metrics["shards"]
        assert [s["shard"] for s in shards] == [0, 1] and shards[0]["version"] == shards[1]["version"]
    finally:
        client.close()
        cluster.close()


def test_what_shards_cannot_do_is_refused_before_any_process_starts(data: psdist.ZarrDataset) -> None:
    with pytest.raises(psdist.errors.ConfigError, match="data_plane='actor' turns it off"):
        psdist.Trainer(mlp, CE, data, ps_shards=2, data_plane="actor")
    # the MLP has 4 tensors of 804 values: SGD lets rows be cut, but not into 1000 non-empty slices
    with pytest.raises(psdist.errors.ConfigError, match="use ps_shards <= 4"):
        psdist.Trainer(mlp, CE, data, ps_shards=1000).fit(1)
