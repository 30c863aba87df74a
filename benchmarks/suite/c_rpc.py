"""Contender: a torch.distributed.rpc parameter server, in the pattern of PyTorch's RPC tutorials.

    python -m benchmarks.suite.c_rpc --spec spec.json        # N trainers + 1 server process

The pattern of PyTorch's parameter-server tutorials ("Implementing a Parameter Server Using
Distributed RPC Framework", "Implementing Batch RPC Processing Using Asynchronous
Executions"): rank 0 creates the ``ParameterServer`` object and hands an ``RRef`` to it to the
trainers, which it launches with ``rpc_async``; a trainer computes a minibatch's gradients and
calls a static method of the server class on ``ps_rref.owner()`` with the RRef and the
gradients (``rpc_sync``); the method takes ``ps_rref.local_value()``, applies the update and
returns the fresh weights, which the trainer loads. The batch tutorial waits for all trainers
before stepping (synchronous); this contender steps at once under a lock (asynchronous, like
psdist's Downpour), so one trainer never waits for another.

As elsewhere in the suite: one flat float32 vector for weights and gradients, SGD with
momentum, each trainer a fixed shard of each seeded epoch (read from the Zarr store into
memory), rank 0 evaluates after each epoch (trainers idle: not training time). TensorPipe on
loopback.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any

from benchmarks.suite import common

_TRAINER: dict[str, Any] = {}  # the trainer process's state across RPC calls (one per process)


class ParameterServer:
    """Master model + optimizer on rank 0; one lock makes each update atomic."""

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        import torch

        from benchmarks.suite.workloads import WORKLOADS

        self.model = common.build(name, spec["seed"])
        self.opt = torch.optim.SGD(self.model.parameters(), lr=WORKLOADS[name].lr, momentum=spec["momentum"])
        self.lock = threading.Lock()
        self.updates = 0

    def flat(self) -> Any:
        import torch

        with torch.no_grad():
            return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])

    @staticmethod
    def update_and_fetch(ps_rref: Any, grad: Any) -> Any:
        self = ps_rref.local_value()
        with self.lock:
            off = 0
            for p in self.model.parameters():
                n = p.numel()
                p.grad = grad[off : off + n].view_as(p)
                off += n
            self.opt.step()
            self.updates += 1
            return self.flat()

    @staticmethod
    def get_weights(ps_rref: Any) -> Any:
        self = ps_rref.local_value()
        with self.lock:
            return self.flat()


# ------------------------------------------------------------------ run on the trainers via RPC
def trainer_setup(name: str, path: str, rank: int, world: int, spec: dict[str, Any]) -> None:
    import torch

    from benchmarks.suite.workloads import WORKLOADS, load_arrays

    common.reset_peak()
    x, y, _, _ = load_arrays(path, name)
    dev = common.device_of(spec)
    _TRAINER.update(name=name, wl=WORKLOADS[name], x=torch.from_numpy(x), y=torch.from_numpy(y), rank=rank,
                    world=world, dev=dev, model=common.build(name, spec["seed"], dev),
                    gen=torch.Generator().manual_seed(spec["seed"]), per_rank=len(x) // world,
                    bounds=common.batch_bounds(len(x) // world, spec["batch_size"]))


def trainer_epoch(ps_rref: Any) -> int:
    """One epoch of this trainer's shard, one push-and-fetch per minibatch; returns its rows."""
    import torch

    t = _TRAINER
    perm = torch.randperm(len(t["x"]), generator=t["gen"])[t["rank"] :: t["world"]][: t["per_rank"]]
    xs, ys = t["x"][perm].to(t["dev"]), t["y"][perm].to(t["dev"])
    model, loss_fn = t["model"], t["wl"].loss
    common.set_flat(model, _get_weights_remote(ps_rref).to(t["dev"]))
    for lo, hi in t["bounds"]:
        model.zero_grad(set_to_none=False)
        loss_fn(model(xs[lo:hi]), ys[lo:hi]).backward()
        flat = _rpc().rpc_sync(ps_rref.owner(), ParameterServer.update_and_fetch,
                               args=(ps_rref, common.grads_vector(model)))
        common.set_flat(model, flat.to(t["dev"]))
    return int(t["per_rank"])


def trainer_peak() -> float:
    return common.peak_mb()


def _rpc() -> Any:
    import torch.distributed.rpc as rpc

    return rpc


def _get_weights_remote(ps_rref: Any) -> Any:
    return _rpc().rpc_sync(ps_rref.owner(), ParameterServer.get_weights, args=(ps_rref,))


# ------------------------------------------------------------------ rank 0: server and driver
def _drive(spec: dict[str, Any], world: int) -> None:
    import torch

    from benchmarks.suite.workloads import WORKLOADS, load_arrays

    rpc = _rpc()
    trainers = [f"trainer{r}" for r in range(1, world)]
    out = common.Output(spec, spec["contender"])
    for name, info in spec["workloads"].items():
        key = f"{spec['contender']}/{name}"
        t_start = time.perf_counter()
        try:
            wl = WORKLOADS[name]
            common.reset_peak()
            ps_rref = rpc.RRef(ParameterServer(name, spec))
            futs = [rpc.rpc_async(t, trainer_setup, args=(name, info["path"], i, len(trainers), spec))
                    for i, t in enumerate(trainers)]
            _, _, xv, yv = load_arrays(info["path"], name)
            xvt = torch.from_numpy(xv)
            evaluator = common.build(name, spec["seed"])
            torch.futures.wait_all(futs)
            curve = common.Curve(name, wl.target, spec["warmup"])
            for _ in range(spec["epochs"]):
                t0 = time.perf_counter()
                rows = torch.futures.wait_all([rpc.rpc_async(t, trainer_epoch, args=(ps_rref,)) for t in trainers])
                train_s = time.perf_counter() - t0
                ps = ps_rref.local_value()
                common.set_flat(evaluator, ps.get_weights(ps_rref))
                curve.add(sum(rows), train_s, ps.updates, common.evaluate(evaluator, name, xvt, yv))
            peaks = [common.peak_mb(), *[rpc.rpc_sync(t, trainer_peak) for t in trainers]]
            row = curve.row(peaks, params=common.n_params(evaluator), backend="TensorPipe",
                            device=spec.get("device", "cpu"), data="Zarr store read into memory by every trainer",
                            processes_note="server/driver + trainers")
            row["process_s"] = time.perf_counter() - t_start
            out.add(key, row)
        except Exception as exc:
            out.error(key, exc)


def _rank(rank: int, world: int, port: int, spec: dict[str, Any]) -> None:
    common.ensure_path()
    common.setup_torch(spec["threads"], spec["seed"])
    os.environ.update(TP_SOCKET_IFNAME="lo", GLOO_SOCKET_IFNAME="lo")
    rpc = _rpc()
    opts = rpc.TensorPipeRpcBackendOptions(init_method=f"tcp://127.0.0.1:{port}", num_worker_threads=8,
                                           rpc_timeout=float(spec.get("rpc_timeout", 300)))
    rpc.init_rpc("ps" if rank == 0 else f"trainer{rank}", rank=rank, world_size=world, rpc_backend_options=opts)
    if rank == 0:
        _drive(spec, world)
    rpc.shutdown()  # waits for every rank: the trainers serve until rank 0 is done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    import torch.multiprocessing as mp

    spec = common.parse(argv)
    common.ensure_path()
    from benchmarks.suite import c_rpc  # functions by module name: RPC pickles them by reference

    world = int(spec["workers"]) + 1
    mp.spawn(c_rpc._rank, args=(world, free_port(), spec), nprocs=world, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
