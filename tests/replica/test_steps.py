"""Custom training steps with several models: per-model gradients, one version, real training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import psdist
from psdist.core.server import ServerState
from psdist.replica import Replica
from psdist.replica.binding import flatten
from psdist.replica.loop import evaluate_rows, train_rows
from psdist.rules import Downpour
from psdist.steps import Step


def toy_gan() -> dict[str, nn.Module]:
    """Generator: 4-d noise → 1 value; discriminator: 1 value → logit."""
    return {
        "generator": nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1)),
        "discriminator": nn.Sequential(nn.Linear(1, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1)),
    }


class ToyGANStep(Step):
    """Non-saturating GAN losses; each loss trains only its own model (simultaneous updates)."""

    def __call__(self, replica, x, y):
        g, d = replica.models["generator"], replica.models["discriminator"]
        fake = g(torch.randn(len(x), 4))
        bce = nn.functional.binary_cross_entropy_with_logits
        d_loss = bce(d(x), torch.ones(len(x), 1)) + bce(d(fake.detach()), torch.zeros(len(x), 1))
        g_loss = bce(d(fake), torch.ones(len(x), 1))
        replica.backward(d_loss, "discriminator")
        replica.backward(g_loss, "generator")
        return {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach())}

    def evaluate(self, replica, x, y):
        fake = replica.models["generator"](torch.randn(len(x), 4))
        return 0.0, {"fake": fake, "real": x}


def mean_gap(targets, outputs) -> float:
    """How far the generated mean is from the real one (the metric a GAN should shrink)."""
    return float(abs(outputs["fake"].mean() - outputs["real"].mean()))


def real_samples(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(3.0, 0.5, (n, 1)).astype(np.float32)


def test_backward_trains_only_the_named_model():
    torch.manual_seed(0)
    replica = Replica("w", toy_gan())
    x = torch.from_numpy(real_samples(8, 0))
    ToyGANStep()(replica, x, torch.zeros(8))
    g_grads = replica.bindings["generator"].grads.clone()
    d_grads = replica.bindings["discriminator"].grads.clone()
    assert g_grads.abs().sum() > 0 and d_grads.abs().sum() > 0

    # the generator's gradient equals autograd's of g_loss w.r.t. the generator alone
    replica.zero_grad()
    g, d = replica.models["generator"], replica.models["discriminator"]
    z = torch.randn(8, 4)

    def g_loss():
        return nn.functional.binary_cross_entropy_with_logits(d(g(z)), torch.ones(8, 1))

    loss = g_loss()
    replica.backward(loss, "generator")
    assert replica.bindings["discriminator"].grads.abs().sum() == 0
    expected = torch.autograd.grad(g_loss(), list(g.parameters()))
    torch.testing.assert_close(replica.bindings["generator"].grads, torch.cat([e.reshape(-1) for e in expected]))
    with pytest.raises(psdist.ModelError, match="no model 'critic'"):
        replica.backward(loss, "critic")


def test_gan_through_in_process_server_moves_fakes_to_real_data():
    torch.manual_seed(0)
    replica = Replica("w", toy_gan())
    layout = replica.layout
    w0 = np.concatenate([flatten(replica.models[g.name], g.spec) for g in layout.groups])
    server = ServerState(layout, w0, {"generator": psdist.optim.Adam(lr=0.01, betas=(0.5, 0.999)),
                                      "discriminator": psdist.optim.Adam(lr=0.01, betas=(0.5, 0.999))})
    step, rule = ToyGANStep(), Downpour().worker_side()
    x_val = real_samples(512, 99)
    before = evaluate_rows(replica, server, step.evaluate, x_val, np.zeros(512), batch_size=512)
    for epoch in range(6):
        res = train_rows(replica, server, rule, step, real_samples(1024, epoch), np.zeros(1024, np.float32),
                         batch_size=64, push_every=1, seed=epoch)
        assert set(res.losses) == {"d_loss", "g_loss"}
    after = evaluate_rows(replica, server, step.evaluate, x_val, np.zeros(512), batch_size=512)
    assert server.version == 6 * 16  # one version per push, both models updated together
    assert mean_gap(None, before.outputs) > 2.0
    assert mean_gap(None, after.outputs) < 0.5 * mean_gap(None, before.outputs)


def test_gan_trainer_two_workers(client, tmp_path):
    ds = psdist.write_zarr(tmp_path / "g.zarr", real_samples(4096, 1), np.zeros(4096, np.float32),
                           real_samples(512, 2), np.zeros(512, np.float32), chunk_rows=512)
    adam = {"generator": psdist.optim.Adam(lr=0.01, betas=(0.5, 0.999)),
            "discriminator": psdist.optim.Adam(lr=0.01, betas=(0.5, 0.999))}
    trainer = psdist.Trainer(toy_gan, data=ds, optimizer=adam, step=ToyGANStep(), batch_size=64,
                             client=client, metrics={"mean_gap": mean_gap}, max_staleness=8)
    with torch.no_grad():  # the untrained generator (models() before fit: initial weights)
        gap0 = abs(float(trainer.models()["generator"](torch.randn(4096, 4)).mean()) - 3.0)
    history = trainer.fit(epochs=4)
    assert {"train_d_loss", "train_g_loss"} <= set(history.last)
    assert gap0 > 2.0
    assert history.last["val_mean_gap"] < 0.5 * gap0
    models = trainer.models()
    assert set(models) == {"generator", "discriminator"}
    with pytest.raises(psdist.ModelError, match="several models"):
        trainer.model()
