"""Models of the HEP examples (small defaults that train in minutes on 2 CPU cores).

Each is a plain function returning a fresh ``nn.Module``, usable as a psdist ``model_fn``
(``psdist.hep.models:jet_cnn`` in a YAML config).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "ENERGY_SCALE",
    "CaloCNN",
    "GRUTagger",
    "InteractionNetwork",
    "Log1p",
    "ParticleFeatures",
    "ParticleFlow",
    "SignedLog",
    "calo_cnn",
    "calo_loss",
    "event_classifier",
    "gru_tagger",
    "interaction_network",
    "jet_cnn",
    "mlp",
    "particle_flow",
]


class Log1p(nn.Module):
    """log(1 + x): compresses energy-like inputs spanning orders of magnitude."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log1p(x)


def jet_cnn(
    image: int = 32, channels: int = 1, classes: int = 2, width: int = 32, hidden: int = 128,
    batchnorm: bool = False, log_inputs: bool = True,
) -> nn.Module:
    """Jet-image CNN: conv(width)-conv(2·width)-fc(hidden), optional BatchNorm after each conv.

    ``log_inputs`` feeds log(1 + pixel) — sparse, heavy-tailed pT images train faster that way.

    With the defaults (1×32×32 images) it has about 0.55 M parameters — the "small CNN" of the
    measured baselines. BatchNorm is off by default: with it, asynchronous (stale) updates
    destabilise this network far more than without (measured in benchmarks/accuracy_vs_plain.py
    and a pure-PyTorch delayed-gradient loop), so turn it on for synchronous rules only.
    """
    flat = 2 * width * (image // 4) ** 2

    def norm(c: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(c)] if batchnorm else []

    return nn.Sequential(
        *([Log1p()] if log_inputs else []),
        nn.Conv2d(channels, width, 3, padding=1),
        *norm(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        *norm(2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def mlp(inputs: int = 20, hidden: int = 64, classes: int = 4, depth: int = 2, batchnorm: bool = False) -> nn.Module:
    """A plain MLP (tests, communication-bound benchmarks); optional BatchNorm after each layer."""
    layers: list[nn.Module] = []
    width = inputs
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), *([nn.BatchNorm1d(hidden)] if batchnorm else []), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def _mask(x: torch.Tensor) -> torch.Tensor:
    """Real particles are rows with any non-zero feature (converters pad with zeros)."""
    return (x.abs().sum(dim=-1) > 0).to(x.dtype)


def _mlp(sizes: list[int], last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if last_act or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ParticleFeatures(nn.Module):
    """Scale psdist's Pythia particle features for a network: (z, Δη, Δφ, pid) → 8 features.

    log z (z = pT fraction), angles × 10 (jets are narrow), and the particle-id code one-hot
    (5 kinds); padded rows stay all zero. Without it the raw inputs span very different scales
    and small taggers barely learn (measured AUC 0.58 → 0.84 on W vs QCD).
    """

    out_features = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = _mask(x).unsqueeze(-1)
        z = torch.log(x[..., :1].clamp(min=1e-4)) / 5 + 1
        pid = nn.functional.one_hot(x[..., 3].long().clamp(0, 5), 6)[..., 1:].to(x.dtype)
        return torch.cat([z, x[..., 1:3] * 10, pid], dim=-1) * m


def _with_features(
    net_fn: Callable[..., nn.Module], features: int, pythia_features: bool, **kw: int
) -> nn.Module:
    if not pythia_features:
        return net_fn(features=features, **kw)
    if features != 4:
        raise ValueError(f"pythia_features expects 4 input features (z, deta, dphi, pid), got {features}")
    return nn.Sequential(ParticleFeatures(), net_fn(features=ParticleFeatures.out_features, **kw))


class ParticleFlow(nn.Module):
    """Deep Sets / Particle Flow Network (Komiske, Metodiev, Thaler 2019).

    Each particle is mapped by Φ, the masked sum over particles (permutation invariant, IRC-safe
    for the pT-weighted variant) is classified by F. Input (N, particles, features), zero-padded.
    """

    def __init__(self, features: int = 4, latent: int = 64, hidden: int = 64, classes: int = 2) -> None:
        super().__init__()
        self.phi = _mlp([features, hidden, hidden, latent])
        self.head = _mlp([latent, hidden, hidden, classes], last_act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head((self.phi(x) * _mask(x).unsqueeze(-1)).sum(dim=1))
        return logits


class GRUTagger(nn.Module):
    """A GRU over the pT-ordered particle list (the seed benchmark's recurrent tagger)."""

    def __init__(self, features: int = 4, hidden: int = 64, classes: int = 2) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = _mask(x).sum(dim=1).clamp(min=1).long().cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        logits: torch.Tensor = self.head(h[-1])
        return logits


class InteractionNetwork(nn.Module):
    """JEDI-net-style interaction network (Moreno et al. 2020) on a fully connected particle graph.

    f_R maps each ordered pair (receiver, sender) to an effect; effects are summed per receiver,
    f_O updates each particle from its features and summed effects; the masked sum over
    particles goes to the classifier φ_C. Pairs with a padded particle are masked out.
    """

    def __init__(self, features: int = 4, effects: int = 16, hidden: int = 32, classes: int = 2) -> None:
        super().__init__()
        self.f_r = _mlp([2 * features, hidden, effects])
        self.f_o = _mlp([features + effects, hidden, hidden])
        self.phi_c = _mlp([hidden, hidden, classes], last_act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, p, f = x.shape
        m = _mask(x)
        recv = x.unsqueeze(2).expand(n, p, p, f)
        send = x.unsqueeze(1).expand(n, p, p, f)
        pair_mask = (m.unsqueeze(2) * m.unsqueeze(1)) * (1 - torch.eye(p, device=x.device, dtype=x.dtype))
        e = self.f_r(torch.cat([recv, send], dim=-1)) * pair_mask.unsqueeze(-1)
        o = self.f_o(torch.cat([x, e.sum(dim=2)], dim=-1)) * m.unsqueeze(-1)
        logits: torch.Tensor = self.phi_c(o.sum(dim=1))
        return logits


def particle_flow(features: int = 4, latent: int = 64, hidden: int = 64, classes: int = 2,
                  pythia_features: bool = True) -> nn.Module:
    """:class:`ParticleFlow` (a psdist ``model_fn``); ``pythia_features`` adds :class:`ParticleFeatures`."""
    return _with_features(ParticleFlow, features, pythia_features, latent=latent, hidden=hidden, classes=classes)


def gru_tagger(features: int = 4, hidden: int = 64, classes: int = 2, pythia_features: bool = True) -> nn.Module:
    """:class:`GRUTagger`; ``pythia_features`` adds :class:`ParticleFeatures`."""
    return _with_features(GRUTagger, features, pythia_features, hidden=hidden, classes=classes)


def interaction_network(features: int = 4, effects: int = 16, hidden: int = 32, classes: int = 2,
                        pythia_features: bool = True) -> nn.Module:
    """:class:`InteractionNetwork`; ``pythia_features`` adds :class:`ParticleFeatures`."""
    return _with_features(InteractionNetwork, features, pythia_features, effects=effects, hidden=hidden,
                          classes=classes)


class SignedLog(nn.Module):
    """sign(x)·log(1 + |x|): GeV-scale momenta and O(1) angles on comparable scales."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x) * torch.log1p(x.abs())


def event_classifier(inputs: int, hidden: int = 128, classes: int = 4, depth: int = 3) -> nn.Module:
    """Event-topology classifier on a fixed-size event vector (jets, leptons, missing ET)."""
    return nn.Sequential(SignedLog(), mlp(inputs=inputs, hidden=hidden, classes=classes, depth=depth))


class CaloCNN(nn.Module):
    """3D CNN on calorimeter cells: particle-type logits and the energy, one head each.

    Output (N, classes + 1): the last column is the predicted energy in units of
    :data:`ENERGY_SCALE`; train with :func:`calo_loss` on packed labels (N, 2) = (class, true
    energy). With ``split=True`` the heads come apart, ``(logits (N, classes), energy (N,))``,
    for two target arrays (``ZarrDataset(path, targets=["y", "energy"])``); :func:`calo_loss`
    and the metrics of :mod:`psdist.hep.evaluate` take either form.
    """

    def __init__(self, grid: int = 25, classes: int = 3, width: int = 16, hidden: int = 64,
                 batchnorm: bool = False, split: bool = False) -> None:
        super().__init__()
        self.split = split

        def norm(c: int) -> list[nn.Module]:
            # off by default: BatchNorm makes asynchronous (stale) updates far less stable
            return [nn.BatchNorm3d(c)] if batchnorm else []

        self.features = nn.Sequential(
            nn.Conv3d(1, width, 3, padding=1), *norm(width), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(width, 2 * width, 3, padding=1), *norm(2 * width), nn.ReLU(), nn.MaxPool3d(2),
            nn.Flatten(),
        )
        flat = 2 * width * (grid // 4) ** 3
        self.trunk = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU())
        self.cls = nn.Linear(hidden, classes)
        # the summed cell energy is a strong energy estimator: give it to the regression head
        self.energy = nn.Linear(hidden + 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(self.features(torch.log1p(x)))
        total = x.sum(dim=(1, 2, 3, 4)).unsqueeze(1) / 100.0
        logits, energy = self.cls(h), self.energy(torch.cat([h, total], dim=1))
        if self.split:
            return logits, energy[:, 0]
        return torch.cat([logits, energy], dim=1)


def calo_cnn(grid: int = 25, classes: int = 3, width: int = 16, hidden: int = 64, batchnorm: bool = False,
             split: bool = False) -> nn.Module:
    """Factory for :class:`CaloCNN`.

    Parameters
    ----------
    grid
        Cells per side of the (grid³) shower.
    classes
        Particle types.
    width, hidden
        Channels of the first convolution (the second has twice as many) and the trunk's width.
    batchnorm
        BatchNorm after each convolution (off: it destabilises asynchronous updates).
    split
        Return ``(logits, energy)`` apart instead of one packed (N, classes + 1) tensor.

    Returns
    -------
    nn.Module
        The network; the energy is in units of :data:`ENERGY_SCALE`.
    """
    return CaloCNN(grid, classes, width, hidden, batchnorm, split)


ENERGY_SCALE = 100.0  # GeV: energies are regressed in these units to keep the loss O(1)


def calo_loss(
    out: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    y: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    energy_weight: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy on the particle type plus ``energy_weight`` × MSE on energy / 100 GeV.

    Parameters
    ----------
    out
        The network's output: packed (N, classes + 1) with the energy last, or the pair
        ``(logits (N, classes), energy (N,))`` of ``calo_cnn(split=True)``.
    y
        The targets: packed (N, 2) float = (class, energy in GeV), or the pair ``(class (N,)
        int64, energy (N,) in GeV)`` that ``ZarrDataset(path, targets=["y", "energy"])`` gives.
    energy_weight
        Weight of the regression term in the sum (``functools.partial`` to change it).

    Returns
    -------
    torch.Tensor
        The scalar loss.
    """
    if isinstance(out, torch.Tensor):
        logits, pred = out[:, :-1], out[:, -1]
    else:
        logits, pred = out[0], out[1].reshape(-1)
    if isinstance(y, torch.Tensor):
        cls, energy = y[:, 0].long(), y[:, 1]
    else:
        cls, energy = y[0].reshape(-1).long(), y[1].reshape(-1)
    energy = energy.to(pred.dtype) / ENERGY_SCALE
    return nn.functional.cross_entropy(logits, cls) + energy_weight * nn.functional.mse_loss(pred, energy)
