# Update rules at scale, in psdist's simulator: which rule still converges with many workers?
#
#   python benchmarks/bench_rules.py                  # full table, 1..256 workers (~5 min on 2 cores)
#   python benchmarks/bench_rules.py --size tiny      # CI smoke run (seconds; numbers not meaningful)
#   python benchmarks/bench_rules.py --overlap        # one push in flight: Downpour and staleness-aware
#                                                     # at 1..64 workers, overlap off/on (~8 min on 2 cores)
#
# Workload: the event-topology classifier of examples/events.py (Pythia ttbar / W / Z / QCD
# events, 40 features, 4 classes, SignedLog + MLP) on data generated once and cached under
# benchmarks/.cache/. Every rule gets the same model, data, batch size, learning rate and the
# same sample budget (epochs over the training rows, shared by all workers), at 1, 4, 16, 64
# and 256 simulated workers with log-normal speed spread, jitter and message delay
# (psdist.sim.heterogeneous). Gradients are real; only time is simulated.
#
# Reported per (rule, workers): final validation accuracy, and updates (server versions) to
# the target accuracy. Writes benchmarks/results/rules-<date>-<host>.{json,md,png}.
#
# --overlap: the rules that allow it (Downpour, staleness-aware) with overlap off and on
# (simulate(overlap=...), as Trainer(overlap=...)), the same seeds and sample budget, at two
# message delays (round trip 0.1 and 0.8 of a step: a LAN and a GPU step of 2.5 ms against a
# 2 ms round trip) and three staleness bounds (none, the auto 2n + 2, and 4n + 2). Writes
# benchmarks/results/overlap-<date>-<host>.{json,md}.

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import os
import platform
import socket
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SIZES: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline end to end, two worker counts
    "tiny": {"per_class": 150, "val_per_class": 50, "epochs": 1, "workers": [1, 4], "eval_every": 5,
             "jobs": 2},
    "full": {"per_class": 2500, "val_per_class": 1500, "epochs": 8, "workers": [1, 4, 16, 64, 256],
             "eval_every": 10, "jobs": 2},
}
BATCH = 32
LR = 1e-3  # Adam, as in examples/events.yaml
GEM_LR = 0.05  # GEM needs plain SGD at the server (it brings its own momentum)
DCASGD_LR = 0.05  # DC-ASGD is derived for SGD steps: SGD with momentum 0.9 (it refuses Adam)
TARGET = 0.85  # validation accuracy ("updates to target"); 1 worker ends near 0.90
SEED = 0


def rules() -> dict[str, tuple[Any, Any]]:
    """name -> (rule, optimizer): every rule with Adam(lr=1e-3) but GEM (plain SGD) and DC-ASGD (SGD-momentum)."""
    from psdist.optim import SGD, Adam
    from psdist.rules import DCASGD, EASGD, GEM, SSP, Downpour, StalenessAware, Sync

    adam = Adam(lr=LR)
    return {
        "async (Downpour)": (Downpour(), adam),
        "staleness-aware": (StalenessAware(), adam),
        "DC-ASGD": (DCASGD(), SGD(lr=DCASGD_LR, momentum=0.9)),
        "EASGD": (EASGD(period=10), adam),  # Adam runs locally on each worker
        "GEM": (GEM(), SGD(lr=GEM_LR)),
        "SSP(s=2)": (SSP(bound=2), adam),
        "sync": (Sync(), adam),
    }


def dataset(per_class: int, val_per_class: int) -> Path:
    """Generate the events once per size (Pythia, about two minutes for the full size) and cache them."""
    path = HERE / ".cache" / f"events-{per_class}-{val_per_class}.zarr"
    if not (path / "zarr.json").exists():
        from psdist.hep.pythia import main as pythia_main

        path.parent.mkdir(parents=True, exist_ok=True)
        pythia_main(["events", str(path), "--per-class", str(per_class), "--val-per-class", str(val_per_class),
                     "--no-mpi", "--overwrite", "--workers", "0"])
    return path


def _load(path: Path) -> tuple[np.ndarray, ...]:
    import zarr

    g = zarr.open_group(str(path), mode="r")
    return tuple(np.asarray(g[k][:]) for k in ("x", "y", "x_val", "y_val"))


def one_run(path: str, name: str, workers: int, epochs: float, eval_every: int, *, overlap: bool = False,
            delay: float = 0.05, max_staleness: int | None = None) -> dict[str, Any]:
    """One simulated training (runs in a pool process, one torch thread)."""
    import torch

    from psdist.hep.models import event_classifier
    from psdist.sim import heterogeneous, simulate

    torch.set_num_threads(1)
    data = _load(Path(path))
    rule, optimizer = rules()[name]
    t0 = time.perf_counter()
    res = simulate(
        functools.partial(event_classifier, inputs=data[0].shape[1], classes=4), data,
        rule=rule, optimizer=optimizer, workers=heterogeneous(workers, seed=SEED, delay=delay), batch_size=BATCH,
        epochs=epochs, eval_every=eval_every, target=TARGET, seed=SEED, overlap=overlap, max_staleness=max_staleness,
    )
    s = res.server
    reached = next((h for h in res.history if h["val_metric"] >= TARGET), None)
    return {
        "rule": name, "workers": workers, "overlap": overlap, "delay": delay, "max_staleness": max_staleness,
        "val_accuracy": res.final["val_metric"],
        "samples_to_target": None if reached is None else reached["samples"] / len(data[0]),  # epochs
        "best_val_accuracy": max(h["val_metric"] for h in res.history),
        "updates_to_target": res.updates_to_target, "time_to_target": res.time_to_target,
        "sim_time": res.history[-1]["time"], "versions": s["version"],
        "applied": s["applied"], "rejected": sum(s["rejected"].values()),
        "staleness_mean": s["staleness_mean"], "staleness_max": s["staleness_max"],
        "clock_gap_max": s["clock_gap_max"], "waits": s["waits"],
        "wall_s": time.perf_counter() - t0,
        # (server version, epochs of samples applied, validation accuracy) at each evaluation
        "curve": [(h["version"], h["samples"] / len(data[0]), h["val_metric"]) for h in res.history],
        "times": [h["time"] for h in res.history],  # simulated time of each evaluation
    }


def table(results: list[dict[str, Any]], worker_counts: list[int]) -> str:
    by = {(r["rule"], r["workers"]): r for r in results}
    names = list(dict.fromkeys(r["rule"] for r in results))
    head = "| rule | " + " | ".join(f"{n} workers" for n in worker_counts) + " |"
    lines = [head, "|---" * (len(worker_counts) + 1) + "|"]
    for name in names:
        cells = []
        for n in worker_counts:
            r = by[(name, n)]
            upd = r["updates_to_target"]
            cells.append(f"{100 * r['val_accuracy']:.1f} % / {upd if upd is not None else '—'}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], worker_counts: list[int], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["rule"] for r in results))
    shown = max(n for n in worker_counts if n <= 64)  # the scale the target is set at
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in names:
        rs = sorted((r for r in results if r["rule"] == name), key=lambda r: r["workers"])
        a.plot([r["workers"] for r in rs], [100 * r["val_accuracy"] for r in rs], marker="o", label=name)
        big = next(r for r in rs if r["workers"] == shown)
        b.plot([e for _, e, _ in big["curve"]], [100 * m for _, _, m in big["curve"]], label=name)
    a.set_xscale("log", base=2)
    a.set_xticks(worker_counts, [str(n) for n in worker_counts])
    a.set_xlabel("simulated workers")
    a.set_ylabel("final validation accuracy [%]")
    a.axhline(100 * TARGET, color="grey", lw=0.8, ls=":")
    a.legend(fontsize=8)
    b.set_xlabel("epochs of samples applied")
    b.set_ylabel("validation accuracy [%]")
    b.set_ylim(20, 95)
    b.set_title(f"{shown} simulated workers")
    b.axhline(100 * TARGET, color="grey", lw=0.8, ls=":")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


OVERLAP_RULES = ("async (Downpour)", "staleness-aware")  # the benchmark's rules that allow overlap
OVERLAP_DELAYS = (0.4, 0.05)  # one-way message delay in steps: GPU-like (round trip 0.8 step), LAN-like


def _bound(spec: str | None, n: int) -> int | None:
    return None if spec is None else {"2n+2": 2 * n + 2, "4n+2": 4 * n + 2}[spec]


def _at_time(r: dict[str, Any], t: float) -> float:
    """Validation accuracy of run ``r`` at simulated time ``t`` (its last evaluation by then)."""
    return [m for (_, _, m), ti in zip(r["curve"], r["times"], strict=True) if ti <= t][-1]


def overlap_tables(results: list[dict[str, Any]], worker_counts: list[int]) -> str:
    """Markdown: accuracy, staleness and times off → on per delay; rejections per bound."""
    by = {(r["rule"], r["workers"], r["overlap"], r["delay"], r["bound"]): r for r in results}

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f}"

    def pct(v: float) -> str:
        return f"{100 * v:.1f} %"

    out = []
    for delay in OVERLAP_DELAYS:
        out += [f"Round trip {2 * delay:g} step, no staleness bound. Cells: overlap off → on.", "",
                "| rule | workers | final accuracy | mean staleness | time to target | time for the budget | "
                "accuracy when the overlapped run ends |", "|---|---|---|---|---|---|---|"]
        for name in OVERLAP_RULES:
            for n in worker_counts:
                a, b = by[(name, n, False, delay, None)], by[(name, n, True, delay, None)]
                out.append(
                    f"| {name} | {n} | {pct(a['val_accuracy'])} → {pct(b['val_accuracy'])} | "
                    f"{a['staleness_mean']:.1f} → {b['staleness_mean']:.1f} | "
                    f"{fmt(a['time_to_target'])} → {fmt(b['time_to_target'])} | "
                    f"{a['sim_time']:.0f} → {b['sim_time']:.0f} | "
                    f"{pct(_at_time(a, b['sim_time']))} → {pct(b['val_accuracy'])} |")
        out.append("")
    out += ["Staleness bounds (max_staleness). Cells: rejected pushes (share of all pushes), final accuracy.", "",
            "| rule | workers | round trip | max staleness unbounded, off / on | off, 2n + 2 | on, 2n + 2 | "
            "on, 4n + 2 |", "|---|---|---|---|---|---|---|"]
    for delay in OVERLAP_DELAYS:
        for name in OVERLAP_RULES:
            for n in worker_counts:
                if n == 1:
                    continue
                cells = []
                for overlap, spec in ((False, "2n+2"), (True, "2n+2"), (True, "4n+2")):
                    r = by[(name, n, overlap, delay, spec)]
                    share = r["rejected"] / (r["applied"] + r["rejected"])
                    cells.append(f"{r['rejected']} ({pct(share)}), {pct(r['val_accuracy'])}")
                free = [by[(name, n, o, delay, None)]["staleness_max"] for o in (False, True)]
                out.append(f"| {name} | {n} | {2 * delay:g} | {free[0]} / {free[1]} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def overlap_main(args: argparse.Namespace) -> int:
    """``--overlap``: overlap off/on for the rules that allow it (see the header)."""
    size = dict(SIZES[args.size])
    workers = [n for n in size["workers"] if n <= 64]
    path = dataset(size["per_class"], size["val_per_class"])
    runs = [(name, n, overlap, delay, spec) for delay in OVERLAP_DELAYS for name in OVERLAP_RULES for n in workers
            for overlap, spec in ((False, None), (True, None), (False, "2n+2"), (True, "2n+2"), (True, "4n+2"))
            if spec is None or n > 1]
    t0 = time.perf_counter()
    results = []
    with ProcessPoolExecutor(args.jobs or size["jobs"]) as pool:
        futures = [pool.submit(one_run, str(path), name, n, size["epochs"], size["eval_every"], overlap=overlap,
                               delay=delay, max_staleness=_bound(spec, n))
                   for name, n, overlap, delay, spec in runs]
        for (*_, spec), f in zip(runs, futures, strict=True):
            r = f.result()
            r["bound"] = spec
            results.append(r)
            print(f"  {r['rule']:<18} {r['workers']:>3} workers, delay {r['delay']:<4} overlap "
                  f"{'on ' if r['overlap'] else 'off'} bound {spec or '-':<5}: val acc {r['val_accuracy']:.3f}, "
                  f"staleness {r['staleness_mean']:.1f} (max {r['staleness_max']}), rejected {r['rejected']}, "
                  f"time to target {r['time_to_target']} ({r['wall_s']:.1f} s)", flush=True)
    md = overlap_tables(results, workers)
    stem = Path(args.out) if args.out else HERE / "results" / (
        f"overlap-{_dt.date.today().isoformat()}-{socket.gethostname()}" + ("-tiny" if args.size == "tiny" else ""))
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "size": args.size, "batch_size": BATCH, "optimizer": f"Adam(lr={LR})", "target": TARGET,
        "epochs": size["epochs"], "per_class": size["per_class"], "host": socket.gethostname(),
        "python": platform.python_version(), "cpus": os.cpu_count(), "wall_s": time.perf_counter() - t0,
    }
    for r in results:  # one line per run, curves rounded: 68 runs stay small
        r["curve"] = [(v, round(e, 4), round(m, 4)) for v, e, m in r["curve"]]
        r["times"] = [round(t, 3) for t in r["times"]]
    stem.with_suffix(".json").write_text(
        '{"meta": ' + json.dumps(meta) + ',\n"results": [\n' + ",\n".join(json.dumps(r) for r in results) + "]}\n")
    header = (f"Overlap off → on (psdist.sim), events classifier, {meta['epochs']} epochs, batch {BATCH}, "
              f"{meta['optimizer']}, heterogeneous workers (spread 0.2, jitter 0.1); time in steps, target "
              f"{100 * TARGET:.0f} % validation accuracy.\n\n")
    stem.with_suffix(".md").write_text(header + md + "\n")
    print()
    print(header + md)
    print(f"\nwritten: {stem}.json / .md ({meta['wall_s']:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Update rules at 1..256 simulated workers (psdist.sim).")
    p.add_argument("--size", choices=sorted(SIZES), default="full")
    p.add_argument("--out", default=None, help="output stem (default benchmarks/results/rules-<date>-<host>)")
    p.add_argument("--jobs", type=int, default=None, help="simulations in parallel (default 2)")
    p.add_argument("--overlap", action="store_true",
                   help="overlap off/on for Downpour and staleness-aware (writes overlap-<date>-<host>.*)")
    args = p.parse_args(argv)
    if args.overlap:
        return overlap_main(args)
    size = SIZES[args.size]
    path = dataset(size["per_class"], size["val_per_class"])
    runs = [(n, w) for n in rules() for w in size["workers"]]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs or size["jobs"]) as pool:
        futures = [pool.submit(one_run, str(path), n, w, size["epochs"], size["eval_every"]) for n, w in runs]
        results = []
        for f in futures:
            r = f.result()
            results.append(r)
            print(f"  {r['rule']:<18} {r['workers']:>4} workers: val acc {r['val_accuracy']:.3f}, "
                  f"to target {r['updates_to_target']}, staleness {r['staleness_mean']:.1f} ({r['wall_s']:.1f} s)",
                  flush=True)
    md = table(results, size["workers"])
    stem = Path(args.out) if args.out else HERE / "results" / (
        f"rules-{_dt.date.today().isoformat()}-{socket.gethostname()}" + ("-tiny" if args.size == "tiny" else ""))
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "size": args.size, "batch_size": BATCH, "optimizer": f"Adam(lr={LR}); GEM: SGD(lr={GEM_LR}); DC-ASGD: SGD(lr={DCASGD_LR}, momentum=0.9)",
        "target": TARGET, "val_rows": int(_load(path)[2].shape[0]),
        "epochs": size["epochs"], "per_class": size["per_class"], "train_rows": int(_load(path)[0].shape[0]),
        "host": socket.gethostname(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "wall_s": time.perf_counter() - t0,
    }
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    header = (f"Final validation accuracy / updates to {100 * TARGET:.0f} % (— never reached); events "
              f"classifier, {meta['train_rows']} training rows × {meta['epochs']} epochs, {meta['val_rows']} "
              f"validation rows, batch {BATCH}, {meta['optimizer']}.\n\n")
    stem.with_suffix(".md").write_text(header + md + "\n")
    plot(results, size["workers"], stem.with_suffix(".png"))
    print()
    print(header + md)
    print(f"\nwritten: {stem}.json / .md / .png ({meta['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
