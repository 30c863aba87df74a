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
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from psdist.core.layout import Entry, FlatSpec, Layout
from psdist.errors import CheckpointError, ConfigError

__all__ = ["ALIGN", "ShardPlan", "merge_states", "split_state"]

#: values between the cuts a tensor may get (a multiple of every SIMD width torch uses: AVX-512's 16)
ALIGN = 64

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
        ``[bounds[i], bounds[i + 1])``. Each is a tensor's start, or for the models named in
        ``splittable`` a row boundary inside a tensor.
    splittable
        Models whose tensors may be cut between rows: those whose server optimizer works value
        by value (SGD, Adam, ...: :data:`psdist.optim.sharding.ELEMENTWISE`), for which a
        tensor's rows on two shards step exactly as the whole tensor would. A cut keeps the
        tensor's name and number of dimensions (``(rows, *shape[1:])``), so optimizer factories
        that group parameters by name or dimensions build the same groups.
    """

    layout: Layout
    bounds: tuple[int, ...]
    splittable: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        b = self.bounds
        if len(b) < 2 or b[0] != 0 or b[-1] != self.layout.size or any(x >= y for x, y in itertools.pairwise(b)):
            raise ConfigError(f"shard bounds {list(b)} must rise strictly from 0 to the model's {self.layout.size} values")
        allowed = self._allowed()
        inner = [x for x in b[1:-1] if not allowed(x)]
        if inner:
            raise ConfigError(f"shard bounds {inner} fall inside a tensor that may not be cut (between rows of a "
                              f"model whose optimizer works value by value only: {sorted(self.splittable)})")

    def _allowed(self) -> Callable[[int], bool]:
        starts = {s for _, _, s in _tensors(self.layout)}
        rows = [(s, e.size, _grain(e)) for g, e, s in _tensors(self.layout) if g in self.splittable and e.shape]

        def ok(x: int) -> bool:
            return x in starts or any(s < x < s + n and (x - s) % r == 0 for s, n, r in rows)
        return ok

    @classmethod
    def balanced(cls, layout: Layout, shards: int, splittable: frozenset[str] = frozenset()) -> ShardPlan:
        """``shards`` contiguous slices whose largest is as small as the allowed cuts make it.

        Without ``splittable`` models, slices hold whole tensors (the smallest largest slice
        over cuts at tensor starts); with them, cuts fall near ``k / shards`` of the vector, at
        the nearest row boundary of a splittable tensor (or the nearest tensor start) — the
        better of the two plans is taken. Raises :class:`~psdist.errors.ConfigError` when no
        plan leaves every shard something to hold.
        """
        if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
            raise ConfigError(f"ps_shards={shards!r}: give an integer >= 1 (1: one parameter server)")
        plans = [p for p in (_whole_tensors(layout, shards), _near_even(layout, shards, splittable)) if p]
        if not plans:
            n = len(_tensors(layout))
            raise ConfigError(
                f"ps_shards={shards}, but the model has {n} tensors that the shards hold whole (its optimizer "
                f"is not one that works value by value, or the tensors are too small to cut): use ps_shards <= {n}"
            )
        best = min(plans, key=lambda b: max(y - x for x, y in itertools.pairwise(b)))
        return cls(layout, best, frozenset(splittable) & frozenset(layout.names))

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
        """Each shard's own layout: the models it holds part of, with only its tensors (a cut
        tensor as its rows here), offsets counted from the start of its slice (what its
        :class:`ServerState` is built on)."""
        return tuple(self._sub_layout(i) for i in range(self.shards))

    def _sub_layout(self, i: int) -> Layout:
        lo, hi = self.bounds[i], self.bounds[i + 1]
        specs: dict[str, FlatSpec] = {}
        for g in self.layout.groups:
            entries: list[Entry] = []
            first = None
            for e in g.spec.entries:
                s = g.offset + e.offset
                a, b = max(lo, s), min(hi, s + e.size)
                if a >= b:
                    continue
                first = a if first is None else first
                shape = e.shape if (a, b) == (s, s + e.size) else ((b - a) // _row(e), *e.shape[1:])
                entries.append(Entry(e.name, shape, e.dtype, a - first, e.kind, e.trainable))
            if entries:
                specs[g.name] = FlatSpec(tuple(entries), sum(e.size for e in entries if e.kind == "param"))
        return Layout.of(specs)

    def rows(self, i: int) -> dict[tuple[str, str], tuple[int, int]]:
        """The tensors shard ``i`` holds only some rows of: ``(model, name) -> (first, stop)`` row."""
        lo, hi = self.bounds[i], self.bounds[i + 1]
        out = {}
        for g, e, s in _tensors(self.layout):
            a, b = max(lo, s), min(hi, s + e.size)
            if a < b and (a, b) != (s, s + e.size):
                out[(g, e.name)] = ((a - s) // _row(e), (b - s) // _row(e))
        return out

    def names(self, i: int) -> dict[str, tuple[str, ...]]:
        """The parameter names shard ``i`` holds (whole or some rows), per model."""
        return {g.name: tuple(e.name for e in g.spec.entries if e.kind == "param") for g in self.layouts[i].groups}

    def to_dict(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds)}

    def describe(self) -> str:
        """The plan in words (logs, the start-up line)."""
        mb = ", ".join(f"{4 * s / 1e6:.2f}" for s in self.sizes)
        return f"{self.shards} shards of {mb} MB (largest/mean {self.imbalance:.2f})"


def _tensors(layout: Layout) -> list[tuple[str, Entry, int]]:
    """Every tensor as (model, entry, start in layout coordinates), in vector order."""
    return [(g.name, e, g.offset + e.offset) for g in layout.groups for e in g.spec.entries]


def _row(e: Entry) -> int:
    """Values per row (first-dimension index) of a tensor: where a cut may fall inside it."""
    return int(np.prod(e.shape[1:], dtype=np.int64)) if e.shape else 1


def _grain(e: Entry) -> int:
    """Where a cut may fall inside a tensor: every :data:`ALIGN` values that is also a row boundary.

    Why ALIGN: torch's optimizer kernels run SIMD over a tensor from its start and finish its tail
    one value at a time, and the two paths may round differently (fused multiply-add). A part
    whose length is a multiple of the vector width is all vector steps, and the last part's tail
    is the whole tensor's: the parts step bit for bit as the whole tensor does.
    """
    return math.lcm(_row(e), ALIGN)


def _whole_tensors(layout: Layout, shards: int) -> tuple[int, ...] | None:
    """Bounds at tensor starts with the smallest largest slice (``None``: too few tensors)."""
    starts = [s for _, _, s in _tensors(layout)]
    sizes = np.diff(np.asarray([*starts, layout.size], dtype=np.int64))
    if len(sizes) < shards:
        return None
    cap = _min_capacity(sizes, shards)
    groups = _pack(sizes, cap, shards)
    cum = np.concatenate([[0], np.cumsum(sizes)])
    return (0, *(int(cum[g]) for g in groups[1:]), layout.size)


def _near_even(layout: Layout, shards: int, splittable: frozenset[str]) -> tuple[int, ...] | None:
    """Bounds near ``k * size / shards``, at the nearest allowed cut (``None``: none without an empty shard)."""
    if not (splittable & frozenset(layout.names)) or shards == 1:
        return None
    tensors = _tensors(layout)
    bounds = [0]
    for k in range(1, shards):
        ideal = k * layout.size / shards
        g, e, s = next(t for t in tensors if t[2] + t[1].size > ideal)
        if g in splittable and e.shape:
            r = _grain(e)
            x = s + min(e.size, max(0, round((ideal - s) / r) * r))
        else:
            x = s if ideal - s <= s + e.size - ideal else s + e.size
        if x <= bounds[-1] or x >= layout.size:
            return None
        bounds.append(int(x))
    return (*bounds, layout.size)


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
    mine = {f"optim/{g}/{n}/": (g, n) for g, ns in names.items() for n in ns}
    rows = plan.rows(i)
    part: dict[str, np.ndarray] = {"weights": np.array(arrays["weights"][plan.range(i)], dtype=np.float32)}
    for key, value in arrays.items():
        owner = mine.get(key[: key.rfind("/") + 1]) if key.startswith("optim/") else None
        if owner is None:
            continue
        cut = rows.get(owner)
        # a tensor's per-value state (momentum, moments) has its shape: this shard's rows of it;
        # anything else (a 0-d tensor such as ASGD's eta) is the same for every part
        part[key] = value[cut[0]:cut[1]] if cut is not None and value.ndim >= 1 else value
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
    parts: dict[str, list[np.ndarray]] = {}
    for i, (_, a) in enumerate(states):
        weights[plan.range(i)] = a["weights"]
        for key, value in a.items():
            if key.startswith("optim/"):
                parts.setdefault(key, []).append(value)
            elif key != "weights":
                raise CheckpointError(f"shard {i} keeps state {key!r}, which is not merged over shards: use ps_shards=1")
    for key, pieces in parts.items():
        # a cut tensor's state comes in row blocks, in shard order; 0-d state is the same in each
        arrays[key] = np.concatenate(pieces) if len(pieces) > 1 and pieces[0].ndim >= 1 else pieces[0]
    return scalars, arrays
