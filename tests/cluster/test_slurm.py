"""psdist on a real SLURM (the single node of scripts/slurm.sh): training inside batch jobs, elasticity.

Skipped when no SLURM answers here; `bash scripts/slurm.sh start` (root, Debian) starts one.
Where SLURM is promised (PSDIST_REQUIRE_SLURM=1, set by .ci/run after starting it) every reason to
skip is a failure instead: a missing dask_jobqueue, no sinfo/sbatch, a SLURM that does not
answer or has no idle node, a node with GPUs where the no-GPU refusal is tested.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import psdist
from psdist.hep.models import mlp
from psdist.steps import SupervisedStep

REQUIRED = os.environ.get("PSDIST_REQUIRE_SLURM") == "1"


def _cannot_run(reason: str, module: bool = False) -> None:
    """Skip — or fail where SLURM was promised (PSDIST_REQUIRE_SLURM=1, set by .ci/run after starting it)."""
    if REQUIRED:
        pytest.fail(f"PSDIST_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


try:
    import dask_jobqueue  # noqa: F401 - psdist.cluster.batch's clusters are dask_jobqueue's
except ImportError:
    _cannot_run("dask_jobqueue is not installed: pip install -e '.[jobqueue]'", module=True)

from psdist.cluster.batch import PS_NAME, batch_cluster, ps_worker_address  # noqa: E402 - after the check
from psdist.errors import ClusterError  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CE = torch.nn.functional.cross_entropy
MLP = functools.partial(mlp, inputs=20, hidden=32, classes=4)
MALLOC_FIX = {"MALLOC_TRIM_THRESHOLD_": "1073741824", "MALLOC_MMAP_THRESHOLD_": "33554432"}


def _sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout


def _no_slurm(reason: str) -> None:
    _cannot_run(reason + "; start one with: bash scripts/slurm.sh start")


@pytest.fixture(scope="module")
def partition() -> str:
    """The default partition of an idle, answering SLURM (else the module is skipped)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        _no_slurm("no SLURM on this machine")
    try:
        states = _sh("sinfo", "-h", "-o", "%T").split()
        parts = _sh("sinfo", "-h", "-o", "%P").split()
    except (subprocess.SubprocessError, OSError) as e:
        _no_slurm(f"SLURM does not answer ({e})")
    if not any(s in ("idle", "mixed") for s in states):
        _no_slurm(f"no idle SLURM node (sinfo: {states})")
    default = [p for p in parts if p.endswith("*")]
    return (default or parts)[0].rstrip("*")


def small(partition: str, tmp_path: Path) -> dict:
    """slurm-cpu.yaml sized for a 2-core test node: 1-core jobs, logs and scratch under tmp_path."""
    return dict(
        queue=partition, cores=1, memory="2GiB", walltime="00:10:00",
        log_directory=str(tmp_path / "logs"), local_directory=str(tmp_path / "scratch"),
        scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"},
        ps={"cores": 1, "memory": "2GiB"}, timeout=120,
    )


def our_jobs(cluster) -> set[str]:
    return {cluster.ps_job.job_id, *(j.job_id for j in cluster.workers.values())}


def queued() -> set[str]:
    return set(_sh("squeue", "-h", "-o", "%i").split())


def wait_until(what: str, ok, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.1)


def slurm_job_ids(client) -> dict[str, str | None]:
    return client.run(lambda: os.environ.get("SLURM_JOB_ID"))


def test_training_runs_inside_slurm_jobs(partition, blob_data, tmp_path):
    info = blob_data.describe()
    cluster, client = batch_cluster("slurm-cpu", jobs=2, **small(partition, tmp_path))
    try:
        # every worker is a process of a SLURM job this cluster submitted; the PS has its own
        ids = slurm_job_ids(client)
        assert len(ids) == 3 and None not in ids.values()
        assert set(ids.values()) == our_jobs(cluster) <= queued()
        ps = ps_worker_address(client)
        assert ids[ps] == cluster.ps_job.job_id
        assert cluster.ps_job.job_id not in {j.job_id for j in cluster.workers.values()}
        names = {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
        assert names == {PS_NAME, "psdist-0", "psdist-1"}
        # the job script's malloc fix reached the workers through the nanny
        envs = client.run(lambda: {k: os.environ.get(k) for k in MALLOC_FIX})
        assert all(e == MALLOC_FIX for e in envs.values())

        trainer = psdist.Trainer(MLP, CE, blob_data, psdist.optim.SGD(lr=0.1), client=client, workers=2, seed=1)
        history = trainer.fit(epochs=3)

        assert trainer.ps_address == ps  # the PS went to its dedicated job
        pushers = set(trainer.server_metrics["workers"])
        assert pushers == set(ids) - {ps}  # both data jobs trained, the PS job did not
        for rec in history:
            assert rec["chunks"] == len(info.train) and rec["samples"] == info.train_rows
        assert history.last["val_accuracy"] >= 0.95
    finally:
        jobs = our_jobs(cluster)
        client.close()
        cluster.close()
    wait_until("every job of the cluster leaves the queue", lambda: not (jobs & queued()))


class SlowStep(SupervisedStep):
    """The default step, 10 ms slower per batch: a chunk outlasts the time a cancelled job takes to go."""

    def __call__(self, replica, x, y):
        time.sleep(0.01)
        return super().__call__(replica, x, y)


def test_data_workers_scale_1_2_1_during_a_fit(partition, blob_data, tmp_path):
    """1 -> 2 data jobs in epoch 1, back to 1 in epoch 2 by cancelling the job holding the chunk queue."""
    info = blob_data.describe()
    cluster, client = batch_cluster("slurm-cpu", jobs=1, **small(partition, tmp_path))
    trainer = psdist.Trainer(MLP, None, blob_data, psdist.optim.SGD(lr=0.1), client=client, workers=2,
                             batch_size=32, step=SlowStep(CE), seed=2)
    seen: dict = {}

    def data_workers() -> dict[str, str]:
        return {w["name"]: a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w["name"] != PS_NAME}

    def slots() -> int:
        return sum(1 for w in client.scheduler_info(n_workers=-1)["workers"].values() if w["resources"].get("psdist-slot"))

    def progress(event: dict) -> None:
        if event["event"] != "chunk":
            return
        if event["epoch"] == 1 and event["done"] == 2:
            seen["old"] = data_workers()["psdist-0"]
            cluster.scale(jobs=2)  # a second SLURM job joins while the first one trains
            wait_until("the new worker gets a training slot", lambda: slots() == 2)
            seen["new"] = data_workers()["psdist-1"]
        elif event["epoch"] == 2 and event["done"] == 2:
            # retire the first job while it holds chunk tasks (running and queued), the way
            # Adaptive does it: by name, through the cluster; the batch system cancels the job
            old = seen["old"]
            keys = [k for k in client.processing(workers=[old])[old] if k.startswith("psdist-train")]
            seen["held"] = {int(re.search(r"-c(\d+)-r\d+$", k).group(1)) for k in keys}
            seen["job"] = cluster.workers["psdist-0"].job_id
            cluster.sync(cluster.scale_down, ["psdist-0"])
            wait_until("the retired worker leaves", lambda: old not in data_workers().values())

    try:
        history = trainer.fit(epochs=3, progress=progress)
        assert seen["held"], "the first worker held no chunk task when its job was cancelled"
        assert seen["job"] not in queued()  # the SLURM job went with its worker
        assert set(slurm_job_ids(client).values()) == our_jobs(cluster)  # PS job + the new data job

        # every chunk of every epoch trained exactly once, as far as the history and the timeline tell
        for rec in history:
            assert rec["chunks"] == len(info.train) and rec["samples"] == info.train_rows
        trained = {(e, c): w for w, phase, _, _, e, c in trainer.timeline if phase == "read"}
        assert len(trained) == sum(1 for w, phase, *_ in trainer.timeline if phase == "read")
        assert sorted(trained) == sorted((e, c.index) for e in (1, 2, 3) for c in info.train)
        # the retired worker's tasks were rescheduled: the new worker trained what it held
        rescheduled = {c for c in seen["held"] if trained[(2, c)] == seen["new"]}
        assert rescheduled, f"none of chunks {seen['held']} was retrained on the new worker"
        assert all(trained[(3, c.index)] == seen["new"] for c in info.train)
        assert history.last["val_accuracy"] >= 0.95

        # adapt counts data workers only and never takes the PS worker: with two idle data jobs
        # and minimum_jobs=1 one data job goes, the PS job stays (plain Adaptive would keep both:
        # the scheduler's worker count includes the PS)
        ps = ps_worker_address(client)
        cluster.scale(jobs=2)
        wait_until("a second data worker", lambda: len(data_workers()) == 2)
        cluster.adapt(minimum_jobs=1, maximum_jobs=2, interval="200ms", wait_count=2)
        wait_until("adapt retires an idle data worker", lambda: len(data_workers()) == 1)
        assert ps_worker_address(client) == ps and cluster.ps_job.job_id in queued()
    finally:
        jobs = our_jobs(cluster)
        client.close()
        cluster.close()
    wait_until("every job of the cluster leaves the queue", lambda: not (jobs & queued()))


def test_gpu_variant_on_this_slurm_without_gpus(partition):
    gres = _sh("sinfo", "-h", "-p", partition, "-o", "%G").split()
    if any("gpu" in g for g in gres):  # scripts/slurm.sh's node has none
        _cannot_run(f"partition {partition!r} has GPUs ({' '.join(gres)}): the no-GPU refusal cannot be tested on it")
    before = queued()
    with pytest.raises(ClusterError, match=f"partition '{partition}' has no GPUs"):
        batch_cluster("slurm-gpu", jobs=1, queue=partition)
    assert queued() == before  # refused before anything was submitted


def test_cli_trains_through_a_site_config(partition, blob_data, tmp_path):
    """psdist train cfg.yaml --cluster site.yaml --jobs 2: a site-adapted copy of slurm-cpu.yaml."""
    from psdist.cli import build_parser

    # --cluster is part of the CLI: a parser that lost it fails here, it is no reason to skip
    args, unknown = build_parser().parse_known_args(["train", "cfg.yaml", "--cluster", "x", "--jobs", "2"])
    assert unknown == [] and (args.cluster, args.jobs) == ("x", 2)
    site = tmp_path / "site.yaml"
    site.write_text(
        "system: slurm\n"
        "cluster:\n"
        f"  queue: {partition}\n  cores: 1\n  processes: 1\n  memory: 2GiB\n  walltime: '00:10:00'\n"
        f"  log_directory: {tmp_path / 'logs'}\n  local_directory: {tmp_path / 'scratch'}\n"
        "  scheduler_options: {host: 127.0.0.1, dashboard_address: ':0'}\n"
        "  job_script_prologue: [export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432]\n"
        "ps: {cores: 1, memory: 2GiB}\n"
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "model: psdist.hep.models:mlp\nmodel_args: {inputs: 20, hidden: 32, classes: 4}\n"
        f"data: {{path: {blob_data.path}}}\noptimizer: {{name: sgd, lr: 0.1}}\nepochs: 2\nworkers: 2\n"
    )
    before = queued()
    out = subprocess.run(
        [sys.executable, "-m", "psdist.cli", "train", str(cfg), "--cluster", str(site), "--jobs", "2", "-q",
         "--history", str(tmp_path / "h.json")], capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    history = json.loads((tmp_path / "h.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and history[-1]["val_accuracy"] >= 0.95
    wait_until("the CLI's jobs leave the queue", lambda: queued() <= before)
