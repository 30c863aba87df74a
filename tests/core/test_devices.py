"""Which GPUs the embedded cluster starts workers on, and which device each worker of any
cluster trains on: pure functions over fake GPU counts and worker facts (no GPU, no network)."""

from __future__ import annotations

import re

import pytest

from psdist.core.devices import (
    WorkerDevices,
    assign_devices,
    describe,
    embedded_devices,
    parse_devices,
    visible_gpus,
)
from psdist.errors import ConfigError, DeviceError

FOUR = ("0", "1", "2", "3")


@pytest.mark.parametrize(("value", "parsed"), [
    ("auto", "auto"), ("CPU", "cpu"), (2, 2), ("3", 3), ([0, 2], (0, 2)), ((1,), (1,)), ("0,2", (0, 2)),
    ("1,", (1,)), (0, None), (-1, None), (True, None), ([0, 0], None), ([], None), ("gpu", None), (1.5, None),
    ([0, -1], None),
])
def test_devices_setting_is_parsed(value, parsed):
    assert parse_devices(value) == parsed


def test_visible_gpus_follow_the_clients_own_pinning():
    assert visible_gpus(4, None) == FOUR
    assert visible_gpus(2, "2,3") == ("2", "3")  # devices=[0] is then physical GPU 2
    assert visible_gpus(1, "GPU-ab12, GPU-cd34") == ("GPU-ab12",)  # torch saw one of them
    assert visible_gpus(0, "") == ()


@pytest.mark.parametrize(("devices", "workers", "gpus", "n"), [
    ("auto", None, FOUR, 4),             # a 4-GPU workstation: one worker per GPU
    ("auto", 4, FOUR, 4),
    (2, None, ("0", "1"), 2),
    ((0, 2), None, ("0", "2"), 2),
    ((3,), None, ("3",), 1),
    ("cpu", None, (), 2),                # CPU training as before: 2 workers by default
    ("cpu", 6, (), 6),
])
def test_embedded_cluster_gets_one_worker_per_chosen_gpu(devices, workers, gpus, n):
    assert embedded_devices(devices, FOUR, workers) == (gpus, n)


def test_embedded_cluster_maps_ordinals_through_the_clients_visible_devices():
    assert embedded_devices((1,), ("5", "7"), None) == (("7",), 1)


def test_embedded_cluster_without_gpus_trains_on_cpu():
    assert embedded_devices("auto", (), None) == ((), 2)
    assert embedded_devices("auto", (), 3) == ((), 3)


@pytest.mark.parametrize(("devices", "workers", "message"), [
    (5, None, "devices=5 asks for 5 GPUs, but torch sees 4"),
    ((0, 4), None, "devices=[0, 4]: no GPU 4 here"),
    ("auto", 3, "workers=3, but devices='auto' trains on 4 GPU(s)"),
    ((0, 1), 1, "workers=1, but devices=[0, 1] trains on 2 GPU(s)"),
])
def test_bad_device_choices_are_refused_with_the_fix(devices, workers, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        embedded_devices(devices, FOUR, workers)


def test_gpus_asked_for_on_a_machine_without_any():
    with pytest.raises(ConfigError, match=r"asks for GPUs, but torch sees none here .*use devices='cpu'"):
        embedded_devices(1, (), None)


def _w(name: str, host: str = "h1", gpu: float = 0.0, gpus: tuple[str, ...] = (), env: str | None = None,
       cuda: str | None = "12.4") -> WorkerDevices:
    return WorkerDevices(f"tcp://{host}:{name}", name, host, gpu, gpus, env, cuda)


def _addresses(*workers: WorkerDevices) -> list[str]:
    return [w.address for w in workers]


def test_pinned_workers_keep_their_gpu_and_the_ps_worker_stays_on_cpu():
    # the embedded cluster on a 2-GPU host: workers 0 and 1 pinned, worker 2 (the PS) sees none
    w0, w1 = _w("0", gpu=1, gpus=("GPU-a",), env="0"), _w("1", gpu=1, gpus=("GPU-b",), env="1")
    ps = _w("2", gpus=(), env="")
    assert assign_devices([w0, w1, ps], _addresses(w0, w1)) == {"0": "cuda:0", "1": "cuda:0"}
    # the PS's worker trains too on a cluster that shares it: on its CPU
    assert assign_devices([w0, w1, ps], _addresses(w0, w1, ps)) == {"0": "cuda:0", "1": "cuda:0", "2": "cpu"}


def test_unpinned_workers_of_one_host_get_distinct_gpus():
    # 4 workers started with --resources GPU=1 on a 4-GPU node, none pinned: not all on cuda:0
    workers = [_w(str(i), gpu=1, gpus=("a", "b", "c", "d")) for i in range(4)]
    assert assign_devices(workers, _addresses(*workers)) == {"0": "cuda:0", "1": "cuda:1", "2": "cuda:2",
                                                             "3": "cuda:3"}


def test_dask_cuda_rotated_visible_devices_keep_cuda_0():
    # LocalCUDACluster gives worker i CUDA_VISIBLE_DEVICES=i,i+1,...: cuda:0 is its own GPU
    workers = [_w("0", gpus=("a", "b", "c"), env="0,1,2"), _w("1", gpus=("b", "c", "a"), env="1,2,0"),
               _w("2", gpus=("c", "a", "b"), env="2,0,1")]
    assert assign_devices(workers, _addresses(*workers)) == {"0": "cuda:0", "1": "cuda:0", "2": "cuda:0"}


def test_workers_on_different_hosts_may_each_use_their_cuda_0():
    workers = [_w("a0", "n1", 1, ("x",)), _w("b0", "n2", 1, ("x",))]  # the same id seen on two hosts
    assert assign_devices(workers, _addresses(*workers)) == {"a0": "cuda:0", "b0": "cuda:0"}


def test_more_gpu_workers_than_gpus_on_a_host_is_an_error_naming_them():
    workers = [_w(str(i), gpu=1, gpus=("a", "b")) for i in range(3)]
    with pytest.raises(DeviceError, match=r"worker '2' on h1 would share a GPU with worker\(s\) \['0', '1'\]"):
        assign_devices(workers, _addresses(*workers))


def test_a_gpu_advertising_worker_without_cuda_is_an_error_naming_it():
    workers = [_w("0", gpu=1, gpus=("a",)), _w("gpu-node-7", gpu=1, cuda=None)]
    with pytest.raises(DeviceError, match=r"worker 'gpu-node-7' .* advertises GPU=1, but torch sees no CUDA "
                                          r"device there \(its torch is a CPU build\)"):
        assign_devices(workers, _addresses(*workers))
    hidden = [_w("3", gpu=1, env="")]
    with pytest.raises(DeviceError, match="its CUDA_VISIBLE_DEVICES is empty"):
        assign_devices(hidden, _addresses(*hidden))


def test_cpu_trains_every_worker_on_cpu_whatever_it_advertises():
    workers = [_w("0", gpu=1, gpus=("a",)), _w("1", gpu=1, cuda=None)]
    assert assign_devices(workers, _addresses(*workers), "cpu") == {"0": "cpu", "1": "cpu"}


def test_with_gpu_resources_a_worker_without_the_resource_trains_on_cpu():
    # a batch system's CPU jobs beside GPU jobs: the resource says who trains on a GPU
    workers = [_w("0", gpu=1, gpus=("a",)), _w("1", gpus=("b",))]
    assert assign_devices(workers, _addresses(*workers)) == {"0": "cuda:0", "1": "cpu"}


def test_start_up_line_names_each_workers_device():
    w0, cpu = _w("0", gpu=1, gpus=("a",), env="2"), _w("1")
    line = describe(assign_devices([w0, cpu], _addresses(w0, cpu)), [w0, cpu])
    assert line == "worker 0 on cuda:0 (CUDA_VISIBLE_DEVICES=2), worker 1 on cpu"
