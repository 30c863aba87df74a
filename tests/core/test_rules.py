"""Staleness-control rules checked against hand-computed updates, then on 2 real workers."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import psdist
from psdist.core.layout import Entry, FlatSpec, Layout
from psdist.core.protocol import Push
from psdist.core.server import ServerState
from psdist.hep.models import mlp
from psdist.optim import SGD
from psdist.rules import (
    DCASGD,
    EAMSGD,
    EASGD,
    GEM,
    SSP,
    Downpour,
    DynSGD,
    StalenessAware,
    Sync,
    rule_from_config,
)


def server(rule, lr=0.1):
    spec = FlatSpec((Entry("w", (3,), "float32", 0, "param"),), 3)
    w0 = np.array([1.0, 2.0, 3.0], np.float32)
    return ServerState(Layout.of({"model": spec}), w0.copy(), {"model": SGD(lr=lr)}, rule), w0


def push(worker, base, g):
    return Push(worker, base, np.asarray(g, np.float32), 1, 0.5)


@pytest.mark.parametrize("rule, scales", [(StalenessAware(), [1.0, 1.0, 0.5]), (DynSGD(), [1.0, 0.5, 1 / 3])])
def test_staleness_scaled_learning_rates(rule, scales):
    s, w = server(rule)
    g = np.array([1.0, -1.0, 2.0], np.float32)
    expected = w.copy()
    for tau, scale in enumerate(scales):  # every push computed at version 0: tau = 0, 1, 2
        s.push(push("a", 0, g))
        expected = expected - np.float32(0.1 * scale) * g
        np.testing.assert_allclose(s.weights, expected, rtol=1e-6)
        assert s.staleness_hist[tau] == 1


def test_dc_asgd_compensates_with_the_pulled_weights():
    s, w0 = server(DCASGD(lam=0.5))
    s.join("a")  # backups are kept for training (joined) workers only
    s.pull("a")  # a holds w0
    g1 = np.array([1.0, 1.0, 1.0], np.float32)
    s.push(push("b", 0, g1))  # fresh: plain SGD step
    w1 = w0 - 0.1 * g1
    np.testing.assert_allclose(s.weights, w1, rtol=1e-6)
    g = np.array([2.0, -1.0, 0.5], np.float32)
    s.push(push("a", 0, g))  # stale by 1: g + λ g⊙g⊙(w1 − w0)
    compensated = g + 0.5 * g * g * (w1 - w0)
    np.testing.assert_allclose(s.weights, w1 - 0.1 * compensated, rtol=1e-6)


def test_dc_asgd_without_staleness_is_plain_sgd():
    s, w0 = server(DCASGD())
    s.join("a")
    s.pull("a")
    g = np.array([0.3, 0.2, 0.1], np.float32)
    s.push(push("a", 0, g))
    np.testing.assert_allclose(s.weights, w0 - 0.1 * g, rtol=1e-6)


@pytest.mark.parametrize(
    "rule",
    [Downpour(), StalenessAware(), DynSGD(), DCASGD(lam=0.1), Sync(), SSP(bound=3), EASGD(alpha=0.2, period=4),
     EAMSGD(momentum=0.9), GEM(kappa=1.5)],
)
def test_rules_round_trip_through_config(rule):
    assert rule_from_config(rule.to_config()) == rule


def test_unknown_rule_and_bad_lambda():
    with pytest.raises(psdist.ConfigError, match="unknown update rule 'easgdx'"):
        rule_from_config({"name": "easgdx"})
    with pytest.raises(psdist.ConfigError, match="lam=-1"):
        DCASGD(lam=-1).check(1, None)


MOMENTUM = SGD(lr=0.1, momentum=0.5)


@pytest.mark.parametrize(
    "rule, optimizer",
    [
        (StalenessAware(), MOMENTUM),
        (DynSGD(), MOMENTUM),
        (DCASGD(), MOMENTUM),
        (Sync(), MOMENTUM),
        (SSP(bound=2), MOMENTUM),
        (EASGD(period=4), MOMENTUM),  # the optimizer runs locally on each worker
        (EAMSGD(period=4), SGD(lr=0.02)),
        (GEM(), SGD(lr=0.1)),  # GEM brings its own momentum
    ],
    ids=lambda v: type(v).__name__,
)
def test_rule_trains_on_two_workers(client, blob_data, rule, optimizer):
    """Every rule reaches 95 % validation accuracy on 4 blobs (chance 25 %) with 2 workers."""
    model_fn = functools.partial(mlp, inputs=20, hidden=32, classes=4)
    trainer = psdist.Trainer(model_fn, torch.nn.functional.cross_entropy, blob_data, optimizer,
                             rule=rule, batch_size=64, client=client, seed=1)
    history = trainer.fit(epochs=3)
    assert history.last["val_accuracy"] >= 0.95
    m = trainer.server_metrics
    assert sum(r["samples"] for r in history) == 3 * 4096  # every row trained once per epoch
    if isinstance(rule, Sync):
        assert m["staleness_max"] == 0 and m["rejected"] == {}  # every gradient from the round's weights
        assert m["version"] < m["applied"]  # rounds with two contributions were merged
    elif isinstance(rule, SSP):
        assert m["clock_gap_max"] <= 2
    elif not isinstance(rule, (EASGD,)):
        assert history.last["staleness_mean"] > 0  # really asynchronous
