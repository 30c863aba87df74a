"""The 3D calorimeter GAN of the seed benchmark, generator and discriminator through one server.

    python examples/calo_gan.py                         # ~5 min on 2 CPU cores
    python examples/calo_gan.py --showers 50000 --epochs 20
    psdist generate showers data/showers.zarr --showers 6000 && psdist train examples/calo_gan.yaml

A custom training step (psdist.hep.gan.CaloGANStep) trains both models each minibatch; the server
holds and versions both, with one torch.optim.Adam each. Progress is measured physically: the distance between
generated and real shower shapes (longitudinal and lateral profiles, total energy) must shrink.
"""

from __future__ import annotations

import argparse
import os

import psdist
from psdist.hep import showers
from psdist.hep.evaluate import shower_shape_distance
from psdist.hep.gan import CaloGANStep, calo_gan
from psdist.testing import train_plain


def adam() -> dict:
    # one optimizer per model name; psdist.optim.Adam(...) is TorchOptimizer(torch.optim.Adam, ...)
    return {name: psdist.optim.Adam(lr=1e-3, betas=(0.5, 0.999)) for name in ("generator", "discriminator")}


def run(data: psdist.ZarrDataset, epochs: int = 6, workers: int = 2, client=None, batch_size: int = 32,
        seed: int = 0) -> dict:
    """Train the GAN; returns the shape distance before training and per epoch."""
    trainer = psdist.Trainer(calo_gan, data=data, optimizer=adam(), step=CaloGANStep(), batch_size=batch_size,
                             workers=workers, client=client, seed=seed, max_staleness=8,
                             metrics={"shape_distance": shower_shape_distance})
    untrained = train_plain(calo_gan, data, adam(), step=CaloGANStep(), epochs=0,
                                            metrics={"shape_distance": shower_shape_distance}, seed=seed)
    history = trainer.fit(epochs)
    return {"initial_shape_distance": untrained["val_shape_distance"],
            "shape_distance": history.column("val_shape_distance"), "last": history.last}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--showers", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    path = f"data/showers-{a.showers}.zarr"
    if not os.path.exists(path):
        showers.write_dataset(path, a.showers)
    r = run(psdist.ZarrDataset(path, y="target", y_val="target_val"), a.epochs, a.workers)
    print(f"shower-shape distance: untrained {r['initial_shape_distance']:.3f} → "
          + " → ".join(f"{d:.3f}" for d in r["shape_distance"]))


if __name__ == "__main__":
    main()
