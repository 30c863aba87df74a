"""The analytic performance model (psdist.sim.perf): limits, monotonicity, calibration, errors."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from itertools import pairwise

import pytest

from psdist.errors import ConfigError
from psdist.sim.contention import core_stretch, effective_cores
from psdist.sim.perf import (
    Cluster,
    Workload,
    calibrate,
    local_cluster,
    micro_points,
    predict,
    predict_table,
    recommend_shards,
    server_step_points,
)

WL = Workload("cnn", params=2_000_000, batch_size=128, compute_s=0.01)
NET = Cluster("net", workers=8, shards=1, link_bytes_per_s=3e9, nic_bytes_per_s=3e9, push_fixed_s=1e-4,
              server_per_param_s=1e-9, server_per_push_s=5e-5)


def test_free_communication_single_worker_is_perfectly_efficient() -> None:
    p = predict(WL, Cluster("free", workers=1))
    assert p.efficiency == pytest.approx(1.0)
    assert p.samples_per_s == pytest.approx(128 / 0.01)
    assert p.bottleneck == "compute"


def test_a_lone_worker_never_queues_behind_itself() -> None:
    p = predict(WL, NET.with_(workers=1))
    assert p.wait_s == 0.0
    assert p.cycle_s == pytest.approx(WL.compute_s + NET.push_fixed_s + p.link_s + p.cpu_s)


def test_more_bandwidth_is_never_slower() -> None:
    for w in (1, 8, 64, 256):
        last = 0.0
        for bw in (1e8, 1e9, 3e9, 1.25e10, math.inf):
            p = predict(WL, NET.with_(workers=w, link_bytes_per_s=bw, nic_bytes_per_s=bw))
            assert p.samples_per_s >= last * (1 - 1e-12)
            last = p.samples_per_s


def test_more_shards_never_load_a_shard_more() -> None:
    for w in (1, 16, 256):
        loads = [predict(WL, NET.with_(workers=w, shards=s)) for s in (1, 2, 4, 8, 16)]
        assert all(a.nic_s + a.cpu_s >= b.nic_s + b.cpu_s for a, b in pairwise(loads))
        assert all(a.utilisation >= b.utilisation - 1e-12 for a, b in pairwise(loads))


def test_saturation_plateaus_at_the_shard_capacity() -> None:
    cap = WL.batch_size / (NET.server_per_push_s + NET.server_per_param_s * WL.params
                           + 2 * WL.params * 4 / NET.nic_bytes_per_s)
    rates = [predict(WL, NET.with_(workers=w)).samples_per_s for w in (1, 4, 16, 64, 256, 1024, 4096)]
    assert all(b >= a * (1 - 1e-9) for a, b in pairwise(rates))
    assert all(r <= cap * (1 + 1e-12) for r in rates)
    assert rates[-1] == pytest.approx(cap, rel=0.02)
    big = predict(WL, NET.with_(workers=4096))
    assert big.utilisation == pytest.approx(1.0, abs=0.02) and big.bottleneck in ("shard NIC", "shard CPU")


def test_overlap_is_never_slower() -> None:
    for w in (1, 2, 8, 64, 256):
        for s in (1, 4, 16):
            off = predict(WL, NET.with_(workers=w, shards=s, overlap=False))
            on = predict(WL, NET.with_(workers=w, shards=s, overlap=True))
            assert on.samples_per_s >= off.samples_per_s * (1 - 1e-12)


def test_bf16_halves_the_bytes() -> None:
    f32 = predict(WL, NET)
    b16 = predict(WL, NET.with_(wire_bytes=2))
    assert b16.bytes_per_push == f32.bytes_per_push / 2 == WL.params * 4
    assert b16.link_s == pytest.approx(f32.link_s / 2) and b16.nic_s == pytest.approx(f32.nic_s / 2)


def test_calibration_recovers_a_line_exactly() -> None:
    a, b = 3e-4, 1.3e-9
    fit = calibrate([(n, a + b * n) for n in (1e5, 1e6, 4e6)])
    assert fit.a_s == pytest.approx(a, rel=1e-9) and fit.b_s == pytest.approx(b, rel=1e-9)
    assert fit.max_rel_error() < 1e-9
    with pytest.raises(ConfigError, match="two or more sizes"):
        calibrate([(1e6, 1e-3), (1e6, 2e-3)])


def test_calibration_readers() -> None:
    suite = {"ps_micro": {"100000": {"status": "ok", "params": 100000, "psdist_push_pull_ms": 3.0,
                                     "plane": {"shm": {"status": "ok", "push_pull_ms": 0.3}}},
                          "1000000": {"status": "ok", "params": 1000000, "psdist_push_pull_ms": 8.0,
                                      "plane": {"shm": {"status": "error"}}}}}
    assert micro_points(suite, "actor") == [(1e5, 0.003), (1e6, 0.008)]
    assert micro_points(suite, "shm") == [(1e5, 0.0003)]
    step = {"results": [{"params": 10, "optimizer": "sgd-momentum", "path": "torch", "measure": "push+pull",
                         "buffer": "reused", "ms": 1.0},
                        {"params": 10, "optimizer": "adam", "path": "torch", "measure": "push+pull",
                         "buffer": "reused", "ms": 9.0}]}
    assert server_step_points(step) == [(10.0, 0.001)]
    vm = local_cluster(calibrate([(1e5, 2e-4 + 2e-9 * 1e5), (1e6, 2e-4 + 2e-9 * 1e6)]),
                     calibrate([(1e5, 1e-4 + 1e-9 * 1e5), (1e6, 1e-4 + 1e-9 * 1e6)]))
    assert vm.push_fixed_s == pytest.approx(1e-4) and vm.link_bytes_per_s == pytest.approx(8e9)
    assert vm.server_per_param_s == pytest.approx(1e-9) and vm.server_per_push_s == pytest.approx(1e-4)


def test_recommend_shards_is_the_smallest_meeting_the_target() -> None:
    cl = NET.with_(workers=64)
    effs = {s: predict(WL, cl.with_(shards=s)).efficiency for s in range(1, 17)}
    target = 0.5 * (effs[1] + max(effs.values()))
    s, p = recommend_shards(WL, cl, target)
    assert p.efficiency >= target and all(effs[t] < target for t in range(1, s))
    _, p_best = recommend_shards(WL, cl.with_(push_fixed_s=1.0), 0.99)  # unreachable
    assert p_best.efficiency < 0.99 and p_best.efficiency == pytest.approx(
        max(predict(WL, cl.with_(push_fixed_s=1.0, shards=t)).efficiency for t in range(1, 17)))


def test_predict_table_covers_the_grid() -> None:
    rows = predict_table([WL], NET)
    assert len(rows) == 9 * 5 * 2 * 2
    assert {(r.workers, r.shards, r.overlap, r.wire_bytes) for r in rows} == {
        (w, s, o, b) for w in (1, 2, 4, 8, 16, 32, 64, 128, 256) for s in (1, 2, 4, 8, 16)
        for o in (False, True) for b in (4, 2)}


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"workers": 0}, "workers"), ({"shards": -1}, "shards"), ({"link_bytes_per_s": -1.0}, "link_bytes_per_s"),
    ({"nic_bytes_per_s": 0.0}, "nic_bytes_per_s"), ({"push_fixed_s": -1e-3}, "push_fixed_s"),
    ({"wire_bytes": 3}, "wire_bytes"), ({"server_per_param_s": math.nan}, "server_per_param_s")])
def test_bad_cluster_names_the_value(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Cluster(**kwargs)  # type: ignore[arg-type]


def test_bad_workload_names_the_value() -> None:
    with pytest.raises(ConfigError, match="compute_s"):
        Workload("x", params=10, batch_size=1, compute_s=-1.0)
    with pytest.raises(ConfigError, match="params"):
        Workload("x", params=0, batch_size=1, compute_s=1.0)
    with pytest.raises(ConfigError, match="target_efficiency"):
        recommend_shards(WL, NET, 1.5)


def test_the_model_imports_without_torch() -> None:
    code = "import sys, psdist.sim.perf; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_shard_fan_out_is_paid_once_per_push_and_only_when_sharded() -> None:
    fan = NET.with_(workers=1, fanout_per_push_s=2e-4, fanout_per_param_s=5e-10)
    one, base2 = predict(WL, fan), predict(WL, NET.with_(workers=1, shards=2))
    assert one.fanout_s == 0.0 and one.cycle_s == predict(WL, NET.with_(workers=1)).cycle_s
    two = predict(WL, fan.with_(shards=2))
    assert two.fanout_s == pytest.approx(2e-4 + 5e-10 * WL.params)  # the whole model's P, not P/S
    assert two.cycle_s == pytest.approx(base2.cycle_s + two.fanout_s)  # a lone worker: serial, no queue
    assert predict(WL, fan.with_(shards=8)).fanout_s == two.fanout_s  # once per push, not per shard
    assert predict(WL, fan.with_(shards=2, fanout_per_push_s=1.0)).bottleneck == "shard fan-out"
    with pytest.raises(ConfigError, match="fanout_per_param_s"):
        NET.with_(fanout_per_param_s=-1e-9)


# -- per-chunk costs -----------------------------------------------------------------------------


def test_the_per_chunk_overhead_is_spread_over_the_pushes_of_a_chunk() -> None:
    chunked = Workload("cnn", params=WL.params, batch_size=128, compute_s=0.01, rows_per_chunk=512)  # 4 pushes
    base = predict(WL, NET.with_(workers=1))
    with_cost = predict(chunked, NET.with_(workers=1, chunk_overhead_s=0.02))
    assert with_cost.chunk_s == pytest.approx(0.02 / 4)
    assert with_cost.cycle_s == pytest.approx(base.cycle_s + 0.02 / 4)  # a lone worker: serial, no queue
    assert with_cost.samples_per_s < base.samples_per_s
    k2 = predict(replace(chunked, push_every=2), NET.with_(workers=1, chunk_overhead_s=0.02))
    assert k2.chunk_s == pytest.approx(0.02 / 2)  # 2 pushes per chunk of 4 minibatches
    # a chunk shorter than a push window pushes at its end: 2 minibatches per push, not 4
    short = predict(replace(chunked, rows_per_chunk=256, push_every=4), NET.with_(workers=1))
    assert short.compute_s == pytest.approx(2 * 0.01)
    assert short.samples_per_s == pytest.approx(256 / short.cycle_s)


def test_no_chunks_or_no_overhead_changes_nothing() -> None:
    for w in (1, 8, 64):
        for ov in (False, True):
            base = predict(WL, NET.with_(workers=w, overlap=ov))
            # chunk overhead without chunks in the workload: unused
            assert predict(WL, NET.with_(workers=w, overlap=ov, chunk_overhead_s=0.05)) == base
    # chunks without overhead and without overlap: the same cycle (a push never spans chunks; 512 = 4 windows)
    chunked = Workload("cnn", params=WL.params, batch_size=128, compute_s=0.01, rows_per_chunk=512)
    for w in (1, 8, 64):
        a, b = predict(chunked, NET.with_(workers=w)), predict(WL, NET.with_(workers=w))
        assert a.cycle_s == pytest.approx(b.cycle_s) and a.samples_per_s == pytest.approx(b.samples_per_s)
        assert a.chunk_s == 0.0


def test_overlap_drains_its_pipeline_once_per_chunk() -> None:
    # compute 10 ms, round trip of a lone worker: fixed + link + cpu
    chunked = Workload("cnn", params=WL.params, batch_size=128, compute_s=0.01, rows_per_chunk=512)
    base = predict(WL, NET.with_(workers=1, overlap=True))
    on = predict(chunked, NET.with_(workers=1, overlap=True))
    trip = NET.push_fixed_s + on.link_s + on.cpu_s
    assert on.chunk_s == pytest.approx(min(0.01, trip) / 4)
    assert on.cycle_s == pytest.approx(base.cycle_s + min(0.01, trip) / 4)
    # one push per chunk: overlap hides nothing
    one = replace(chunked, rows_per_chunk=128)
    assert predict(one, NET.with_(workers=1, overlap=True)).cycle_s == pytest.approx(
        predict(one, NET.with_(workers=1)).cycle_s)


# -- core sharing --------------------------------------------------------------------------------

CPU_WL = Workload("mlp", params=2_000_000, batch_size=128, compute_s=0.018)
SHM = Cluster("shm", workers=1, link_bytes_per_s=5e9, server_per_param_s=1e-9, server_per_push_s=1e-4)


def test_enough_cores_stretch_nothing() -> None:
    for w, s, ov in ((1, 1, False), (1, 2, False), (1, 1, True), (2, 1, False)):
        dedicated = predict(CPU_WL, SHM.with_(workers=w, shards=s, overlap=ov))
        shared = predict(CPU_WL, SHM.with_(workers=w, shards=s, overlap=ov, host_cores=8))
        assert shared.stretch == 1.0 and shared.samples_per_s == dedicated.samples_per_s
        assert dedicated.stretch == 1.0
    # one worker without overlap never runs beside its shard: 1 busy process on average, 1 core is enough
    lone = predict(CPU_WL, SHM.with_(host_cores=1))
    assert lone.stretch == 1.0 and lone.busy == pytest.approx(1.0)


def test_an_oversubscribed_host_does_its_cores_worth_of_work() -> None:
    # two overlapped workers: compute and their communication threads want > 2 cores
    cl = SHM.with_(workers=2, overlap=True)
    free, shared = predict(CPU_WL, cl), predict(CPU_WL, cl.with_(host_cores=2))
    assert shared.stretch > 1.0 and shared.samples_per_s < free.samples_per_s
    assert shared.busy == pytest.approx(2.0 * shared.stretch)  # f = busy / cores at the fixed point
    assert shared.bottleneck == "host cores"
    # all of the cycle is CPU work: the closed form f = W · D / (c · T(1)), the host's capacity in samples/s
    demand = CPU_WL.compute_s + free.link_s + free.cpu_s  # one worker's CPU seconds per push
    assert shared.stretch == pytest.approx(2 * demand / (2 * free.cycle_s), rel=1e-6)
    assert shared.samples_per_s == pytest.approx(2 * 128 / (2 * demand / 2), rel=1e-6)
    # fewer cores, more stretch; effective cores between
    assert predict(CPU_WL, cl.with_(host_cores=1.5)).stretch > shared.stretch


def test_device_time_does_not_stretch() -> None:
    cl = SHM.with_(workers=2, overlap=True, host_cores=1)
    cpu = predict(CPU_WL, cl)
    gpu = predict(replace(CPU_WL, host_compute_s=0.0), cl)  # the host thread waits for its kernels
    assert gpu.stretch < cpu.stretch and gpu.samples_per_s > cpu.samples_per_s
    assert gpu.compute_s == pytest.approx(CPU_WL.compute_s)  # its compute is the device's: not stretched
    assert cpu.compute_s == pytest.approx(CPU_WL.compute_s * cpu.stretch)


def test_core_stretch_solves_the_fixed_point() -> None:
    # busy(f) = f · 3 / (1 + 0.5 f): half the cycle does not stretch; on 2 cores f = 3 / (2 (0.5 + 0.5 f))
    f, busy = core_stretch(lambda f: f * 3.0 / (0.5 + 0.5 * f), 2.0)
    assert f == pytest.approx(2.0, rel=1e-8) and busy == pytest.approx(2.0 * f, rel=1e-8)
    assert core_stretch(lambda f: 1.5, 2.0) == (1.0, 1.5)
    assert effective_cores(100.0, 147.0) == pytest.approx(1.47) and effective_cores(100.0, 90.0) == 1.0
    with pytest.raises(ConfigError, match="host_cores"):
        core_stretch(lambda f: 1.0, 0.0)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"chunk_overhead_s": -1e-3}, "chunk_overhead_s"), ({"host_cores": 0}, "host_cores"),
    ({"host_cores": math.inf}, "host_cores")])
def test_bad_chunk_and_core_settings_name_the_value(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Cluster(**kwargs)  # type: ignore[arg-type]


def test_bad_chunk_workload_names_the_value() -> None:
    with pytest.raises(ConfigError, match="rows_per_chunk"):
        Workload("x", params=10, batch_size=1, compute_s=1.0, rows_per_chunk=0)
    with pytest.raises(ConfigError, match="host_compute_s"):
        Workload("x", params=10, batch_size=1, compute_s=1.0, host_compute_s=2.0)
