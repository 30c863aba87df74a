"""Devices on real clusters without a GPU: the embedded cluster's per-GPU workers (pinned by
CUDA_VISIBLE_DEVICES, surviving a kill), and the error for a worker that advertises a GPU torch
cannot see, raised before any training starts."""

from __future__ import annotations

import functools
import logging
import os
import signal
import time

import pytest
import torch

import psdist
from psdist.cluster.embedded import embedded_cluster, pick_ps_worker
from psdist.errors import ConfigError, DeviceError
from psdist.hep.models import mlp
from psdist.optim import SGD

CE = torch.nn.functional.cross_entropy
MLP = functools.partial(mlp, inputs=20, hidden=16, classes=4)


def _env() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def _pid() -> int:
    return os.getpid()


def _plugins(dask_worker) -> list[str]:
    return [p for p in dask_worker.plugins if p.startswith("psdist-run-")]


@pytest.fixture(scope="module")
def gpu_cluster():
    """The embedded cluster as a 2-GPU workstation gets it (GPUs "3" and "5"), on this CPU machine."""
    cluster, client = embedded_cluster(0, 1, dashboard_address=None, gpus=("3", "5"))
    yield client
    client.close()
    cluster.close()


def _by_name(client, values: dict) -> dict[str, object]:
    info = client.scheduler_info(n_workers=-1)["workers"]
    return {str(info[a]["name"]): v for a, v in values.items()}


def test_each_gpu_worker_sees_only_its_gpu_and_the_ps_worker_none(gpu_cluster):
    assert _by_name(gpu_cluster, gpu_cluster.run(_env)) == {"0": "3", "1": "5", "2": ""}
    info = gpu_cluster.scheduler_info(n_workers=-1)["workers"]
    assert {str(w["name"]): w.get("resources") for w in info.values()} == {
        "0": {"GPU": 1}, "1": {"GPU": 1}, "2": {}}
    # the parameter server goes to the worker without a GPU (the last by name), or any but the GPU ones
    ps, exclusive = pick_ps_worker(gpu_cluster, None, True)
    assert str(info[ps]["name"]) == "2" and exclusive
    ps, _ = pick_ps_worker(gpu_cluster, None, False, avoid={"1", "2"})
    assert str(info[ps]["name"]) == "0"


def _named(client, name: str) -> str | None:
    return next((a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if str(w["name"]) == name), None)


def test_a_killed_gpu_worker_comes_back_on_its_own_gpu(gpu_cluster):
    old = _named(gpu_cluster, "1")
    pid = gpu_cluster.run(_pid, workers=[old])[old]
    os.kill(pid, signal.SIGKILL)  # the nanny restarts it, with the environment it was given
    deadline = time.monotonic() + 60
    while (new := _named(gpu_cluster, "1")) in (None, old):  # the scheduler sees the new process register
        assert time.monotonic() < deadline, "the killed worker did not come back"
        time.sleep(0.1)
    assert gpu_cluster.run(_env, workers=[new]) == {new: "5"}
    assert gpu_cluster.run(_pid, workers=[new])[new] != pid


def test_gpu_workers_where_torch_sees_no_gpu_are_refused_before_training(gpu_cluster, blob_data):
    trainer = psdist.Trainer(MLP, CE, blob_data, SGD(lr=0.05), client=gpu_cluster)
    with pytest.raises(DeviceError, match=r"worker '0' \(tcp://.*\) advertises GPU=1, but torch sees no CUDA "
                                          r"device there \(its torch is a CPU build\)"):
        trainer.fit(epochs=1)
    assert trainer.version == 0 and len(trainer.history) == 0
    assert not any(gpu_cluster.run(_plugins).values())  # no worker was set up for the run
    # devices="cpu" trains the same cluster on its CPUs
    history = psdist.Trainer(MLP, CE, blob_data, SGD(lr=0.05), client=gpu_cluster, devices="cpu").fit(epochs=1)
    assert history.last["samples"] == 4096


def test_gpus_asked_of_a_machine_without_any_are_refused_before_a_cluster_starts(blob_data):
    trainer = psdist.Trainer(MLP, CE, blob_data, SGD(lr=0.05), devices=1)
    with pytest.raises(ConfigError, match="devices=1 asks for GPUs, but torch sees none here"):
        trainer.fit(epochs=1)
    assert trainer.dashboard_link is None  # no cluster was started


def test_the_start_up_line_names_each_workers_device(client, blob_data, caplog):
    caplog.set_level(logging.INFO, logger="psdist")
    trainer = psdist.Trainer(MLP, CE, blob_data, SGD(lr=0.05), client=client, dedicated_ps=True)
    events: list[dict] = []
    history = trainer.fit(epochs=1, progress=events.append)
    assert history.last["devices"] == "cpux2"
    start = next(e for e in events if e["event"] == "start")  # what the progress bar prints first
    assert start["training_on"].startswith("training on worker 0 on cpu, worker 1 on cpu; the parameter server on")
    assert "devices" in history.to_pandas().columns
    line = next(r.getMessage() for r in caplog.records if "psdist: training on" in r.getMessage())
    assert "worker 0 on cpu, worker 1 on cpu;" in line and "parameter server on" in line
    assert all(w["info"]["device"] == "cpu" for w in trainer.server_metrics["workers"].values())
