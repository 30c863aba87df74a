"""Calorimeter showers: particle type (e-, γ, π±) and energy regression with a 3D CNN, two targets.

    python examples/calorimeter.py                      # ~5 min on 2 CPU cores
    python examples/calorimeter.py --showers 50000 --epochs 10 --compare
    psdist generate showers data/showers.zarr --showers 6000 && psdist train examples/calorimeter.yaml

Showers come from psdist's parametric shower model (psdist.hep.showers; not Geant4). The class
and the energy are two arrays of the store, read as two targets (``targets=["y", "energy"]``):
the network returns its two heads apart, the loss is cross entropy + weighted MSE, and the
metrics see both. Reports the type accuracy and AUC and the energy resolution σ(ΔE/E) on the
validation showers.
"""

from __future__ import annotations

import argparse
import functools
import os

import torch

import psdist
from psdist.hep import showers
from psdist.hep.evaluate import calo_accuracy, calo_type_auc, energy_resolution
from psdist.hep.models import calo_cnn, calo_loss
from psdist.testing import train_plain

METRICS = {"type_accuracy": calo_accuracy, "type_auc": calo_type_auc, "resolution": energy_resolution}


def dataset(path: str | os.PathLike[str]) -> psdist.ZarrDataset:
    # two targets, as (class int64, energy float32 in GeV) tuples: the loss and the metrics get both
    return psdist.ZarrDataset(path, targets=["y", "energy"])


def run(data: psdist.ZarrDataset, epochs: int = 4, workers: int = 2, client=None, lr: float = 1e-3,
        batch_size: int = 32, seed: int = 0, energy_weight: float = 1.0, compare: bool = False) -> dict:
    """Train the two-head CNN; returns the last history record (and the plain reference's figures)."""
    model_fn = functools.partial(calo_cnn, split=True)  # (type logits, energy) apart
    loss = functools.partial(calo_loss, energy_weight=energy_weight)
    opt = functools.partial(torch.optim.Adam, lr=lr)
    trainer = psdist.Trainer(model_fn, loss, data, opt, batch_size=batch_size, workers=workers,
                             client=client, seed=seed, metrics=METRICS, max_staleness=8)
    out = dict(trainer.fit(epochs).last)
    if compare:
        ref = train_plain(model_fn, data, opt, loss_fn=loss, epochs=epochs,
                          batch_size=batch_size, seed=seed, metrics=METRICS, threads=workers)
        out.update({f"plain_{k}": v for k, v in ref.items()})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--showers", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--energy-weight", type=float, default=1.0, help="weight of the energy MSE in the loss")
    p.add_argument("--compare", action="store_true")
    a = p.parse_args()
    path = f"data/showers-{a.showers}.zarr"
    if not os.path.exists(path):
        showers.write_dataset(path, a.showers)
    r = run(dataset(path), a.epochs, a.workers, energy_weight=a.energy_weight, compare=a.compare)
    print(f"type accuracy {r['val_type_accuracy']:.4f}  type AUC {r['val_type_auc']:.4f}  "
          f"energy resolution {r['val_resolution']:.4f}")
    if a.compare:
        print(f"plain PyTorch: type accuracy {r['plain_val_type_accuracy']:.4f}  "
              f"type AUC {r['plain_val_type_auc']:.4f}  energy resolution {r['plain_val_resolution']:.4f}")


if __name__ == "__main__":
    main()
