"""Turning the suite's result document into Markdown tables and the target checks.

    python -m benchmarks.suite.report benchmarks/results/<date>-<host>.json   # reprint the tables
    python -m benchmarks.suite.report benchmarks/results/device-<date>-<host>.json   # a device check

Ratios are always against rows measured by the same command (the baselines are in the same
document); a skipped or failed row shows its reason instead of a number. The suite's report
ends with the newest device check (``benchmarks/bench_device.py``'s ``device-*.json`` in
``benchmarks/results``), when there is one: its own command measured it, so it stands apart.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

CNN_WORKLOADS = ("jet_cnn", "calo_cnn")  # the "CNN models" of the issue's throughput target
PSDIST = "psdist-downpour"  # psdist's default rule stands for psdist in the targets
RESULTS = Path(__file__).resolve().parents[1] / "results"
DEVICE_CHECK = "device-check"  # the "kind" of bench_device.py's documents


def _f(v: Any, spec: str = ".0f", dash: str = "—") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return dash
    return format(v, spec)


def index(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["contender"], r["workload"]): r for r in doc["results"]}


def _cell(r: dict[str, Any] | None, key: str, spec: str) -> str:
    if r is None:
        return "missing"
    if r["status"] != "ok":
        return r["status"]
    return _f(r.get(key), spec)


def grid(doc: dict[str, Any], key: str, spec: str, title: str, ratio_to: str | None = None) -> str:
    """A contenders x workloads table of one field (with a ratio to a baseline row)."""
    idx = index(doc)
    wls = doc["workloads"]
    lines = [f"**{title}**", "", "| contender | " + " | ".join(wls) + " |", "|---" * (len(wls) + 1) + "|"]
    for c in doc["contenders"]:
        cells = []
        for w in wls:
            r = idx.get((c["name"], w))
            cell = _cell(r, key, spec)
            base = idx.get((ratio_to, w)) if ratio_to else None
            if r and r["status"] == "ok" and base and base["status"] == "ok" and r.get(key) and base.get(key):
                cell += f" ({r[key] / base[key]:.2f}×)"
            cells.append(cell)
        lines.append(f"| {c['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def time_to_target(doc: dict[str, Any]) -> str:
    idx = index(doc)
    wls = doc["workloads"]
    head = " | ".join(f"{w} (≥ {doc['workload_info'][w]['target']:.2f})" for w in wls)
    lines = ["**Training time (s) / updates to the target validation metric** (— : not reached)", "",
             f"| contender | {head} |", "|---" * (len(wls) + 1) + "|"]
    for c in doc["contenders"]:
        cells = []
        for w in wls:
            r = idx.get((c["name"], w))
            if r is None or r["status"] != "ok":
                cells.append(_cell(r, "", ""))
            else:
                cells.append(f"{_f(r.get('time_to_target_s'), '.1f')} / {_f(r.get('updates_to_target'), 'd')}")
        lines.append(f"| {c['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def skipped(doc: dict[str, Any]) -> str:
    seen: dict[str, str] = {}
    for r in doc["results"]:
        if r["status"] != "ok" and r["contender"] not in seen:
            seen[r["contender"]] = f"{r['status']}: {r.get('reason')}"
    if not seen:
        return "Every contender ran."
    return "\n".join(f"- **{k}** — {v}" for k, v in seen.items())


def profile(doc: dict[str, Any]) -> str:
    idx = index(doc)
    phases = ("compute", "pull", "push", "read", "wait", "idle")
    lines = [f"**Where {PSDIST}'s worker time goes** (timed epochs; shares of training time × workers)", "",
             "| workload | " + " | ".join(phases) + " | ms per push round trip | staleness mean |",
             "|---" * (len(phases) + 3) + "|"]
    for w in doc["workloads"]:
        r = idx.get((PSDIST, w))
        if not r or r["status"] != "ok":
            continue
        p = r.get("profile", {})
        cells = [_f(100 * p[f"{k}_share"], ".0f") + " %" if p.get(f"{k}_share") is not None else "0 %" for k in phases]
        tau = (p.get("server") or {}).get("staleness_mean")
        lines.append(f"| {w} | " + " | ".join(cells) + f" | {_f(p.get('ms_per_push_round_trip'), '.1f')} | "
                     f"{_f(tau, '.2f')} |")
    return "\n".join(lines)


def ps_micro(doc: dict[str, Any]) -> str:
    rows = doc.get("ps_micro") or {}
    lines = ["**Parameter server: latency (ms) and payload GB/s** (push+pull = one round trip: gradient "
             "there, weights back)", "",
             "| float32 params | memcpy copy | memcpy ×2 | psdist pull | psdist push+pull | psdist push only "
             "| torch RPC fetch | torch RPC echo | psdist/RPC | psdist server | psdist pickle | psdist transport |",
             "|---" * 12 + "|"]
    for n, r in rows.items():
        if r.get("status") != "ok":
            lines.append(f"| {n} | {r.get('status')}: {r.get('reason')} |" + " |" * 10)
            continue

        def lat(k: str, r: dict[str, Any] = r) -> str:
            return f"{_f(r.get(f'{k}_ms'), '.2f')} ({_f(r.get(f'{k}_gb_s'), '.2f')})"

        lines.append(f"| {int(n):.0e} | {lat('memcpy_copy')} | {lat('memcpy_round_trip')} | {lat('psdist_pull')} | "
                     f"{lat('psdist_push_pull')} | {lat('psdist_push_only')} | {lat('rpc_fetch')} | "
                     f"{lat('rpc_echo')} | {_f(r.get('psdist_over_rpc'), '.2f')} | "
                     f"{_f(r.get('psdist_server_push_ms'), '.2f')} | {_f(r.get('psdist_pickle_ms'), '.2f')} | "
                     f"{_f(r.get('psdist_transport_ms'), '.2f')} |")
    backends = _ps_backends(rows)
    return "\n".join(lines) + ("\n\n" + backends if backends else "")


def _ps_backends(rows: dict[str, Any]) -> str:
    """psdist's pull and push+pull per backend (actor, and the data plane's shm, tcp, tcp+tls)."""
    ok = {n: r for n, r in rows.items() if r.get("status") == "ok" and isinstance(r.get("plane"), dict)}
    if not ok:  # a result from before the data plane
        return ""
    lines = ["**psdist per backend: latency (ms) and payload GB/s**, beside memcpy ×2 and the torch RPC echo "
             "(push+pull / echo: the issue's target is ≤ 0.5 at 1e6 on one host)", "",
             "| float32 params | backend | pull | push+pull | push only | push+pull / RPC echo | memcpy ×2 "
             "| torch RPC echo |", "|---" * 8 + "|"]
    for n, r in ok.items():
        def lat(e: dict[str, Any], k: str) -> str:
            return f"{_f(e.get(f'{k}_ms'), '.3f')} ({_f(e.get(f'{k}_gb_s'), '.2f')})"

        actor = {"status": "ok", **{k: r.get(f"psdist_{k}") for k in
                                    ("pull_ms", "pull_gb_s", "push_pull_ms", "push_pull_gb_s", "push_only_ms",
                                     "push_only_gb_s")},
                 "push_pull_over_rpc_echo": r.get("psdist_over_rpc")}
        for i, (name, e) in enumerate((("actor", actor), *r["plane"].items())):
            size = f"{int(n):.0e}" if i == 0 else ""  # the size and its references on its first line
            refs = f"{lat(r, 'memcpy_round_trip')} | {lat(r, 'rpc_echo')}" if i == 0 else " |"
            if e.get("status") != "ok":
                lines.append(f"| {size} | {name} | {e.get('status')}: {e.get('reason')} | | | | {refs} |")
                continue
            lines.append(f"| {size} | {name} | {lat(e, 'pull')} | {lat(e, 'push_pull')} | {lat(e, 'push_only')} | "
                         f"{_f(e.get('push_pull_over_rpc_echo'), '.2f')} | {refs} |")
    return "\n".join(lines)


def loader(doc: dict[str, Any]) -> str:
    rows = doc.get("loader") or {}
    lines = ["**Loader: samples/s reading every training chunk** (warm page cache)", "",
             "| workload | bytes/row | chunk rows | psdist.ZarrDataset (lz4) | numpy memmap | Zarr / memmap |",
             "|---" * 6 + "|"]
    for w, r in rows.items():
        if r.get("status") != "ok":
            lines.append(f"| {w} | {r.get('status')}: {r.get('reason')} | | | | |")
            continue
        lines.append(f"| {w} | {r['bytes_per_row']} | {r['chunk_rows']} | {_f(r['zarr_samples_per_s'])} | "
                     f"{_f(r['memmap_samples_per_s'])} | {_f(r['zarr_over_memmap'], '.3f')} |")
    return "\n".join(lines)


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets for psdist (2 workers x 1 thread), each checked against this run."""
    idx = index(doc)
    allcores = doc["settings"]["all_cores_contender"]
    out: list[dict[str, Any]] = []

    def ok(r: dict[str, Any] | None) -> bool:
        return bool(r) and r["status"] == "ok"  # type: ignore[index]

    for w in doc["workloads"]:
        p, plain, ddp = idx.get((PSDIST, w)), idx.get((allcores, w)), idx.get(("ddp", w))
        if w in CNN_WORKLOADS and ok(p) and ok(plain):
            v = p["samples_per_s"] / plain["samples_per_s"]
            out.append({"target": f"{w}: samples/s ≥ 0.95 × {allcores}", "value": v, "met": v >= 0.95})
        if ok(p) and ok(ddp):
            v = p["samples_per_s"] / ddp["samples_per_s"]
            out.append({"target": f"{w}: samples/s ≥ ddp", "value": v, "met": v >= 1.0})
            a, b = p.get("time_to_target_s"), ddp.get("time_to_target_s")
            met = None if a is None and b is None else (a is not None and (b is None or a <= b))
            out.append({"target": f"{w}: time to target ≤ ddp", "value": None if a is None or b is None else a / b,
                        "met": met, "note": f"psdist {_f(a, '.1f')} s, ddp {_f(b, '.1f')} s"})
    r = (doc.get("ps_micro") or {}).get(str(1_000_000))
    if r and r.get("psdist_over_rpc") is not None:
        v = r["psdist_over_rpc"]
        out.append({"target": "PS push+pull at 1e6 float32 over the actor ≤ torch RPC round trip", "value": v,
                    "met": v <= 1.0})
        # the data plane's target (issue 15): the best one-host backend at half an echo
        shm = (r.get("push_pull_over_rpc_echo") or {}).get("shm")
        if shm is not None:
            out.append({"target": "PS push+pull at 1e6 float32 over shared memory ≤ 0.5 × torch RPC round trip",
                        "value": shm, "met": shm <= 0.5})
    return out


def targets_table(doc: dict[str, Any]) -> str:
    lines = ["**Targets** (psdist = Downpour, 2 workers × 1 thread; value = psdist / baseline)", "",
             "| target | value | met |", "|---|---|---|"]
    for t in doc.get("targets", []):
        met = {True: "yes", False: "**no**", None: "n/a (neither reached the target)"}[t["met"]]
        note = f" — {t['note']}" if t.get("note") else ""
        lines.append(f"| {t['target']} | {_f(t['value'], '.2f')}{note} | {met} |")
    return "\n".join(lines)


def markdown(doc: dict[str, Any], figures: list[str], device_dir: Path | None = RESULTS) -> str:
    m = doc["machine"]
    s = doc["settings"]
    allcores = s["all_cores_contender"]
    parts = [
        f"# psdist benchmark suite — {doc['date']} on {doc['host']}",
        "",
        f"Machine: {m['cpu']} ({m['cores']} cores), {m['memory_gib']:.0f} GiB, {m['platform']}; device "
        f"**{s['device']}**{(' (' + m['gpu'] + ')') if m.get('gpu') else ''}. Size **{s['size']}**: "
        f"{s['epochs']} epochs ({s['warmup']} of warm-up, not timed), batch {s['batch_size']} per worker, "
        f"{s['workers']} workers, seed {s['seed']}, load average {m['loadavg_start']} → {m['loadavg_end']}. "
        f"Command: `{doc['command']}` ({doc['wall_s']:.0f} s).",
    ]
    if not s.get("meaningful", True):
        parts += ["", "*Tiny size: several contenders at a time on the same cores; numbers only show "
                  "that everything runs.*"]
    parts += [
        "", grid(doc, "samples_per_s", ".0f", f"Training samples/s (× = ratio to {allcores})", allcores),
        "", time_to_target(doc),
        "", grid(doc, "final_metric", ".3f", "Final validation metric (accuracy; calo_cnn: type accuracy)"),
        "", grid(doc, "peak_rss_mb", ".0f", "Peak resident memory of the largest process (MiB)"),
        "", targets_table(doc), "", profile(doc), "", ps_micro(doc), "", loader(doc),
        "", "**Skipped or failed**", "", skipped(doc),
    ]
    if figures:
        parts += ["", "**Figures**", "", *[f"![{f}]({f})" for f in figures]]
    found = latest_device_check(device_dir) if device_dir is not None else None
    if found is not None:
        parts += ["", device_markdown(found[1], found[0].name)]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------- device check
def latest_device_check(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest ``device-*.json`` of ``folder`` (by its recorded date), or None."""
    found = []
    for path in Path(folder).glob("device-*.json"):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):  # a file being written, or not ours: not a device check
            continue
        if isinstance(doc, dict) and doc.get("kind") == DEVICE_CHECK:
            found.append((str(doc.get("date", "")), path.name, path, doc))
    if not found:
        return None
    _, _, path, doc = max(found)
    return path, doc


def _mark(met: bool | None) -> str:
    return "—" if met is None else ("✓" if met else "✗")


def _run_cell(r: dict[str, Any] | None, key: str = "samples_per_s", spec: str = ".0f") -> str:
    if not r:
        return "missing"
    if r.get("status") != "ok":  # one line, no "|": it sits in a table cell
        return f"{r.get('status')}: " + " ".join(str(r.get("reason")).split()).replace("|", "/")[:200]
    return _f(r.get(key), spec)


def _acc(r: dict[str, Any] | None) -> str:
    """A run's validation accuracy; a dash where it has none (its reason is in the samples/s cell)."""
    return _f(r.get("val_accuracy"), ".3f") if r and r.get("status") == "ok" else "—"


def device_gpu_table(doc: dict[str, Any]) -> str:
    """psdist with one GPU worker against plain PyTorch, per workload and precision."""
    gpu = doc.get("gpu") or {}
    target = gpu.get("target_ratio", 0.9)
    title = "**GPU: psdist with one GPU worker vs plain PyTorch on the same GPU**"
    if gpu.get("status") != "ok":
        return f"{title}: {gpu.get('status', 'missing')}: {gpu.get('reason')}"
    head = [f"{title} (samples/s; target ≥ {target:.2f}×)", ""]
    lines = [*head, "| workload | precision | plain | psdist | psdist / plain | target | val acc plain | "
             "val acc psdist |", "|---" * 8 + "|"]
    for r in gpu.get("rows", []):
        p, q = r.get("plain"), r.get("psdist")
        lines.append(f"| {r['workload']} | {r['precision']} | {_run_cell(p)} | {_run_cell(q)} | "
                     f"{_f(r.get('ratio'), '.2f')} | {_mark(r.get('target_met'))} | "
                     f"{_acc(p)} | {_acc(q)} |")
    return "\n".join(lines)


def device_cpu_table(doc: dict[str, Any]) -> str:
    """psdist's CPU scaling: N single-threaded workers and one PS against 1-thread PyTorch."""
    cpu = doc.get("cpu") or {}
    if cpu.get("status") != "ok":
        return f"**CPU scaling**: {cpu.get('status', 'missing')}: {cpu.get('reason')}"
    head = [f"**CPU scaling: {cpu['workload']}, psdist N workers × 1 thread + 1 PS vs plain PyTorch 1 thread** "
            f"(batch {cpu['batch_size']}; efficiency = speedup / N)", ""]
    lines = [*head, "| run | samples/s | speedup vs plain | efficiency | × psdist 1 worker | val acc |",
             "|---" * 6 + "|"]
    plain = cpu.get("plain")
    lines.append(f"| plain 1 thread | {_run_cell(plain)} | 1.00 | — | — | {_acc(plain)} |")
    for r in cpu.get("rows", []):
        lines.append(f"| psdist {r['workers']} worker(s) | {_run_cell(r)} | {_f(r.get('speedup'), '.2f')} | "
                     f"{_f(r.get('efficiency'), '.2f')} | {_f(r.get('vs_psdist_1'), '.2f')} | "
                     f"{_acc(r)} |")
    notes = [f"- {s['workers']} workers: {s['reason']}" for s in cpu.get("skipped_workers", [])]
    return "\n".join(lines + (["", *notes] if notes else []))


def device_markdown(doc: dict[str, Any], name: str | None = None) -> str:
    """A device check's two tables under one heading (the suite's report and bench_device.py)."""
    m = doc.get("machine") or {}
    gpu = m.get("gpu") or "no GPU"
    src = f" (`{name}`)" if name else ""
    # bold, not a heading: the section also lands inside docs/benchmarks.md's "Latest run" block
    parts = [f"**Device check — {doc.get('date', '?')} on {doc.get('host', '?')}**{src}", "",
             f"{gpu}, {m.get('cores', '?')} CPU cores, torch {m.get('torch', '?')} (CUDA build {m.get('torch_cuda') or 'none'}); "
             f"command `{doc.get('command', '?')}` ({_f(doc.get('wall_s'), '.0f')} s"
             f"{'' if doc.get('complete') else ', incomplete'})."]
    if doc.get("quick"):
        parts += ["", "*Quick run: tiny sizes; the numbers only show that everything runs.*"]
    parts += ["", device_gpu_table(doc), "", device_cpu_table(doc)]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    path = (argv or sys.argv[1:])[0]
    with open(path) as f:
        doc = json.load(f)
    print(device_markdown(doc, Path(path).name) if doc.get("kind") == DEVICE_CHECK else markdown(doc, []))


if __name__ == "__main__":
    main()
