"""Event-topology classification (tt̄ / W+jets / Z+jets / QCD) on Pythia 8 events.

    python examples/events.py                          # a few minutes on 2 CPU cores
    python examples/events.py --per-class 20000 --epochs 10 --compare
    psdist generate events data/events.zarr --per-class 3000 --no-mpi && psdist train examples/events.yaml

Each event is a fixed-size vector of its leading jets, leptons and missing ET
(psdist.hep.pythia.event_columns() names the columns). Reports 4-class accuracy.
"""

from __future__ import annotations

import argparse
import functools
import os

import torch

import psdist
from psdist.hep import pythia
from psdist.hep.models import event_classifier
from psdist.testing import train_plain


def run(data: psdist.ZarrDataset, epochs: int = 5, workers: int = 2, client=None, lr: float = 1e-3,
        batch_size: int = 128, seed: int = 0, compare: bool = False) -> dict:
    inputs = data.describe().x_shape[0]
    model_fn = functools.partial(event_classifier, inputs=inputs, classes=4)
    opt = functools.partial(torch.optim.Adam, lr=lr)
    trainer = psdist.Trainer(model_fn, torch.nn.functional.cross_entropy, data, opt,
                             batch_size=batch_size, workers=workers, client=client, seed=seed, max_staleness=8)
    out = dict(trainer.fit(epochs).last)
    if compare:
        ref = train_plain(model_fn, data, opt, loss_fn=torch.nn.functional.cross_entropy,
                          epochs=epochs, batch_size=batch_size, seed=seed,
                          metrics={"accuracy": psdist.metrics.accuracy}, threads=workers)
        out.update({f"plain_{k}": v for k, v in ref.items()})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-class", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--compare", action="store_true")
    a = p.parse_args()
    path = f"data/events-{a.per_class}.zarr"
    if not os.path.exists(path):
        pythia.write_events(path, a.per_class, mpi=False)
    r = run(psdist.ZarrDataset(path), a.epochs, a.workers, compare=a.compare)
    print(f"event topology: accuracy {r['val_accuracy']:.4f}")
    if a.compare:
        print(f"plain PyTorch: accuracy {r['plain_val_accuracy']:.4f}")


if __name__ == "__main__":
    main()
