# Device check (issue 16): psdist with one GPU worker against plain PyTorch on the same GPU, and
# psdist's CPU scaling on the same machine. One command, time-boxed, for a lent GPU machine.
#
#   python3 benchmarks/bench_device.py                    # on the GPU machine: both parts, ~4-6 min
#   python3 benchmarks/bench_device.py --parts cpu        # only the CPU scaling
#   python3 benchmarks/bench_device.py --quick            # smoke run on 2 cores (< 2 min; numbers mean nothing)
#   python3 benchmarks/bench_device.py --quick --parts gpu --gpu-on-cpu   # the GPU part's code, run on CPU
#
# GPU part (when torch sees CUDA): the jet CNN (psdist.hep.models.jet_cnn, width 64, as
# bench_cuda.py) on toy jet images and the suite's communication-bound wide MLP on Gaussian blobs,
# each at precision "32" and "bf16-mixed": a plain PyTorch loop on cuda (torch.autocast for bf16)
# against psdist.Trainer(devices=[0], precision=...) — the embedded cluster's one GPU worker plus
# a CPU worker for the parameter server. Target: psdist >= 0.90x plain samples/s.
# CPU part: the wide MLP, psdist with 1, 2, 4, 8 training workers x 1 thread and one PS
# (devices="cpu") against plain PyTorch on 1 thread, same batch; worker counts above cores - 1
# are skipped with a note (the PS and the client need a core).
#
# Every run is a child process with a time limit (its process group is killed past it), so a hung
# cluster costs one row, not the machine's lease; the whole command keeps to --budget (default
# 450 s). Epoch 1 of every run is warm-up and never timed. The JSON is rewritten after every run
# ($OUT/bench_device.json when OUT is set, else benchmarks/results/device-<date>-<host>.json), a
# Markdown copy beside it; the suite's report (benchmarks/suite/report.py) renders the newest
# benchmarks/results/device-*.json. It never installs anything: it uses the torch it imports.
#
# JSON schema (kind "device-check", schema 1):
#   kind, schema, date (ISO), host, command, quick, complete, wall_s, budget_s,
#   machine: {cpu, cores, memory_gib, platform, python, torch, torch_cuda, cudnn, cuda_available,
#             gpu, gpu_memory_gib, gpu_capability, versions{psdist, distributed, zarr, numpy},
#             api{devices, precision}: whether this psdist has those settings, loadavg_start, loadavg_end}
#   settings: {seed, momentum, warmup_epochs, gpu{...sizes, lr per workload}, cpu{...sizes}}
#   gpu: {status: ok|skipped, reason, device, target_ratio, rows: [{workload, precision, plain: RUN,
#         psdist: RUN, ratio: psdist/plain samples/s | null, target_met: bool | null}]}
#   cpu: {status, reason, workload, batch_size, plain: RUN, rows: [{workers, ...RUN, speedup (vs plain),
#         efficiency (speedup / workers), vs_psdist_1}], skipped_workers: [{workers, reason}]}
#   RUN: {status: ok|error|timeout|skipped, reason, samples_per_s, timed_samples, timed_s, val_accuracy,
#         epochs: [per-epoch records], stage_wall_s, ...}; psdist runs add fit_s, overlap,
#         worker_devices, compute_share, comm_share, read_share, ms_per_push, trainer_kwargs.

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import json
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without psdist installed

from benchmarks.suite import report  # noqa: E402
from benchmarks.suite.common import finite, write_json  # noqa: E402

SCHEMA = 1
SEED = 0
MOMENTUM = 0.9
WARMUP_EPOCHS = 1
TARGET_RATIO = 0.90
GPU_WORKLOADS = ("jet_cnn", "wide_mlp")
PRECISIONS = ("32", "bf16-mixed")
CPU_WORKERS = (1, 2, 4, 8)
CPU_WORKLOAD = "wide_mlp"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
GPU_SHARE = 0.6  # of the budget, when both parts run: a stuck GPU part must leave the CPU part its time
RESERVE_S = 5.0  # kept back from every stage's limit for killing it and writing the results


@dataclass(frozen=True)
class Size:
    """Rows, chunks, batch and epochs of both parts, and the time limits."""

    gpu_rows: int
    gpu_val: int
    gpu_chunk: int
    gpu_batch: int
    gpu_epochs: int  # timed, after the warm-up epoch
    jet_width: int
    cpu_rows: int
    cpu_val: int
    cpu_chunk: int
    cpu_batch: int
    cpu_epochs: int
    budget_s: float
    plain_timeout_s: float
    psdist_timeout_s: float
    min_stage_s: float  # a stage is not started with less time than this left


# H200 estimate (from the H100's bench_cuda and suite figures, the slow Dask-actor path): jet CNN
# plain ~200k samples/s, psdist >= 25k; wide MLP psdist >= 15k at batch 512: each psdist run
# <= 20 s of training + ~15 s of cluster and CUDA start, each plain run ~10 s. CPU, measured on
# the 2-core VM at this size: plain 1 thread 5.9k samples/s (20 s), psdist 1 worker 2.6k (53 s
# with the PS and client on the same 2 cores); fewer per run with more workers on 16 cores.
FULL = Size(gpu_rows=65536, gpu_val=8192, gpu_chunk=8192, gpu_batch=512, gpu_epochs=3, jet_width=64,
            cpu_rows=32768, cpu_val=2048, cpu_chunk=512, cpu_batch=128, cpu_epochs=2,
            budget_s=450, plain_timeout_s=90, psdist_timeout_s=150, min_stage_s=20)
QUICK = Size(gpu_rows=1024, gpu_val=256, gpu_chunk=256, gpu_batch=64, gpu_epochs=1, jet_width=8,
             cpu_rows=1024, cpu_val=256, cpu_chunk=256, cpu_batch=64, cpu_epochs=1,
             budget_s=240, plain_timeout_s=90, psdist_timeout_s=120, min_stage_s=5)


# ---------------------------------------------------------------------------- child: one run
def model_fn(workload: str, jet_width: int) -> Callable[[], Any]:
    """Picklable by reference (the Dask workers build the model from it)."""
    from benchmarks.suite.workloads import WORKLOADS
    from psdist.hep.models import jet_cnn

    if workload == "jet_cnn":
        return functools.partial(jet_cnn, width=jet_width)
    return WORKLOADS[workload].model


def _autocast(device: Any, precision: str) -> Any:
    import torch

    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _plain_epoch(model: Any, opt: Any, x: Any, y: Any, spec: dict[str, Any], gen: Any) -> dict[str, Any]:
    """One epoch: a seeded shuffle on the device, then forward (autocast), backward, SGD step per batch."""
    import torch
    import torch.nn.functional as F

    from psdist.replica.loop import batch_bounds

    dev = x.device
    model.train()
    _sync(dev)
    t0 = time.perf_counter()
    perm = torch.randperm(len(x), device=dev, generator=gen)  # the shuffle counts, as psdist's does
    xs, ys = x[perm], y[perm]
    loss_sum = torch.zeros((), device=dev)  # summed on the device: no host sync per batch
    for lo, hi in batch_bounds(len(x), spec["batch_size"]):
        opt.zero_grad(set_to_none=False)
        with _autocast(dev, spec["precision"]):
            loss = F.cross_entropy(model(xs[lo:hi]), ys[lo:hi])
        loss.backward()
        opt.step()
        loss_sum += loss.detach().float() * (hi - lo)
    _sync(dev)
    train_s = time.perf_counter() - t0
    return {"samples": len(x), "train_s": train_s, "samples_per_s": len(x) / train_s,
            "train_loss": float(loss_sum) / len(x)}


def _plain_accuracy(model: Any, xv: Any, yv: Any, spec: dict[str, Any]) -> float:
    import numpy as np
    import torch

    from psdist.metrics import accuracy

    model.eval()
    outs = []
    with torch.no_grad(), _autocast(xv.device, spec["precision"]):
        for lo in range(0, len(xv), spec["batch_size"]):
            outs.append(model(xv[lo : lo + spec["batch_size"]]).float().cpu().numpy())
    return float(accuracy(yv, np.concatenate(outs)))


def run_plain(spec: dict[str, Any]) -> dict[str, Any]:
    """Plain single-process PyTorch: the training rows on the device, shuffle + SGD per epoch."""
    import torch

    from benchmarks.suite.workloads import load_arrays

    dev = torch.device(spec["device"])
    if dev.type == "cpu":
        torch.set_num_threads(spec["threads"])
    t0 = time.perf_counter()
    xn, yn, xvn, yv = load_arrays(spec["path"], spec["workload"])
    x, y, xvt = (torch.from_numpy(a).to(dev) for a in (xn, yn, xvn))
    load_s = time.perf_counter() - t0
    torch.manual_seed(SEED)
    model = model_fn(spec["workload"], spec["jet_width"])().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=MOMENTUM)
    gen = torch.Generator(device=dev).manual_seed(SEED)
    epochs = [{"epoch": e, **_plain_epoch(model, opt, x, y, spec, gen)}
              for e in range(1, WARMUP_EPOCHS + spec["epochs"] + 1)]
    timed = epochs[WARMUP_EPOCHS:]
    samples, seconds = sum(e["samples"] for e in timed), sum(e["train_s"] for e in timed)
    return {"samples_per_s": samples / seconds, "timed_samples": samples, "timed_s": seconds,
            "val_accuracy": _plain_accuracy(model, xvt, yv, spec), "load_s": load_s, "device": str(dev),
            "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters()),
            "epochs": epochs}


def _psdist_summary(trainer: Any, history: Any, fit_s: float) -> dict[str, Any]:
    """samples/s of the timed epochs from the history (training time; validation excluded)."""
    records = [dict(r, train_s=r["samples"] / r["samples_per_s"]) for r in history.records]
    timed = records[WARMUP_EPOCHS:]
    samples, seconds = sum(r["samples"] for r in timed), sum(r["train_s"] for r in timed)
    workers = max(1, int(timed[-1].get("training_workers", 1)))
    budget = seconds * workers  # shares of the training workers' time
    pushes = sum(r["pushes_applied"] + r["pushes_rejected"] for r in timed)
    infos = [w.get("info", {}) for w in trainer.server_metrics.get("workers", {}).values()]
    return {
        "samples_per_s": samples / seconds, "timed_samples": samples, "timed_s": seconds, "fit_s": fit_s,
        "val_accuracy": history.last.get("val_accuracy"), "overlap": timed[-1].get("overlap"),
        "training_workers": workers, "staleness_mean": timed[-1].get("staleness_mean"),
        "compute_share": sum(r["compute_s"] for r in timed) / budget,
        "comm_share": sum(r["comm_s"] for r in timed) / budget,
        "read_share": sum(r["read_s"] for r in timed) / budget,
        "ms_per_push": 1000 * sum(r["comm_s"] for r in timed) / max(pushes, 1),
        "worker_devices": sorted({str(i.get("device")) for i in infos}),
        "worker_info": infos, "epochs": records,
    }


def run_psdist(spec: dict[str, Any]) -> dict[str, Any]:
    """One Trainer.fit on psdist's own embedded cluster (started and closed by the fit)."""
    import torch.nn.functional as F

    import psdist

    trainer = psdist.Trainer(
        model_fn(spec["workload"], spec["jet_width"]), F.cross_entropy, data=psdist.ZarrDataset(spec["path"]),
        optimizer=psdist.optim.SGD(lr=spec["lr"], momentum=MOMENTUM), batch_size=spec["batch_size"],
        seed=SEED, timeout=spec["ps_timeout_s"],  # a hung server call fails the run, not the lease
        **spec["trainer_kwargs"],
    )
    t0 = time.perf_counter()
    history = trainer.fit(epochs=WARMUP_EPOCHS + spec["epochs"])
    out = _psdist_summary(trainer, history, time.perf_counter() - t0)
    return {**out, "trainer_kwargs": spec["trainer_kwargs"]}


def child(spec_path: str) -> int:
    """Run one stage from its spec file and write its record to spec["out"]."""
    spec = json.loads(Path(spec_path).read_text())
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    try:
        row = {"status": "ok", **(run_plain(spec) if spec["kind"] == "plain" else run_psdist(spec))}
    except Exception as exc:  # the record says why; the driver carries on with the next stage
        traceback.print_exc()
        row = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:800]}
    write_json(spec["out"], row)
    return 0 if row["status"] == "ok" else 1


# ---------------------------------------------------------------------------- driver: stages
class Clock:
    """A deadline; stages get what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def sub(self, seconds: float) -> Clock:
        return Clock(min(seconds, self.left()))


def child_env(threads: int | None) -> dict[str, str]:
    """The caller's environment without allocator/thread overrides; psdist's checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in THREAD_VARS}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if threads:  # plain CPU runs: as Dask's nanny pins a psdist worker's libraries to its threads
        env.update(dict.fromkeys(THREAD_VARS, str(threads)))
    return env


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End a timed-out stage's process group (the child and its Dask workers): TERM, then KILL.

    The group is the child's own (start_new_session), so this ends nothing else.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # what ignored TERM, or workers the child left
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def run_stage(name: str, spec: dict[str, Any], timeout: float, clock: Clock, size: Size, work: Path) -> dict[str, Any]:
    """Run one stage in its own process group, within its timeout and what is left of the clock."""
    limit = min(timeout, clock.left() - RESERVE_S)
    if limit < size.min_stage_s:
        return {"status": "skipped", "reason": f"time budget spent ({clock.seconds:.0f} s for this part)"}
    paths = {k: work / f"{name}.{k}" for k in ("spec.json", "out.json", "log")}
    paths["spec.json"].write_text(json.dumps({**spec, "out": str(paths["out.json"])}))
    t0 = time.perf_counter()
    with open(paths["log"], "wb") as log:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(paths["spec.json"])],
                                stdout=log, stderr=subprocess.STDOUT, env=child_env(spec.get("threads")),
                                cwd=ROOT, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            rc = None
            _kill_group(proc)
    row: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        row = json.loads(paths["out.json"].read_text())
    if rc is None and row.get("status") != "ok":
        row = {"status": "timeout", "reason": f"stopped at its time limit ({limit:.0f} s)",
               "log_tail": _tail(paths["log"])}
    elif rc is None:
        row["note"] = f"killed at its {limit:.0f} s limit after writing its record (shutting down)"
    elif not row:
        row = {"status": "error", "reason": f"exit status {rc} without a record (see log_tail)",
               "log_tail": _tail(paths["log"])}
    elif row["status"] != "ok":
        row["log_tail"] = _tail(paths["log"])
    row["stage_wall_s"] = time.perf_counter() - t0
    return row


def _line(label: str, row: dict[str, Any]) -> None:
    if row.get("status") == "ok":
        print(f"  {label:<34} {row['samples_per_s']:>10.0f} samples/s  val acc {row.get('val_accuracy') or 0:.3f}"
              f"  ({row['stage_wall_s']:.0f} s)", flush=True)
    else:
        print(f"  {label:<34} {row.get('status')}: {str(row.get('reason'))[:300]}", flush=True)


# ---------------------------------------------------------------------------- the GPU part
def psdist_api() -> dict[str, bool]:
    """Whether this psdist has the devices= and precision= settings (issue 16)."""
    from psdist.settings import specs

    names = set(specs())
    return {"devices": "devices" in names, "precision": "precision" in names}


def gpu_kwargs(api: dict[str, bool], precision: str, on_cpu: bool) -> tuple[dict[str, Any] | None, str | None]:
    """Trainer settings of a psdist GPU-part run, or (None, why it cannot run with this psdist)."""
    if not api["devices"] and not on_cpu:
        return None, "this psdist has no devices= setting (one GPU worker needs devices=[0])"
    if not api["precision"] and precision != "32":
        return None, "this psdist has no precision= setting"
    kw: dict[str, Any] = {"workers": 1, "threads_per_worker": 1} if on_cpu else {"devices": [0]}
    if on_cpu and api["devices"]:
        kw["devices"] = "cpu"
    if api["precision"]:
        kw["precision"] = precision
    return kw, None


def gpu_part(args: argparse.Namespace, doc: dict[str, Any], save: Callable[[], None], clock: Clock,
             work: Path) -> None:
    from benchmarks.suite.workloads import WORKLOADS, write_all

    size: Size = args.size
    device = "cpu" if args.gpu_on_cpu else "cuda"
    part: dict[str, Any] = {"status": "ok", "reason": None, "device": device, "target_ratio": TARGET_RATIO,
                            "rows": []}
    doc["gpu"] = part
    t0 = time.perf_counter()
    paths = write_all(str(work / "gpu"), dict.fromkeys(args.workloads, (size.gpu_rows, size.gpu_val)),
                      size.gpu_chunk, SEED, list(args.workloads))
    print(f"GPU part on {device}: data written in {time.perf_counter() - t0:.1f} s", flush=True)
    base = {"device": device, "batch_size": size.gpu_batch, "epochs": size.gpu_epochs, "jet_width": size.jet_width,
            "threads": 1 if args.gpu_on_cpu else None, "ps_timeout_s": args.ps_timeout}
    for precision in args.precisions:  # fp32 of both workloads first: the main comparison
        for wl in args.workloads:
            spec = {**base, "workload": wl, "path": paths[wl], "precision": precision, "lr": WORKLOADS[wl].lr}
            row: dict[str, Any] = {"workload": wl, "precision": precision}
            part["rows"].append(row)
            row["plain"] = run_stage(f"gpu-plain-{wl}-{precision}", {**spec, "kind": "plain"}, size.plain_timeout_s,
                                     clock, size, work)
            _line(f"{wl} {precision} plain", row["plain"])
            save()
            kw, why = gpu_kwargs(doc["machine"]["api"], precision, args.gpu_on_cpu)
            row["psdist"] = ({"status": "skipped", "reason": why} if kw is None else run_stage(
                f"gpu-psdist-{wl}-{precision}", {**spec, "kind": "psdist", "trainer_kwargs": kw},
                size.psdist_timeout_s, clock, size, work))
            _gpu_verdict(row, device)
            _line(f"{wl} {precision} psdist (1 worker)", row["psdist"])
            save()


def _gpu_verdict(row: dict[str, Any], device: str) -> None:
    p, q = row["plain"], row["psdist"]
    ok = p.get("status") == "ok" and q.get("status") == "ok"
    row["ratio"] = q["samples_per_s"] / p["samples_per_s"] if ok else None
    row["target_met"] = row["ratio"] >= TARGET_RATIO if ok else None
    if ok and not any(d.startswith(device) for d in q.get("worker_devices", [])):
        q["warning"] = f"the psdist worker trained on {q.get('worker_devices')}, not {device}"
        print(f"  WARNING: {q['warning']}", flush=True)


# ---------------------------------------------------------------------------- the CPU part
def cpu_workers(requested: list[int], cores: int, quick: bool) -> tuple[list[int], list[dict[str, Any]]]:
    """Worker counts to run; above cores - 1 (the PS and the client need a core) skipped with a note.

    --quick allows up to ``cores``: its numbers mean nothing, and 2 workers on 2 cores still
    check that several workers run.
    """
    limit = cores if quick else cores - 1
    run = [n for n in requested if n <= max(1, limit)]
    why = f"more than {'the' if quick else 'cores - 1 ='} {max(1, limit)} core(s) of this machine ({cores} cores)"
    return run, [{"workers": n, "reason": why} for n in requested if n not in run]


def cpu_part(args: argparse.Namespace, doc: dict[str, Any], save: Callable[[], None], clock: Clock,
             work: Path) -> None:
    from benchmarks.suite.workloads import WORKLOADS, write_all

    size: Size = args.size
    counts, skipped = cpu_workers(args.workers, os.cpu_count() or 1, args.quick)
    part: dict[str, Any] = {"status": "ok", "reason": None, "workload": CPU_WORKLOAD, "batch_size": size.cpu_batch,
                            "plain": None, "rows": [], "skipped_workers": skipped}
    doc["cpu"] = part
    path = write_all(str(work / "cpu"), {CPU_WORKLOAD: (size.cpu_rows, size.cpu_val)}, size.cpu_chunk, SEED,
                     [CPU_WORKLOAD])[CPU_WORKLOAD]
    print(f"CPU part: {CPU_WORKLOAD}, psdist workers {counts}" +
          (f" (skipped {[s['workers'] for s in skipped]})" if skipped else ""), flush=True)
    spec = {"workload": CPU_WORKLOAD, "path": path, "device": "cpu", "precision": "32", "batch_size": size.cpu_batch,
            "epochs": size.cpu_epochs, "jet_width": size.jet_width, "lr": WORKLOADS[CPU_WORKLOAD].lr,
            "ps_timeout_s": args.ps_timeout}
    part["plain"] = run_stage("cpu-plain-1t", {**spec, "kind": "plain", "threads": 1}, size.plain_timeout_s,
                              clock, size, work)
    _line("plain 1 thread", part["plain"])
    save()
    device_kw = {"devices": "cpu"} if doc["machine"]["api"]["devices"] else {}  # "auto" picks GPUs there
    for n in counts:
        kw = {**device_kw, "workers": n, "threads_per_worker": 1}
        row = {"workers": n, **run_stage(f"cpu-psdist-{n}", {**spec, "kind": "psdist", "trainer_kwargs": kw},
                                         size.psdist_timeout_s, clock, size, work)}
        part["rows"].append(row)
        _cpu_scaling(part)
        _line(f"psdist {n} worker(s) x 1 thread", row)
        save()


def _cpu_scaling(part: dict[str, Any]) -> None:
    """Speedup against plain 1 thread, efficiency = speedup / workers, and against psdist's 1 worker."""
    plain = part["plain"] or {}
    base = plain.get("samples_per_s") if plain.get("status") == "ok" else None
    one = next((r["samples_per_s"] for r in part["rows"] if r["workers"] == 1 and r["status"] == "ok"), None)
    for r in part["rows"]:
        v = r.get("samples_per_s") if r.get("status") == "ok" else None
        r["speedup"] = v / base if v and base else None
        r["efficiency"] = r["speedup"] / r["workers"] if r["speedup"] else None
        r["vs_psdist_1"] = v / one if v and one else None


# ---------------------------------------------------------------------------- driver
def machine(api: dict[str, bool]) -> dict[str, Any]:
    import numpy as np
    import torch

    out: dict[str, Any] = {
        "cpu": _cpu_name(), "cores": os.cpu_count(), "memory_gib": _memory_gib(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(), "gpu": None, "api": api,
        "versions": {"numpy": np.__version__, **_versions("psdist", "distributed", "zarr")},
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
    }
    if out["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        out.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30,
                   gpu_capability=f"{props.major}.{props.minor}", gpus=torch.cuda.device_count())
    return out


def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), platform.processor())
    return platform.processor() or "?"


def _memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return None


def _versions(*mods: str) -> dict[str, str]:
    out = {}
    for mod in mods:
        try:
            out[mod] = str(__import__(mod).__version__)
        except Exception:  # recorded, not fatal: the stage that needs it fails with the reason
            out[mod] = "not importable"
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Device check: psdist vs plain PyTorch on one GPU, and CPU scaling.")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs, numbers mean nothing")
    p.add_argument("--parts", default="gpu,cpu", help="gpu, cpu or gpu,cpu (default)")
    p.add_argument("--workloads", default=",".join(GPU_WORKLOADS), help="GPU part's workloads (default both)")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="GPU part's precisions (default 32,bf16-mixed)")
    p.add_argument("--workers", default=",".join(map(str, CPU_WORKERS)), help="CPU part's psdist worker counts")
    p.add_argument("--gpu-on-cpu", action="store_true",
                   help="run the GPU part's code on CPU (smoke test without a GPU; psdist with devices='cpu')")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole command (default 450; quick 240)")
    p.add_argument("--ps-timeout", type=float, default=60.0, help="seconds a parameter-server call may take")
    p.add_argument("--out", default=None,
                   help="JSON file (default $OUT/bench_device.json when OUT is set, else "
                        "benchmarks/results/device-<date>-<host>.json); a .md copy goes beside it")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one stage
    a = p.parse_args(argv)
    a.parts = _choices(p, "--parts", a.parts, ("gpu", "cpu"))
    a.workloads = _choices(p, "--workloads", a.workloads, GPU_WORKLOADS)
    a.precisions = _choices(p, "--precisions", a.precisions, PRECISIONS)
    try:
        a.workers = sorted({int(v) for v in a.workers.split(",") if v.strip()})
    except ValueError:
        p.error(f"--workers {a.workers!r}: give worker counts, e.g. 1,2,4,8")
    a.size = QUICK if a.quick else FULL
    a.budget = a.budget or a.size.budget_s
    if a.out is None:
        a.out = (os.path.join(os.environ["OUT"], "bench_device.json") if os.environ.get("OUT") else
                 str(HERE / "results" / f"device-{_dt.date.today():%Y-%m-%d}-{socket.gethostname()}.json"))
    return a


def _choices(p: argparse.ArgumentParser, flag: str, value: str, allowed: tuple[str, ...]) -> list[str]:
    got = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in got if v not in allowed]
    if bad or not got:
        p.error(f"{flag} {value!r}: choose from {','.join(allowed)}")
    return [v for v in allowed if v in got]  # the script's order, whatever the flag's


def new_doc(args: argparse.Namespace, api: dict[str, bool]) -> dict[str, Any]:
    size: Size = args.size
    return {
        "kind": report.DEVICE_CHECK, "schema": SCHEMA, "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "host": socket.gethostname(), "command": " ".join([Path(sys.executable).name, "benchmarks/bench_device.py", *sys.argv[1:]]),
        "quick": args.quick, "complete": False, "wall_s": None, "budget_s": args.budget, "machine": machine(api),
        "settings": {"seed": SEED, "momentum": MOMENTUM, "warmup_epochs": WARMUP_EPOCHS, "sizes": asdict(size),
                     "gpu_workloads": args.workloads, "precisions": args.precisions, "cpu_workers": args.workers,
                     "gpu_on_cpu": args.gpu_on_cpu, "ps_timeout_s": args.ps_timeout},
        "gpu": {"status": "skipped", "reason": "not asked for (--parts)"},
        "cpu": {"status": "skipped", "reason": "not asked for (--parts)"},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args.child)
    started = time.perf_counter()
    clock = Clock(args.budget)
    logging.basicConfig(level=logging.WARNING)
    doc = new_doc(args, psdist_api())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        doc["wall_s"] = time.perf_counter() - started
        write_json(out, doc)

    m = doc["machine"]
    print(f"bench_device: {m['gpu'] or 'no GPU'}, {m['cores']} cores, torch {m['torch']}, psdist settings "
          f"{m['api']}, budget {args.budget:.0f} s -> {out}", flush=True)
    save()
    with tempfile.TemporaryDirectory(prefix="psdist-bench-device-") as tmp:
        if "gpu" in args.parts:
            _gpu_or_skip(args, doc, save, clock, Path(tmp))
        if "cpu" in args.parts:
            cpu_part(args, doc, save, clock, Path(tmp))
    doc["complete"] = True
    m["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    save()
    md = report.device_markdown(finite(doc), out.name)
    out.with_suffix(".md").write_text(md + "\n")
    print("\n" + md + f"\n\nresults: {out}", flush=True)
    return 0


def _gpu_or_skip(args: argparse.Namespace, doc: dict[str, Any], save: Callable[[], None], clock: Clock,
                 work: Path) -> None:
    if not (doc["machine"]["cuda_available"] or args.gpu_on_cpu):
        doc["gpu"] = {"status": "skipped", "reason": f"torch.cuda.is_available() is False (torch "
                      f"{doc['machine']['torch']}, CUDA build {doc['machine']['torch_cuda']})"}
        print(f"GPU part skipped: {doc['gpu']['reason']}", flush=True)
        save()
        return
    share = GPU_SHARE if "cpu" in args.parts else 1.0
    gpu_part(args, doc, save, clock.sub(args.budget * share), work)


if __name__ == "__main__":
    sys.exit(main())
