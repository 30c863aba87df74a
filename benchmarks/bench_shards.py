# The sharded parameter server on this machine (issue 18): real psdist trainings beside the model.
#
#   .venv/bin/python benchmarks/bench_shards.py                  # ~4 min on 2 cores: overlap off and on
#   .venv/bin/python benchmarks/bench_shards.py --overlap off    # the 4 overlap-off points (~2.5 min)
#
# Training: the suite's communication-bound wide MLP (benchmarks/suite/workloads.py: 256-1024-1024-1024-4,
# 2.37 M values, Gaussian blobs in a Zarr store) trained by psdist.Trainer on its embedded cluster
# (workers + ps_shards processes, data plane "auto" = shared memory on one host) at workers {1, 2} x
# ps_shards {1, 2}, 1 thread per worker, batch 128, SGD-momentum, as bench_device.py's CPU part (its
# run_plain/run_psdist are reused). Measured: the epoch records' samples_per_s (training time,
# validation excluded), the median of the timed epochs after one warm-up epoch.
# Round trips (~30 s): a worker's push+pull without training against 1 and 2 shard processes (torch
# on 1 thread each, as the cluster's), MLPs of width 256/512/1024; their excess at 2 shards over 1,
# beyond the shard CPU the model saves, calibrates the model's shard fan-out (fanout_per_push_s +
# fanout_per_param_s * P, psdist.sim.perf.Cluster).
# Predicted: psdist.sim.perf with bench_scaling.py's "vm-shm" calibration and shards=S ("model":
# as calibrated before sharding existed, no fan-out; "+ fan-out": with the term calibrated here),
# t_c from plain 1-thread PyTorch on the same rows in the same command, or from the run's own
# compute+read per minibatch ("in-run": the model then predicts only the communication).
# error = predicted / measured - 1. Writes benchmarks/results/shards-<date>-<tag>.{json,md}; the
# other heavy jobs seen (pytest, bench_*) are recorded per point: numbers taken beside them mean little.

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_device import run_plain, run_psdist  # noqa: E402
from benchmarks.bench_scaling import calibrations, clusters, strict  # noqa: E402
from psdist.sim.perf import Calibration, Cluster, Workload, calibrate, predict  # noqa: E402

log = logging.getLogger("bench_shards")
WORKLOAD, BATCH, ROWS, VAL_ROWS, CHUNK, EPOCHS = "wide_mlp", 128, 16384, 1024, 512, 3  # timed epochs, after 1 warm-up
GRID = [(w, s) for w in (1, 2) for s in (1, 2)]
MICRO_HIDDEN = (256, 512, 1024)  # MLP 256-h-h-h-4: 0.20 M, 0.66 M, 2.37 M values


def others() -> list[str]:
    """Other heavy jobs on this machine now (a test suite, another benchmark): their command lines."""
    import subprocess

    out = subprocess.run(["pgrep", "-af", "pytest|bench_"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in out if int(line.split()[0]) != os.getpid() and "pgrep" not in line]


def median_rate(epochs: list[dict[str, Any]]) -> tuple[float, float]:
    """Median samples/s of the timed epochs (the first is warm-up) and their spread (max/min - 1)."""
    rates = [e["samples_per_s"] for e in epochs[1:]]
    return statistics.median(rates), max(rates) / min(rates) - 1


def shard_sizes(shards: int) -> list[int]:
    """Values per shard of the plan psdist uses (SGD: rows cut, balanced by bytes)."""
    from benchmarks.suite.workloads import WORKLOADS
    from psdist.core.shards import ShardPlan
    from psdist.replica.replica import as_model_dict, layout_of

    layout = layout_of(as_model_dict(WORKLOADS[WORKLOAD].model()))
    plan = ShardPlan.balanced(layout, shards, frozenset(layout.names))  # SGD: rows may be cut, as psdist does
    return [b - a for a, b in itertools.pairwise(plan.bounds)]


def _shard_process(layout: Any, weights: Any, lr: float, conn: Any) -> None:
    """One shard: a ServerState behind a data-plane server in its own process, until told to stop; torch
    on one thread, as a parameter-server worker of the embedded cluster (threads_per_worker=1)."""
    import torch

    import psdist
    from psdist.core.inprocess import LocalServer
    from psdist.core.server import ServerState
    from psdist.plane.server import PlaneServer

    torch.set_num_threads(1)
    local = LocalServer(ServerState(layout, weights, {layout.names[0]: psdist.optim.SGD(lr=lr, momentum=0.9)}))
    plane = PlaneServer.start(local, len(weights), "127.0.0.1")
    conn.send(plane.endpoint())
    conn.recv()
    plane.close()


def round_trips(hidden: int, shards: int, reps: int = 30) -> dict[str, Any]:
    """A training worker's push+pull with no training: the gradient written for the push, the round trip
    to every shard (shard processes of their own, shm), the reply's weights copied into a model buffer."""
    import multiprocessing as mp

    import numpy as np

    from psdist.core.protocol import Push
    from psdist.core.shards import ShardPlan
    from psdist.hep.models import mlp
    from psdist.plane.client import PlaneClient
    from psdist.plane.sharded import ShardedClient
    from psdist.replica.binding import flatten
    from psdist.replica.replica import as_model_dict, layout_of

    models = as_model_dict(mlp(inputs=256, hidden=hidden, classes=4, depth=3))
    layout = layout_of(models)
    weights = np.concatenate([flatten(models[g.name], g.spec) for g in layout.groups])
    plan = ShardPlan.balanced(layout, shards, frozenset(layout.names))  # SGD: rows may be cut, as psdist does
    ctx, procs, pipes = mp.get_context("spawn"), [], []
    for i in range(shards):
        mine, theirs = ctx.Pipe()
        procs.append(ctx.Process(target=_shard_process, args=(plan.layouts[i], weights[plan.range(i)].copy(), 1e-9,
                                                               theirs), daemon=True))
        procs[-1].start()
        pipes.append(mine)
    try:
        conns = [PlaneClient.connect(p.recv(), "w1", "shm", timeout=30) for p in pipes]
        client: Any = conns[0] if shards == 1 else ShardedClient(conns, plan)
        grad = np.random.default_rng(0).standard_normal(layout.size).astype(np.float32) * 1e-3
        model = np.empty_like(grad)
        version, times = client.pull("w1").version, []
        for i in range(reps + 5):
            t0 = time.perf_counter()
            out = client.push_buffer() if shards == 1 else None  # as the training loop: its gradient there
            u = grad.copy() if out is None else out
            if out is not None:
                np.copyto(out, grad)
            reply = client.push(Push("w1", version, u, BATCH, 0.5))
            version = reply.version
            np.copyto(model, reply.pull.weights)
            if i >= 5:
                times.append(time.perf_counter() - t0)
        client.close()
        return {"hidden": hidden, "params": layout.size, "shards": shards, "ms": 1e3 * statistics.median(times),
                "ms_min": 1e3 * min(times), "all_ms": [round(1e3 * t, 2) for t in times]}
    finally:
        for p in pipes:
            p.send("stop")
        for proc in procs:
            proc.join(10)


def fanout(rows: list[dict[str, Any]], vm: Cluster) -> Calibration:
    """The shard fan-out: the 2-shard round trip's excess over 1 shard, plus the shard CPU the model
    saves at 2 shards (so that the model's 2-shard round trip equals the measured one), per size."""
    by = {(r["params"], r["shards"]): r["ms"] / 1e3 for r in rows}
    pts = []
    for p in sorted({r["params"] for r in rows}):
        cpu = [predict(Workload("micro", p, BATCH, 1.0), vm.with_(shards=s)).cpu_s for s in (1, 2)]
        pts.append((float(p), max(by[p, 2] - by[p, 1] + cpu[0] - cpu[1], 1e-7)))  # > 0 for the fit
    return calibrate(pts, "bench_shards round trips: 2 shards - 1 shard + the shard CPU saved")


def point(path: str, w: int, s: int, overlap: bool, t_c: float, params: int, vm: Cluster,
          fanned: Cluster) -> dict[str, Any]:
    from benchmarks.suite.workloads import WORKLOADS

    kw = {"devices": "cpu", "workers": w, "threads_per_worker": 1, "ps_shards": s, "overlap": overlap}
    spec = {"workload": WORKLOAD, "jet_width": 0, "path": path, "lr": WORKLOADS[WORKLOAD].lr, "batch_size": BATCH,
            "epochs": EPOCHS, "ps_timeout_s": 120, "trainer_kwargs": kw}
    t0, before = time.perf_counter(), others()
    run = run_psdist(spec)
    measured, spread = median_rate(run["epochs"])
    timed = run["epochs"][1:]
    in_run_s = sum(e["compute_s"] + e["read_s"] for e in timed) / (sum(e["samples"] for e in timed) / BATCH)
    on = {"workers": w, "shards": s, "overlap": overlap}
    model, fan, fan_in_run = (predict(Workload(WORKLOAD, params, BATCH, t), c.with_(**on))
                              for t, c in ((t_c, vm), (t_c, fanned), (in_run_s, fanned)))
    row = {**on, "measured": measured, "spread": spread, "epoch_rates": [e["samples_per_s"] for e in run["epochs"]],
           "predicted": model.samples_per_s, "error": model.samples_per_s / measured - 1,
           "predicted_fanout": fan.samples_per_s, "error_fanout": fan.samples_per_s / measured - 1,
           "in_run_step_ms": in_run_s * 1e3, "predicted_fanout_in_run": fan_in_run.samples_per_s,
           "error_fanout_in_run": fan_in_run.samples_per_s / measured - 1,
           "ms_per_push_measured": run["ms_per_push"],
           "ms_per_push_predicted": {k: 1e3 * (p.fixed_s + p.fanout_s + max(p.link_s, p.nic_s) + p.cpu_s + p.wait_s)
                                     for k, p in (("model", model), ("fanout", fan))},
           "bottleneck": fan.bottleneck, "shard_values": shard_sizes(s),
           "compute_share": run["compute_share"], "comm_share": run["comm_share"], "read_share": run["read_share"],
           "val_accuracy": run["val_accuracy"], "wall_s": time.perf_counter() - t0,
           "other_jobs": sorted(set(before + others()))}
    log.info("%d worker(s) x %d shard(s), overlap %s: %.0f samples/s (spread %.0f%%); model %.0f (%+.0f%%), "
             "+ fan-out %.0f (%+.0f%%); %.0f s%s", w, s, "on" if overlap else "off", measured, 100 * spread,
             model.samples_per_s, 100 * row["error"], fan.samples_per_s, 100 * row["error_fanout"], row["wall_s"],
             f"; OTHER JOBS: {row['other_jobs']}" if row["other_jobs"] else "")
    return row


def ratios(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """2 shards / 1 shard at the same workers and overlap, measured and predicted."""
    by = {(p["workers"], p["shards"], p["overlap"]): p for p in points}
    return [{"workers": w, "overlap": ov, "measured": by[w, 2, ov]["measured"] / by[w, 1, ov]["measured"],
             "predicted": by[w, 2, ov]["predicted"] / by[w, 1, ov]["predicted"],
             "predicted_fanout": by[w, 2, ov]["predicted_fanout"] / by[w, 1, ov]["predicted_fanout"]}
            for (w, s, ov) in by if s == 1 and (w, 2, ov) in by]


def markdown(doc: dict[str, Any]) -> str:
    f = doc["fanout"]
    lines = [f"# Sharded parameter server on the VM ({doc['date']})", "", f"`{doc['command']}`: {doc['note']}", "",
             f"Plain 1-thread PyTorch: {doc['plain']['samples_per_s']:,.0f} samples/s (t_c {doc['plain']['step_ms']:.2f} "
             f"ms); model: {doc['params']:,} values; load average {doc['loadavg_start']} → {doc['loadavg_end']}; "
             f"{doc['wall_s']:.0f} s.", "", "## Round trips (no training): push+pull, ms", "",
             "| values | 1 shard | 2 shards | model 1 / 2 shards |", "|---|---|---|---|"]
    for p in sorted({r["params"] for r in doc["round_trips"]}):
        ms = {r["shards"]: r["ms"] for r in doc["round_trips"] if r["params"] == p}
        lines.append(f"| {p:,} | {ms[1]:.2f} | {ms[2]:.2f} | " + " / ".join(
            f"{doc['round_trip_model_ms'][str(p)][str(s)]:.2f}" for s in (1, 2)) + " |")
    lines += ["", f"Shard fan-out fit (2 shards − 1 shard + the shard CPU the model saves): "
              f"{f['a_s'] * 1e3:.3f} ms + {f['b_s'] * 1e9:.3f} ns/value (max residual {f['max_rel_error']:.0%}).", "",
              "## Training", "",
              "| workers | shards | overlap | measured samples/s (spread) | model | error | + fan-out | error | "
              "in-run step ms | + fan-out, t_c in-run | error | ms per push measured / model / + fan-out |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in doc["points"]:
        mp = p["ms_per_push_predicted"]
        lines.append(f"| {p['workers']} | {p['shards']} | {'on' if p['overlap'] else 'off'} | {p['measured']:,.0f} "
                     f"({p['spread']:.0%}) | {p['predicted']:,.0f} | {p['error']:+.0%} | {p['predicted_fanout']:,.0f} | "
                     f"{p['error_fanout']:+.0%} | {p['in_run_step_ms']:.1f} | {p['predicted_fanout_in_run']:,.0f} | "
                     f"{p['error_fanout_in_run']:+.0%} | {p['ms_per_push_measured']:.1f} / {mp['model']:.1f} / "
                     f"{mp['fanout']:.1f} |" + (" other jobs running |" if p["other_jobs"] else ""))
    lines += ["", "| workers | overlap | 2 shards / 1 shard measured | model | + fan-out |", "|---|---|---|---|---|"]
    lines += [f"| {r['workers']} | {'on' if r['overlap'] else 'off'} | {r['measured']:.2f} | {r['predicted']:.2f} | "
              f"{r['predicted_fanout']:.2f} |" for r in doc["ratios"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="psdist's sharded server on this machine, beside the model")
    ap.add_argument("--overlap", choices=("off", "on", "both"), default="both")
    ap.add_argument("--tag", default="vm", help="host tag of the output name")
    ap.add_argument("--out", help="output stem (default benchmarks/results/shards-<date>-<tag>)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import distributed  # noqa: F401  (its import sets its loggers' levels: quiet them after it)

    for name in ("distributed", "psdist"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from benchmarks.suite.workloads import WORKLOADS, write_all

    date, t0 = dt.date.today().isoformat(), time.perf_counter()
    stem = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / f"shards-{date}-{a.tag}"
    vm = clusters(calibrations())["vm-shm"].with_(fanout_per_push_s=0.0, fanout_per_param_s=0.0)
    overlaps = {"off": [False], "on": [True], "both": [False, True]}[a.overlap]
    if others():
        log.warning("other heavy jobs are running, the numbers will mean little: %s", others())
    doc: dict[str, Any] = {"benchmark": "shards", "date": date, "host": a.tag, "cores": os.cpu_count(),
                           "command": "python benchmarks/bench_shards.py" + (f" --overlap {a.overlap}" if
                                                                               a.overlap != "both" else ""),
                           "note": f"{WORKLOAD}, {ROWS} rows in chunks of {CHUNK}, batch {BATCH}, 1 warm-up + {EPOCHS} "
                                   "timed epochs (median), 1 thread per worker, embedded cluster, data plane auto (shm)",
                           "loadavg_start": [round(x, 2) for x in os.getloadavg()],
                           "cluster": {k: v for k, v in vm.__dict__.items() if k not in ("name", "workers", "shards")}}
    before = others()
    doc["round_trips"] = [round_trips(h, s) for h in MICRO_HIDDEN for s in (1, 2)]
    doc["other_jobs_round_trips"] = sorted(set(before + others()))
    cal = fanout(doc["round_trips"], vm)
    fanned = vm.with_(fanout_per_push_s=max(cal.a_s, 0.0), fanout_per_param_s=max(cal.b_s, 0.0))
    doc["fanout"] = {"a_s": cal.a_s, "b_s": cal.b_s, "points": cal.points, "max_rel_error": cal.max_rel_error(),
                     "source": cal.source}
    doc["round_trip_model_ms"] = {str(r["params"]): {str(s): 1e3 * (p.fixed_s + p.fanout_s + max(p.link_s, p.nic_s) + p.cpu_s)
                                                     for s in (1, 2)
                                                    for p in [predict(Workload("micro", r["params"], BATCH, 1.0),
                                                                      fanned.with_(shards=s))]}
                                  for r in doc["round_trips"]}
    log.info("round trips: %s; fan-out %.3f ms + %.3f ns/value",
             [(r["params"], r["shards"], round(r["ms"], 2)) for r in doc["round_trips"]], cal.a_s * 1e3, cal.b_s * 1e9)
    with tempfile.TemporaryDirectory(prefix="psdist-shards-") as tmp:
        path = write_all(tmp, {WORKLOAD: (ROWS, VAL_ROWS)}, CHUNK, 0, [WORKLOAD])[WORKLOAD]
        plain = run_plain({"workload": WORKLOAD, "jet_width": 0, "path": path, "device": "cpu", "precision": "32",
                           "threads": 1, "batch_size": BATCH, "epochs": EPOCHS, "lr": WORKLOADS[WORKLOAD].lr})
        rate, spread = median_rate(plain["epochs"])
        doc["plain"] = {"samples_per_s": rate, "spread": spread, "step_ms": 1e3 * BATCH / rate,
                        "epoch_rates": [e["samples_per_s"] for e in plain["epochs"]]}
        doc["params"] = plain["params"]
        log.info("plain 1 thread: %.0f samples/s (t_c %.2f ms)", rate, 1e3 * BATCH / rate)
        doc["points"] = [point(path, w, s, ov, BATCH / rate, plain["params"], vm, fanned)
                         for ov in overlaps for w, s in GRID]
    doc.update(ratios=ratios(doc["points"]), loadavg_end=[round(x, 2) for x in os.getloadavg()],
               wall_s=time.perf_counter() - t0)
    Path(f"{stem}.json").write_text(json.dumps(strict(doc), indent=1) + "\n")
    text = markdown(doc)
    Path(f"{stem}.md").write_text(text)
    print(text)
    log.info("wrote %s.json and %s.md (%.0f s)", stem, stem, doc["wall_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
