# Update rules at scale, in psdist's simulator: which rule still converges with many workers?
#
#   python benchmarks/bench_rules.py                  # full table, 1..256 workers (~5 min on 2 cores)
#   python benchmarks/bench_rules.py --size tiny      # CI smoke run (seconds; numbers not meaningful)
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


def one_run(path: str, name: str, workers: int, epochs: float, eval_every: int) -> dict[str, Any]:
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
        rule=rule, optimizer=optimizer, workers=heterogeneous(workers, seed=SEED), batch_size=BATCH,
        epochs=epochs, eval_every=eval_every, target=TARGET, seed=SEED,
    )
    s = res.server
    return {
        "rule": name, "workers": workers, "val_accuracy": res.final["val_metric"],
        "best_val_accuracy": max(h["val_metric"] for h in res.history),
        "updates_to_target": res.updates_to_target, "time_to_target": res.time_to_target,
        "sim_time": res.history[-1]["time"], "versions": s["version"],
        "applied": s["applied"], "rejected": sum(s["rejected"].values()),
        "staleness_mean": s["staleness_mean"], "clock_gap_max": s["clock_gap_max"], "waits": s["waits"],
        "wall_s": time.perf_counter() - t0,
        # (server version, epochs of samples applied, validation accuracy) at each evaluation
        "curve": [(h["version"], h["samples"] / len(data[0]), h["val_metric"]) for h in res.history],
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Update rules at 1..256 simulated workers (psdist.sim).")
    p.add_argument("--size", choices=sorted(SIZES), default="full")
    p.add_argument("--out", default=None, help="output stem (default benchmarks/results/rules-<date>-<host>)")
    p.add_argument("--jobs", type=int, default=None, help="simulations in parallel (default 2)")
    args = p.parse_args(argv)
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
