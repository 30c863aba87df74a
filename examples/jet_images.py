"""Quark/gluon jet tagging with psdist, from Python (what a notebook user writes).

    python examples/jet_images.py                # ~3 min on 2 CPU cores
    python examples/jet_images.py --jets 100000 --epochs 10 --workers 4

Generates toy jet images (psdist.hep.jetimages) if missing, trains the jet CNN on an embedded
LocalCluster through the parameter server, and reports accuracy, ROC AUC and the background
rejection at 50 % signal efficiency on the validation jets.
"""

from __future__ import annotations

import argparse
import functools
import os

import numpy as np
import torch

import psdist
from psdist.hep import jetimages
from psdist.hep.models import jet_cnn
from psdist.testing import train_plain


def rejection_at(targets: np.ndarray, outputs: np.ndarray, efficiency: float = 0.5) -> float:
    """1 / false-positive rate at the cut keeping ``efficiency`` of the signal (quarks)."""
    s = psdist.metrics.scores(outputs)
    cut = np.quantile(s[targets == 1], 1 - efficiency)
    fpr = np.mean(s[targets == 0] >= cut)
    return float(1 / fpr) if fpr > 0 else float("inf")


def run(data: psdist.ZarrDataset, epochs: int = 3, workers: int = 2, client=None, seed: int = 0,
        compare: bool = False) -> psdist.Trainer:
    """Train the jet CNN; with ``compare`` also a single-process reference (``trainer.reference``)."""
    opt = functools.partial(torch.optim.Adam, lr=1e-3)   # your torch.optim optimizer, run by the server
    metrics = {"auc": psdist.metrics.auc, "rej50": rejection_at}
    trainer = psdist.Trainer(jet_cnn, torch.nn.functional.cross_entropy, data=data, optimizer=opt,
                             max_staleness=4, batch_size=128, workers=workers, client=client, seed=seed,
                             metrics=metrics)
    trainer.fit(epochs=epochs)
    if compare:
        trainer.reference = train_plain(jet_cnn, data, opt, loss_fn=torch.nn.functional.cross_entropy,
                                        epochs=epochs, seed=seed, metrics=metrics, threads=workers)
    return trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/jets.zarr")
    p.add_argument("--jets", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--compare", action="store_true", help="also train single-process PyTorch")
    a = p.parse_args()
    if not os.path.exists(a.data):
        jetimages.write_dataset(a.data, jets=a.jets)
    trainer = run(psdist.ZarrDataset(a.data), a.epochs, a.workers, compare=a.compare)
    history = trainer.history
    for rec in history:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()})
    last = history.last
    print(f"validation accuracy {last['val_accuracy']:.4f}  AUC {last['val_auc']:.4f}  "
          f"background rejection at 50% quark efficiency {last['val_rej50']:.1f}")
    if a.compare:
        ref = trainer.reference
        print(f"plain PyTorch: accuracy {ref['val_accuracy']:.4f}  AUC {ref['val_auc']:.4f}")
    trainer.save("runs/jet_images.ckpt")


if __name__ == "__main__":
    main()
