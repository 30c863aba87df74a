"""The suite's PNG figures, drawn from the result document (matplotlib, Agg backend).

    python -m benchmarks.suite.plots benchmarks/results/<date>-<host>.json   # redraw them

One file per figure, next to the JSON: ``<stem>-<figure>.png``. Skipped and failed rows are
simply absent from the bars (the Markdown table names them and their reasons).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grouped(ax: Any, doc: dict[str, Any], key: str, log: bool = False) -> None:
    """Bars: one group per workload, one bar per contender that ran."""
    wls = doc["workloads"]
    names = [c["name"] for c in doc["contenders"]]
    idx = {(r["contender"], r["workload"]): r for r in doc["results"]}
    width = 0.8 / max(len(names), 1)
    cmap = _plt().get_cmap("tab20")
    for i, name in enumerate(names):
        vals = [idx.get((name, w), {}).get(key) if idx.get((name, w), {}).get("status") == "ok" else None
                for w in wls]
        xs = [j + (i - len(names) / 2 + 0.5) * width for j in range(len(wls))]
        ax.bar([x for x, v in zip(xs, vals, strict=True) if v], [v for v in vals if v], width,
               label=name, color=cmap(i % 20))
    ax.set_xticks(range(len(wls)), wls)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)


def _bars(doc: dict[str, Any], key: str, ylabel: str, title: str, path: Path, log: bool = False) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 4.8))
    _grouped(ax, doc, key, log)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def convergence(doc: dict[str, Any], path: Path) -> None:
    """Validation metric against training time, one panel per workload, the target dashed."""
    plt = _plt()
    wls = doc["workloads"]
    fig, axes = plt.subplots(1, len(wls), figsize=(4 * len(wls), 3.8), squeeze=False)
    cmap = plt.get_cmap("tab20")
    names = [c["name"] for c in doc["contenders"]]
    for ax, w in zip(axes[0], wls, strict=True):
        for i, name in enumerate(names):
            r = next((r for r in doc["results"] if r["contender"] == name and r["workload"] == w), None)
            if not r or r["status"] != "ok":
                continue
            t = [e["cum_train_s"] for e in r["epochs"]]
            ax.plot(t, [e["val_metric"] for e in r["epochs"]], marker="o", ms=3, label=name, color=cmap(i % 20))
        ax.axhline(doc["workload_info"][w]["target"], ls="--", color="k", lw=0.8)
        ax.set_title(w)
        ax.set_xlabel("training time (s)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation metric")
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ps_latency(doc: dict[str, Any], path: Path) -> None:
    plt = _plt()
    rows = {int(n): r for n, r in (doc.get("ps_micro") or {}).items() if r.get("status") == "ok"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ns = sorted(rows)
    for key, label in (("memcpy_round_trip", "memcpy ×2"), ("psdist_pull", "psdist pull"),
                       ("psdist_push_pull", "psdist push+pull"), ("rpc_fetch", "torch RPC fetch"),
                       ("rpc_echo", "torch RPC echo")):
        pts = [(n, rows[n].get(f"{key}_ms")) for n in ns if rows[n].get(f"{key}_ms")]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("float32 parameters")
    ax.set_ylabel("latency (ms, median)")
    ax.set_title("Parameter-server calls vs memcpy and torch RPC")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def loader(doc: dict[str, Any], path: Path) -> None:
    plt = _plt()
    rows = {w: r for w, r in (doc.get("loader") or {}).items() if r.get("status") == "ok"}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r["zarr_samples_per_s"] for r in rows.values()], 0.4, label="psdist.ZarrDataset")
    ax.bar(xs + 0.2, [r["memmap_samples_per_s"] for r in rows.values()], 0.4, label="numpy memmap")
    ax.set_xticks(xs, list(rows))
    ax.set_yscale("log")
    ax.set_ylabel("samples/s")
    ax.set_title("Reading training chunks")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(doc: dict[str, Any], stem: Path) -> list[Path]:
    """Every figure; returns the files written."""
    files = {name: stem.with_name(f"{stem.name}-{name}.png") for name in
             ("throughput", "time-to-target", "convergence", "final-metric", "memory", "ps-latency", "loader")}
    _bars(doc, "samples_per_s", "samples/s (timed epochs)", "Training throughput", files["throughput"], log=True)
    _bars(doc, "time_to_target_s", "training s to target", "Time to the target validation metric",
          files["time-to-target"])
    convergence(doc, files["convergence"])
    _bars(doc, "final_metric", "validation metric", "Final validation metric", files["final-metric"])
    _bars(doc, "peak_rss_mb", "MiB (largest process)", "Peak memory per process", files["memory"])
    if any(r.get("status") == "ok" for r in (doc.get("ps_micro") or {}).values()):
        ps_latency(doc, files["ps-latency"])
    else:  # not run (--only): no empty figure
        del files["ps-latency"]
    if any(r.get("status") == "ok" for r in (doc.get("loader") or {}).values()):
        loader(doc, files["loader"])
    else:
        del files["loader"]
    return list(files.values())


def main(argv: list[str] | None = None) -> None:
    path = Path((argv or sys.argv[1:])[0])
    for f in draw(json.loads(path.read_text()), path.with_suffix("")):
        print(f)


if __name__ == "__main__":
    main()
