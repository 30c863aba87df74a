"""A plain single-process PyTorch reference: the same model, data and optimizer, no psdist.

The examples and benchmarks put psdist's figures next to this loop's, trained for the same
epochs on the same Zarr data with the same ``torch.optim`` recipe the server runs (built over the
model's trainable parameters, its scheduler stepped per minibatch as the server's per push, the
same per-batch clipping).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from psdist.core.tree import rows, tree_map
from psdist.data.dataset import ZarrDataset
from psdist.errors import ConfigError
from psdist.optim.resolve import as_optimizer
from psdist.replica.loop import as_labels, concat_outputs
from psdist.replica.replica import Replica, as_model_dict
from psdist.replica.steps import Step, SupervisedStep
from psdist.run.metrics import default_metrics

__all__ = ["train_plain"]


def train_plain(
    model_fn: Callable[[], Any],
    data: ZarrDataset,
    optimizer: Any,
    *,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    step: Step | None = None,
    epochs: int = 1,
    batch_size: int = 128,
    seed: int = 0,
    metrics: dict[str, Callable[[np.ndarray, Any], float]] | None = None,
    threads: int | None = None,
    precision: str = "32",
) -> dict[str, float]:
    """Train in this process on all training rows (reshuffled each epoch); validation metrics.

    ``optimizer`` is what ``psdist.Trainer`` takes (a recipe, or a dict of them per model).
    ``precision`` as the Trainer's: the step and evaluation under the same autocast; with
    ``"16-mixed"`` a minibatch whose scaled gradient overflows is skipped, as on a worker.

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
    parts = [data.read(c, g) for c in info.train]  # several inputs/targets: tuples or dicts, aligned
    x = concat_outputs([p[0] for p in parts])
    y = as_labels(concat_outputs([p[1] for p in parts]))
    torch.manual_seed(seed)
    models = as_model_dict(model_fn())
    # same flat binding and autocast as the workers: same .grad handling
    replica = Replica("plain", models, precision=precision)
    scaler = replica.precision.scaler
    opts = optimizer if isinstance(optimizer, dict) else {next(iter(models)): optimizer}
    torch_opts = {}
    for name, opt in opts.items():
        named = [(n, p) for n, p in models[name].named_parameters() if p.requires_grad]
        if not named:
            continue  # a wholly frozen model: nothing to step (torch refuses empty optimizers)
        recipe = as_optimizer(opt)
        t, sched = recipe.build(named)
        torch_opts[name] = (t, sched, recipe.clip_norm, [p for _, p in named])
    xt, yt = tree_map(torch.from_numpy, x), tree_map(torch.from_numpy, y)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        replica.train(True)
        for idx in np.array_split(rng.permutation(rows(x)), max(1, rows(x) // batch_size)):
            pick = torch.from_numpy(idx)
            replica.zero_grad()
            replica.run_step(step, _pick(xt, pick), _pick(yt, pick))
            if scaler is not None:
                finite = replica.grads_finite()
                factor = scaler.update(finite)
                if not finite:
                    continue  # float16 overflow: skipped, the scale backed off
                replica.scale_grads(factor)  # in the (maybe grown) scale's units, as on a worker
            with replica.true_grads():
                for t, sched, clip, params in torch_opts.values():
                    if clip is not None:
                        torch.nn.utils.clip_grad_norm_(params, clip)
                    t.step()
                    if sched is not None:
                        sched.step()
    replica.train(False)
    loss_sum, outs, targets = 0.0, [], []
    with torch.no_grad():
        for c in info.val:
            xv, yv = data.read(c, g)
            with replica.autocast():
                ls, out = step.evaluate(replica, tree_map(torch.from_numpy, xv),
                                        tree_map(torch.from_numpy, as_labels(yv)))
            loss_sum += ls
            outs.append(tree_map(lambda v: v.float().numpy() if v.is_floating_point() else v.numpy(), out))
            targets.append(yv)
    n = sum(rows(t) for t in targets)
    result = {"val_loss": loss_sum / max(n, 1)}
    if outs:
        outputs, target = concat_outputs(outs), concat_outputs(targets)
        defaults = default_metrics(info.y_dtype) if info.single_target else {}
        every: dict[str, Callable[[Any, Any], float]] = {**defaults, **(metrics or {})}
        for name, fn in every.items():
            result[f"val_{name}"] = float(fn(target, outputs))
    return result


def _pick(tree: Any, index: torch.Tensor) -> Any:
    """The rows ``index`` of every tensor of ``tree`` (one input, or a tuple/dict of them)."""
    return tree_map(lambda t: t[index], tree)
