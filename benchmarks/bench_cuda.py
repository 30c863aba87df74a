# GPU throughput: plain single-process PyTorch on CUDA vs psdist with one CUDA training worker.
#
#   python benchmarks/bench_cuda.py                          # on a CUDA machine, well under 4 min on an H100
#   python benchmarks/bench_cuda.py --width 128              # a wider CNN: more compute per push
#   python benchmarks/bench_cuda.py --quick --device cpu     # smoke run without a GPU (< 2 min on 2 cores)
#
# Same data (toy jet images from psdist.hep.jetimages in a temporary Zarr store), same model
# (psdist.hep.models.jet_cnn), batch size and optimizer (SGD lr 0.05, momentum 0.9) for both;
# epoch 1 is warm-up and never timed. psdist runs on a LocalCluster made here: 2 worker
# processes with the `GPU` resource, one hosting the parameter server, one training on cuda.
# It is measured with push_every=1 and push_every=4, each with overlap off and on (one push in
# flight while the next minibatch computes; psdist's default on CUDA workers): on a GPU the
# overhead is communication, every push moving the whole weight vector GPU -> CPU -> PS -> CPU -> GPU.
#
# Prints a table and one final JSON line; also writes it to $OUT/bench_cuda.json when OUT is
# set (after every stage, so a run cut short still leaves what it measured). Without CUDA it
# prints {"cuda": false, ...} and exits 0.

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEED = 0
LR = 0.05
MOMENTUM = 0.9
WARMUP_EPOCHS = 1

# Full size: ~4 MB of images, 8 chunks (= psdist tasks) of 4096 rows per epoch.
FULL = {"jets": 32768, "val_jets": 4096, "chunk_rows": 4096, "batch_size": 512, "epochs": 3, "width": 64}
# Smoke-test size: checks that everything runs, numbers mean nothing.
QUICK = {"jets": 2048, "val_jets": 512, "chunk_rows": 512, "batch_size": 128, "epochs": 1, "width": 8}


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, so the output is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _write(result: dict[str, Any], out: str | None) -> None:
    if not out:
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_finite(result), indent=1) + "\n")
    tmp.replace(path)


def _finish(result: dict[str, Any], out: str | None) -> None:
    _write(result, out)
    print(json.dumps(_finite(result)), flush=True)


def _fmt(v: float | None, spec: str = ".0f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


# ---------------------------------------------------------------------------- plain PyTorch
def run_plain(data: str, model_fn: Any, device: str, epochs: int, batch_size: int) -> dict[str, Any]:
    """Single process: every row on the device once, then shuffle + SGD steps per epoch."""
    import numpy as np
    import torch
    import zarr

    from psdist.metrics import accuracy
    from psdist.replica.loop import batch_bounds

    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(1)  # the psdist training worker has threads_per_worker=1
    t0 = time.perf_counter()
    g = zarr.open_group(data, mode="r")
    x = torch.from_numpy(np.ascontiguousarray(g["x"][:])).to(dev)
    y = torch.from_numpy(np.asarray(g["y"][:]).astype(np.int64)).to(dev)
    xv = torch.from_numpy(np.ascontiguousarray(g["x_val"][:])).to(dev)
    yv = np.asarray(g["y_val"][:]).astype(np.int64)
    load_s = time.perf_counter() - t0

    torch.manual_seed(SEED)
    model = model_fn().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.functional.cross_entropy
    gen = torch.Generator(device=dev).manual_seed(SEED)
    bounds = batch_bounds(len(x), batch_size)  # psdist's batching (a 1-row tail joins the last batch)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    records = []
    for epoch in range(1, WARMUP_EPOCHS + epochs + 1):
        model.train()
        sync()
        t0 = time.perf_counter()
        perm = torch.randperm(len(x), device=dev, generator=gen)  # the shuffle counts, as in psdist
        xs, ys = x[perm], y[perm]
        loss_sum = torch.zeros((), device=dev)  # summed on the device: no host sync per batch
        for lo, hi in bounds:
            opt.zero_grad(set_to_none=False)
            loss = loss_fn(model(xs[lo:hi]), ys[lo:hi])
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * (hi - lo)
        sync()
        train_s = time.perf_counter() - t0
        records.append({"epoch": epoch, "samples": len(x), "train_s": train_s,
                        "samples_per_s": len(x) / train_s, "train_loss": float(loss_sum) / len(x)})

    model.eval()
    outs = []
    with torch.no_grad():
        for lo, hi in batch_bounds(len(xv), batch_size):
            outs.append(model(xv[lo:hi]).float().cpu().numpy())
    val_acc = accuracy(yv, np.concatenate(outs))
    timed = records[WARMUP_EPOCHS:]
    samples = sum(r["samples"] for r in timed)
    seconds = sum(r["train_s"] for r in timed)
    del x, y, xv, model, opt
    if dev.type == "cuda":
        torch.cuda.empty_cache()  # leave the GPU memory to the psdist worker process
    return {"samples_per_s": samples / seconds, "timed_samples": samples, "timed_s": seconds,
            "load_s": load_s, "val_accuracy": val_acc, "epochs": records}


# ---------------------------------------------------------------------------- psdist
def run_psdist(client: Any, data: str, model_fn: Any, epochs: int, batch_size: int, push_every: int,
               timeout: float, overlap: bool = False) -> dict[str, Any]:
    """One Trainer.fit on the shared cluster; samples/s from the history's timed epochs."""
    import torch

    import psdist

    trainer = psdist.Trainer(
        model_fn,
        torch.nn.functional.cross_entropy,
        data=psdist.ZarrDataset(data),
        optimizer=psdist.optim.SGD(lr=LR, momentum=MOMENTUM),
        batch_size=batch_size,
        push_every=push_every,
        overlap=overlap,
        workers=1,  # ignored with a client: the cluster's second worker trains
        client=client,
        seed=SEED,
        timeout=timeout,  # a hung server call fails the run instead of eating the device time
    )
    t0 = time.perf_counter()
    history = trainer.fit(epochs=WARMUP_EPOCHS + epochs)
    fit_s = time.perf_counter() - t0

    keep = ("epoch", "samples", "samples_per_s", "train_loss", "val_loss", "val_accuracy", "compute_s",
            "comm_s", "read_s", "wall_s", "pushes_applied", "pushes_rejected", "staleness_max", "chunks")
    records = []
    for r in history.records:
        rec = {k: r[k] for k in keep if k in r}
        # training time of the epoch (tasks only; validation is in wall_s, not here)
        rec["train_s"] = r["samples"] / r["samples_per_s"]
        records.append(rec)
    timed = records[WARMUP_EPOCHS:]  # epoch 1 builds the model on the worker and initialises CUDA there
    samples = sum(r["samples"] for r in timed)
    seconds = sum(r["train_s"] for r in timed)
    # where the training worker's time went (one worker: shares of the epoch's training time)
    shares = {k: sum(r[k] for r in timed) / seconds for k in ("compute_s", "comm_s", "read_s")}
    workers = trainer.server_metrics.get("workers", {})
    devices = sorted({str(w.get("info", {}).get("device")) for w in workers.values()})
    pushes = sum(r["pushes_applied"] + r["pushes_rejected"] for r in timed)
    return {
        "push_every": push_every,
        "overlap": overlap,
        "staleness_mean": sum(r["staleness_mean"] for r in history.records[WARMUP_EPOCHS:]) / max(1, len(timed)),
        "samples_per_s": samples / seconds,
        "timed_samples": samples,
        "timed_s": seconds,
        "fit_s": fit_s,
        "ms_per_push": 1000 * sum(r["comm_s"] for r in timed) / max(pushes, 1),
        "compute_share": shares["compute_s"],
        "comm_share": shares["comm_s"],
        "read_share": shares["read_s"],
        "other_share": max(0.0, 1.0 - sum(shares.values())),
        "val_accuracy": history.last.get("val_accuracy"),
        "worker_devices": devices,
        "ps_address": trainer.ps_address,
        "epochs": records,
    }


def start_cluster(gpu: bool) -> tuple[Any, Any]:
    """LocalCluster of 2 single-threaded worker processes; both get `GPU` when training on cuda.

    psdist puts the parameter server on the last worker by name ("1") and keeps training off it,
    so worker "0" is the only training worker; its RunPlugin picks cuda from the GPU resource.
    """
    from distributed import Client, LocalCluster

    from psdist.cluster import malloc_config

    kwargs: dict[str, Any] = {"resources": {"GPU": 1}} if gpu else {}
    # the workers are spawned: they must find psdist even when it is not installed
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with malloc_config(True):  # what psdist's own embedded cluster does
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                               **kwargs)
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    return cluster, client


# ---------------------------------------------------------------------------- driver
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="GPU throughput of psdist vs plain PyTorch on CUDA (samples/s).")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda (default) or cpu: forces CPU everywhere, no GPU resource (smoke tests)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs, numbers mean nothing")
    p.add_argument("--jets", type=int, default=None, help=f"training jets (default {FULL['jets']})")
    p.add_argument("--val-jets", type=int, default=None, help=f"validation jets (default {FULL['val_jets']})")
    p.add_argument("--pixels", type=int, default=32, help="image size (default 32)")
    p.add_argument("--chunk-rows", type=int, default=None,
                   help=f"rows per Zarr chunk = per psdist task (default {FULL['chunk_rows']})")
    p.add_argument("--batch-size", type=int, default=None, help=f"default {FULL['batch_size']}")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"timed epochs, after 1 warm-up epoch (default {FULL['epochs']})")
    p.add_argument("--width", type=int, default=None,
                   help=f"jet_cnn conv width; wider = more GPU work per push (default {FULL['width']})")
    p.add_argument("--hidden", type=int, default=128, help="jet_cnn hidden units (default 128)")
    p.add_argument("--push-every", default="1,4", help="psdist push_every values to run (default 1,4)")
    p.add_argument("--overlap", default="off,on", help="overlap settings to run for each push_every (default off,on)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a parameter-server call may take")
    p.add_argument("--out", default=None, help="JSON file (default $OUT/bench_cuda.json when OUT is set)")
    a = p.parse_args(argv)
    size = QUICK if a.quick else FULL
    for key in size:
        if getattr(a, key) is None:
            setattr(a, key, size[key])
    if a.epochs < 1:
        p.error("--epochs must be >= 1 (timed epochs; one warm-up epoch always runs first)")
    a.push_every = [int(v) for v in str(a.push_every).split(",") if v.strip()]
    bad = [v for v in str(a.overlap).split(",") if v.strip() not in ("off", "on")]
    if bad:
        p.error(f"--overlap {a.overlap!r}: give off, on or off,on")
    a.runs = [(k, o == "on") for k in a.push_every for o in str(a.overlap).split(",")]
    if a.out is None and os.environ.get("OUT"):
        a.out = os.path.join(os.environ["OUT"], "bench_cuda.json")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    import torch

    cuda_ok = torch.cuda.is_available()
    result: dict[str, Any] = {"cuda": cuda_ok and args.device == "cuda", "torch": torch.__version__,
                              "python": platform.python_version()}
    if args.device == "cuda" and not cuda_ok:
        print(f"bench_cuda: CUDA is not available (torch {torch.__version__}, cuda build "
              f"{torch.version.cuda}); nothing to measure. Use --device cpu for a CPU smoke run.", flush=True)
        result["reason"] = "torch.cuda.is_available() is False"
        _finish(result, args.out)
        return 0

    sys.path.insert(0, str(ROOT))  # run from a checkout without psdist installed
    try:
        import distributed
        import zarr

        import psdist
        from psdist.hep.jetimages import write_dataset
        from psdist.hep.models import jet_cnn
    except ImportError as e:
        print(f"bench_cuda: a package psdist needs is missing: {e}", flush=True)
        result["error"] = f"missing package: {e}"
        _finish(result, args.out)
        return 1

    gpu = args.device == "cuda"
    device = "cuda" if gpu else "cpu"
    logging.basicConfig(level=logging.WARNING)
    for name in ("distributed", "psdist"):
        logging.getLogger(name).setLevel(logging.ERROR if name == "distributed" else logging.WARNING)

    # picklable (module-level function + keywords): the workers build the model from it
    model_fn = functools.partial(jet_cnn, image=args.pixels, width=args.width, hidden=args.hidden)
    params = sum(p.numel() for p in model_fn().parameters())
    result.update({
        "cuda": gpu,
        "device": torch.cuda.get_device_name() if gpu else platform.processor() or "cpu",
        "torch_cuda": torch.version.cuda,
        "versions": {"psdist": psdist.__version__, "distributed": distributed.__version__,
                     "zarr": zarr.__version__},
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
        "model": f"jet_cnn(image={args.pixels}, width={args.width}, hidden={args.hidden})",
        "params": params,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "warmup_epochs": WARMUP_EPOCHS,
        "jets": args.jets,
        "val_jets": args.val_jets,
        "chunk_rows": args.chunk_rows,
        "lr": LR,
        "momentum": MOMENTUM,
        "cpus": os.cpu_count(),
        "complete": False,
    })
    print(f"bench_cuda: {result['device']} torch {torch.__version__} | {result['model']} {params:,} params | "
          f"{args.jets} jets, chunks of {args.chunk_rows}, batch {args.batch_size}, "
          f"{WARMUP_EPOCHS}+{args.epochs} epochs", flush=True)

    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="psdist-bench-cuda-") as tmp:
        data = os.path.join(tmp, "jets.zarr")
        t0 = time.perf_counter()
        write_dataset(data, jets=args.jets, val_jets=args.val_jets, pixels=args.pixels, seed=SEED,
                      chunk_rows=args.chunk_rows)
        print(f"  data written in {time.perf_counter() - t0:.1f} s", flush=True)

        # plain first: starting the nannies changes this process's thread variables
        t0 = time.perf_counter()
        plain = run_plain(data, model_fn, device, args.epochs, args.batch_size)
        runs["plain"] = plain
        result.update({"plain_samples_s": plain["samples_per_s"], "val_acc_plain": plain["val_accuracy"]})
        print(f"  plain {device:<5}          {plain['samples_per_s']:10.0f} samples/s "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        _write({**result, "runs": runs}, args.out)

        t0 = time.perf_counter()
        cluster, client = start_cluster(gpu)
        result["cluster_start_s"] = time.perf_counter() - t0
        print(f"  LocalCluster of 2 workers started in {result['cluster_start_s']:.1f} s", flush=True)
        try:
            for k, overlap in args.runs:
                t0 = time.perf_counter()
                r = run_psdist(client, data, model_fn, args.epochs, args.batch_size, k, args.timeout, overlap)
                name = f"push{k}" + ("_overlap" if overlap else "")
                runs[f"psdist_{name}"] = r
                result[f"psdist_{name}_samples_s"] = r["samples_per_s"]
                result[f"ratio_{name}"] = r["samples_per_s"] / plain["samples_per_s"]
                result[f"val_acc_psdist_{name}"] = r["val_accuracy"]
                result[f"psdist_{name}_ms_per_push"] = r["ms_per_push"]
                result[f"psdist_{name}_comm_share"] = r["comm_share"]
                result[f"psdist_{name}_worker_devices"] = r["worker_devices"]
                if gpu and "cuda" not in r["worker_devices"]:
                    print(f"  WARNING: the psdist worker trained on {r['worker_devices']}, not cuda", flush=True)
                print(f"  psdist push_every={k:<3} overlap={'on ' if overlap else 'off'} {r['samples_per_s']:10.0f} "
                      f"samples/s (fit {r['fit_s']:.1f} s, worker on {','.join(r['worker_devices'])})", flush=True)
                _write({**result, "runs": runs}, args.out)
        finally:
            with contextlib.suppress(Exception):
                client.close()
            with contextlib.suppress(Exception):
                cluster.close()

    first = args.runs[0] if args.runs else None
    if first is not None:
        result["val_acc_psdist"] = result.get(f"val_acc_psdist_push{first[0]}" + ("_overlap" if first[1] else ""))
    result["total_s"] = time.perf_counter() - started
    result["complete"] = True

    print()
    print(f"{'configuration':<26} {'samples/s':>10} {'x plain':>8} {'val acc':>8} {'ms/push':>8} "
          f"{'compute':>8} {'comm':>6} {'read':>6} {'other':>6}")
    print("-" * 94)
    print(f"{'plain PyTorch (' + device + ')':<26} {_fmt(plain['samples_per_s']):>10} {'1.000':>8} "
          f"{_fmt(plain['val_accuracy'], '.4f'):>8}")
    for k, overlap in args.runs:
        name = f"push{k}" + ("_overlap" if overlap else "")
        r = runs[f"psdist_{name}"]
        label = f"psdist push_every={k}" + (" overlap" if overlap else "")
        print(f"{label:<26} {_fmt(r['samples_per_s']):>10} "
              f"{_fmt(result[f'ratio_{name}'], '.3f'):>8} {_fmt(r['val_accuracy'], '.4f'):>8} "
              f"{_fmt(r['ms_per_push'], '.2f'):>8} {_fmt(r['compute_share'], '.0%'):>8} "
              f"{_fmt(r['comm_share'], '.0%'):>6} {_fmt(r['read_share'], '.0%'):>6} {_fmt(r['other_share'], '.0%'):>6}")
    print()
    print(f"timed: {args.epochs} epoch(s) of {args.jets} jets after {WARMUP_EPOCHS} warm-up; "
          f"compute/comm/read/other: shares of the psdist worker's training time; total {result['total_s']:.1f} s")
    if args.out:
        print(f"results: {args.out}")
    _write({**result, "runs": runs}, args.out)  # the file keeps the per-epoch records too
    print(json.dumps(_finite(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
