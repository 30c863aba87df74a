# What a recovery point costs: the server's state copied on the PS's only thread and shipped to
# the client, while a worker keeps pushing.
#
#   python benchmarks/bench_recovery.py                 # 1e6 and 1e7 parameters, SGD-momentum and Adam
#   python benchmarks/bench_recovery.py --sizes 1000000 --points 5
#
# One embedded cluster (a PS worker and a data worker). For each size and optimizer a
# ParameterServer actor is started; a task on the data worker pushes a gradient with the
# weights in the reply (a Downpour worker's loop) and records every round trip; meanwhile the
# client takes `--points` recovery points (`state_dict`, as the trainer does), spaced out.
# Reported, per point: the client-side time of the call (what `Checkpoints.max_overhead` charges),
# the server-side copy alone (`ServerState.state_dict()` in-process, the part that holds the PS
# thread), and the pushes it stalled: round trips that overlapped a point, their extra latency over
# the median push without a point. Results: stdout and benchmarks/results/recovery-<date>-<host>.json.

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _pusher(ps: Any, n: int, stop: str) -> list[tuple[float, float]]:
    """On a data worker: push (with the reply) until the event ``stop``; (start, stop) of each round trip."""
    from distributed import Event

    from psdist.core.protocol import Push

    grad = np.full(n, 1e-7, np.float32)
    version = ps.pull("bench", -1).result().version
    spans: list[tuple[float, float]] = []
    done = Event(stop)
    while not (len(spans) % 20 == 0 and done.is_set()):  # a look at the event every 20 pushes
        t0 = time.time()
        r = ps.push(Push("bench", version, grad, 128, 0.5), True).result()
        spans.append((t0, time.time()))
        version = r.version
    return spans


def _optimizer(name: str) -> Any:
    from psdist.optim import SGD, Adam

    return SGD(lr=1e-3, momentum=0.9) if name == "sgd-momentum" else Adam(lr=1e-4)


def server_copy_s(n: int, opt: str, reps: int = 5) -> float:
    """``ServerState.state_dict()`` alone, in-process: the PS thread's share of a point."""
    import torch

    from psdist.core.server import ServerState
    from psdist.replica import layout_of

    layout = layout_of({"model": torch.nn.Linear(n, 1, bias=False)})
    state = ServerState(layout, np.zeros(n, np.float32), {"model": _optimizer(opt)})
    from psdist.core.protocol import Push

    state.push(Push("w", 0, np.full(n, 1e-7, np.float32), 1, 0.5), False)  # optimizer buffers exist
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        state.state_dict()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(client: Any, caller: str, server: str, n: int, opt: str, points: int) -> dict[str, Any]:
    import torch

    from psdist.cluster.actor import ParameterServer
    from psdist.replica import layout_of
    from psdist.rules import Downpour

    layout = layout_of({"model": torch.nn.Linear(n, 1, bias=False)})
    fut = client.submit(ParameterServer, layout.to_dict(), np.zeros(n, np.float32), {"model": _optimizer(opt)},
                        Downpour(), None, actor=True, workers=[server], key=f"bench-recovery-{n}-{opt}")
    ps = fut.result()
    from distributed import Event

    gap = 1.0  # seconds between points: pushes in between give the undisturbed latency
    stop = f"bench-recovery-stop-{n}-{opt}"
    task = client.submit(_pusher, ps, n, stop, workers=[caller], pure=False)
    while ps.metrics().result()["applied"] < 50:  # the pusher is warm
        time.sleep(0.05)
    marks = []
    for _ in range(points):
        t0 = time.time()
        ps.state_dict().result()
        marks.append((t0, time.time()))
        time.sleep(gap)  # a benchmark's pacing: undisturbed pushes between two points
    Event(stop).set()
    spans = task.result()
    client.cancel([fut])
    del ps

    def overlaps(s: tuple[float, float]) -> bool:
        return any(s[0] < b and s[1] > a for a, b in marks)

    quiet = [b - a for a, b in spans if not overlaps((a, b))]
    hit = [b - a for a, b in spans if overlaps((a, b))]
    base = statistics.median(quiet) if quiet else float("nan")
    return {
        "params": n, "optimizer": opt,
        "point_ms": 1e3 * statistics.median(b - a for a, b in marks),
        "point_ms_all": [round(1e3 * (b - a), 2) for a, b in marks],
        "server_copy_ms": 1e3 * server_copy_s(n, opt),
        "push_ms_median": 1e3 * base,
        "pushes_stalled_per_point": len(hit) / points,
        "stall_ms_per_point": 1e3 * sum(max(0.0, h - base) for h in hit) / points,
        "pushes": len(spans),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Cost of a recovery point at the parameter server.")
    p.add_argument("--sizes", default="1000000,10000000", help="parameters, comma-separated")
    p.add_argument("--optimizers", default="sgd-momentum,adam")
    p.add_argument("--points", type=int, default=5)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    from psdist.cluster import embedded_cluster

    started = _dt.datetime.now()
    rows = []
    cluster, client = embedded_cluster(1, 1, True, dashboard_address=None)
    try:
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"].items(), key=lambda kv: str(kv[1]["name"]))
        caller, server = workers[0][0], workers[-1][0]
        for n in (int(s) for s in a.sizes.split(",")):
            for opt in a.optimizers.split(","):
                row = measure(client, caller, server, n, opt, a.points)
                rows.append(row)
                print(f"{n:>10} {opt:<13} point {row['point_ms']:8.1f} ms (server copy {row['server_copy_ms']:6.1f} ms)"
                      f"  push {row['push_ms_median']:6.2f} ms; per point {row['pushes_stalled_per_point']:.1f} "
                      f"pushes stalled, {row['stall_ms_per_point']:.1f} ms extra", flush=True)
    finally:
        client.close()
        cluster.close()
    out = Path(a.out) if a.out else HERE / "results" / f"recovery-{started:%Y%m%d-%H%M%S}-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "recovery_point", "date": started.isoformat(timespec="seconds"),
                               "cpus": os.cpu_count(), "rows": rows}, indent=1) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
