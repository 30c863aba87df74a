"""A plain single-process PyTorch reference: the same model, data and optimizer, no psdist.

The examples and benchmarks put psdist's figures next to this loop's, trained for the same
epochs on the same Zarr data with the torch twin of the psdist server optimizer (its schedule
included, stepped per minibatch as the server steps per push).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from psdist.core.optim import Optimizer
from psdist.data.dataset import ZarrDataset
from psdist.errors import ConfigError
from psdist.replica.loop import as_labels, concat_outputs
from psdist.replica.replica import Replica, as_model_dict
from psdist.replica.steps import Step, SupervisedStep
from psdist.replica.torch_optim import torch_optimizer
from psdist.run.metrics import default_metrics

__all__ = ["train_plain"]


def train_plain(
    model_fn: Callable[[], Any],
    data: ZarrDataset,
    optimizer: Optimizer | dict[str, Optimizer],
    *,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    step: Step | None = None,
    epochs: int = 1,
    batch_size: int = 128,
    seed: int = 0,
    metrics: dict[str, Callable[[np.ndarray, Any], float]] | None = None,
    threads: int | None = None,
) -> dict[str, float]:
    """Train in this process on all training rows (reshuffled each epoch); validation metrics.

    Returns ``{"val_loss": ..., "val_<metric>": ...}`` computed like :class:`psdist.Trainer`'s.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    if step is None:
        if loss_fn is None:  # was a TypeError ('NoneType' object is not callable) in the first batch
            raise ConfigError("give loss_fn (e.g. torch.nn.functional.cross_entropy) or a custom step")
        step = SupervisedStep(loss_fn)
    info = data.describe()
    g = data.open_group()
    x = np.concatenate([np.asarray(g[c.x][c.start : c.stop]) for c in info.train])
    y = as_labels(np.concatenate([np.asarray(g[c.y][c.start : c.stop]) for c in info.train]))
    torch.manual_seed(seed)
    models = as_model_dict(model_fn())
    replica = Replica("plain", models)  # same flat binding as the workers: same .grad handling
    opts = optimizer if isinstance(optimizer, dict) else {next(iter(models)): optimizer}
    torch_opts = {}
    for name, opt in opts.items():
        if not any(p.requires_grad for p in models[name].parameters()):
            continue  # a wholly frozen model: nothing to step (torch refuses empty optimizers)
        t = torch_optimizer(opt, models[name].parameters())
        sched = torch.optim.lr_scheduler.LambdaLR(t, _lr_factor(opt))
        torch_opts[name] = (t, sched)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        replica.train(True)
        for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // batch_size)):
            replica.zero_grad()
            step(replica, xt[idx], yt[idx])
            for t, sched in torch_opts.values():
                t.step()
                sched.step()
    replica.train(False)
    loss_sum, outs, targets = 0.0, [], []
    with torch.no_grad():
        for c in info.val:
            xv = torch.from_numpy(np.asarray(g[c.x][c.start : c.stop]))
            yv = np.asarray(g[c.y][c.start : c.stop])
            ls, out = step.evaluate(replica, xv, torch.from_numpy(as_labels(yv)))
            loss_sum += ls
            outs.append({k: v.numpy() for k, v in out.items()} if isinstance(out, dict) else out.numpy())
            targets.append(yv)
    n = sum(len(t) for t in targets)
    result = {"val_loss": loss_sum / max(n, 1)}
    if outs:
        outputs, target = concat_outputs(outs), np.concatenate(targets)
        every: dict[str, Callable[[np.ndarray, Any], float]] = {**default_metrics(info.y_dtype), **(metrics or {})}
        for name, fn in every.items():
            result[f"val_{name}"] = float(fn(target, outputs))
    return result


def _lr_factor(opt: Optimizer) -> Callable[[int], float]:
    """The torch ``LambdaLR`` multiplier of ``opt``'s schedule at a step count."""
    return lambda v: opt.schedule.factor(v)
