# Training throughput: plain PyTorch vs psdist on the same small CNN and the same Zarr data.
#
#   python benchmarks/bench_throughput.py --size small        # default, a few minutes
#   python benchmarks/bench_throughput.py --size tiny         # CI smoke run (2 runs at a time, ~75 s of CPU:
#                                                             # < 60 s on 2 idle cores); numbers not meaningful
#   python benchmarks/bench_throughput.py --size full         # longer, median of 3 repeats
#
# Every configuration runs in a fresh subprocess (clean thread settings and malloc state); the
# script re-invokes itself for that, e.g.
#
#   python benchmarks/bench_throughput.py --plain --threads 1 --data /tmp/jets.zarr --epochs 3
#   python benchmarks/bench_throughput.py --psdist --workers 2 --data /tmp/jets.zarr --epochs 3
#
# which print one JSON object on their last stdout line. Results (table on stdout, JSON in
# benchmarks/results/throughput-<date>-<host>.json) and how to read them: benchmarks/README.md.
# Target: psdist >= 0.90 x plain PyTorch, both for 1 worker x 1 thread vs 1 thread and for
# 2 workers x 1 thread vs 2 threads; and on a cluster the user made (LocalCluster(n_workers=2,
# threads_per_worker=1) passed as client=, the parameter server sharing a worker) >= 0.85 of the
# 2-core ceiling: two independent 1-thread plain loops running at the same time.
#
#   python benchmarks/bench_throughput.py --configs plain-1t-pair,psdist-user-2x1   # that check alone

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET = 0.90
#: psdist on a user's 2-worker cluster against two independent 1-thread plain loops.
USER_TARGET = 0.85

# Problem sizes. Every size uses the same model, batch size and optimizer; only the amount of
# data, epochs (the first is warm-up, not timed) and repeats (median taken) change.
SIZES: dict[str, dict[str, int]] = {
    # a few hundred samples per config: checks that everything runs, not how fast
    # and two runs at a time (jobs=2) to stay under a minute
    "tiny": {"jets": 512, "val_jets": 128, "chunk_rows": 256, "epochs": 2, "repeats": 1, "jobs": 2,
             "timeout": 120},
    "small": {"jets": 16384, "val_jets": 1024, "chunk_rows": 1024, "epochs": 3, "repeats": 1, "jobs": 1,
              "timeout": 900},
    "full": {"jets": 32768, "val_jets": 2048, "chunk_rows": 1024, "epochs": 4, "repeats": 3, "jobs": 1,
             "timeout": 1800},
}

BATCH_SIZE = 128
LR = 0.05
MOMENTUM = 0.9
SEED = 0

# Variables that change threading or malloc behaviour: never inherited by the measured runs.
_SCRUB = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    name: str
    label: str
    kind: str  # "plain" or "psdist"
    threads: int = 1  # plain: torch threads; psdist: threads per worker
    workers: int = 0  # psdist data workers (plus one for the parameter server)
    malloc_fix: bool = True
    copies: int = 1  # plain: independent processes run at once (their samples/s add up)
    user_cluster: bool = False  # psdist: a LocalCluster made by the user, passed as client=

    def argv(self) -> list[str]:
        if self.kind == "plain":
            return ["--plain", "--threads", str(self.threads)]
        out = ["--psdist", "--workers", str(self.workers), "--threads", str(self.threads)]
        if self.user_cluster:
            out.append("--user-cluster")
        return out if self.malloc_fix else [*out, "--no-malloc-fix"]


CONFIGS = (
    Config("plain-1t", "plain torch, 1 thread", "plain", threads=1),
    Config("plain-2t", "plain torch, 2 threads", "plain", threads=2),
    Config("psdist-1x1", "psdist 1 worker x 1 thread", "psdist", workers=1),
    Config("psdist-2x1", "psdist 2 workers x 1 thread", "psdist", workers=2),
    Config("psdist-1x1-nofix", "psdist 1x1, malloc_fix=False", "psdist", workers=1, malloc_fix=False),
    Config("psdist-2x1-nofix", "psdist 2x1, malloc_fix=False", "psdist", workers=2, malloc_fix=False),
    Config("plain-1t-pair", "2 plain 1-thread loops at once", "plain", threads=1, copies=2),
    Config("psdist-user-2x1", "psdist on user LocalCluster(2, 1)", "psdist", workers=2, user_cluster=True),
)

# (name, numerator, denominator, compared with the target?)
RATIOS = (
    ("psdist 1x1 / plain 1 thread", "psdist-1x1", "plain-1t", True),
    ("psdist 2x1 / plain 2 threads", "psdist-2x1", "plain-2t", True),
    ("psdist 1x1 no malloc fix / plain 1 thread", "psdist-1x1-nofix", "plain-1t", False),
    ("psdist 2x1 no malloc fix / plain 2 threads", "psdist-2x1-nofix", "plain-2t", False),
    ("malloc fix speed-up 1x1 (fix / no fix)", "psdist-1x1", "psdist-1x1-nofix", False),
    ("malloc fix speed-up 2x1 (fix / no fix)", "psdist-2x1", "psdist-2x1-nofix", False),
    ("plain 2 threads / 1 thread (scaling)", "plain-2t", "plain-1t", False),
    ("psdist 2x1 / 1x1 (scaling)", "psdist-2x1", "psdist-1x1", False),
    ("psdist user 2x1 / 2 plain 1-thread loops", "psdist-user-2x1", "plain-1t-pair", USER_TARGET),
)


# ---------------------------------------------------------------------------- measured runs
def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    # as psdist.replica.loop.batch_bounds: a 1-row tail joins the previous batch (BatchNorm needs 2 rows)
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2] = (bounds[-2][0], n)
        bounds.pop()
    return bounds


def run_plain(data: str, threads: int, epochs: int, batch_size: int) -> dict[str, Any]:
    """Plain PyTorch loop over the whole training set, loaded from the Zarr store to memory."""
    import numpy as np
    import torch
    import zarr

    from psdist.hep.models import jet_cnn

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    g = zarr.open_group(data, mode="r")
    x = torch.from_numpy(np.ascontiguousarray(g["x"][:]))
    y = torch.from_numpy(np.asarray(g["y"][:]).astype(np.int64))
    load_s = time.perf_counter() - t0

    torch.manual_seed(SEED)
    model = jet_cnn()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.functional.cross_entropy
    gen = torch.Generator().manual_seed(SEED)
    bounds = _batches(len(x), batch_size)

    records = []
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(x), generator=gen)  # the shuffle is part of the epoch's time
        xs, ys = x[perm], y[perm]
        loss_sum = 0.0
        for lo, hi in bounds:
            opt.zero_grad()
            loss = loss_fn(model(xs[lo:hi]), ys[lo:hi])
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * (hi - lo)
        train_s = time.perf_counter() - t0
        records.append({"epoch": epoch, "samples": len(x), "train_s": train_s,
                        "samples_per_s": len(x) / train_s, "train_loss": loss_sum / len(x)})
    timed = records[1:]
    samples = sum(r["samples"] for r in timed)
    seconds = sum(r["train_s"] for r in timed)
    return {
        "kind": "plain",
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "params": params,
        "load_s": load_s,
        "samples_per_s": samples / seconds,
        "timed_samples": samples,
        "timed_s": seconds,
        "epochs": records,
    }


def run_psdist(data: str, workers: int, threads: int, epochs: int, batch_size: int,
               malloc_fix: bool, user_cluster: bool = False) -> dict[str, Any]:
    """psdist on an embedded LocalCluster (or one made here as a user would, ``user_cluster``);
    throughput from the history after epoch 1."""


    with contextlib.ExitStack() as stack:
        client = None
        if user_cluster:  # exactly what a user writes: every worker should train
            from distributed import Client, LocalCluster

            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=threads,
                                                       processes=True, dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        return _run_psdist(data, workers, threads, epochs, batch_size, malloc_fix, client)


def _run_psdist(data: str, workers: int, threads: int, epochs: int, batch_size: int,
                malloc_fix: bool, client: Any) -> dict[str, Any]:
    import torch

    import psdist
    from psdist.hep.models import jet_cnn

    trainer = psdist.Trainer(
        jet_cnn,
        torch.nn.functional.cross_entropy,
        data=psdist.ZarrDataset(data),
        optimizer=psdist.optim.SGD(lr=LR, momentum=MOMENTUM),
        batch_size=batch_size,
        workers=workers,
        threads_per_worker=threads,
        seed=SEED,
        malloc_fix=malloc_fix,
        client=client,
    )
    t0 = time.perf_counter()
    history = trainer.fit(epochs=epochs)
    fit_s = time.perf_counter() - t0

    keep = ("epoch", "samples", "samples_per_s", "train_loss", "val_loss", "compute_s", "comm_s",
            "wall_s", "pushes_applied", "pushes_rejected", "staleness_mean", "staleness_max", "chunks")
    records = []
    for r in history.records:
        rec = {k: r[k] for k in keep if k in r}
        rec["train_s"] = r["samples"] / r["samples_per_s"]
        records.append(rec)
    timed = records[1:]  # the first epoch includes cluster start-up and model building
    samples = sum(r["samples"] for r in timed)
    seconds = sum(r["train_s"] for r in timed)
    # compute_s/comm_s are summed over tasks, so a worker-second budget is train_s x workers;
    # "other" is everything else: reading/decompressing chunks, the pull at each chunk's start,
    # scheduling and idle workers
    budget = seconds * workers
    compute = sum(r["compute_s"] for r in timed)
    comm = sum(r["comm_s"] for r in timed)
    return {
        "kind": "psdist",
        "workers": workers,
        "user_cluster": client is not None,
        "training_workers": history.last.get("training_workers"),
        "threads_per_worker": threads,
        "malloc_fix": malloc_fix,
        "samples_per_s": samples / seconds,
        "timed_samples": samples,
        "timed_s": seconds,
        "fit_s": fit_s,
        "first_epoch_wall_s": records[0].get("wall_s"),
        "compute_s": compute,
        "comm_s": comm,
        "compute_share": compute / budget,
        "comm_share": comm / budget,
        "other_share": max(0.0, 1.0 - (compute + comm) / budget),
        "epochs": records,
    }


# ---------------------------------------------------------------------------- driver
def _child_env(cfg: Config) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith("MALLOC_")}
    if cfg.kind == "plain":  # what the Dask nanny does for its workers (OMP_NUM_THREADS=1...)
        for k in _SCRUB:
            env[k] = str(cfg.threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and "samples_per_s" in obj:
                return obj
    return None


def run_child(cfg: Config, data: str, epochs: int, batch_size: int, timeout: float) -> dict[str, Any]:
    """One measured run in a fresh process; ``copies`` > 1 runs that many at once and adds them up."""
    if cfg.copies == 1:
        return _run_one(cfg, data, epochs, batch_size, timeout)
    with ThreadPoolExecutor(max_workers=cfg.copies) as pool:
        parts = list(pool.map(lambda _: _run_one(cfg, data, epochs, batch_size, timeout), range(cfg.copies)))
    bad = [p for p in parts if "error" in p]
    if bad:
        return bad[0]
    return {"kind": cfg.kind, "copies": cfg.copies, "samples_per_s": sum(p["samples_per_s"] for p in parts),
            "process_wall_s": max(p["process_wall_s"] for p in parts), "parts": parts}


def _run_one(cfg: Config, data: str, epochs: int, batch_size: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *cfg.argv(), "--data", data,
           "--epochs", str(epochs), "--batch-size", str(batch_size)]
    t0 = time.perf_counter()
    # own process group: on a timeout the Dask worker processes it spawned go down with it
    proc = subprocess.Popen(cmd, env=_child_env(cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return {"error": f"timed out after {timeout:.0f} s", "stderr_tail": stderr[-2000:]}
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): take the child's group down too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    wall = time.perf_counter() - t0
    result = _last_json(stdout) if proc.returncode == 0 else None
    if result is None:
        return {"error": f"exit code {proc.returncode}, no result line",
                "stderr_tail": stderr[-3000:], "stdout_tail": stdout[-1000:]}
    result["process_wall_s"] = wall
    return result


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def summarize(configs: list[Config], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for cfg in configs:
        ok = [r for r in runs.get(cfg.name, []) if "error" not in r and r.get("samples_per_s")]
        entry: dict[str, Any] = {"label": cfg.label, "runs": len(runs.get(cfg.name, [])), "ok": len(ok)}
        if ok:
            entry["samples_per_s"] = statistics.median(r["samples_per_s"] for r in ok)
            entry["samples_per_s_all"] = [r["samples_per_s"] for r in ok]
            if cfg.kind == "psdist":
                for k in ("compute_share", "comm_share", "other_share"):
                    vals = [r[k] for r in ok if r.get(k) is not None]
                    entry[k] = statistics.median(vals) if vals else None
        else:
            entry["samples_per_s"] = None
        summary[cfg.name] = entry
    return summary


def ratios(summary: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, num, den, target in RATIOS:
        a = summary.get(num, {}).get("samples_per_s")
        b = summary.get(den, {}).get("samples_per_s")
        if num not in summary or den not in summary:
            continue
        value = a / b if a and b else None
        row: dict[str, Any] = {"name": name, "numerator": num, "denominator": den, "value": value}
        if target:
            row["target"] = TARGET if target is True else target
            row["meets_target"] = None if value is None else value >= TARGET
        out.append(row)
    return out


def print_table(summary: dict[str, Any], rows: list[dict[str, Any]], meaningful: bool) -> None:
    print()
    print(f"{'configuration':<32} {'samples/s':>10} {'runs':>5} {'compute':>8} {'comm':>6} {'other':>6}")
    print("-" * 72)
    for entry in summary.values():
        shares = [_fmt(entry.get(k), ".0%") if k in entry else "" for k in
                  ("compute_share", "comm_share", "other_share")]
        print(f"{entry['label']:<32} {_fmt(entry['samples_per_s']):>10} {entry['ok']:>2}/{entry['runs']:<2} "
              f"{shares[0]:>8} {shares[1]:>6} {shares[2]:>6}")
    print()
    print(f"{'ratio':<44} {'value':>6}  target")
    print("-" * 72)
    for r in rows:
        verdict = ""
        if "target" in r:
            verdict = f">= {r['target']:.2f}  " + {True: "ok", False: "MISSED", None: "n/a"}[r["meets_target"]]
            if not meaningful:
                verdict += " (not meaningful at this size/jobs)"
        print(f"{r['name']:<44} {_fmt(r['value'], '.3f'):>6}  {verdict}")
    print()
    print("compute/comm/other: shares of the psdist workers' time in timed epochs (history compute_s, comm_s)")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("torch", "numpy", "dask", "distributed", "zarr", "psdist"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # a missing module only loses a line of metadata
            out[mod] = "?"
    try:
        out["git"] = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True, timeout=10).stdout.strip() or "?"
    except Exception:
        out["git"] = "?"
    return out


def _finite(obj: Any) -> Any:
    """Replace NaN/inf by None, so the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _loadavg() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def main_driver(args: argparse.Namespace) -> int:
    size = dict(SIZES[args.size])
    for key in ("jets", "epochs", "repeats", "chunk_rows", "timeout", "jobs"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    if size["epochs"] < 2:
        raise SystemExit("--epochs must be >= 2: the first epoch is warm-up and not timed")
    if size["jobs"] < 1 or size["repeats"] < 1:
        raise SystemExit("--jobs and --repeats must be >= 1")
    names = [c.name for c in CONFIGS]
    wanted = args.configs.split(",") if args.configs else names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise SystemExit(f"unknown --configs {unknown}; choose from {names}")
    configs = [c for c in CONFIGS if c.name in wanted]

    from psdist.hep.jetimages import write_dataset

    started = _dt.datetime.now()
    host = socket.gethostname()
    load_start = _loadavg()
    print(f"bench_throughput: size={args.size} jets={size['jets']} chunk_rows={size['chunk_rows']} "
          f"batch={BATCH_SIZE} epochs={size['epochs']} (1 warm-up) repeats={size['repeats']} "
          f"host={host} cpus={os.cpu_count()} load={load_start}", flush=True)
    if size["jobs"] > 1:
        print(f"  NOTE: {size['jobs']} runs at a time share the CPUs: the numbers only show that it runs",
              flush=True)
    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="psdist-bench-") as tmp:
        data = os.path.join(tmp, "jets.zarr")
        t0 = time.perf_counter()
        write_dataset(data, jets=size["jets"], val_jets=size["val_jets"], seed=SEED,
                      chunk_rows=size["chunk_rows"])
        print(f"  data: {data} written in {time.perf_counter() - t0:.1f} s", flush=True)
        plan = [(rep, cfg) for rep in range(size["repeats"]) for cfg in configs]  # interleaved repeats

        def one(item: tuple[int, Config]) -> tuple[int, Config, dict[str, Any]]:
            rep, cfg = item
            return rep, cfg, run_child(cfg, data, size["epochs"], BATCH_SIZE, size["timeout"])

        with ThreadPoolExecutor(max_workers=size["jobs"]) as pool:
            done = {}
            for rep, cfg, r in pool.map(one, plan):  # results in plan order
                done[(rep, cfg.name)] = r
                if "error" in r:
                    print(f"  [{rep + 1}/{size['repeats']}] {cfg.label:<32} FAILED: {r['error']}\n"
                          f"{r.get('stderr_tail', '')}", flush=True)
                else:
                    print(f"  [{rep + 1}/{size['repeats']}] {cfg.label:<32} {r['samples_per_s']:9.1f} samples/s "
                          f"(process {r['process_wall_s']:.1f} s)", flush=True)
        for rep, cfg in plan:
            runs[cfg.name].append(done[(rep, cfg.name)])

    summary = summarize(configs, runs)
    rows = ratios(summary)
    meaningful = args.size != "tiny" and size["jobs"] == 1
    print_table(summary, rows, meaningful)

    result = {
        "benchmark": "throughput",
        "date": started.isoformat(timespec="seconds"),
        "host": host,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_start_end": [load_start, _loadavg()],
        "versions": _versions(),
        "settings": {"size": args.size, **size, "batch_size": BATCH_SIZE, "lr": LR, "momentum": MOMENTUM,
                     "seed": SEED, "model": "psdist.hep.models.jet_cnn (1x32x32)", "compressor": "lz4",
                     "warmup_epochs": 1, "target": TARGET, "meaningful": meaningful},
        "summary": summary,
        "ratios": rows,
        "runs": runs,
    }
    out = Path(args.out) if args.out else (
        HERE / "results" / f"throughput-{started:%Y%m%d-%H%M%S}-{host}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(_finite(result), indent=1, allow_nan=False) + "\n")
    tmp_out.replace(out)
    print(f"results: {out}")
    failed = sum(1 for rs in runs.values() for r in rs if "error" in r)
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Training throughput of psdist vs plain PyTorch (samples/s).")
    p.add_argument("--size", choices=sorted(SIZES), default="small", help="problem size (default small)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run, the first is warm-up (>= 2)")
    p.add_argument("--repeats", type=int, default=None, help="runs per configuration; the median is reported")
    p.add_argument("--jets", type=int, default=None, help="training jets (overrides the size)")
    p.add_argument("--chunk-rows", type=int, default=None, help="rows per Zarr chunk / psdist task")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs at a time (default 1; tiny: 2). Above 1 the timings are not comparable")
    p.add_argument("--timeout", type=float, default=None, help="seconds per configuration run")
    p.add_argument("--configs", default=None,
                   help="comma-separated subset of: " + ",".join(c.name for c in CONFIGS))
    p.add_argument("--out", default=None, help="JSON output path (default benchmarks/results/throughput-<date>-<host>.json)")
    # child modes: one measured run in this (fresh) process, JSON on the last stdout line
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    mode.add_argument("--psdist", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--no-malloc-fix", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--user-cluster", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plain or args.psdist:
        if not args.data:
            raise SystemExit("--plain/--psdist need --data PATH (a psdist Zarr dataset)")
        epochs = args.epochs if args.epochs is not None else 2
        logging.basicConfig(level=logging.WARNING)
        if args.plain:
            result = run_plain(args.data, args.threads, epochs, args.batch_size)
        else:
            result = run_psdist(args.data, args.workers, args.threads, epochs, args.batch_size,
                                not args.no_malloc_fix, args.user_cluster)
        print(json.dumps(_finite(result)), flush=True)
        return 0
    return main_driver(args)


if __name__ == "__main__":
    sys.exit(main())
