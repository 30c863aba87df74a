"""Point-cloud jet taggers with several inputs: ParticleNet and Particle Transformer on Pythia 8 jets.

    python examples/taggers.py --model particlenet --compare      # ~3 min on 2 CPU cores (+1 min of Pythia)
    python examples/taggers.py --model part --kind tqcd --per-class 20000 --epochs 10
    psdist generate jets data/wqcd.zarr --kind wqcd --per-class 4000 --no-mpi && psdist train examples/particlenet.yaml

The models take three arrays of the store, ``model(points, x, mask)``: the (Δη, Δφ) points, the
particle features and the padding mask (``ZarrDataset(path, inputs=["points", "x", "mask"],
targets="y")``). Generates the jets (Pythia 8 + FastJet) if missing, trains through the parameter
server and reports ROC AUC and background rejection at 50 % signal efficiency; --compare trains
the same model single-process (psdist.testing.train_plain) for reference. Measured figures:
docs/taggers.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import torch
import zarr

import psdist
from psdist.hep import pythia, taggers
from psdist.hep.evaluate import auc, rejection_at_50
from psdist.testing import train_plain

MODELS = {"particlenet": taggers.particlenet, "part": taggers.part_tagger}
METRICS = {"auc": auc, "rej50": rejection_at_50}


def dataset(path: str | os.PathLike[str]) -> psdist.ZarrDataset:
    """The jets as the taggers read them: three inputs in call order, the class as target."""
    return psdist.ZarrDataset(path, inputs=["points", "x", "mask"], targets="y")


def run(data: psdist.ZarrDataset, model: str = "particlenet", epochs: int = 20, workers: int = 2, client=None,
        lr: float = 1e-3, batch_size: int = 64, seed: int = 0, compare: bool = False) -> dict:
    """Train one tagger; returns the last history record, its wall time (and the plain loop's)."""
    model_fn = functools.partial(MODELS[model], features=4, classes=2)
    # a constant rate: cosine annealing to 0 over 20 epochs cost ParticleNet ~0.015 AUC in both loops
    opt = functools.partial(torch.optim.Adam, lr=lr)
    trainer = psdist.Trainer(model_fn, torch.nn.functional.cross_entropy, data, opt, batch_size=batch_size,
                             workers=workers, client=client, seed=seed, metrics=METRICS, max_staleness=8)
    t = time.perf_counter()
    out = dict(trainer.fit(epochs).last, wall_s=time.perf_counter() - t)
    if compare:
        t = time.perf_counter()
        ref = train_plain(model_fn, data, opt, loss_fn=torch.nn.functional.cross_entropy,
                          epochs=epochs, batch_size=batch_size, seed=seed, metrics=METRICS, threads=workers)
        out.update({f"plain_{k}": v for k, v in ref.items()}, plain_wall_s=time.perf_counter() - t)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="particlenet")
    p.add_argument("--kind", choices=["qg", "wqcd", "tqcd"], default="wqcd")
    p.add_argument("--per-class", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0, help="weights and shuffling (the jets are always seed 1)")
    p.add_argument("--compare", action="store_true", help="also train single-process PyTorch")
    a = p.parse_args()
    path = f"data/{a.kind}-jets-{a.per_class}.zarr"
    if not os.path.exists(path) or "points" not in zarr.open_group(path, mode="r"):
        # same seed and settings: a store written before `points` existed comes back identical plus it
        pythia.write_jets(path, a.kind, a.per_class, mpi=False, overwrite=True)
    r = run(dataset(path), a.model, a.epochs, a.workers, lr=a.lr, seed=a.seed, compare=a.compare)
    print(f"{a.model} on {a.kind}: AUC {r['val_auc']:.4f}  rejection@50% {r['val_rej50']:.1f}  "
          f"({r['wall_s']:.0f} s)")
    if a.compare:
        print(f"plain PyTorch: AUC {r['plain_val_auc']:.4f}  rejection@50% {r['plain_val_rej50']:.1f}  "
              f"({r['plain_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
