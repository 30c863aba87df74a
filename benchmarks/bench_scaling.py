# The performance model's scaling tables (psdist.sim.perf), calibrated and checked against real runs.
#
#   python benchmarks/bench_scaling.py                  # < 5 s; writes benchmarks/results/scaling-<date>-model.{json,md}
#   python benchmarks/bench_scaling.py --out /tmp/x     # writes /tmp/x.json and /tmp/x.md
#
# No cluster, no torch: the model is closed form. What it reads (all under benchmarks/results/):
#   server-step-2026-12-01-vm.json   the server's own push+pull (torch SGD-momentum, in process) at
#                                    1e5, 1e6, 4e6 floats -> per-push and per-parameter server cost
#   the stored JSON with the most data-plane micro sizes (ps_micro[n].plane.shm of a suite result, or
#                                    scaling-micro-*.json: `python -m benchmarks.suite.ps_micro --spec s.json`
#                                    with s.json = {"out": ..., "sizes": [1e5, 1e6, 4e6], "reps": 20}, ~30 s)
#                                    -> the shm round trip; else docs/benchmarks.md's 2026-12-01 figures
#   scaling-suite-*.json             fresh suite runs (run_suite.py --out benchmarks/results/scaling-suite-...):
#                                    more checked points (shm data plane)
#   shards-*.json (the newest)       bench_shards.py: real sharded trainings (1-2 workers x 1-2 shards, the wide
#                                    MLP) -> checked points, and its round trips -> the shard fan-out of vm-shm;
#                                    its 1 worker x 1 shard run without overlap (only) -> the per-chunk overhead
#                                    (the time in no span, and the read, per chunk trained)
#   2026-11-27-vm.json               parameter counts, 1-thread PyTorch step times (VM), the actor micro
#                                    and psdist-downpour 2-worker rows (checked points); torch-2t / torch-1t ->
#                                    the VM's effective cores for core sharing (psdist.sim.contention)
#   2026-11-27-h100-cuda.json, cuda-2026-11-27-h100.json   H100 step times of the same models
# Prints the tables and the checked points with their prediction errors: the model as before, + per-chunk costs,
# + core sharing on the host's nominal and on its effective cores (the HPC tables use neither term).

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from psdist.sim.contention import effective_cores  # noqa: E402
from psdist.sim.perf import (  # noqa: E402
    Calibration,
    Cluster,
    Prediction,
    Workload,
    calibrate,
    local_cluster,
    micro_points,
    predict,
    predict_table,
    recommend_shards,
    server_step_points,
)

RESULTS = ROOT / "benchmarks" / "results"
SUITE_VM = RESULTS / "2026-11-27-vm.json"
SUITE_H100 = RESULTS / "2026-11-27-h100-cuda.json"
CUDA_H100 = RESULTS / "cuda-2026-11-27-h100.json"
SERVER_STEP = RESULTS / "server-step-2026-12-01-vm.json"
CAL_SIZES = (100_000, 1_000_000, 4_000_000)  # the micro's sizes (1.6e7 leaves the cache: not linear)
#: docs/benchmarks.md, "Since the data plane" (2026-12-01 full suite run, whose JSON is not stored):
#: shm push+pull 1.21 ms at 1e6 floats (micro), 5.3 ms at 4e6 ("in isolation")
DOC_SHM = [(1e6, 1.21e-3), (4e6, 5.3e-3)]
BATCH = 128  # the suite's batch per worker
PUSH_EVERY = (1, 2, 4, 8, 16, 32)
CNN = ("jet_cnn", "calo_cnn")
WIDE = "wide_mlp"
#: HPC presets: line rate × 0.9 (protocol overhead), a network round trip added to the per-push fixed
#: cost (assumed: TCP over 25 GbE ~50 µs, RDMA over 100 Gbit/s InfiniBand ~10 µs)
NETS = {"hpc-25GbE": (25e9 / 8 * 0.9, 50e-6), "hpc-100G-IB": (100e9 / 8 * 0.9, 10e-6)}
#: bench_gpu_like.py's FULL size: chunks of 2048 rows; its DeviceTime sleeps 1.0 ms forward + 1.5 ms backward
GPU_LIKE_CHUNK, GPU_LIKE_SLEEP_S = 2048, 2.5e-3


def strict(obj: Any) -> Any:
    """inf/NaN -> "inf"/None and tuples -> lists: strict JSON."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else (None if obj != obj else str(obj))
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def suite_rows(doc: dict[str, Any], contender: str) -> dict[str, dict[str, Any]]:
    return {r["workload"]: r for r in doc["results"] if r["contender"] == contender and r.get("status") == "ok"}


def shm_points() -> tuple[list[tuple[float, float]], str]:
    """The stored shm push+pull points with the most sizes (the newest among equals), else the documented ones."""
    found = []
    for path in RESULTS.glob("*.json"):
        if path.name.endswith("-model.json"):
            continue
        try:
            pts = micro_points(path, "shm")
        except (ValueError, KeyError, AttributeError, TypeError):
            continue
        if len(pts) >= 2:
            found.append((len(pts), path.stat().st_mtime, path, pts))
    if not found:
        return DOC_SHM, ("docs/benchmarks.md 2026-12-01 run: shm push+pull 1.21 ms at 1e6, 5.3 ms at 4e6 "
                         "(JSON not stored)")
    _, _, path, pts = max(found, key=lambda f: (f[0], f[1]))
    return pts, f"{path.relative_to(ROOT)}: ps_micro plane.shm push_pull_ms"


def newest_shards() -> Path | None:
    """The newest stored bench_shards.py result (by name: shards-<date>-<host>.json)."""
    found = sorted(RESULTS.glob("shards-*.json"))
    return found[-1] if found else None


def calibrations() -> dict[str, Calibration]:
    server = [p for p in server_step_points(SERVER_STEP) if p[0] in CAL_SIZES]
    shm, shm_src = shm_points()
    shards = newest_shards()
    fanout = {} if shards is None else {
        "fanout": calibrate(load(shards)["fanout"]["points"], f"{shards.relative_to(ROOT)}: round trips, 2 shards - "
                                                              "1 shard + the shard CPU the model saves (0.2/0.66/2.4 M)")}
    return {
        "server": calibrate(server, f"{SERVER_STEP.relative_to(ROOT)}: torch sgd-momentum push+pull (reused buffer), "
                                    "median, 1e5/1e6/4e6"),
        "shm": calibrate(shm, shm_src),
        "memcpy": calibrate([(float(m["params"]), m["ms"] / 1e3) for m in load(SERVER_STEP)["memcpy"]
                             if m["params"] in CAL_SIZES],
                            f"{SERVER_STEP.relative_to(ROOT)}: memcpy (np.copyto) median, 1e5/1e6/4e6"),
        "actor": calibrate(micro_points(SUITE_VM, "actor"), f"{SUITE_VM.relative_to(ROOT)}: ps_micro psdist_push_pull_ms"),
        "actor_server": calibrate(micro_points(SUITE_VM, "actor", "server_push"),
                                  f"{SUITE_VM.relative_to(ROOT)}: ps_micro psdist_server_push_ms (numpy server then)"),
        **fanout,
    }


def clusters(cal: dict[str, Calibration]) -> dict[str, Cluster]:
    copy = 4.0 / cal["memcpy"].b_s  # bytes/s of one float32 copy
    vm = local_cluster(cal["shm"], cal["server"], "vm-shm", copy)
    if "fanout" in cal:  # measured on this host only: the HPC presets below leave it out
        vm = vm.with_(fanout_per_push_s=max(cal["fanout"].a_s, 0.0), fanout_per_param_s=max(cal["fanout"].b_s, 0.0))
    # the actor path's micro already includes the worker's (de)serialisation copies
    out = {"vm-shm": vm, "vm-actor-2026-11-27": local_cluster(cal["actor"], cal["actor_server"], "vm-actor-2026-11-27")}
    for name, (bw, rtt) in NETS.items():
        out[name] = Cluster(name, link_bytes_per_s=bw, nic_bytes_per_s=bw, push_fixed_s=vm.push_fixed_s + rtt,
                            server_per_param_s=vm.server_per_param_s, server_per_push_s=vm.server_per_push_s)
    return out


def workloads() -> dict[str, dict[str, Workload]]:
    """CPU (the VM's 1-thread PyTorch) and GPU (one H100, 1-thread PyTorch driver) step times."""
    vm, h100 = suite_rows(load(SUITE_VM), "torch-1t"), suite_rows(load(SUITE_H100), "torch-1t")
    cpu = {n: Workload(n, int(r["params"]), BATCH, BATCH / r["samples_per_s"]) for n, r in vm.items()}
    gpu = {n: Workload(n, int(vm[n]["params"]), BATCH, BATCH / r["samples_per_s"]) for n, r in h100.items() if n in vm}
    c = load(CUDA_H100)
    gpu["jet_cnn_w64_b512"] = Workload("jet_cnn_w64_b512", int(c["params"]), int(c["batch_size"]),
                                       c["batch_size"] / c["plain_samples_s"])
    return {"cpu-vm": cpu, "gpu-h100": gpu}


def chunk_calibration(shards: Path | None) -> dict[str, Any]:
    """The per-chunk overhead, from ONE designated run: bench_shards' 1 worker x 1 shard, overlap off.

    Its epoch records split the worker's training time into compute, communication (pushes, and the
    join + first pull of each chunk) and read spans; what no span covers (the chunk task's scheduling
    and return, the rows' shuffle onto the device, leave) and the read are the per-chunk costs outside
    compute and pushes: share x training time / chunks trained. That run has one training process
    and one shard taking turns on 2 cores: no core sharing to speak of. The join + first pull stay
    in its communication share (the data does not separate them from the pushes).
    """
    if shards is None:
        return {}
    doc = load(shards)
    m = re.search(r"(\d+) rows in chunks of (\d+)", doc["note"])
    assert m, f"{shards.name}: no 'N rows in chunks of M' in its note"
    rows, chunk = int(m.group(1)), int(m.group(2))
    p = next(p for p in doc["points"] if (p["workers"], p["shards"], p["overlap"]) == (1, 1, False))
    timed = p["epoch_rates"][1:]  # the first epoch is warm-up (bench_shards.median_rate)
    train_s = sum(rows / r for r in timed)  # x 1 worker: the shares' budget
    chunks = len(timed) * rows // chunk
    idle = 1.0 - p["compute_share"] - p["comm_share"] - p["read_share"]
    return {"idle_s": idle * train_s / chunks, "read_s": p["read_share"] * train_s / chunks,
            "idle_share": idle, "read_share": p["read_share"], "rows_per_chunk": chunk, "chunks": chunks,
            "train_s": train_s, "point": "1 worker x 1 shard, overlap off",
            "source": f"{shards.relative_to(ROOT)}: points[1x1, overlap off]: (1 - compute - comm - read share) "
                      f"and read share x training time of the timed epochs / chunks trained"}


def effective_cores_of() -> dict[str, Any]:
    """The VM's capacity in single-thread processes per workload: plain PyTorch on all cores (torch-2t) over
    one thread (torch-1t), the same models in the 2026-11-27 suite (no psdist); the median for others."""
    doc = load(SUITE_VM)
    one, two = suite_rows(doc, "torch-1t"), suite_rows(doc, "torch-2t")
    per = {n: effective_cores(one[n]["samples_per_s"], two[n]["samples_per_s"]) for n in one if n in two}
    return {"per_workload": per, "median": statistics.median(per.values()), "nominal": int(doc["machine"]["cores"]),
            "source": f"{SUITE_VM.relative_to(ROOT)}: torch-2t / torch-1t samples_per_s"}


def checks(cl: dict[str, Cluster], wls: dict[str, dict[str, Workload]], chunk_cal: dict[str, Any],
           cores: dict[str, Any]) -> list[dict[str, Any]]:
    """Real psdist runs on this 2-core VM, each beside the model's prediction: the model without the per-chunk
    and core-sharing terms ("error"), + per-chunk costs ("error_chunk"), + core sharing on the host's nominal
    cores ("error_cores") or its effective cores ("error_eff"). Rows whose t_c is the run's own compute+read
    get the per-chunk idle time only (the read is in t_c) and no core sharing (their t_c already has it)."""
    out: list[dict[str, Any]] = []
    idle, read = chunk_cal.get("idle_s", 0.0), chunk_cal.get("read_s", 0.0)

    def add(label: str, source: str, wl: Workload, cluster: Cluster, measured: float,
            round_trip_ms: float | None = None, *, rows_per_chunk: int, host_cores: int,
            in_run: bool = False, calibration: bool = False, host_compute_s: float | None = None) -> None:
        p = predict(wl, cluster)
        row = {"point": label, "source": source, "workload": wl.name, "params": wl.params,
               "compute_ms": wl.compute_s * 1e3, "cluster": cluster.name, "workers": cluster.workers,
               "shards": cluster.shards, "overlap": cluster.overlap, "measured": measured,
               "predicted": p.samples_per_s, "error": p.samples_per_s / measured - 1, "bottleneck": p.bottleneck,
               "round_trip_ms_measured": round_trip_ms,
               "round_trip_ms_predicted": 1e3 * (p.fixed_s + p.fanout_s + max(p.link_s, p.nic_s) + p.cpu_s + p.wait_s),
               "in_run": in_run, "calibration": calibration, "rows_per_chunk": rows_per_chunk}
        chunked = replace(wl, rows_per_chunk=rows_per_chunk, host_compute_s=host_compute_s)
        with_chunk = cluster.with_(chunk_overhead_s=idle if in_run else idle + read)
        eff = cores["per_workload"].get(wl.name, cores["median"])
        variants: dict[str, tuple[Cluster, float | None]] = {
            "chunk": (with_chunk, None), "cores": (with_chunk.with_(host_cores=host_cores), host_cores),
            "eff": (with_chunk.with_(host_cores=eff), eff)}
        if in_run:  # its t_c already carries the core sharing: the per-chunk prediction in every column
            variants = dict.fromkeys(variants, (with_chunk, None))
        for key, (c, n) in variants.items():
            q = predict(chunked, c)
            row.update({f"predicted_{key}": q.samples_per_s, f"error_{key}": q.samples_per_s / measured - 1,
                        f"chunk_ms_{key}": q.chunk_s * 1e3, f"stretch_{key}": q.stretch, f"busy_{key}": q.busy,
                        f"bottleneck_{key}": q.bottleneck, f"host_cores_{key}": n})
        out.append(row)

    suites = [(SUITE_VM, "suite 2026-11-27", "actor path", cl["vm-actor-2026-11-27"])]
    suites += [(p, p.stem, "shm data plane", cl["vm-shm"]) for p in sorted(RESULTS.glob("scaling-suite-*.json"))]
    for path, label, transport, cluster in suites:
        doc = load(path)
        solo_rows, workers = suite_rows(doc, "torch-1t"), int(doc["settings"]["workers"])
        chunk, n_cores = int(doc["settings"]["chunk_rows"]), int(doc["machine"]["cores"])
        for name, r in suite_rows(doc, "psdist-downpour").items():
            if name not in solo_rows:
                continue
            src = f"{path.name} ({transport})"
            solo = Workload(name, int(r["params"]), BATCH, BATCH / solo_rows[name]["samples_per_s"])
            add(f"{label} psdist-downpour {workers}×1, {name} (t_c: torch-1t alone)", src, solo,
                cluster.with_(workers=workers), r["samples_per_s"], rows_per_chunk=chunk, host_cores=n_cores)
            # the same run's own compute and read spans per minibatch: the cores shared by two workers
            # and a server compute slower than one process alone; the model then predicts the rest
            prof, minibatches = r["profile"], r["timed_samples"] / BATCH
            if prof.get("compute_share", 0.0) + prof.get("read_share", 0.0) > 1.0:
                continue  # spans longer than the training time × workers: the profile is not usable here
            in_run = Workload(name, solo.params, BATCH, (prof["compute_s"] + prof["read_s"]) / minibatches)
            add(f"{label} psdist-downpour {workers}×1, {name} (t_c: the run's compute+read)", src, in_run,
                cluster.with_(workers=workers), r["samples_per_s"], prof.get("ms_per_push_round_trip"),
                rows_per_chunk=chunk, host_cores=n_cores, in_run=True)
    # bench_gpu_like (docs/benchmarks.md, 2026-12-01): MLP 256-1024-512-512-2, batch 8, plain 1,923 samples/s,
    # chunks of 2048 rows; its step sleeps 1.0 + 1.5 ms (a "device" kernel: no host core busy), the rest is CPU
    gl = Workload("gpu_like_mlp", 256 * 1024 + 1024 + 1024 * 512 + 512 + 512 * 512 + 512 + 512 * 2 + 2, 8, 8 / 1923)
    src = "docs/benchmarks.md bench_gpu_like (2026-12-01, shm)"
    for w, ov, measured in ((1, False, 1016), (1, True, 1829), (2, False, 1910), (2, True, 1896)):
        add(f"bench_gpu_like {w} worker{'s' if w > 1 else ''}, overlap {'on' if ov else 'off'}", src, gl,
            cl["vm-shm"].with_(workers=w, overlap=ov), measured, rows_per_chunk=GPU_LIKE_CHUNK, host_cores=2,
            host_compute_s=gl.compute_s - GPU_LIKE_SLEEP_S)
    # bench_shards.py: the wide MLP at 1-2 workers x 1-2 shards; t_c from plain 1-thread PyTorch in the same
    # command, or the run's own compute+read per minibatch; vm-shm with the shard fan-out (S > 1)
    shards = newest_shards()
    doc = load(shards) if shards is not None else {"points": []}
    for p in doc["points"]:
        label = (f"bench_shards {doc['date']} {p['workers']} worker{'s' if p['workers'] > 1 else ''} × {p['shards']} "
                 f"shard{'s' if p['shards'] > 1 else ''}, "
                 f"overlap {'on' if p['overlap'] else 'off'}, {WIDE}")
        at = cl["vm-shm"].with_(workers=p["workers"], shards=p["shards"], overlap=p["overlap"])
        is_cal = (p["workers"], p["shards"], p["overlap"]) == (1, 1, False)  # chunk_calibration's run
        for t_ms, what, rt, in_run in ((doc["plain"]["step_ms"], "plain 1 thread, same command", None, False),
                                       (p["in_run_step_ms"], "the run's compute+read", p["ms_per_push_measured"], True)):
            add(f"{label} (t_c: {what})", f"{shards.name} (shm data plane)",  # type: ignore[union-attr]
                Workload(WIDE, int(doc["params"]), BATCH, t_ms / 1e3), at, p["measured"], rt,
                rows_per_chunk=chunk_cal["rows_per_chunk"], host_cores=int(doc.get("cores", 2)), in_run=in_run,
                calibration=is_cal)
    return out


def within(rows: list[dict[str, Any]], key: str, limit: float = 0.25) -> tuple[int, int]:
    """(points within ``limit``, points with that figure)."""
    have = [r[key] for r in rows if r.get(key) is not None]
    return sum(abs(e) <= limit for e in have), len(have)


def summary(tables: dict[str, list[Prediction]], cl: dict[str, Cluster],
            wls: dict[str, dict[str, Workload]]) -> list[dict[str, Any]]:
    """Efficiency at 8/32/64/256 workers, 1 shard and the shards recommended for 90 % at 64."""
    rows = []
    for net in NETS:
        for device, wl in [("H100", w) for w in wls["gpu-h100"].values()] + [("CPU 1 thread", w) for w in wls["cpu-vm"].values()]:
            for ov, wire in ((False, 4), (True, 4), (True, 2)):
                base = cl[net].with_(overlap=ov, wire_bytes=wire)
                s_rec, p_rec = recommend_shards(wl, base.with_(workers=64), 0.9)
                eff = {str(w): {str(s): predict(wl, base.with_(workers=w, shards=s)).efficiency for s in (1, s_rec)}
                       for w in (8, 32, 64, 256)}
                k_min = next((k for k in PUSH_EVERY if recommend_shards(
                    Workload(wl.name, wl.params, wl.batch_size, wl.compute_s, k), base.with_(workers=64), 0.9)[1].efficiency
                    >= 0.9), None)
                k_shards = None if k_min is None else recommend_shards(
                    Workload(wl.name, wl.params, wl.batch_size, wl.compute_s, k_min), base.with_(workers=64), 0.9)[0]
                rows.append({"cluster": net, "device": device, "workload": wl.name, "params": wl.params, "compute_ms": wl.compute_s * 1e3,
                             "overlap": ov, "wire": "bf16" if wire == 2 else "float32", "shards_for_90_at_64": s_rec,
                             "efficiency_at_64_with_them": p_rec.efficiency, "bottleneck_at_64": p_rec.bottleneck,
                             "efficiency": eff, "push_every_for_90_at_64": k_min, "shards_with_that_push_every": k_shards})
    return rows


#: Horovod's published benchmark (docs/benchmarks.rst of github.com/horovod/horovod): ResNet-101, batch 64 per
#: GPU, 16 Pascal GPUs: 1656.82 images/s in all with Horovod -> t_c <= 64 / (1656.82 / 16) s per step (an upper
#: bound: that figure includes Horovod's own communication). 44.5 M parameters: the commonly quoted count.
PUBLISHED = Workload("resnet101 (Horovod's P100 figure)", 44_500_000, 64, 64 / (1656.82 / 16))


def published(cl: dict[str, Cluster]) -> list[dict[str, Any]]:
    """The model on Horovod's ResNet-101 step at its 512 GPUs over 25 Gbit/s (Horovod measured 90 %)."""
    rows = []
    for ov in (False, True):
        for wire in (4, 2):
            base = cl["hpc-25GbE"].with_(workers=512, overlap=ov, wire_bytes=wire)
            for max_s in (16, 128):
                s, p = recommend_shards(PUBLISHED, base, 0.9, max_shards=max_s)
                rows.append({"workload": PUBLISHED.name, "workers": 512, "overlap": ov,
                             "wire": "bf16" if wire == 2 else "float32", "max_shards": max_s, "shards": s,
                             "efficiency": p.efficiency, "bottleneck": p.bottleneck,
                             "efficiency_1_shard": predict(PUBLISHED, base).efficiency})
    return rows


def shard_advice(cl: dict[str, Cluster]) -> list[dict[str, Any]]:
    """ps_shards for 90 % at 64 workers by model size, step time and NIC (overlap on, float32): at push_every=1,
    and the smallest push_every (with its shards) that reaches it."""
    rows = []
    for net in NETS:
        for params in (1e5, 1e6, 4e6, 2.5e7, 1e8):
            for step_ms in (2.0, 20.0, 100.0):
                base = cl[net].with_(workers=64, overlap=True)
                s, p = recommend_shards(Workload("m", int(params), BATCH, step_ms / 1e3), base, 0.9)
                k_s = next(((k, r[0]) for k in PUSH_EVERY
                            for r in [recommend_shards(Workload("m", int(params), BATCH, step_ms / 1e3, k), base, 0.9)]
                            if r[1].efficiency >= 0.9), (None, None))
                rows.append({"cluster": net, "params": int(params), "step_ms": step_ms, "shards": s,
                             "efficiency": p.efficiency, "met": p.efficiency >= 0.9,
                             "push_every": k_s[0], "shards_with_push_every": k_s[1]})
    return rows


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# psdist scaling model ({doc['date']})", "", f"`{doc['command']}` — model: `psdist.sim.perf`.", "",
             "## Calibration", "", "| fit | a (ms) | b (ns/param) | max residual | source |", "|---|---|---|---|---|"]
    for k, c in doc["calibration"].items():
        lines.append(f"| {k} | {c['a_s'] * 1e3:.3f} | {c['b_s'] * 1e9:.3f} | {c['max_rel_error']:.0%} | {c['source']} |")
    lines += ["", "## Clusters", "", "| cluster | link GB/s | shard NIC GB/s | fixed µs/push | server µs/push | "
              "server ns/param | shard fan-out µs/push + ns/param (S > 1) |", "|---|---|---|---|---|---|---|"]
    for k, c in doc["clusters"].items():
        lines.append(f"| {k} | {c['link_bytes_per_s'] / 1e9:.2f} | {c['nic_bytes_per_s'] / 1e9:.2f} | "
                     f"{c['push_fixed_s'] * 1e6:.0f} | {c['server_per_push_s'] * 1e6:.0f} | {c['server_per_param_s'] * 1e9:.3f} | "
                     f"{c['fanout_per_push_s'] * 1e6:.0f} + {c['fanout_per_param_s'] * 1e9:.3f} |")
    cc, co = doc["chunk_calibration"], doc["cores"]
    lines += ["", "## Per-chunk costs and core sharing", "",
              (f"Per-chunk overhead, from one designated run ({cc['point']}, {cc['source']}): idle (no span) "
               f"{cc['idle_share']:.1%} and read {cc['read_share']:.1%} of {cc['train_s']:.2f} s over {cc['chunks']} "
               f"chunks of {cc['rows_per_chunk']} rows = **{cc['idle_s'] * 1e3:.1f} ms idle + {cc['read_s'] * 1e3:.1f} "
               "ms read per chunk** (rows whose t_c is the run's compute+read get the idle part only).")
              if cc else "Per-chunk overhead: no bench_shards result stored (0).", "",
              f"Host cores: nominal {co['nominal']}; effective ({co['source']}): "
              + ", ".join(f"{n} {v:.2f}" for n, v in co["per_workload"].items())
              + f"; median {co['median']:.2f} for workloads not in the suite.", ""]
    checked = [c for c in doc["checks"] if not c["calibration"]]
    for key, what in (("error", "model as before"), ("error_chunk", "+ per-chunk"),
                      ("error_cores", "+ per-chunk + core sharing, nominal cores"),
                      ("error_eff", "+ per-chunk + core sharing, effective cores")):
        n, of = within(checked, key)
        n_all, of_all = within(doc["checks"], key)
        lines.append(f"- within 25 %, {what}: **{n} of {of}** checked points ({n_all} of {of_all} with the "
                     "calibration run's rows)")
    lines += ["", "## Checked against real runs (2-core VM)", "",
              "Errors = predicted / measured − 1. Columns: the model as before; + per-chunk costs; + core sharing "
              "on the nominal cores (f: the stretch of the CPU times); + core sharing on the effective cores (c, f); "
              "†: t_c is the run's own, which already carries the sharing: no sharing term (the per-chunk "
              "prediction). (cal.): the calibration run's rows, left out of the counts.", "",
              "| point | params | step ms | measured samples/s | predicted | error | + per-chunk | error | "
              "+ cores (nominal) | error | + cores (effective: c, f) | error | round trip ms measured / predicted | "
              "bottleneck (before → effective cores) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(c: dict[str, Any], key: str, extra: str = "") -> str:
        same = " †" if key != "chunk" and c["in_run"] else extra
        return f"{c[f'predicted_{key}']:,.0f}{same} | {c[f'error_{key}']:+.0%}"

    for c in doc["checks"]:
        rt = c["round_trip_ms_measured"]
        rts = f"{rt:.1f} / {c['round_trip_ms_predicted']:.1f}" if rt else f"— / {c['round_trip_ms_predicted']:.1f}"
        eff = "" if c["in_run"] else f" ({c['host_cores_eff']:.2f}, {c['stretch_eff']:.2f})"
        nom = "" if c["in_run"] else f" (f {c['stretch_cores']:.2f})"
        new = c["bottleneck_eff"]
        lines.append(f"| {c['point']}{' (cal.)' if c['calibration'] else ''} | {c['params']:,} | {c['compute_ms']:.2f} | "
                     f"{c['measured']:,.0f} | {c['predicted']:,.0f} | {c['error']:+.0%} | {cell(c, 'chunk')} | "
                     f"{cell(c, 'cores', nom)} | {cell(c, 'eff', eff)} | {rts} | {c['bottleneck']} → {new} |")
    lines += ["", "## Per-chunk overhead at H100 and CPU step times (left out of the scaling tables below)", "",
              "Rows per chunk at which this VM's per-chunk overhead "
              f"({(cc.get('idle_s', 0.0) + cc.get('read_s', 0.0)) * 1e3:.1f} ms) costs 5 % of a chunk's compute "
              "(each workload's batch, push_every 1):", "", "| device | workload | step ms | rows per chunk for ≤ 5 % |", "|---|---|---|---|"]
    for r in doc["chunk_advice"]:
        lines.append(f"| {r['device']} | {r['workload']} | {r['compute_ms']:.2f} | {r['rows_for_5pct']:,} |")
    lines += ["", "## Scaling efficiency, push_every=1 (cells: 1 shard / the shards recommended for 90 % at 64)", "",
              "| cluster | device | workload | params | step ms | overlap | wire | 8 | 32 | 64 | 256 | shards for 90 % at 64 | "
              "bottleneck at 64 | push_every (shards) for 90 % at 64 |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["summary"]:
        s = str(r["shards_for_90_at_64"])
        cells = " | ".join(f"{r['efficiency'][w]['1']:.0%} / {r['efficiency'][w][s]:.0%}" for w in ("8", "32", "64", "256"))
        met = "" if r["efficiency_at_64_with_them"] >= 0.9 else f" (best: {r['efficiency_at_64_with_them']:.0%})"
        lines.append(f"| {r['cluster']} | {r['device']} | {r['workload']} | {r['params']:,} | {r['compute_ms']:.2f} | "
                     f"{'on' if r['overlap'] else 'off'} | {r['wire']} | {cells} | {s}{met} | {r['bottleneck_at_64']} | "
                     + (f"{r['push_every_for_90_at_64']} ({r['shards_with_that_push_every']})"
                        if r["push_every_for_90_at_64"] else "> 32") + " |")
    lines += ["", "## Recommended ps_shards for 90 % at 64 workers (overlap on, float32)", "",
              "Cell: shards at push_every=1 (efficiency when 90 % is out of reach); then the smallest push_every "
              "that reaches 90 % with ≤ 16 shards, and those shards.", "",
              "| cluster | params | step 2 ms | step 20 ms | step 100 ms |", "|---|---|---|---|---|"]
    adv = doc["shard_advice"]
    for net in NETS:
        for params in sorted({a["params"] for a in adv}):
            advice: list[str] = []
            for step in (2.0, 20.0, 100.0):
                a = next(a for a in adv if a["cluster"] == net and a["params"] == params and a["step_ms"] == step)
                first: str = f"S={a['shards']}" if a["met"] else f"— ({a['efficiency']:.0%} at S=16)"
                second = "" if a["met"] else (f"; k={a['push_every']}: S={a['shards_with_push_every']}"
                                              if a["push_every"] else "; k > 32")
                advice.append(first + second)
            lines.append(f"| {net} | {params / 1e6:g} M | " + " | ".join(advice) + " |")
    lines += ["", "## Horovod's ResNet-101 step through the model (512 workers, hpc-25GbE)", "",
              "| overlap | wire | shards allowed | shards chosen | efficiency | 1 shard | bottleneck |",
              "|---|---|---|---|---|---|---|"]
    for r in doc["published"]:
        lines.append(f"| {'on' if r['overlap'] else 'off'} | {r['wire']} | ≤ {r['max_shards']} | {r['shards']} | "
                     f"{r['efficiency']:.0%} | {r['efficiency_1_shard']:.0%} | {r['bottleneck']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="psdist's performance model: scaling tables and checked points")
    ap.add_argument("--out", help="output stem (default benchmarks/results/scaling-<date>-model)")
    a = ap.parse_args(argv)
    date = dt.date.today().isoformat()
    stem = Path(a.out) if a.out else RESULTS / f"scaling-{date}-model"
    cal = calibrations()
    cl = clusters(cal)
    wls = workloads()
    chunk_cal, cores = chunk_calibration(newest_shards()), effective_cores_of()
    overhead = chunk_cal.get("idle_s", 0.0) + chunk_cal.get("read_s", 0.0)
    chunk_advice = [{"device": g, "workload": w.name, "compute_ms": w.compute_s * 1e3,
                     "rows_for_5pct": w.batch_size * math.ceil(overhead / (0.05 * w.compute_s))}
                    for g, ws in wls.items() for w in ws.values()]
    tables = {f"{net}/gpu-h100": predict_table(wls["gpu-h100"].values(), cl[net]) for net in NETS}
    tables["vm-shm/cpu-vm"] = predict_table(wls["cpu-vm"].values(), cl["vm-shm"], workers=(1, 2, 4, 8), shards=(1, 2))
    doc: dict[str, Any] = {
        "benchmark": "scaling-model", "date": date, "command": "python benchmarks/bench_scaling.py",
        "calibration": {k: {"a_s": c.a_s, "b_s": c.b_s, "points": c.points, "max_rel_error": c.max_rel_error(),
                            "source": c.source} for k, c in cal.items()},
        "clusters": {k: {f: getattr(c, f) for f in ("link_bytes_per_s", "nic_bytes_per_s", "push_fixed_s",
                                                     "server_per_param_s", "server_per_push_s", "fanout_per_push_s",
                                                     "fanout_per_param_s")} for k, c in cl.items()},
        "workloads": {g: {n: w.__dict__ for n, w in ws.items()} for g, ws in wls.items()},
        "chunk_calibration": chunk_cal, "cores": cores, "chunk_advice": chunk_advice,
        "checks": checks(cl, wls, chunk_cal, cores), "summary": summary(tables, cl, wls), "shard_advice": shard_advice(cl),
        "published": published(cl),
        "tables": {k: [p.as_dict() for p in v] for k, v in tables.items()},
    }
    text = markdown(doc)
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(strict(doc), separators=(",", ":"), allow_nan=False) + "\n")
    Path(f"{stem}.md").write_text(text)
    print(text)
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
