"""Contender: PyTorch DistributedDataParallel over gloo, N processes started with ``mp.spawn``.

    python -m benchmarks.suite.c_ddp --spec spec.json        # spec["workers"] processes

Synchronous data parallelism as PyTorch documents it: every rank holds the model wrapped in
``DistributedDataParallel`` (gloo backend, loopback), trains on its own shard of a shuffled
epoch (the same seeded permutation on every rank, rank r taking rows r, r+N, ...; the shards
cut to equal length, as ``DistributedSampler(drop_last=True)``) with the per-process batch size
of every other contender, and the gradients are all-reduced in ``backward``. One update = one
optimizer step on every rank (N × batch samples). Rank 0 evaluates after each epoch while the
others wait at a barrier; evaluation is not training time. The ranks read the training arrays
from the Zarr store into memory.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

from benchmarks.suite import common


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _workload(rank: int, world: int, name: str, path: str, spec: dict[str, Any]) -> dict[str, Any] | None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from benchmarks.suite.workloads import WORKLOADS, load_arrays

    wl = WORKLOADS[name]
    dev = common.device_of(spec)
    common.reset_peak()
    x, y, xv, yv = load_arrays(path, name)
    x, y = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
    xvt = torch.from_numpy(xv).to(dev)
    model = common.build(name, spec["seed"], dev)  # the same seeded weights on every rank
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=wl.lr, momentum=spec["momentum"])
    gen = torch.Generator().manual_seed(spec["seed"])
    per_rank = len(x) // world
    bounds = common.batch_bounds(per_rank, spec["batch_size"])
    curve = common.Curve(name, wl.target, spec["warmup"])
    steps = 0
    for _ in range(spec["epochs"]):
        ddp.train()
        dist.barrier()
        common.sync(dev)
        t0 = time.perf_counter()
        perm = torch.randperm(len(x), generator=gen)[rank::world][:per_rank].to(dev)
        xs, ys = x[perm], y[perm]
        for lo, hi in bounds:
            opt.zero_grad(set_to_none=False)
            wl.loss(ddp(xs[lo:hi]), ys[lo:hi]).backward()  # all-reduce happens here
            opt.step()
            steps += 1
        common.sync(dev)
        dist.barrier()  # the epoch ends when the slowest rank is done
        train_s = time.perf_counter() - t0
        metric = common.evaluate(model, name, xvt, yv) if rank == 0 else 0.0
        curve.add(per_rank * world, train_s, steps, metric)
    dist.barrier()
    peaks: list[Any] = [None] * world
    dist.all_gather_object(peaks, common.peak_mb())
    if rank != 0:
        return None
    return curve.row([float(p) for p in peaks], params=common.n_params(model), world_size=world,
                     backend=dist.get_backend(), global_batch=spec["batch_size"] * world,
                     device=str(dev), data="Zarr store read into memory by every rank")


def _rank(rank: int, world: int, port: int, spec: dict[str, Any]) -> None:
    import torch.distributed as dist

    common.ensure_path()
    common.setup_torch(spec["threads"], spec["seed"])
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    out = common.Output(spec, spec["contender"]) if rank == 0 else None
    for name, info in spec["workloads"].items():
        key = f"{spec['contender']}/{name}"
        t0 = time.perf_counter()
        try:
            row = _workload(rank, world, name, info["path"], spec)
        except Exception as exc:  # one rank failing breaks the collective; report and stop
            if out is not None:
                out.error(key, exc)
            raise
        if out is not None and row is not None:
            row["process_s"] = time.perf_counter() - t0
            out.add(key, row)
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    import torch.multiprocessing as mp

    spec = common.parse(argv)
    common.ensure_path()
    world = int(spec["workers"])
    mp.spawn(_rank, args=(world, _free_port(), spec), nprocs=world, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
