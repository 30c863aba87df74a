"""Contender: psdist, N workers x 1 thread, once per update rule, on one embedded LocalCluster.

    python -m benchmarks.suite.c_psdist --spec spec.json     # spec["rules"]: which rules

One cluster (psdist's own ``embedded_cluster``: N data workers + 1 worker for the parameter
server, the malloc fix on) serves every (rule, workload) run, each a fresh ``psdist.Trainer``
with its own parameter-server actor, so the rows do not pay N+1 process start-ups each. The
workers read their chunks straight from the workload's Zarr store, as psdist always does.

Samples/s and time to target come from the trainer's history (training time per epoch,
validation excluded), updates are applied pushes (server versions). The profile of each row
is the workers' time split (compute, pull, push, read, wait) from ``Trainer.timeline`` in the
timed epochs plus the server's counters; Downpour rows also leave a Chrome trace.
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from typing import Any

from benchmarks.suite import common

MOMENTUM_FREE = {"gem"}  # GEM brings its own momentum: plain SGD at the server


def rules() -> dict[str, Any]:
    """Suite name -> a psdist rule with its default hyperparameters."""
    from psdist.rules import DCASGD, EAMSGD, EASGD, GEM, SSP, Downpour, DynSGD, StalenessAware, Sync

    return {"downpour": Downpour(), "staleness-aware": StalenessAware(), "dynsgd": DynSGD(),
            "dcasgd": DCASGD(), "sync": Sync(), "ssp": SSP(bound=2), "easgd": EASGD(), "eamsgd": EAMSGD(),
            "gem": GEM(), "downpour-overlap": Downpour()}


def profile(timeline: list[tuple[str, str, float, float, int, int]], warmup: int, workers: int,
            train_s: float) -> dict[str, Any]:
    """Where the workers' time went in the timed epochs: seconds and shares per phase.

    The budget is training time x workers; "idle" is what no span covers (scheduling, the
    gaps between chunk tasks, a worker without a chunk at the end of an epoch).
    """
    per: dict[str, float] = defaultdict(float)
    for _worker, phase, a, b, epoch, _chunk in timeline:
        if epoch > warmup and phase != "validate":
            per[phase] += b - a
    budget = train_s * workers
    out: dict[str, Any] = {f"{k}_s": v for k, v in sorted(per.items())}
    if budget > 0:
        out.update({f"{k}_share": v / budget for k, v in per.items()})
        out["idle_share"] = max(0.0, 1.0 - sum(per.values()) / budget)
    return out


def one(client: Any, rule_name: str, name: str, path: str, spec: dict[str, Any]) -> dict[str, Any]:
    import psdist
    from benchmarks.suite.workloads import METRIC_FNS, WORKLOADS

    wl = WORKLOADS[name]
    rule = rules()[rule_name]
    momentum = 0.0 if rule_name in MOMENTUM_FREE else spec["momentum"]
    trainer = psdist.Trainer(
        wl.model, wl.loss, data=psdist.ZarrDataset(path, y=wl.y, y_val=wl.y_val),
        optimizer=psdist.optim.SGD(lr=wl.lr, momentum=momentum), rule=rule,
        batch_size=spec["batch_size"], workers=spec["workers"], threads_per_worker=spec["threads"],
        client=client, seed=spec["seed"], metrics={"metric": METRIC_FNS[name]}, timeout=spec.get("ps_timeout", 120),
        overlap=rule_name.endswith("-overlap"),
    )
    client.run(common.reset_peak)
    common.reset_peak()
    t0 = time.perf_counter()
    history = trainer.fit(epochs=spec["epochs"])
    fit_s = time.perf_counter() - t0
    peaks = [common.peak_mb(), *client.run(common.peak_mb).values()]
    curve = common.Curve(name, wl.target, spec["warmup"])
    for r in history.records:
        curve.add(r["samples"], r["samples"] / r["samples_per_s"], r["version"], r["val_metric"],
                  train_loss=r["train_loss"], pushes_rejected=r["pushes_rejected"],
                  staleness_mean=r["staleness_mean"], compute_s=r["compute_s"], comm_s=r["comm_s"],
                  read_s=r["read_s"], wait_s=r["wait_s"])
    timed = curve.epochs[spec["warmup"]:]
    train_s = sum(e["train_s"] for e in timed)
    prof = profile(list(trainer.timeline), spec["warmup"], spec["workers"], train_s)
    m = trainer.server_metrics
    prof["server"] = {k: m.get(k) for k in ("version", "applied", "rejected", "staleness_mean", "staleness_max",
                                            "waits", "clock_gap_max")}
    pushes = sum(r["pushes_applied"] + r["pushes_rejected"] for r in history.records[spec["warmup"]:])
    prof["ms_per_push_round_trip"] = 1000 * prof.get("push_s", 0.0) / max(pushes, 1)
    trace_dir = spec.get("trace_dir")
    if trace_dir and rule_name == "downpour":
        os.makedirs(trace_dir, exist_ok=True)
        trainer.trace(os.path.join(trace_dir, f"psdist-{name}.trace.json"))
    model = trainer.model()
    return curve.row(peaks, params=common.n_params(model), rule=rule_name, fit_s=fit_s, profile=prof,
                     device=spec.get("device", "cpu"), data="workers read Zarr chunks (psdist.ZarrDataset)",
                     processes_note="client + data workers + parameter-server worker")


def main(argv: list[str] | None = None) -> int:
    import logging

    spec = common.parse(argv)
    common.ensure_path()  # the Dask workers import benchmarks.suite (memory probes)
    common.setup_torch(spec["threads"], spec["seed"])
    logging.getLogger("psdist").setLevel(logging.WARNING)
    from psdist.cluster import embedded_cluster

    kwargs: dict[str, Any] = {"resources": {"GPU": 1}} if spec.get("device") == "cuda" else {}
    t0 = time.perf_counter()
    cluster, client = embedded_cluster(spec["workers"], spec["threads"], True, dashboard_address=None, **kwargs)
    start_s = time.perf_counter() - t0
    out = common.Output(spec, "psdist")
    try:
        for rule_name in spec["rules"]:
            for name, info in spec["workloads"].items():
                key = f"psdist-{rule_name}/{name}"
                t1 = time.perf_counter()
                try:
                    row = one(client, rule_name, name, info["path"], spec)
                    row.update(process_s=time.perf_counter() - t1, cluster_start_s=start_s)
                    out.add(key, row)
                except Exception as exc:
                    out.error(key, exc)
    finally:
        client.close()
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
