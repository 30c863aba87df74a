"""Faults injected for real: worker processes SIGKILLed mid-epoch, a hung worker, a lost PS.

Each test starts its own LocalCluster of processes (one for the parameter server, two for data)
because it breaks it. Kills happen from the trainer's progress callback, at a chunk count, so
the moment is deterministic; what follows is Dask's and psdist's recovery, checked by exact
counts of chunks, samples and pushes, and by the accuracy reached.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from conftest import blobs

import psdist
from psdist.cluster import embedded_cluster
from psdist.run.checkpoint import read_checkpoint
from psdist.steps import SupervisedStep

ROWS, CHUNK, BATCH = 4096, 256, 64  # 16 chunks of 4 pushes each
PUSHES_PER_CHUNK = 4  # CHUNK / BATCH with push_every=1: the most one chunk attempt can push
CE = torch.nn.functional.cross_entropy
# each test's figures land here (docs/reliability.md quotes them)
ARTIFACTS = os.environ.get("PSDIST_ARTIFACTS") or os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "test-artifacts")
KEEP = ("chunks", "samples", "workers_lost", "chunks_rerun", "chunks_hung", "pushes_orphaned", "ps_restarts",
        "versions_lost", "chunks_redone", "pushes_applied", "pushes_rejected", "val_accuracy", "resumed")


def report(test: str, history: list[dict], **extra) -> None:
    os.makedirs(ARTIFACTS, exist_ok=True)
    rows = [{k: r[k] for k in KEEP if k in r} for r in history]
    with open(os.path.join(ARTIFACTS, "reliability.jsonl"), "a") as f:
        f.write(json.dumps({"test": test, "epochs": rows, **extra}) + "\n")


def mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> psdist.ZarrDataset:
    x, y = blobs(ROWS, seed=1)
    xv, yv = blobs(1024, seed=2)
    return psdist.write_zarr(tmp_path_factory.mktemp("faults") / "blobs.zarr", x, y, xv, yv, chunk_rows=CHUNK)


@pytest.fixture
def cluster_client():
    cluster, client = embedded_cluster(workers=2, threads_per_worker=1, dashboard_address=None)
    yield client
    client.close()
    cluster.close()


def trainer(data, client, **kw) -> psdist.Trainer:
    return psdist.Trainer(mlp, CE, data, optimizer=psdist.optim.SGD(lr=0.1), batch_size=BATCH,
                          client=client, seed=0, **kw)


def pushes_by_worker(events: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for ev in events:
        out[ev["worker"]] = out.get(ev["worker"], 0) + ev["pushes"]
    return out


class KillAt:
    """A progress callback that records chunk events and SIGKILLs a process at the n-th one.

    ``target(trainer)`` names the worker to kill when the moment comes: a data worker running
    a chunk (default) or the parameter server's.
    """

    def __init__(self, trainer: psdist.Trainer, n: int, target=None) -> None:
        self.trainer, self.client, self.n = trainer, trainer.settings.scaling.client, n
        self.pids = self.client.run(os.getpid)
        self.target = target or self.busy_data_worker
        self.chunks: list[dict] = []
        self.killed: list[str] = []

    def busy_data_worker(self, t: psdist.Trainer) -> str:
        return next(w for w, keys in self.client.processing().items() if w != t.ps_address and keys)

    def __call__(self, ev: dict) -> None:
        if ev["event"] != "chunk":
            return
        self.chunks.append(ev)
        if len(self.chunks) == self.n:
            victim = self.target(self.trainer)
            self.killed.append(victim)
            os.kill(self.pids[victim], signal.SIGKILL)


@pytest.mark.slow
def test_killed_data_worker_has_its_chunks_rerun_and_every_push_accounted(data, cluster_client):
    t = trainer(data, cluster_client)
    kill = KillAt(t, 3)  # mid-epoch 1: a data worker that is running a chunk
    chunks, killed = kill.chunks, kill.killed
    history = t.fit(2, progress=kill)
    first, last = history[0], history[1]
    assert killed and first["workers_lost"] == 1
    assert first["chunks_rerun"] >= 1  # the victim's running (and queued) chunk tasks ran elsewhere
    for rec in history:  # every chunk once, every row once
        assert rec["chunks"] == ROWS // CHUNK and rec["samples"] == ROWS
        assert sum(ev["epoch"] == rec["epoch"] for ev in chunks) == ROWS // CHUNK
    assert last["workers_lost"] == 0 and last["chunks_rerun"] == 0
    # every push the server received is a finished chunk's, except the killed attempt's
    server = {w: s["pushes"] for w, s in t.server_metrics["workers"].items()}
    reported = pushes_by_worker(chunks)
    for w, n in server.items():
        if w != killed[0]:
            assert n == reported.get(w, 0)
    orphans = server.get(killed[0], 0) - reported.get(killed[0], 0)
    # the victim has one thread, so one chunk attempt died with it: the pushes it made before
    # the SIGKILL (none up to all of its minibatches, by where the kill fell) stay applied; and a
    # chunk it finished while the client sat in the progress callback that killed it (the result
    # was not fetched yet) is rerun too, its pushes orphaned as well
    assert first["pushes_orphaned"] == orphans
    assert 0 <= orphans <= 2 * PUSHES_PER_CHUNK
    assert sum(server.values()) == sum(r["pushes_applied"] + r["pushes_rejected"] for r in history)
    report("data worker SIGKILLed", history.records, orphans=orphans)
    assert last["val_accuracy"] >= 0.95


class HangOnce(SupervisedStep):
    """A training step that hangs forever on its 6th batch in the first process to get there."""

    def __init__(self, marker: str) -> None:
        super().__init__(CE)
        self.marker = marker
        self.calls = 0

    def __call__(self, replica, x, y):
        self.calls += 1
        if self.calls == 6:
            try:  # O_EXCL: exactly one process in the whole cluster hangs, once
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                threading.Event().wait()  # hung: only a restart of the process ends this
        return super().__call__(replica, x, y)


@pytest.mark.slow
def test_hung_worker_is_restarted_and_the_training_finishes(data, cluster_client, tmp_path):
    marker = str(tmp_path / "hung")
    t = psdist.Trainer(mlp, data=data, step=HangOnce(marker), optimizer=psdist.optim.SGD(lr=0.1),
                       batch_size=BATCH, client=cluster_client, seed=0, chunk_timeout=5.0)
    history = t.fit(1)
    rec = history.last
    report("data worker hung", history.records)
    assert os.path.exists(marker)  # the hang really happened
    assert rec["chunks_hung"] == 1 and rec["workers_lost"] == 1 and rec["chunks_rerun"] >= 1
    assert rec["chunks"] == ROWS // CHUNK and rec["samples"] == ROWS
    assert rec["val_accuracy"] >= 0.95


@pytest.mark.slow
def test_killed_parameter_server_restarts_from_the_last_point(data, cluster_client):
    every = 8  # versions between recovery points (2 chunks)
    t = trainer(data, cluster_client, checkpoints=psdist.Checkpoints(every_versions=every))
    kill = KillAt(t, 7, target=lambda t: t.ps_address)  # mid-epoch 1: the PS's process
    chunks, killed = kill.chunks, kill.killed
    history = t.fit(2, progress=kill)
    first, last = history[0], history[1]
    report("parameter server SIGKILLed", history.records, every_versions=every)
    assert killed and first["ps_restarts"] == 1 and t.ps_address != killed[0]
    # lost: the updates since the last point, at most one interval plus what the chunks in
    # flight (4 tasks of 4 pushes) applied before the point came due
    assert 0 <= first["versions_lost"] <= every + 4 * 4
    # the chunks finished after the point were trained again: each reported twice
    assert sum(ev["epoch"] == 1 for ev in chunks) == ROWS // CHUNK + first["chunks_redone"]
    for rec in history:
        assert rec["chunks"] == ROWS // CHUNK and rec["samples"] == ROWS
    assert last["ps_restarts"] == 0 and sum(ev["epoch"] == 2 for ev in chunks) == ROWS // CHUNK
    assert last["val_accuracy"] >= 0.95


@pytest.mark.slow
def test_killed_worker_does_not_hold_a_sync_barrier(data, cluster_client):
    """Sync waits for every active worker; a dead one is made to leave, not waited out."""
    t = psdist.Trainer(mlp, CE, data, optimizer=psdist.optim.SGD(lr=0.1), rule=psdist.rules.Sync(),
                       batch_size=BATCH, client=cluster_client, seed=0, timeout=120)
    kill = KillAt(t, 3)

    rec = t.fit(1, progress=kill).last
    report("data worker SIGKILLed under Sync", [rec], evicted=t.server_metrics["evicted"])
    assert rec["workers_lost"] == 1 and rec["chunks"] == ROWS // CHUNK and rec["samples"] == ROWS
    assert t.server_metrics["evicted"] == 0  # nobody waited out the 120 s timeout to be evicted
    # the attempt that died (1 thread), and one finished but not fetched when the callback killed it
    assert 0 <= rec["pushes_orphaned"] <= 2 * PUSHES_PER_CHUNK
    assert rec["val_accuracy"] >= 0.95


@pytest.mark.slow
def test_cli_killed_with_its_cluster_resumes_mid_epoch(data, tmp_path):
    """The client and every worker SIGKILLed mid-epoch; `psdist train --resume` finishes the run."""
    ckpt, hist = tmp_path / "run.ckpt", tmp_path / "h.json"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "model: psdist.hep.models:mlp\nmodel_args: {inputs: 20, hidden: 32, classes: 4}\n"
        f"data: {{path: {data.path}}}\noptimizer: {{name: sgd, lr: 0.1}}\n"
        f"epochs: 3\nbatch_size: {BATCH}\nworkers: 2\ncheckpoint_every_versions: 8\n"
    )
    cmd = [sys.executable, "-m", "psdist.cli", "-v", "train", str(cfg), "--save", str(ckpt), "-q"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    written, after_epoch_1 = 0, None
    try:
        for line in proc.stderr:  # the log says when each checkpoint is on disk and when epochs end
            if "psdist: epoch {'epoch': 1," in line:
                after_epoch_1 = 0
            elif "psdist: checkpoint" in line:
                written += 1
                if after_epoch_1 is not None:
                    after_epoch_1 += 1
                    if after_epoch_1 == 2:  # epoch 1's end point, then one inside epoch 2: kill now
                        break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client, the scheduler, every worker
        proc.wait(timeout=60)
    assert after_epoch_1 == 2, "the training ended before the kill"
    meta, _ = read_checkpoint(ckpt)
    assert meta["epoch"] == 1 and meta["progress"]["done"]  # saved mid-epoch 2

    out = subprocess.run([sys.executable, "-m", "psdist.cli", "train", str(cfg), "--resume", str(ckpt),
                          "--history", str(hist), "-q"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "(mid-epoch)" in out.stderr
    history = json.loads(hist.read_text())
    report("client + cluster SIGKILLed, --resume", history, checkpoints_before_kill=written)
    assert [r["epoch"] for r in history] == [1, 2, 3]  # the planned run, finished
    resumed = history[1]
    assert resumed["resumed"] is True and resumed["chunks"] == ROWS // CHUNK and resumed["samples"] == ROWS
    assert history[-1]["val_accuracy"] >= 0.95


@pytest.mark.slow
def test_a_run_that_only_makes_nan_stops_with_an_explanation(client, tmp_path):
    """A store whose inputs are all NaN (a broken conversion): the run stops, it does not spin."""
    x, y = blobs(2048, seed=1)
    x[:] = np.nan
    xv, yv = blobs(512, seed=2)
    nan_data = psdist.write_zarr(tmp_path / "nan.zarr", x, y, xv, yv, chunk_rows=256)
    t = trainer(nan_data, client)
    with pytest.raises(psdist.DataError, match="NaN") as err:
        t.fit(3)
    assert t.epoch == 0 and len(t.history) == 0  # stopped inside the first epoch
    assert t.server_metrics["applied"] == 0  # nothing NaN reached the weights
    assert "scan()" in str(err.value)  # the message says how to find the bad rows
    report("all inputs NaN", [], error=str(err.value), applied=t.server_metrics["applied"])
