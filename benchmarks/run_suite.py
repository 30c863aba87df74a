# The benchmark suite: psdist against the old and new frameworks on the HEP workloads.
#
#   python benchmarks/run_suite.py --size full --docs      # the documented run (~15 min on 2 cores)
#   python benchmarks/run_suite.py --size small            # a few minutes
#   python benchmarks/run_suite.py --size tiny             # CI smoke run (< 90 s; numbers mean nothing)
#   python benchmarks/run_suite.py --device cuda --only torch-1t,torch-16t,ddp,psdist-downpour
#
# One command: writes the workloads' Zarr stores once, runs every contender (each a process tree
# with a timeout) on the same model, data, batch size and cores, then the parameter-server and
# loader microbenchmarks, and writes benchmarks/results/<date>-<host>[-cuda].{json,md} and
# <stem>-<figure>.png; --docs also puts the table into docs/benchmarks.md. What is measured and
# how to read it: docs/benchmarks.md.

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.suite import contenders as cs  # noqa: E402
from benchmarks.suite import plots, report  # noqa: E402
from benchmarks.suite.common import finite, write_json  # noqa: E402
from benchmarks.suite.runner import launch  # noqa: E402
from benchmarks.suite.workloads import WORKLOADS, write_all  # noqa: E402

logger = logging.getLogger("run_suite")

RULES = ["downpour", "staleness-aware", "dynsgd", "dcasgd", "sync", "ssp", "easgd", "eamsgd", "gem"]
# rows run only when named in --only (psdist-downpour-overlap: Downpour with overlap=True, opt-in on CPU)
EXTRA_RULES = ["downpour-overlap"]

# rows: (train, validation) per workload; jobs > 1 only at tiny (timings then not comparable).
# Epoch 1 is warm-up and not timed, except at tiny: one timed epoch keeps the smoke run short.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"rows": {"jet_cnn": (256, 128), "particle_flow": (256, 128), "calo_cnn": (128, 64),
                      "wide_mlp": (256, 128)}, "chunk_rows": 64, "epochs": 1, "warmup": 0, "jobs": 3, "timeout": 240,
             "micro_sizes": [10_000, 1_000_000], "micro_reps": 3, "loader_reps": 1},
    "small": {"rows": {"jet_cnn": (2048, 512), "particle_flow": (8192, 1024), "calo_cnn": (1024, 256),
                       "wide_mlp": (4096, 1024)}, "chunk_rows": 256, "epochs": 3, "jobs": 1, "timeout": 900,
              "micro_sizes": [100_000, 1_000_000], "micro_reps": 10, "loader_reps": 3},
    "full": {"rows": {"jet_cnn": (4096, 1024), "particle_flow": (16384, 2048), "calo_cnn": (2048, 512),
                      "wide_mlp": (8192, 2048)}, "chunk_rows": 512, "epochs": 4, "jobs": 1, "timeout": 1200,
             "micro_sizes": [100_000, 1_000_000, 4_000_000], "micro_reps": 20, "loader_reps": 5},
}
BATCH = 128
MOMENTUM = 0.9
SEED = 0


def machine(device: str) -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    out = {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "platform": platform.platform(),
           "python": platform.python_version(), "loadavg_start": [round(v, 2) for v in os.getloadavg()]}
    if device == "cuda":
        import torch

        out["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return out


def versions() -> dict[str, str]:
    out = {}
    for mod in ("torch", "numpy", "dask", "distributed", "zarr", "psdist", "ray", "mpi4py"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # absent: the contender's row says skipped
            out[mod] = "not installed"
    try:
        out["git"] = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=10).stdout.strip() or "?"
    except Exception:
        out["git"] = "?"
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="psdist benchmark suite (one command, every contender)")
    p.add_argument("--size", choices=list(SIZES), default="small")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--only", default="", help="comma-separated contenders (torch-1t, ddp, psdist-sync, psdist, ...), "
                   "workloads (jet_cnn, ...) and/or parts (micro, loader); default everything")
    p.add_argument("--workers", type=int, default=2, help="data-parallel workers/processes (default 2)")
    p.add_argument("--jobs", type=int, default=None, help="contenders at a time (default 1; tiny: 2)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per contender process")
    p.add_argument("--out", default=None, help="output stem (default benchmarks/results/<date>-<host>[-cuda])")
    p.add_argument("--data-dir", default=None, help="keep the Zarr stores here (default a temporary folder)")
    p.add_argument("--docs", action="store_true", help="put the tables into docs/benchmarks.md")
    p.add_argument("--no-plots", action="store_true")
    return p.parse_args(argv)


def select(args: argparse.Namespace, cores: int) -> tuple[list[cs.Contender], list[str], bool, bool]:
    # "torch-Nt" names the all-cores contender whatever the machine's core count
    only = {s.strip().replace("torch-Nt", f"torch-{cores}t") for s in args.only.split(",") if s.strip()}
    extra = [r for r in EXTRA_RULES if f"psdist-{r}" in only]
    every = [*cs.contenders(cores, args.workers), *cs.psdist_rows(RULES + extra, args.workers)]
    wls = [w for w in WORKLOADS if w in only] or list(WORKLOADS)
    names = only - set(WORKLOADS) - {"micro", "loader"}
    unknown = names - {c.name for c in every} - {"psdist"}
    if unknown:
        raise SystemExit(f"unknown --only {sorted(unknown)}; contenders: {[c.name for c in every]}, "
                         f"workloads: {list(WORKLOADS)}, parts: micro, loader")
    chosen = [c for c in every if not names or c.name in names or (c.kind == "psdist" and "psdist" in names)]
    if only and not names:  # only workloads or parts named: all contenders for those
        chosen = every if (only & set(WORKLOADS)) else []
    parts_named = only & {"micro", "loader"}
    return chosen, wls, (not only or "micro" in parts_named), (not only or "loader" in parts_named)


def run(args: argparse.Namespace) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    size = dict(SIZES[args.size])
    jobs = args.jobs or size["jobs"]
    timeout = args.timeout or size["timeout"]
    chosen, wls, do_micro, do_loader = select(args, cores)
    started = _dt.datetime.now()
    t_start = time.perf_counter()
    mach = machine(args.device)
    warmup = size.get("warmup", 1)
    settings = {"size": args.size, "device": args.device, "epochs": size["epochs"], "warmup": warmup, "batch_size": BATCH,
                "momentum": MOMENTUM, "seed": SEED, "workers": args.workers, "threads_per_worker": 1,
                "chunk_rows": size["chunk_rows"], "rows": {w: size["rows"][w] for w in wls}, "jobs": jobs,
                "timeout_s": timeout, "all_cores_contender": f"torch-{cores}t", "meaningful": jobs == 1,
                "eval_every": "one epoch (the training rows) for every contender"}
    tmp_root = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="psdist-suite-"))
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = tmp_root / "runs"
    work.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    paths = write_all(str(tmp_root), size["rows"], size["chunk_rows"], SEED, wls)
    logger.info("data written in %.1f s under %s", time.perf_counter() - t0, tmp_root)
    stem = Path(args.out) if args.out else HERE / "results" / (
        f"{started:%Y-%m-%d}-{socket.gethostname()}{'-cuda' if args.device == 'cuda' else ''}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    base = {"workloads": {w: {"path": paths[w]} for w in wls}, "epochs": size["epochs"], "warmup": warmup,
            "batch_size": BATCH, "momentum": MOMENTUM, "seed": SEED, "device": args.device,
            "workers": args.workers, "threads": 1, "trace_dir": str(stem.parent / f"{stem.name}-traces")}

    results: list[dict[str, Any]] = []
    tasks: list[tuple[str, list[cs.Contender], list[str], dict[str, Any], int, dict[str, str]]] = []
    psdist_rules = [c for c in chosen if c.kind == "psdist"]
    for c in chosen:
        reason = cs.skip_reason(c, args.device)
        if reason:
            results += [{"contender": c.name, "workload": w, "status": "skipped", "reason": reason} for w in wls]
        elif c.kind != "psdist":
            threads = int(c.name[6:-1]) if c.kind == "plain" else 1
            spec = {**base, "contender": c.name, "threads": threads}
            tasks.append((c.name, [c], cs.command(c, "{spec}", args.workers), spec, threads, cs.env_for(c)))
    if psdist_rules:  # one process, one cluster, every rule
        spec = {**base, "contender": "psdist", "rules": [c.name[len("psdist-"):] for c in psdist_rules]}
        tasks.append(("psdist", psdist_rules, cs.command(psdist_rules[0], "{spec}", args.workers), spec, 1, {}))

    def one(task: tuple[str, list[cs.Contender], list[str], dict[str, Any], int, dict[str, str]]) -> list[dict]:
        name, cons, cmd, spec, threads, env = task
        t = timeout * (len(cons) if len(cons) > 1 else 1) / (2 if len(cons) > 1 else 1)
        logger.info("running %s", name)
        doc = launch(name, cmd, spec, work, t, threads, env)
        rows = []
        for c in cons:
            for w in wls:
                r = doc["rows"].get(f"{c.name}/{w}")
                if r is None:  # never silently dropped: the process's failure is the reason
                    r = {"status": "error", "reason": doc.get("error") or "no result row",
                         "log_tail": doc.get("log_tail", "")[-1500:]}
                rows.append({"contender": c.name, "workload": w, **r})
        logger.info("%s done in %.0f s%s", name, doc["wall_s"], f" ({doc['error']})" if doc.get("error") else "")
        return rows

    def micro_part() -> dict[str, Any]:
        spec = {"sizes": size["micro_sizes"], "reps": size["micro_reps"], "seed": SEED}
        doc = launch("ps_micro", [sys.executable, "-m", "benchmarks.suite.ps_micro", "--spec", "{spec}"], spec,
                     work, timeout)
        rows = doc["rows"] or {"all": {"status": "error", "reason": doc.get("error", "no rows")}}
        if doc.get("error"):
            rows["error"] = {"status": "error", "reason": doc["error"]}
        return rows

    def loader_part() -> dict[str, Any]:
        spec = {"workloads": base["workloads"], "reps": size["loader_reps"], "seed": SEED}
        doc = launch("loader", [sys.executable, "-m", "benchmarks.suite.loader", "--spec", "{spec}"], spec,
                     work, timeout)
        return {w: doc["rows"].get(w, {"status": "error", "reason": doc.get("error", "no row")}) for w in wls}

    # the longest first, so that with jobs > 1 the short ones fill in around it
    tasks.sort(key=lambda t: -len(t[1]))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        micro_f = pool.submit(micro_part) if do_micro else None
        futs = [pool.submit(one, t) for t in tasks]
        loader_f = pool.submit(loader_part) if do_loader else None
        for f in futs:
            results += f.result()
        micro = micro_f.result() if micro_f else {}
        load = loader_f.result() if loader_f else {}

    order = {c.name: i for i, c in enumerate(chosen)}
    results.sort(key=lambda r: (order.get(r["contender"], 99), wls.index(r["workload"])))
    mach["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    doc = {
        "suite": "psdist benchmark suite", "date": started.isoformat(timespec="seconds"),
        "host": socket.gethostname(), "command": "python benchmarks/run_suite.py " + " ".join(sys.argv[1:]),
        "machine": mach, "versions": versions(), "settings": settings, "workloads": wls,
        "workload_info": {w: {"description": WORKLOADS[w].description, "metric": WORKLOADS[w].metric_name,
                              "target": WORKLOADS[w].target, "lr": WORKLOADS[w].lr} for w in wls},
        "contenders": [{"name": c.name, "label": c.label, "description": c.description} for c in chosen],
        "results": results, "ps_micro": micro, "loader": load,
        "horovod_install_log": horovod_note(),
    }
    doc["targets"] = report.targets(doc)
    doc["wall_s"] = time.perf_counter() - t_start
    import importlib.util

    can_plot = importlib.util.find_spec("matplotlib") is not None  # absent on the offline GPU machine
    if not can_plot and not args.no_plots:
        logger.warning("matplotlib is not installed: no figures")
    figures = [p.name for p in plots.draw(doc, stem)] if can_plot and not args.no_plots else []
    doc["figures"] = figures
    write_json(stem.with_suffix(".json"), doc)
    md = report.markdown(finite(doc), figures)
    stem.with_suffix(".md").write_text(md)
    if args.docs:
        update_docs(md, stem)
    if not args.data_dir:
        shutil.rmtree(tmp_root, ignore_errors=True)
    print(md)
    print(f"results: {stem.with_suffix('.json')}")
    return doc


def horovod_note() -> str:
    """What `pip install horovod` said when it was tried here (kept in benchmarks/results/)."""
    log = HERE / "results" / "horovod-install.log"
    return log.read_text()[-1500:] if log.exists() else "not tried on this machine"


def update_docs(md: str, stem: Path) -> None:
    """Replace the block between the markers of docs/benchmarks.md with this run's tables."""
    docs = HERE.parent / "docs" / "benchmarks.md"
    text = docs.read_text()
    start, end = "<!-- latest-run:start -->", "<!-- latest-run:end -->"
    if start not in text or end not in text:
        logger.warning("docs/benchmarks.md has no %s ... %s block: not updated", start, end)
        return
    rel = os.path.relpath(stem.parent, docs.parent)
    body = md.replace("](" + stem.name, "](" + rel + "/" + stem.name).replace("\n# ", "\n### ", 1)
    body = body.replace("# psdist benchmark suite", "### Latest run:", 1)
    text = text[: text.index(start) + len(start)] + "\n" + body + text[text.index(end):]
    docs.write_text(text)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    doc = run(args)
    bad = [r for r in doc["results"] if r["status"] == "error"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
