"""Models of the HEP examples (small defaults that train in minutes on 2 CPU cores).

Each is a plain function returning a fresh ``nn.Module``, usable as a psdist ``model_fn``
(``psdist.hep.models:jet_cnn`` in a YAML config).
"""

from __future__ import annotations

from torch import nn

__all__ = ["jet_cnn", "mlp"]


def jet_cnn(image: int = 32, channels: int = 1, classes: int = 2, width: int = 32, hidden: int = 128) -> nn.Module:
    """Jet-image CNN: conv(width)-conv(2·width)-fc(hidden), BatchNorm after each conv.

    With the defaults (1×32×32 images) it has about 0.55 M parameters — the "small CNN" of the
    measured baselines.
    """
    flat = 2 * width * (image // 4) ** 2
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
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
