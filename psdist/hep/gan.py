"""The 3D calorimeter GAN of the seed benchmark, trained through the parameter server.

Conditional on the particle energy: the generator maps (noise, E) to a 25×25×25 shower; the
discriminator has three heads, as in the CLIC/LCD 3D GAN — real/fake, the energy it infers, and
the summed cell energy it sees (ECAL sum) — so the generator is pushed to produce showers whose
energy scale and total deposit follow the condition. Both models live in one psdist training
(``model_fn`` returns ``{"generator": ..., "discriminator": ...}``), each with its own server
optimizer; :class:`CaloGANStep` computes both losses per minibatch and sends each to its own
model (simultaneous updates).

Data: a shower dataset (``psdist.hep.showers``) with ``y = (particle class, energy)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from psdist.hep.models import ENERGY_SCALE
from psdist.replica.replica import Replica
from psdist.replica.steps import Step

__all__ = ["CaloDiscriminator", "CaloGANStep", "CaloGenerator", "calo_gan"]


class CaloGenerator(nn.Module):
    """(noise, energy) → non-negative cell energies on a grid³ (default 25³)."""

    def __init__(self, latent: int = 32, grid: int = 25, width: int = 8) -> None:
        super().__init__()
        if grid % 5:
            raise ValueError(f"grid={grid} must be a multiple of 5")
        self.latent, self.grid, self.width = latent, grid, width
        self.project = nn.Sequential(nn.Linear(latent + 1, width * 125), nn.ReLU())
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=grid // 5, mode="trilinear", align_corners=False),
            nn.Conv3d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv3d(width, 1, 3, padding=1),
        )

    def forward(self, z: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        e = (energy / ENERGY_SCALE).unsqueeze(1)
        h = self.project(torch.cat([z, e], dim=1)).view(-1, self.width, 5, 5, 5)
        # softplus keeps cells non-negative; the energy factor sets the scale of the shower
        return nn.functional.softplus(self.body(h)) * e.view(-1, 1, 1, 1, 1)


class CaloDiscriminator(nn.Module):
    """Three heads on a shower: real/fake logit, inferred energy, and the ECAL sum it measures."""

    def __init__(self, grid: int = 25, width: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv3d(width, 2 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        side = (grid + 1) // 2
        side = (side + 1) // 2
        self.trunk = nn.Sequential(nn.Linear(2 * width * side**3 + 1, hidden), nn.LeakyReLU(0.2))
        self.real = nn.Linear(hidden, 1)
        self.energy = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # summed in float32: a mixed-precision generator hands over bf16/fp16 showers of 25³ cells
        total = x.float().sum(dim=(1, 2, 3, 4)).unsqueeze(1) / ENERGY_SCALE
        h = self.trunk(torch.cat([self.features(torch.log1p(x)), total], dim=1))
        return self.real(h).squeeze(1), self.energy(h).squeeze(1), total.squeeze(1)


def calo_gan(latent: int = 32, grid: int = 25, width: int = 8) -> dict[str, nn.Module]:
    """``model_fn`` of the GAN training: both models, by name."""
    return {"generator": CaloGenerator(latent, grid, width), "discriminator": CaloDiscriminator(grid, width)}


class CaloGANStep(Step):
    """One GAN minibatch: discriminator and generator losses, each sent to its own model.

    Parameters
    ----------
    latent
        Noise dimension (must match the generator).
    aux_weight
        Weight of the energy-regression and ECAL-sum terms.
    """

    def __init__(self, latent: int = 32, aux_weight: float = 1.0) -> None:
        self.latent = latent
        self.aux_weight = aux_weight

    def _fake(self, replica: Replica, energy: torch.Tensor) -> torch.Tensor:
        z = torch.randn(len(energy), self.latent, device=energy.device)
        showers: torch.Tensor = replica.models["generator"](z, energy)
        return showers

    def __call__(self, replica: Replica, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        d = replica.models["discriminator"]
        energy = y[:, 1]
        e_scaled = energy / ENERGY_SCALE
        bce = nn.functional.binary_cross_entropy_with_logits
        fake = self._fake(replica, energy)

        real_logit, real_e, real_total = d(x)
        fake_logit, _, _ = d(fake.detach())
        d_loss = (bce(real_logit, torch.ones_like(real_logit)) + bce(fake_logit, torch.zeros_like(fake_logit))
                  + self.aux_weight * nn.functional.mse_loss(real_e, e_scaled))

        g_logit, g_e, g_total = d(fake)
        g_loss = (bce(g_logit, torch.ones_like(g_logit))
                  + self.aux_weight * (nn.functional.mse_loss(g_e, e_scaled)
                                       + nn.functional.mse_loss(g_total, real_total.detach())))
        # through the replica (each loss to its own model), which also scales them under "16-mixed"
        replica.backward(d_loss, "discriminator")
        replica.backward(g_loss, "generator")
        return {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach())}

    def evaluate(self, replica: Replica, x: torch.Tensor, y: torch.Tensor) -> tuple[float, Any]:
        """Generated showers for the batch's energies, summarised as shower shapes per sample."""
        from psdist.hep.showers import lateral_profiles, longitudinal_profiles

        fake = self._fake(replica, y[:, 1])
        out = {}
        for name, showers in (("real", x), ("fake", fake)):
            s = showers.detach().float().cpu().numpy()  # a mixed-precision generator answers bf16/fp16
            out[f"{name}_long"] = torch.from_numpy(longitudinal_profiles(s).astype(np.float32))
            out[f"{name}_lat"] = torch.from_numpy(lateral_profiles(s).astype(np.float32))
            out[f"{name}_total"] = showers.float().sum(dim=(1, 2, 3, 4))  # summed in float32
        return 0.0, out
