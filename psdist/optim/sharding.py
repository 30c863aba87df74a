"""One model's optimizer state cut over shards and put back together (``ps_shards=S``).

A shard's optimizer is the user's ``torch.optim`` optimizer over the whole parameters that shard
holds (:class:`~psdist.core.shards.ShardPlan` never cuts a tensor). Its checkpoint scalars
(:meth:`psdist.optim.bound.TorchBound.state_dict`) hold per-parameter entries keyed by name and
the param groups' hyperparameters; the arrays are keyed by parameter name already and need
nothing. :func:`merge_scalars` makes the scalars one server would have written over all the
parameters; :func:`split_scalars` keeps what one shard's parameters need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psdist.errors import CheckpointError

__all__ = ["ELEMENTWISE", "merge_scalars", "split_scalars"]

#: torch.optim classes whose step treats every value on its own (no per-tensor norms, no
#: matrix structure): a tensor cut between shards steps exactly as the whole tensor would.
#: LARS/LAMB-style, Adafactor-, Shampoo- or Muon-like optimizers are not: their tensors stay whole.
ELEMENTWISE = frozenset({"SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "Adadelta"})


def split_scalars(model: str, scalars: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The part of model ``model``'s optimizer scalars that concerns the parameters ``names``."""
    if scalars.get("format", "flat") != "torch":
        raise CheckpointError(
            f"model {model!r}'s optimizer state was written by psdist's numpy optimizers, which a sharded "
            "server cannot cut: resume it once with ps_shards=1 and save, then shard"
        )
    keep = set(names)
    out = dict(scalars)
    out["state"] = {n: v for n, v in scalars.get("state", {}).items() if n in keep}
    if "param_groups" in scalars:
        out["param_groups"] = [
            {**g, "param_names": [n for n in g["param_names"] if n in keep]} if "param_names" in g else dict(g)
            for g in scalars["param_groups"]
        ]
    return out


def merge_scalars(model: str, shards: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Model ``model``'s optimizer scalars over all its parameters, from each shard's (in order).

    Steps, the optimizer's class and the scheduler are the same on every shard (each steps once
    per version); per-parameter entries are joined; param groups are joined by position, their
    parameter names end to end (the shards hold the parameters in model order).
    """
    if len(shards) == 1 or shards[0].get("format") != "torch":
        return dict(shards[0])
    out = dict(shards[0])
    state: dict[str, Any] = {}
    for s in shards:
        state.update(s.get("state", {}))
    out["state"] = state
    groups: list[list[dict[str, Any]]] = [s["param_groups"] for s in shards if s.get("param_groups") is not None]
    if groups and all(len(g) == len(groups[0]) for g in groups):
        merged = []
        for k, first in enumerate(groups[0]):
            g = dict(first)
            if "param_names" in first:  # a tensor cut between shards is named on each: once here
                g["param_names"] = list(dict.fromkeys(n for gs in groups for n in gs[k].get("param_names", [])))
            merged.append(g)
        out["param_groups"] = merged
    return out
