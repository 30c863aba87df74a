"""Splitting the parameter server's weight vector over several servers (``ps_shards=S``).

One server process is one memory bus and one NIC; past some tens of workers it saturates (see
``docs/scaling.md``). :class:`ShardPlan` cuts the flat vector (:mod:`psdist.core.layout`) into
``S`` contiguous slices, each held by its own :class:`~psdist.core.server.ServerState` on its own
worker. Slices end on tensor boundaries, so every parameter lives whole on one shard and a shard's
optimizer is an ordinary ``torch.optim`` optimizer over whole parameters (norm-based optimizers
and per-parameter groups keep working); the cut balances bytes as well as whole tensors allow.

What a version and staleness are, per shard (``docs/algorithms.md``): each shard counts its own
versions (one per update it applied) and measures a push's staleness against its own counter.
Every push reaches every shard, so the counters move together; shard 0's are the run's.

Checkpoints: :func:`merge_states` gathers the shards' states into the state one server would
have written (weights end to end, optimizer state keyed by parameter name), so a checkpoint
resumes on any number of shards; :func:`split_state` cuts such a state for one shard.
Everything here is numpy and dictionaries: the cluster layer calls it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from psdist.core.layout import Entry, FlatSpec, Layout
from psdist.errors import CheckpointError, ConfigError

__all__ = ["ShardPlan", "merge_states", "split_state"]

#: keys Trainer.load sets on a whole state's optimizer scalars: every shard gets them
_LOAD_FLAGS = ("keep_given_hyper", "set_lr")

@dataclass(frozen=True)
class ShardPlan:
    """Where each shard's slice of the weight vector starts and stops.

    Parameters
    ----------
    layout
        The whole training's layout (every model, parameters and buffers).
    bounds
        ``S + 1`` increasing offsets into the vector: shard ``i`` holds
        ``[bounds[i], bounds[i + 1])``; each is a tensor boundary.
    """

    layout: Layout
    bounds: tuple[int, ...]

    def __post_init__(self) -> None:
        b = self.bounds
        cuts = set(self._cuts(self.layout))
        if len(b) < 2 or b[0] != 0 or b[-1] != self.layout.size or any(x >= y for x, y in itertools.pairwise(b)):
            raise ConfigError(f"shard bounds {list(b)} must rise strictly from 0 to the model's {self.layout.size} values")
        inner = [x for x in b[1:-1] if x not in cuts]
        if inner:
            raise ConfigError(f"shard bounds {inner} fall inside a tensor: a parameter lives whole on one shard")

    @classmethod
    def balanced(cls, layout: Layout, shards: int) -> ShardPlan:
        """``shards`` contiguous slices whose largest is as small as whole tensors allow.

        Raises :class:`~psdist.errors.ConfigError` when the model has fewer tensors than
        ``shards`` (a shard would hold nothing).
        """
        if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
            raise ConfigError(f"ps_shards={shards!r}: give an integer >= 1 (1: one parameter server)")
        cuts = cls._cuts(layout)  # tensor starts, then the end
        sizes = np.diff(np.asarray([*cuts, layout.size], dtype=np.int64))
        if len(sizes) < shards:
            raise ConfigError(
                f"ps_shards={shards}, but the model has {len(sizes)} tensors: a shard holds whole tensors; "
                f"use ps_shards <= {len(sizes)}"
            )
        cap = _min_capacity(sizes, shards)
        groups = _pack(sizes, cap, shards)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        bounds = (0, *(int(starts[g]) for g in groups[1:]), layout.size)
        return cls(layout, bounds)

    @staticmethod
    def _cuts(layout: Layout) -> list[int]:
        """Every tensor's start, in layout coordinates (where a slice may begin)."""
        return [g.offset + e.offset for g in layout.groups for e in g.spec.entries]

    # ------------------------------------------------------------------ geometry
    @property
    def shards(self) -> int:
        return len(self.bounds) - 1

    def range(self, i: int) -> slice:
        """Shard ``i``'s slice of the vector."""
        return slice(self.bounds[i], self.bounds[i + 1])

    @property
    def sizes(self) -> tuple[int, ...]:
        """How many float32 values each shard holds."""
        return tuple(b - a for a, b in itertools.pairwise(self.bounds))

    @property
    def imbalance(self) -> float:
        """Largest shard over the mean shard (1.0: perfectly balanced)."""
        return max(self.sizes) * self.shards / max(1, self.layout.size)

    def split(self, vector: np.ndarray) -> list[np.ndarray]:
        """Views of ``vector`` (the whole layout) per shard."""
        return [vector[self.range(i)] for i in range(self.shards)]

    @cached_property
    def layouts(self) -> tuple[Layout, ...]:
        """Each shard's own layout: the models it holds part of, with only its tensors, offsets
        counted from the start of its slice (what its :class:`ServerState` is built on)."""
        return tuple(self._sub_layout(i) for i in range(self.shards))

    def _sub_layout(self, i: int) -> Layout:
        lo, hi = self.bounds[i], self.bounds[i + 1]
        specs: dict[str, FlatSpec] = {}
        for g in self.layout.groups:
            inside = [e for e in g.spec.entries if lo <= g.offset + e.offset < hi]
            if not inside:
                continue
            base = inside[0].offset
            entries = tuple(Entry(e.name, e.shape, e.dtype, e.offset - base, e.kind, e.trainable) for e in inside)
            specs[g.name] = FlatSpec(entries, sum(e.size for e in inside if e.kind == "param"))
        return Layout.of(specs)

    def names(self, i: int) -> dict[str, tuple[str, ...]]:
        """The parameter names shard ``i`` holds, per model."""
        return {g.name: tuple(e.name for e in g.spec.entries if e.kind == "param") for g in self.layouts[i].groups}

    def to_dict(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds)}

    def describe(self) -> str:
        """The plan in words (logs, the start-up line)."""
        mb = ", ".join(f"{4 * s / 1e6:.2f}" for s in self.sizes)
        return f"{self.shards} shards of {mb} MB (largest/mean {self.imbalance:.2f})"


def _min_capacity(sizes: np.ndarray, shards: int) -> int:
    """The smallest largest-slice that packs ``sizes`` in order into at most ``shards`` slices."""
    lo, hi = int(sizes.max()), int(sizes.sum())
    while lo < hi:  # feasibility is monotone in the capacity: bisect
        mid = (lo + hi) // 2
        if len(_pack(sizes, mid, None)) <= shards:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _pack(sizes: np.ndarray, cap: int, shards: int | None) -> list[int]:
    """First tensor index of each slice, filling each slice up to ``cap``; with ``shards``,
    the fullest slices are split further until there are exactly that many (none empty)."""
    starts, load = [0], 0
    for k, s in enumerate(sizes.tolist()):
        if load + s > cap and load > 0:
            starts.append(k)
            load = 0
        load += s
    while shards is not None and len(starts) < shards:
        # fewer slices than shards (a few large tensors): split the largest slice of 2+ tensors
        ends = [*starts[1:], len(sizes)]
        loads = [(int(sizes[a:b].sum()), a, b) for a, b in zip(starts, ends, strict=True) if b - a > 1]
        _, a, b = max(loads)
        acc, half, cut = 0, sizes[a:b].sum() / 2, a + 1
        for k in range(a, b - 1):
            acc += int(sizes[k])
            if acc >= half:
                cut = k + 1
                break
        starts = sorted({*starts, cut})
    return starts


def split_state(plan: ShardPlan, i: int, scalars: dict[str, Any], arrays: dict[str, np.ndarray],
                split_scalars: Callable[[str, dict[str, Any], Sequence[str]], dict[str, Any]]) -> tuple[
                    dict[str, Any], dict[str, np.ndarray]]:
    """Shard ``i``'s part of a whole server state (:meth:`ServerState.state_dict` of one server,
    or :func:`merge_states` of several): its weights, its parameters' optimizer state, the counters.

    ``split_scalars(format, scalars, names)`` cuts one model's optimizer scalars (their layout is
    the optimizer's own: :mod:`psdist.optim.sharding`). A state gathered from the same plan
    gives each shard back exactly the scalars it wrote.
    """
    saved = scalars.get("shards") or {}
    same_plan = list(saved.get("bounds", [])) == list(plan.bounds)
    names = plan.names(i)
    layout = plan.layouts[i]
    out: dict[str, Any] = {k: v for k, v in scalars.items() if k not in ("layout", "optimizers", "shards")}
    out["layout"] = layout.to_dict()
    out["optimizers"] = {}
    for g in layout.groups:
        stored = scalars["optimizers"][g.name]
        given = stored["state"]
        if given.get("fresh"):  # Trainer.load with another optimizer: nothing to cut
            state = dict(given)
        else:
            state = dict(saved["optimizers"][i][g.name]) if same_plan else split_scalars(g.name, given, names[g.name])
            # what Trainer.load adds to the whole state (keep the given hyperparameters, a set_lr)
            state.update({k: given[k] for k in _LOAD_FLAGS if k in given})
        out["optimizers"][g.name] = {"config": stored["config"], "state": state}
    rule = [k for k in arrays if k.startswith("rule/")]
    if rule:
        raise CheckpointError(f"the server rule keeps state {rule}, which is not split over shards: use ps_shards=1")
    mine = {f"optim/{g}/{n}/" for g, ns in names.items() for n in ns}
    part: dict[str, np.ndarray] = {"weights": np.array(arrays["weights"][plan.range(i)], dtype=np.float32)}
    for key, value in arrays.items():
        if key.startswith("optim/") and key[: key.rfind("/") + 1] in mine:
            part[key] = value
    return out, part


def merge_states(plan: ShardPlan, states: Sequence[tuple[dict[str, Any], dict[str, np.ndarray]]],
                 merge_scalars: Callable[[str, Sequence[dict[str, Any]]], dict[str, Any]]) -> tuple[
                     dict[str, Any], dict[str, np.ndarray]]:
    """The state one server would hold, from every shard's :meth:`ServerState.state_dict`.

    The counters are shard 0's (every push reaches every shard: its counters are the run's);
    the weights are the slices end to end; optimizer arrays are keyed by parameter name and
    simply joined; ``merge_scalars(model, shards' scalars)`` joins one model's optimizer scalars.
    Each shard's own scalars ride along under ``"shards"`` so that :func:`split_state` gives
    them back unchanged on the same plan.
    """
    if len(states) != plan.shards:
        raise ValueError(f"{len(states)} shard states for a plan of {plan.shards}")
    lead = states[0][0]
    scalars: dict[str, Any] = {k: v for k, v in lead.items() if k not in ("layout", "optimizers")}
    scalars["layout"] = plan.layout.to_dict()
    per_shard = [s["optimizers"] for s, _ in states]
    scalars["optimizers"] = {}
    for name in plan.layout.names:
        holding = [opts[name] for opts in per_shard if name in opts]
        scalars["optimizers"][name] = {"config": holding[0]["config"],
                                       "state": merge_scalars(name, [h["state"] for h in holding])}
    scalars["shards"] = {"bounds": list(plan.bounds), "optimizers": [
        {name: o["state"] for name, o in opts.items()} for opts in per_shard]}
    weights = np.empty(plan.layout.size, np.float32)
    arrays: dict[str, np.ndarray] = {"weights": weights}
    for i, (_, a) in enumerate(states):
        weights[plan.range(i)] = a["weights"]
        for key, value in a.items():
            if key.startswith("optim/"):
                arrays[key] = value
            elif key != "weights":
                raise CheckpointError(f"shard {i} keeps state {key!r}, which is not merged over shards: use ps_shards=1")
    return scalars, arrays
