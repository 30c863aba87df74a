"""ShardPlan: whole tensors, balanced bytes, and server states cut and joined without loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import psdist
from psdist.core.layout import Layout
from psdist.core.protocol import Push
from psdist.core.server import ServerState
from psdist.core.shards import ShardPlan, merge_states, split_state
from psdist.errors import ConfigError
from psdist.optim.sharding import merge_scalars, split_scalars
from psdist.replica.binding import spec_of


def layout() -> Layout:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.BatchNorm1d(64), torch.nn.Linear(64, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, 4))
    return Layout.of({"model": spec_of(net)})


def test_slices_hold_whole_tensors_and_balance_bytes() -> None:
    lay = layout()
    starts = {g.offset + e.offset for g in lay.groups for e in g.spec.entries}
    for shards in (1, 2, 3, 5):
        plan = ShardPlan.balanced(lay, shards)
        assert plan.shards == shards and sum(plan.sizes) == lay.size and min(plan.sizes) > 0
        assert set(plan.bounds[:-1]) <= starts  # every slice starts where a tensor starts
        names = [e.name for sub in plan.layouts for g in sub.groups for e in g.spec.entries]
        assert names == [e.name for e in lay.groups[0].spec.entries]  # each tensor on exactly one shard
    # the largest slice is the smallest any cut at tensor starts gives (brute force over 2 and 3 slices)
    cuts = sorted(starts - {0})
    best2 = min(max(c, lay.size - c) for c in cuts)
    best3 = min(max(a, b - a, lay.size - b) for a in cuts for b in cuts if a < b)
    assert max(ShardPlan.balanced(lay, 2).sizes) == best2 and max(ShardPlan.balanced(lay, 3).sizes) == best3


def test_bad_shard_counts_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="ps_shards <= 11"):
        ShardPlan.balanced(layout(), 12)
    with pytest.raises(ConfigError, match="integer >= 1"):
        ShardPlan.balanced(layout(), 0)
    with pytest.raises(ConfigError, match="inside a tensor"):
        ShardPlan(layout(), (0, 7, layout().size))


OPT = {"model": psdist.optim.Adam(lr=1e-2)}


def trained(lay: Layout, pushes: int, rng: np.random.Generator) -> ServerState:
    """One server with Adam state after ``pushes`` random updates."""
    whole = ServerState(lay, rng.standard_normal(lay.size).astype(np.float32), OPT)
    for v in range(pushes):
        whole.push(Push("w", v, rng.standard_normal(lay.size).astype(np.float32), 8, 0.5))
    return whole


def test_a_state_cut_for_shards_and_joined_again_is_the_same_state() -> None:
    """Adam's moments and steps, the weights and the counters survive split -> load -> merge,
    also onto another number of shards (a checkpoint resumes on any)."""
    lay = layout()
    rng = np.random.default_rng(0)
    opt = OPT
    state = trained(lay, 3, rng).state_dict()
    for shards in (2, 3):
        plan = ShardPlan.balanced(lay, shards)
        parts = []
        for i in range(shards):
            sub = split_state(plan, i, *state, split_scalars)
            shard = ServerState(plan.layouts[i], np.zeros(plan.sizes[i], np.float32), opt)
            shard.load_state_dict(*sub)
            parts.append(shard.state_dict())
        scalars, arrays = merge_states(plan, parts, merge_scalars)
        assert arrays.keys() == state[1].keys()
        for k, a in state[1].items():
            np.testing.assert_array_equal(arrays[k], a, err_msg=k)
        assert scalars["version"] == 3 and scalars["applied"] == 3
        assert scalars["optimizers"]["model"]["state"]["state"] == state[0]["optimizers"]["model"]["state"]["state"]
        # and back onto one server: it continues exactly where the whole one would
        again = ServerState(lay, np.zeros(lay.size, np.float32), opt)
        again.load_state_dict(scalars, arrays)
        u = rng.standard_normal(lay.size).astype(np.float32)
        twin = ServerState(lay, np.zeros(lay.size, np.float32), opt)
        twin.load_state_dict(*state)
        again.push(Push("w", 3, u, 8, 0.5))
        twin.push(Push("w", 3, u.copy(), 8, 0.5))
        np.testing.assert_array_equal(again.weights, twin.weights)


def big_layer() -> Layout:
    """A jet-CNN-like model: one dense layer holds 90 % of the values."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 26 * 26, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, 2))
    return Layout.of({"model": spec_of(net)})


def test_elementwise_models_are_cut_between_rows_and_balance() -> None:
    lay = big_layer()
    whole = ShardPlan.balanced(lay, 4)
    cut = ShardPlan.balanced(lay, 4, frozenset({"model"}))
    assert whole.imbalance > 3.5 and cut.imbalance < 1.02  # one tensor: whole tensors cannot balance
    names = [(e.name, e.shape) for sub in cut.layouts for e in sub.groups[0].spec.entries]
    assert [n for n, _ in names].count("2.weight") == 4  # its rows on every shard, name and dimensions kept
    assert sum(s[0] for n, s in names if n == "2.weight") == 64 and all(
        len(s) == 2 and s[1] == 8 * 26 * 26 for n, s in names if n == "2.weight")
    assert set(cut.rows(1)) == {("model", "2.weight")}
    with pytest.raises(ConfigError, match="may not be cut"):
        ShardPlan(lay, cut.bounds)  # the same cut for a model whose optimizer is not elementwise


def test_a_state_of_cut_tensors_joins_into_the_whole_tensors_state() -> None:
    lay = big_layer()
    rng = np.random.default_rng(1)
    opt = OPT
    whole = trained(lay, 2, rng)
    state = whole.state_dict()
    plan = ShardPlan.balanced(lay, 3, frozenset({"model"}))
    shards = []
    for i in range(3):
        s = ServerState(plan.layouts[i], np.zeros(plan.sizes[i], np.float32), opt)
        s.load_state_dict(*split_state(plan, i, *state, split_scalars))
        shards.append(s)
    u = rng.standard_normal(lay.size).astype(np.float32)
    whole.push(Push("w", 2, u, 8, 0.5))  # the shards step on their slices: the same values
    for i, s in enumerate(shards):
        s.push(Push("w", 2, u[plan.range(i)].copy(), 8, 0.5))
        np.testing.assert_array_equal(s.weights, whole.weights[plan.range(i)])
    scalars, arrays = merge_states(plan, [s.state_dict() for s in shards], merge_scalars)
    after = whole.state_dict()
    assert arrays.keys() == after[1].keys()
    for k, a in after[1].items():
        np.testing.assert_array_equal(arrays[k], a, err_msg=k)
    assert scalars["optimizers"]["model"]["state"]["state"] == after[0]["optimizers"]["model"]["state"]["state"]
