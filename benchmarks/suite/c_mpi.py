"""Contender: MPI master/worker Downpour in the style of the old HEP tools (mpi_learn).

    mpirun --allow-run-as-root --oversubscribe -n 3 python -m benchmarks.suite.c_mpi --spec spec.json

(the suite starts it so, with loopback-only Open MPI settings; rank 0 is the master, ranks
1..N the workers). The design of mpi_learn's Downpour: the master holds the weights and the
optimizer; a worker trains its minibatches and, after each one, sends its gradient to the
master and blocks until the master's fresh weights come back; the master serves whichever
worker's message arrives first (``Recv`` from ``ANY_SOURCE``), applies it and replies, so the
updates are asynchronous and stale by up to N-1 versions. Messages are raw float32 buffers
(mpi4py's upper-case ``Send``/``Recv``, no pickling), the gradient vector with the minibatch's
sample count appended; a short ``DONE`` message ends a worker's epoch.

As elsewhere in the suite: SGD with momentum, each worker a fixed shard of each seeded epoch
(read from the Zarr store into memory), the master evaluates after each epoch while the workers
wait at a barrier (not training time).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from benchmarks.suite import common

UPDATE, WEIGHTS, DONE = 1, 2, 3


def _flat(model: Any) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()]).numpy().copy()


def master(comm: Any, name: str, path: str, spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from mpi4py import MPI

    from benchmarks.suite.workloads import WORKLOADS, load_arrays

    wl = WORKLOADS[name]
    common.reset_peak()
    model = common.build(name, spec["seed"])
    opt = torch.optim.SGD(model.parameters(), lr=wl.lr, momentum=spec["momentum"])
    params = list(model.parameters())
    _, _, xv, yv = load_arrays(path, name)
    xvt = torch.from_numpy(xv)
    n = sum(p.numel() for p in params)
    buf = np.empty(n + 1, np.float32)  # gradient + sample count
    status = MPI.Status()
    curve = common.Curve(name, wl.target, spec["warmup"])
    workers, updates = comm.Get_size() - 1, 0
    for _ in range(spec["epochs"]):
        comm.Barrier()
        t0 = time.perf_counter()
        weights = _flat(model)
        comm.Bcast(weights, root=0)
        done, samples = 0, 0
        while done < workers:
            comm.Recv(buf, source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status)
            if status.Get_tag() == DONE:
                done += 1
                continue
            grad = torch.from_numpy(buf[:n])
            off = 0
            for p in params:
                k = p.numel()
                p.grad = grad[off : off + k].view_as(p).clone()
                off += k
            opt.step()
            updates += 1
            samples += int(buf[n])
            comm.Send(_flat(model), dest=status.Get_source(), tag=WEIGHTS)
        train_s = time.perf_counter() - t0
        curve.add(samples, train_s, updates, common.evaluate(model, name, xvt, yv))
    peaks = comm.gather(common.peak_mb(), root=0)
    return curve.row([float(p) for p in peaks], params=n, mpi=MPI.Get_library_version().splitlines()[0],
                     device="cpu", data="Zarr store read into memory by every worker",
                     processes_note="master + workers")


def worker(comm: Any, name: str, path: str, spec: dict[str, Any]) -> None:
    import torch

    from benchmarks.suite.workloads import WORKLOADS, load_arrays

    wl = WORKLOADS[name]
    common.reset_peak()
    rank, world = comm.Get_rank() - 1, comm.Get_size() - 1
    x, y, _, _ = load_arrays(path, name)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model = common.build(name, spec["seed"])
    n = common.n_params(model)
    per_rank = len(x) // world
    bounds = common.batch_bounds(per_rank, spec["batch_size"])
    gen = torch.Generator().manual_seed(spec["seed"])
    weights = np.empty(n, np.float32)
    msg = np.empty(n + 1, np.float32)
    for _ in range(spec["epochs"]):
        comm.Barrier()
        comm.Bcast(weights, root=0)
        common.set_flat(model, weights)
        perm = torch.randperm(len(x), generator=gen)[rank::world][:per_rank]
        xs, ys = x[perm], y[perm]
        for lo, hi in bounds:
            model.zero_grad(set_to_none=False)
            wl.loss(model(xs[lo:hi]), ys[lo:hi]).backward()
            msg[:n] = common.grads_vector(model).numpy()
            msg[n] = hi - lo
            comm.Send(msg, dest=0, tag=UPDATE)
            comm.Recv(weights, source=0, tag=WEIGHTS)
            common.set_flat(model, weights)
        comm.Send(msg[:1], dest=0, tag=DONE)
    comm.gather(common.peak_mb(), root=0)


def main(argv: list[str] | None = None) -> int:
    spec = common.parse(argv)
    common.setup_torch(spec["threads"], spec["seed"])
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    out = common.Output(spec, spec["contender"]) if comm.Get_rank() == 0 else None
    for name, info in spec["workloads"].items():
        t0 = time.perf_counter()
        if out is None:
            worker(comm, name, info["path"], spec)
            continue
        try:
            row = master(comm, name, info["path"], spec)
            row["process_s"] = time.perf_counter() - t0
            out.add(f"{spec['contender']}/{name}", row)
        except Exception as exc:  # the workers would wait forever: record, then abort them all
            out.error(f"{spec['contender']}/{name}", exc)
            comm.Abort(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
