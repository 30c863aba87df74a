"""Rules with worker-local state (EASGD, EAMSGD, GEM) checked against hand-computed updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import psdist
from psdist.core.protocol import Push, RejectKind
from psdist.core.rules.gem import gem_scale
from psdist.core.server import ServerState
from psdist.optim import SGD, Adam
from psdist.replica import Replica, as_model_dict, layout_of
from psdist.replica.loop import evaluate_rows, train_rows
from psdist.rules import EAMSGD, EASGD, GEM, rule_from_config
from psdist.steps import SupervisedStep

X = np.array([[1.0, 2.0]], np.float32)
Y = np.array([[1.0]], np.float32)
W0 = np.array([0.5, -0.25], np.float32)
STEP = SupervisedStep(torch.nn.functional.mse_loss)


def linear():
    m = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(W0).view(1, 2))
    return m


def grad_at(w):
    """d/dw (x·w − y)² = 2 (x·w − y) x, for the single row X."""
    return (2 * (X @ w - Y[:, 0]) * X[0]).astype(np.float32)


def setup(rule, optimizer, workers=1):
    rule = rule.for_workers(workers)
    model = linear()
    layout = layout_of(as_model_dict(model))
    state = ServerState(layout, W0.copy(), {"model": optimizer}, rule)
    replica = Replica("a", as_model_dict(linear()))
    return state, replica, rule.worker_side({"model": optimizer}), rule


def one_chunk(state, replica, worker_rule, batches=1):
    x, y = np.repeat(X, batches, 0), np.repeat(Y, batches, 0)
    return train_rows(replica, state, worker_rule, STEP, x, y, batch_size=1, push_every=batches, seed=0)


# ----------------------------------------------------------------------------- EASGD
def test_easgd_local_step_then_elastic_exchange():
    lr, alpha = 0.1, 0.3
    state, replica, wr, _ = setup(EASGD(alpha=alpha, period=1), SGD(lr=lr))
    one_chunk(state, replica, wr)
    x1 = W0 - lr * grad_at(W0)  # local SGD step from the centre
    e = alpha * (x1 - W0)  # elastic difference
    np.testing.assert_allclose(replica.weights_vector(), x1 - e, rtol=1e-6)
    np.testing.assert_allclose(state.weights, W0 + e, rtol=1e-6)
    assert state.version == 1 and state.applied == 1


def test_easgd_keeps_local_weights_across_chunks_and_validation():
    lr, alpha = 0.1, 0.3
    state, replica, wr, _ = setup(EASGD(alpha=alpha, period=1), SGD(lr=lr))
    one_chunk(state, replica, wr)
    local, centre = replica.weights_vector(), state.weights.copy()
    # validation scores the centre, then puts the local weights back
    ev = evaluate_rows(replica, state, STEP.evaluate, X, Y, batch_size=1, keep_local=True)
    assert ev.loss_sum == pytest.approx(float(((X @ centre - Y[0]) ** 2)[0]), rel=1e-5)
    np.testing.assert_array_equal(replica.weights_vector(), local)
    one_chunk(state, replica, wr)  # the next chunk starts from the local weights, not the centre
    x2 = local - lr * grad_at(local)
    e2 = alpha * (x2 - centre)
    np.testing.assert_allclose(replica.weights_vector(), x2 - e2, rtol=1e-5)
    np.testing.assert_allclose(state.weights, centre + e2, rtol=1e-5)


def test_easgd_alpha_defaults_to_beta_over_workers_and_local_adam_is_allowed():
    assert EASGD().for_workers(4).alpha == pytest.approx(0.9 / 4)
    state, replica, wr, _ = setup(EASGD(period=2), Adam(lr=0.01), workers=3)
    one_chunk(state, replica, wr, batches=2)
    assert state.version == 1  # one exchange per period of 2 minibatches
    assert rule_from_config(EASGD(alpha=0.1).to_config()) == EASGD(alpha=0.1)


def test_easgd_follows_the_server_learning_rate():
    state, replica, wr, _ = setup(EASGD(alpha=0.5, period=1), SGD(lr=0.1))
    state.set_lr(0.01)  # e.g. trainer.set_lr from a notebook
    one_chunk(state, replica, wr)
    x1 = W0 - 0.01 * grad_at(W0)
    np.testing.assert_allclose(state.weights, W0 + 0.5 * (x1 - W0), rtol=1e-6)


def test_eamsgd_local_nesterov_step():
    lr, alpha, delta = 0.1, 0.3, 0.9
    state, replica, wr, _ = setup(EAMSGD(alpha=alpha, period=1, momentum=delta), SGD(lr=lr))
    one_chunk(state, replica, wr)
    g = grad_at(W0)
    x1 = W0 - lr * (g + delta * g)  # torch's Nesterov, first step: buf = g, step g + δ·buf
    e = alpha * (x1 - W0)
    np.testing.assert_allclose(state.weights, W0 + e, rtol=1e-6)
    np.testing.assert_allclose(replica.weights_vector(), x1 - e, rtol=1e-6)


def test_easgd_diverged_local_weights_restart_from_the_centre(caplog):
    """A non-finite elastic difference is rejected; the worker starts again from the centre
    (else every later exchange would be refused too)."""
    state, replica, wr, _ = setup(EASGD(alpha=0.3, period=1), SGD(lr=0.1))
    one_chunk(state, replica, wr)
    centre, version = state.weights.copy(), state.version
    replica.set_weights(np.array([np.nan, 1.0], np.float32))
    with caplog.at_level("WARNING", logger="psdist.core.rules.elastic"):
        reply = wr.communicate(replica, state, 1, 1, 0.5)
    assert not reply.applied and reply.kind is RejectKind.NONFINITE
    assert "restarting from the centre" in caplog.text
    assert state.weights.tobytes() == centre.tobytes() and state.version == version
    assert replica.weights_vector().tobytes() == centre.tobytes()
    one_chunk(state, replica, wr)  # and it trains on: the next exchange is accepted
    assert state.version == version + 1


def test_elastic_rule_errors():
    with pytest.raises(psdist.ConfigError, match=r"rule=psdist\.rules\.EASGD\(period=4\) instead of push_every=4"):
        EASGD().check(4, None, {"model": SGD(lr=0.1).info()})
    with pytest.raises(psdist.ConfigError, match=r"alpha=1\.5 must be < 1"):
        EASGD(alpha=1.5).check(1, None)
    with pytest.raises(psdist.ConfigError, match=r"EAMSGD runs local Nesterov SGD.*Adam"):
        EAMSGD().check(1, None, {"model": Adam(lr=0.01).info()})


# ----------------------------------------------------------------------------- GEM
def test_gem_scale_by_hand():
    g = np.array([1.0, -2.0, 0.5], np.float32)
    m = np.array([2.0, -1.0, 0.0], np.float32)
    move = np.array([0.1, 0.3, 0.0], np.float32)
    # κ|η m| − |Δw̃| = [0.4 − 0.1, 0.2 − 0.3, 0] ; |η g| = [0.1, 0.2, 0.05]
    pi = gem_scale(g, m, move, lr=0.1, kappa=2.0, pi_max=5.0, eps=0.0)
    np.testing.assert_allclose(pi, [3.0, 0.0, 0.0], rtol=1e-6)
    pi = gem_scale(g, 10 * m, move, lr=0.1, kappa=2.0, pi_max=5.0, eps=0.0)
    assert pi[0] == 5.0  # clipped at π_max


def test_gem_scales_the_gradient_by_the_other_workers_move():
    lr, kappa, mu = 0.1, 2.0, 0.9
    state, replica, wr, _ = setup(GEM(kappa=kappa, momentum=mu), SGD(lr=lr))
    state.pull("b")
    other = np.array([0.02, -0.01], np.float32)
    replica.load(state.pull("a"))  # a holds W0
    state.push(Push("b", 0, other, 1, 0.0))  # b moves the centre first: Δw̃ = −η·other
    moved = W0 - lr * other
    replica.zero_grad()
    STEP(replica, torch.from_numpy(X), torch.from_numpy(Y))
    wr.communicate(replica, state, 1, 1, 0.0)
    g = grad_at(W0)
    pi = np.clip((kappa * np.abs(lr * g) - np.abs(moved - W0)) / np.abs(lr * g), 0, 5)  # m = g at first
    np.testing.assert_allclose(state.weights, moved - lr * pi * g, rtol=1e-5)
    np.testing.assert_allclose(wr.m, g, rtol=1e-6)
    assert replica.version == 2


def test_gem_refuses_a_server_optimizer_with_momentum():
    with pytest.raises(psdist.ConfigError, match="GEM applies its updates with plain SGD"):
        GEM().check(1, None, {"model": SGD(lr=0.1, momentum=0.9).info()})
