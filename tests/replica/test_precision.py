"""Mixed precision in the worker step (psdist.replica.precision): autocast, the fp16 loss scaler
and its bookkeeping on the flat gradients, overlap, local steps, evaluation, the dry run. On CPU
(bf16 autocast; torch's CPU autocast also runs float16), in process: a ServerState behind a
handle, as in test_loop."""

from __future__ import annotations

import copy
import threading
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_loop import N_CLASSES, N_FEATURES, Recorder, blobs, mlp, server_for

from psdist.core.inprocess import LocalServer
from psdist.errors import ConfigError, ModelError
from psdist.metrics import accuracy
from psdist.optim import SGD
from psdist.replica import Replica
from psdist.replica.loop import ChunkResult, batch_bounds, evaluate_rows, train_rows
from psdist.replica.overlap import InFlight
from psdist.replica.precision import PRECISIONS, LossScaler, Precision, check_precision
from psdist.rules import EASGD, Downpour
from psdist.run.epoch import EpochProgress
from psdist.steps import SupervisedStep

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Probe(torch.nn.Module):
    """No parameters: notes the dtype of what flows through it (the forward pass's precision)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.dtype)
        return x


def probed(seed: int = 0) -> tuple[torch.nn.Module, Probe]:
    probe = Probe()
    return torch.nn.Sequential(mlp(seed, batchnorm=False), probe), probe


def regression(n: int, huge: slice | None = None, seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of a 3 → 2 regression and the loop's shuffle for ``seed``; the shuffled rows in
    ``huge`` (one minibatch) scaled 1000×: their gradients overflow float16 once scaled."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    y = rng.standard_normal((n, 2)).astype(np.float32)
    perm = np.random.default_rng(seed).permutation(n)
    if huge is not None:
        x[perm[huge]] *= 1000.0
    return x, y, perm


def fp32_gradients(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, perm: np.ndarray,
                   bounds: list[tuple[int, int]]) -> tuple[list[np.ndarray], list[float]]:
    """Each minibatch's float32 gradient (flat, parameters only) and loss, on ``model`` as is."""
    xs, ys = torch.from_numpy(x[perm]), torch.from_numpy(y[perm])
    grads, losses = [], []
    for lo, hi in bounds:
        model.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(xs[lo:hi]), ys[lo:hi])
        loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy().copy())  # type: ignore[union-attr]
        losses.append(float(loss.detach()))
    return grads, losses


def fp16(scale: float = 2.0**10, growth_interval: int = 2000) -> Precision:
    """'16-mixed' with a small first scale: the test's ordinary minibatches never overflow."""
    return Precision("16-mixed", LossScaler(scale=scale, growth_interval=growth_interval))


# ----------------------------------------------------------------------------- the setting
@pytest.mark.parametrize("bad", ["fp16", "16", "bf16", "32-true", 16, None, 32.0, True])
def test_a_bad_precision_is_a_config_error_naming_it(bad: object) -> None:
    with pytest.raises(ConfigError) as err:
        check_precision(bad)
    assert repr(bad) in str(err.value)
    assert all(repr(p) in str(err.value) for p in PRECISIONS)
    with pytest.raises(ConfigError, match="precision="):
        Replica("w0", {"model": mlp(0)}, precision=bad)  # type: ignore[arg-type]


def test_the_precisions_and_their_scalers() -> None:
    assert [check_precision(p) for p in PRECISIONS] == list(PRECISIONS)
    assert check_precision(32) == "32"  # YAML's `precision: 32` is an integer
    assert Precision("32").scaler is None and Precision("bf16-mixed").scaler is None
    scaler = Precision("16-mixed").scaler
    assert scaler is not None and (scaler.scale, scaler.growth_interval) == (2.0**16, 2000)  # torch's defaults
    with pytest.raises(ConfigError, match="16-mixed"):
        Precision("bf16-mixed", LossScaler())
    with pytest.raises(ConfigError, match="backoff_factor"):
        LossScaler(backoff_factor=2.0)
    s = LossScaler(scale=8.0, growth_interval=2, min_scale=2.0)
    assert [s.update(True), s.update(True), s.scale] == [1.0, 2.0, 16.0]
    assert [s.update(False), s.update(False), s.update(False), s.scale, s.at_floor] == [0.5, 0.5, 0.5, 2.0, True]
    assert s.update(False) == 1.0 and s.scale == 2.0  # no lower than min_scale
    p = Precision("16-mixed")
    assert Precision.of(p) is p and Replica("w0", {"model": mlp(0)}, precision=p).precision is p


# ----------------------------------------------------------------------------- bf16
def test_bf16_forward_runs_in_bf16_and_pushes_float32_gradients() -> None:
    x, y = blobs(256, seed=4)
    runs = {}
    for precision in ("32", "bf16-mixed"):
        model, probe = probed()
        replica = Replica("w0", {"model": model}, precision=precision)
        server = Recorder(server_for(replica, lr=0.1))
        res = train_rows(replica, server, Downpour().worker_side(), SupervisedStep(F.cross_entropy), x, y,
                         batch_size=64, push_every=2, seed=0)
        assert res.pushes == res.applied == 2 and res.loss_scale is None and res.overflow_batches == 0
        assert all(p.update.dtype == np.float32 and np.isfinite(p.update).all() for p in server.pushes)
        runs[precision] = (set(probe.seen), server.pushes[0].update)
    assert runs["32"][0] == {torch.float32}
    assert runs["bf16-mixed"][0] == {torch.bfloat16}
    # the same first gradient, to bf16's precision (and not bit for bit: it did compute in bf16)
    g32, g16 = runs["32"][1], runs["bf16-mixed"][1]
    assert not np.array_equal(g32, g16)
    np.testing.assert_allclose(g16, g32, rtol=0.1, atol=0.03 * np.abs(g32).max())


def _train_blobs(precision: str | Precision, overlap: bool = False) -> tuple[float, list[ChunkResult]]:
    x, y = blobs(2048, seed=0)
    xv, yv = blobs(512, seed=1)
    torch.manual_seed(0)
    replica = Replica("w0", {"model": mlp(0)}, precision=precision)
    server = LocalServer(server_for(replica, lr=0.1, momentum=0.9))
    step = SupervisedStep(F.cross_entropy)
    results = []
    for epoch in range(2):
        for c, lo in enumerate(range(0, 2048, 512)):
            results.append(train_rows(replica, server, Downpour().worker_side(), step, x[lo:lo + 512],
                                      y[lo:lo + 512], batch_size=32, push_every=2, seed=100 * epoch + c,
                                      chunk=c, epoch=epoch, overlap=overlap))
    ev = evaluate_rows(replica, server, step.evaluate, xv, yv, batch_size=256)
    return accuracy(ev.targets, ev.outputs), results


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_training_reaches_the_accuracy_of_fp32(precision: str) -> None:
    reference, _ = _train_blobs("32")
    acc, results = _train_blobs(precision)
    assert reference >= 0.9
    assert abs(acc - reference) <= 0.01, (precision, acc, reference)
    assert all(r.pushes == r.applied == 8 for r in results)
    if precision == "16-mixed":  # 128 minibatches: no growth, and this task overflows at 2**16 rarely
        assert results[-1].loss_scale is not None and results[-1].loss_scale <= 2.0**16


def test_16_mixed_with_overlap_learns_too() -> None:
    reference, _ = _train_blobs("32", overlap=True)
    acc, results = _train_blobs("16-mixed", overlap=True)
    assert abs(acc - reference) <= 0.01, (acc, reference)
    assert all(r.pushes == r.applied == 8 for r in results)


# ----------------------------------------------------------------------------- fp16 loss scaling
def _fp16_linear() -> tuple[torch.nn.Module, Replica, Recorder]:
    """A seeded Linear(3, 2) under "16-mixed" (scale 2**10): an unbound copy, its replica, a server."""
    torch.manual_seed(5)
    model = torch.nn.Linear(3, 2)
    unbound = copy.deepcopy(model)
    replica = Replica("w0", {"model": model}, precision=fp16(2.0**10))
    return unbound, replica, Recorder(server_for(replica, lr=0.1))


def test_an_overflowing_minibatch_is_skipped_and_the_rest_of_its_window_kept() -> None:
    """Window of 4 minibatches; the 2nd overflows once scaled: it is taken back, the scale
    halves, the 1st minibatch's kept gradient is halved with it, and the push carries the
    float32 mean gradient of the 3 good ones (unscaled)."""
    x, y, perm = regression(16, huge=slice(4, 8))
    unbound, replica, server = _fp16_linear()
    res = train_rows(replica, server, Downpour().worker_side(), SupervisedStep(F.mse_loss), x, y,
                     batch_size=4, push_every=4, seed=5)
    assert (res.batches, res.overflow_batches, res.nonfinite_batches) == (4, 1, 0)
    assert res.loss_scale == replica.precision.loss_scale == 2.0**9
    assert res.pushes == res.applied == 1 and res.samples == 12

    bounds = batch_bounds(16, 4)
    grads, losses = fp32_gradients(unbound, x, y, perm, bounds)
    good = [0, 2, 3]
    expected = np.mean([grads[i] for i in good], axis=0)
    update = server.pushes[0].update
    assert update.dtype == np.float32 and np.isfinite(update).all()
    np.testing.assert_allclose(update, expected, rtol=1e-2, atol=1e-3 * np.abs(expected).max())
    # the loss reported is the unscaled loss of the good minibatches
    assert res.loss_sum == pytest.approx(sum(losses[i] * 4 for i in good), rel=1e-2)
    assert server.pushes[0].loss == pytest.approx(res.loss_sum / 12, rel=1e-6)


def test_the_scale_grows_after_good_minibatches_and_persists_across_chunks() -> None:
    """Growth interval 3, one window of 8 minibatches: the scale doubles twice inside the window
    (the kept gradients with it); the next chunk on the same replica goes on from there."""
    x, y, perm = regression(32, seed=7)
    torch.manual_seed(5)
    model = torch.nn.Linear(3, 2)
    unbound = copy.deepcopy(model)
    replica = Replica("w0", {"model": model}, precision=fp16(2.0**10, growth_interval=3))
    server = Recorder(server_for(replica, lr=0.1))
    step = SupervisedStep(F.mse_loss)
    res = train_rows(replica, server, Downpour().worker_side(), step, x, y, batch_size=4, push_every=8, seed=7)
    assert res.overflow_batches == 0 and res.loss_scale == 2.0**12  # grown after minibatches 3 and 6

    grads, losses = fp32_gradients(unbound, x, y, perm, batch_bounds(32, 4))
    expected = np.mean(grads, axis=0)
    np.testing.assert_allclose(server.pushes[0].update, expected, rtol=1e-2, atol=1e-3 * np.abs(expected).max())
    assert res.loss_sum == pytest.approx(sum(v * 4 for v in losses), rel=1e-2)  # unscaled

    # the scale and its count of good minibatches (2 since the last growth) live in the replica
    again = train_rows(replica, server, Downpour().worker_side(), step, x, y, batch_size=4, push_every=8, seed=8)
    assert again.loss_scale == 2.0**15  # grown after its minibatches 1, 4 and 7


def test_a_gradient_non_finite_at_the_smallest_scale_counts_as_nan() -> None:
    """Scaling cannot explain NaN: once the scale is at its floor a non-finite gradient is a
    non-finite minibatch (the NaN guard's count), not an overflow."""

    def nan_gradient(replica: Replica, xb: torch.Tensor, yb: torch.Tensor) -> float:
        loss = F.cross_entropy(replica.module(xb), yb)
        replica.backward(loss)
        with torch.no_grad():
            next(replica.module.parameters()).grad[0, 0] = float("nan")  # type: ignore[index]
        return float(loss.detach())

    x, y = blobs(256, seed=3)
    precision = Precision("16-mixed", LossScaler(scale=2.0**-23, min_scale=2.0**-24))
    replica = Replica("w0", {"model": mlp(2, batchnorm=False)}, precision=precision)
    state = server_for(replica, lr=0.05)
    res = train_rows(replica, state, Downpour().worker_side(), nan_gradient, x, y, batch_size=64, push_every=1, seed=0)
    assert (res.batches, res.overflow_batches, res.nonfinite_batches, res.pushes) == (4, 1, 3, 0)
    assert res.loss_scale == 2.0**-24 and state.version == 0


def test_overlap_unscales_with_the_scale_of_the_hand_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """One push in flight while the next minibatch overflows and halves the scale: the push in
    flight still divides by the scale its gradients were computed with."""
    x, y, perm = regression(12, huge=slice(4, 8))
    unbound, replica, server = _fp16_linear()

    # hold the first push on the communication thread until the overflow has halved the scale
    released = threading.Event()
    send = InFlight._send
    held = []

    def held_send(self: InFlight, push: Any, scale: float) -> Any:
        if not held:
            held.append(True)
            assert released.wait(timeout=60), "the third minibatch never started"
        return send(self, push, scale)

    monkeypatch.setattr(InFlight, "_send", held_send)
    calls = []

    def step(replica: Replica, xb: torch.Tensor, yb: torch.Tensor) -> float:
        calls.append(len(xb))
        if len(calls) == 3:
            released.set()  # minibatch 2 overflowed and the scale halved before this one
        return SupervisedStep(F.mse_loss)(replica, xb, yb)

    res = train_rows(replica, server, Downpour().worker_side(), step, x, y,
                     batch_size=4, push_every=1, seed=5, overlap=True)
    assert (res.overflow_batches, res.pushes, res.applied, res.loss_scale) == (1, 2, 2, 2.0**9)
    grads, _ = fp32_gradients(unbound, x, y, perm, batch_bounds(12, 4))
    for push, g in zip(server.pushes, (grads[0], grads[2]), strict=True):  # both computed on w0 (overlap)
        np.testing.assert_allclose(push.update, g, rtol=1e-2, atol=1e-3 * np.abs(g).max())


def test_local_steps_see_true_gradients() -> None:
    """EASGD steps a local optimizer on .grad after every minibatch: under '16-mixed' it gets the
    unscaled gradient, so the local weights move as under '32'."""
    x, y = blobs(256, seed=6)
    weights = {}
    for precision in ("32", "16-mixed"):
        replica = Replica("w0", {"model": mlp(3, batchnorm=False)},
                          precision=fp16() if precision == "16-mixed" else precision)
        state = server_for(replica, lr=0.1)
        rule = EASGD(alpha=0.5, period=4).worker_side({"model": SGD(lr=0.1)})
        train_rows(replica, state, rule, SupervisedStep(F.cross_entropy), x, y, batch_size=32, push_every=4, seed=0)
        weights[precision] = replica.weights_vector()
    moved = np.abs(weights["32"] - flat_of(mlp(3, batchnorm=False))).max()
    assert moved > 0.01
    np.testing.assert_allclose(weights["16-mixed"], weights["32"], atol=0.02 * moved)


def flat_of(model: torch.nn.Module) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()


# ----------------------------------------------------------------------------- custom steps
def _plain_backward(replica: Replica, xb: torch.Tensor, yb: torch.Tensor) -> float:
    loss = F.cross_entropy(replica.module(xb), yb)
    loss.backward()  # not replica.backward(loss)
    return float(loss.detach())


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_loss_backward_in_a_custom_step_works_without_loss_scaling(precision: str) -> None:
    x, y = blobs(128, seed=8)
    replica = Replica("w0", {"model": mlp(4)}, precision=precision)
    state = server_for(replica, lr=0.1)
    res = train_rows(replica, state, Downpour().worker_side(), _plain_backward, x, y,
                     batch_size=32, push_every=1, seed=0)
    assert res.applied == 4 and state.version == 4


def test_loss_backward_in_a_custom_step_under_16_mixed_is_a_model_error() -> None:
    x, y = blobs(128, seed=8)
    replica = Replica("w0", {"model": mlp(4)}, precision="16-mixed")
    state = server_for(replica, lr=0.1)
    with pytest.raises(ModelError, match=r"replica\.backward\(loss\)"):
        train_rows(replica, state, Downpour().worker_side(), _plain_backward, x, y,
                   batch_size=32, push_every=1, seed=0)
    assert state.version == 0  # raised at the first minibatch, before any push


def test_backward_of_one_model_is_scaled_too() -> None:
    """replica.backward(loss, model) under '16-mixed': the flat gradient holds scale × gradient."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    replica = Replica("w0", {"a": a, "b": b}, precision=fp16(2.0**4))
    xb = torch.randn(8, 3)
    with replica.autocast():
        loss = a(xb).float().pow(2).mean() + b(xb).float().pow(2).mean()
    replica.backward(loss, "a")
    ga = replica.bindings["a"].grads.clone()  # type: ignore[union-attr]
    assert not replica.bindings["b"].grads.any()  # type: ignore[union-attr]
    reference = copy.deepcopy(a)
    reference.zero_grad()
    reference(xb).pow(2).mean().backward()
    expected = torch.cat([p.grad.reshape(-1) for p in reference.parameters()])  # type: ignore[union-attr]
    torch.testing.assert_close(ga * replica.grad_unscale, expected, rtol=1e-2, atol=1e-3)
    assert not torch.allclose(ga, expected, rtol=0.5)  # in units of the scale (16×)


# ----------------------------------------------------------------------------- evaluation
def test_evaluation_under_bf16_computes_in_bf16_and_answers_float32() -> None:
    xv, yv = blobs(300, seed=1)
    model, probe = probed()
    replica = Replica("w0", {"model": model}, precision="bf16-mixed")
    state = server_for(replica, lr=0.1)
    ev = evaluate_rows(replica, state, SupervisedStep(F.cross_entropy).evaluate, xv, yv, batch_size=128)
    assert set(probe.seen) == {torch.bfloat16}
    assert ev.outputs.dtype == np.float32 and ev.outputs.shape == (300, N_CLASSES)
    assert np.isfinite(ev.loss_sum)

    class Named(SupervisedStep):
        def evaluate(self, replica: Replica, x: torch.Tensor, y: torch.Tensor) -> tuple[float, Any]:
            out = replica.module(x)
            return 0.0, {"logits": out, "top": out.max(dim=1).values}

    ev = evaluate_rows(replica, state, Named(F.cross_entropy).evaluate, xv, yv, batch_size=128)
    assert {k: (v.dtype, v.shape) for k, v in ev.outputs.items()} == {
        "logits": (np.float32, (300, N_CLASSES)), "top": (np.float32, (300,))}


# ----------------------------------------------------------------------------- dry run, history
def test_the_dry_run_runs_the_step_under_the_precision(blob_data: Any) -> None:
    from psdist.checks import dry_run

    info = blob_data.describe()

    def model() -> dict[str, torch.nn.Module]:
        torch.manual_seed(0)
        return {"model": torch.nn.Sequential(torch.nn.Linear(N_FEATURES, 8), torch.nn.ReLU(),
                                             torch.nn.Linear(8, N_CLASSES))}

    dry_run(SupervisedStep(F.cross_entropy), blob_data, model(), info, precision="bf16-mixed")

    class Plain(SupervisedStep):
        def __call__(self, replica: Replica, x: torch.Tensor, y: torch.Tensor) -> float:
            return _plain_backward(replica, x, y)

    dry_run(Plain(F.cross_entropy), blob_data, model(), info, precision="32")
    with pytest.raises(ModelError, match=r"precision='16-mixed'.*replica\.backward\(loss\)"):
        dry_run(Plain(F.cross_entropy), blob_data, model(), info, precision="16-mixed")
    with pytest.raises(ConfigError, match="'fp8'"):
        dry_run(SupervisedStep(F.cross_entropy), blob_data, model(), info, precision="fp8")


def test_the_epoch_record_counts_overflows_and_the_smallest_scale() -> None:
    progress = EpochProgress(1)
    progress.add(ChunkResult(0, 0, "w0", "cpu", overflow_batches=2, loss_scale=2.0**15))
    progress.add(ChunkResult(1, 0, "w1", "cpu", overflow_batches=1, loss_scale=2.0**14))
    rec = EpochProgress.from_dict(progress.to_dict()).record()  # through a checkpoint's JSON
    assert (rec["overflow_batches"], rec["loss_scale"]) == (3, 2.0**14)
    plain = EpochProgress(1)
    plain.add(ChunkResult(0, 0, "w0", "cpu"))
    assert plain.record()["overflow_batches"] == 0 and "loss_scale" not in plain.record()


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_the_calorimeter_gan_trains_and_evaluates_in_mixed_precision(precision: str) -> None:
    """Two models, each loss through replica.backward(loss, model); float32 shower summaries."""
    from psdist.hep.gan import CaloGANStep, calo_gan
    from psdist.hep.models import ENERGY_SCALE

    rng = np.random.default_rng(0)
    x = rng.exponential(1.0, (16, 1, 5, 5, 5)).astype(np.float32)
    y = np.stack([np.zeros(16), rng.uniform(0.2, 1.0, 16) * ENERGY_SCALE], axis=1).astype(np.float32)
    torch.manual_seed(0)
    replica = Replica("w0", calo_gan(latent=4, grid=5, width=2), precision=precision)
    state = server_for(replica, lr=0.01)
    step = CaloGANStep(latent=4)
    res = train_rows(replica, state, Downpour().worker_side(), step, x, y, batch_size=8, push_every=1, seed=0)
    # at 2**16 a first fp16 minibatch may overflow (then skipped, counted, the scale halved)
    assert res.applied + res.overflow_batches == 2 and res.applied >= 1 and res.nonfinite_batches == 0
    assert set(res.losses) == {"d_loss", "g_loss"}
    assert all(np.isfinite(v) for v in res.losses.values())
    ev = evaluate_rows(replica, state, step.evaluate, x, y, batch_size=8)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in ev.outputs.values())
