"""Contender: a Ray actor parameter server, asynchronous, in the pattern of Ray's PS example.

    python -m benchmarks.suite.c_ray --spec spec.json        # needs `pip install ray`

The pattern of Ray's documented parameter-server example: a ``ParameterServer`` actor owns the
model and a torch optimizer and exposes ``apply_gradients`` (returns the new weights) and
``get_weights``; N ``DataWorker`` actors expose ``compute_gradients(weights)`` (set the weights,
one minibatch forward/backward, return the gradients). The asynchronous driver keeps one
gradient in flight per worker, ``ray.wait``s for whichever is ready, hands that object ref to
``apply_gradients`` and starts the worker's next ``compute_gradients`` on the returned weights
ref, so weights and gradients move through Ray's object store without passing the driver.

Differences from the example, each for a like-for-like comparison: weights and gradients are
one flat float32 vector (psdist's layout) rather than a list of arrays; every worker trains a
fixed shard of each seeded epoch (rows w, w+N, ...), read from the Zarr store into memory; the
optimizer is SGD with momentum like the other contenders; the driver evaluates the server's
weights after each epoch (the workers idle meanwhile: not training time).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Any

import numpy as np

from benchmarks.suite import common

# arrays from Ray's object store are read-only; they are only ever copied from, never written
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def _flat(model: Any) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()]).numpy()


class ParameterServer:
    """Owns the master model and its optimizer; gradients in, fresh weights out."""

    def __init__(self, spec: dict[str, Any]) -> None:
        common.ensure_path()
        common.setup_torch(spec["threads"], spec["seed"])
        self.spec = spec

    def setup(self, name: str) -> None:
        """A fresh model and optimizer for the next workload (actors outlive workloads)."""
        import torch

        from benchmarks.suite.workloads import WORKLOADS

        spec = self.spec
        common.reset_peak()
        self.model = common.build(name, spec["seed"])
        self.opt = torch.optim.SGD(self.model.parameters(), lr=WORKLOADS[name].lr, momentum=spec["momentum"])
        self.updates = 0

    def apply_gradients(self, result: tuple[np.ndarray, int, float]) -> np.ndarray:
        import torch

        grad = result[0]
        off = 0
        for p in self.model.parameters():
            n = p.numel()
            p.grad = torch.from_numpy(grad[off : off + n]).view_as(p).clone()
            off += n
        self.opt.step()
        self.updates += 1
        return _flat(self.model)

    def get_weights(self) -> np.ndarray:
        return _flat(self.model)

    def peak(self) -> float:
        return common.peak_mb()


class DataWorker:
    """Holds one shard of the training rows and a model replica; one minibatch per call."""

    def __init__(self, rank: int, world: int, spec: dict[str, Any]) -> None:
        common.ensure_path()
        common.setup_torch(spec["threads"], spec["seed"])
        self.rank, self.world, self.spec = rank, world, spec

    def setup(self, name: str, path: str) -> None:
        """Load this workload's rows and build its model (actors outlive workloads)."""
        import torch

        from benchmarks.suite.workloads import WORKLOADS, load_arrays

        spec, rank, world = self.spec, self.rank, self.world
        common.reset_peak()
        self.dev = common.device_of(spec)
        self.wl = WORKLOADS[name]
        x, y, _, _ = load_arrays(path, name)
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.rank, self.world, self.batch = rank, world, spec["batch_size"]
        self.gen = torch.Generator().manual_seed(spec["seed"])
        self.model = common.build(name, spec["seed"], self.dev)
        self.per_rank = len(x) // world
        self.bounds = common.batch_bounds(self.per_rank, self.batch)
        self.queue: list[tuple[int, int]] = []

    def start_epoch(self) -> tuple[int, int]:
        """Shuffle (the same permutation on every worker) and take this worker's shard."""
        import torch

        perm = torch.randperm(len(self.x), generator=self.gen)[self.rank :: self.world][: self.per_rank]
        self.xs, self.ys = self.x[perm].to(self.dev), self.y[perm].to(self.dev)
        self.queue = list(self.bounds)
        return len(self.queue), self.per_rank

    def compute_gradients(self, weights: np.ndarray) -> tuple[np.ndarray, int, float]:
        common.set_flat(self.model, weights)
        lo, hi = self.queue.pop(0)
        self.model.zero_grad(set_to_none=False)
        loss = self.wl.loss(self.model(self.xs[lo:hi]), self.ys[lo:hi])
        loss.backward()
        return common.grads_vector(self.model).numpy(), hi - lo, float(loss.detach())

    def peak(self) -> float:
        return common.peak_mb()


def train(ray: Any, ps: Any, workers: list[Any], name: str, path: str, spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from benchmarks.suite.workloads import WORKLOADS, load_arrays

    wl = WORKLOADS[name]
    n = len(workers)
    ray.get([ps.setup.remote(name), *[w.setup.remote(name, path) for w in workers]])
    common.reset_peak()
    _, _, xv, yv = load_arrays(path, name)
    xvt = torch.from_numpy(xv)
    evaluator = common.build(name, spec["seed"])
    curve = common.Curve(name, wl.target, spec["warmup"])
    updates = 0
    for _ in range(spec["epochs"]):
        shards = ray.get([w.start_epoch.remote() for w in workers])  # (batches, rows) per worker
        left = {r: shards[r][0] for r in range(n)}
        t0 = time.perf_counter()
        weights = ps.get_weights.remote()
        in_flight = {workers[r].compute_gradients.remote(weights): r for r in range(n)}
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            r = in_flight.pop(ready[0])
            weights = ps.apply_gradients.remote(ready[0])  # the ref goes straight to the PS
            updates += 1
            left[r] -= 1
            if left[r] > 0:
                in_flight[workers[r].compute_gradients.remote(weights)] = r
        final = ray.get(weights)  # the last update applied: the epoch is over
        train_s = time.perf_counter() - t0
        common.set_flat(evaluator, final)
        curve.add(sum(rows for _, rows in shards), train_s, updates, common.evaluate(evaluator, name, xvt, yv))
    peaks = [common.peak_mb(), *ray.get([ps.peak.remote(), *[w.peak.remote() for w in workers]])]
    return curve.row(peaks, params=int(final.size), device=spec.get("device", "cpu"),
                     data="Zarr store read into memory by every worker",
                     processes_note="driver + PS actor + worker actors (Ray's own daemons not counted)")


def main(argv: list[str] | None = None) -> int:
    spec = common.parse(argv)
    common.ensure_path()
    common.setup_torch(spec["threads"], spec["seed"])
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=int(spec["workers"]) + 1, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})
    n = int(spec["workers"])
    gpu = {"num_gpus": 1.0 / (n + 1)} if spec.get("device") == "cuda" else {}
    # one PS and N workers for all workloads: Ray starts a process per actor (seconds each)
    # the classes by their module name (not __main__), so actors import this module, filter included
    from benchmarks.suite import c_ray

    ps = ray.remote(num_cpus=1, **gpu)(c_ray.ParameterServer).remote(spec)
    workers = [ray.remote(num_cpus=1, **gpu)(c_ray.DataWorker).remote(r, n, spec) for r in range(n)]
    start_s = time.perf_counter() - t0
    try:
        def one(name: str, info: dict[str, Any]) -> dict[str, Any]:
            row = train(ray, ps, workers, name, info["path"], spec)
            row["ray_start_s"] = start_s
            return row

        return common.run_workloads(spec, spec["contender"], one)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
