"""Contender: plain single-process PyTorch (the reference every ratio is taken against).

    python -m benchmarks.suite.c_plain --spec spec.json      # spec["threads"]: 1 or all cores

The training arrays are read from the workload's Zarr store into memory once (``load_s``,
not training time); each epoch is a seeded shuffle plus forward, backward and
``torch.optim.SGD.step`` per minibatch, then an evaluation on the validation rows.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from benchmarks.suite import common


def train(name: str, path: str, spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from benchmarks.suite.workloads import WORKLOADS, load_arrays

    wl = WORKLOADS[name]
    dev = common.device_of(spec)
    common.reset_peak()
    t0 = time.perf_counter()
    x, y, xv, yv = load_arrays(path, name)
    x, y, xvt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev), torch.from_numpy(xv).to(dev)
    load_s = time.perf_counter() - t0

    model = common.build(name, spec["seed"], dev)
    opt = torch.optim.SGD(model.parameters(), lr=wl.lr, momentum=spec["momentum"])
    gen = torch.Generator(device=dev).manual_seed(spec["seed"])
    bounds = common.batch_bounds(len(x), spec["batch_size"])
    curve = common.Curve(name, wl.target, spec["warmup"])
    steps = 0
    for _ in range(spec["epochs"]):
        model.train()
        common.sync(dev)
        t0 = time.perf_counter()
        perm = torch.randperm(len(x), device=dev, generator=gen)  # the shuffle is training time
        xs, ys = x[perm], y[perm]
        loss_sum = torch.zeros((), device=dev)
        for lo, hi in bounds:
            opt.zero_grad(set_to_none=False)
            loss = wl.loss(model(xs[lo:hi]), ys[lo:hi])
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * (hi - lo)
            steps += 1
        common.sync(dev)
        train_s = time.perf_counter() - t0
        curve.add(len(x), train_s, steps, common.evaluate(model, name, xvt, yv),
                  train_loss=float(loss_sum) / len(x))
    return curve.row([common.peak_mb()], params=common.n_params(model), load_s=load_s,
                     threads=torch.get_num_threads(), device=str(dev), data="Zarr store read into memory")


def main(argv: list[str] | None = None) -> int:
    spec = common.parse(argv)
    common.setup_torch(spec["threads"], spec["seed"])
    return common.run_workloads(spec, spec["contender"], lambda n, info: train(n, info["path"], spec))


if __name__ == "__main__":
    sys.exit(main())
