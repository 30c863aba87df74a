"""The calorimeter CNN's two forms: packed (one (N, 2) target, one (N, classes + 1) output) and
split (two targets, two heads): the same network, loss and metrics either way."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from psdist.hep import evaluate
from psdist.hep.models import ENERGY_SCALE, calo_cnn, calo_loss


def _batch(n: int = 9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, 8, generator=g)
    cls = torch.arange(n) % 3
    energy = 10 + 90 * torch.rand(n, generator=g)
    return x, cls, energy


def test_split_heads_are_the_packed_output_apart() -> None:
    x, cls, energy = _batch()
    torch.manual_seed(2)
    packed = calo_cnn(grid=8, width=2, hidden=8)
    torch.manual_seed(2)
    split = calo_cnn(grid=8, width=2, hidden=8, split=True)
    out, (logits, e) = packed(x), split(x)
    assert logits.shape == (9, 3) and e.shape == (9,)
    torch.testing.assert_close(torch.cat([logits, e[:, None]], dim=1), out)
    # the loss: same value from two targets as from the packed (class, energy) float target
    target = torch.stack([cls.float(), energy], dim=1)
    torch.testing.assert_close(calo_loss((logits, e), (cls, energy)), calo_loss(out, target))
    heavy = functools.partial(calo_loss, energy_weight=3.0)
    ce = torch.nn.functional.cross_entropy(logits, cls)
    mse = torch.nn.functional.mse_loss(e, energy / ENERGY_SCALE)
    torch.testing.assert_close(heavy((logits, e), (cls, energy)), ce + 3 * mse)
    heavy((logits, e), (cls, energy)).backward()
    assert all(p.grad is not None for p in split.parameters())


def test_metrics_take_both_forms() -> None:
    rng = np.random.default_rng(1)
    cls = np.arange(300) % 3
    energy = rng.uniform(10, 100, 300).astype(np.float32)
    logits = rng.normal(size=(300, 3)) + 2.0 * np.eye(3)[cls]  # informative, not perfect
    pred = energy / ENERGY_SCALE * (1 + 0.1 * rng.normal(size=300))
    packed_t = np.stack([cls, energy], axis=1).astype(np.float32)
    packed_o = np.concatenate([logits, pred[:, None]], axis=1)
    split_t, split_o = (cls.astype(np.int64), energy), (logits, pred)
    for fn in (evaluate.calo_accuracy, evaluate.calo_type_auc, evaluate.energy_resolution):
        assert fn(split_t, split_o) == pytest.approx(fn(packed_t, packed_o), rel=1e-6), fn.__name__
    assert 0.6 < evaluate.calo_accuracy(split_t, split_o) < 0.95
    assert 0.8 < evaluate.calo_type_auc(split_t, split_o) < 1.0
    assert evaluate.energy_resolution(split_t, split_o) == pytest.approx(0.1, abs=0.02)
    perfect = np.eye(3)[cls] * 10.0
    assert evaluate.calo_type_auc(split_t, (perfect, pred)) == 1.0
