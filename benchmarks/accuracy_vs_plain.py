"""Final validation accuracy: psdist with N workers against a plain single-process PyTorch loop.

    python benchmarks/accuracy_vs_plain.py --jets 20000 --epochs 3 --workers 2 --settings 0.05:0.9 0.02:0.9

Same model (jet CNN), same toy jet images, same epochs, batch size and optimizer settings
(each --settings entry is lr:momentum, used by both). The plain loop is the reference; the target
is psdist within 1 point of it. Asynchrony acts like extra momentum (about 1 - 1/n for n
workers), so a momentum that is already high can tip asynchronous SGD over; the sweep shows
where. Accuracy only — throughput is bench_throughput.py's job.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
import torch

import psdist
from psdist.hep import jetimages
from psdist.hep.models import jet_cnn


def plain(ds: psdist.ZarrDataset, epochs: int, batch: int, lr: float, momentum: float, seed: int) -> dict:
    g = ds.open_group()
    x, y = torch.from_numpy(g["x"][:]), torch.from_numpy(g["y"][:])
    xv, yv = torch.from_numpy(g["x_val"][:]), g["y_val"][:]
    torch.manual_seed(seed)
    model = jet_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(batch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        out = model(xv).numpy()
    return {"val_accuracy": psdist.metrics.accuracy(yv, out), "val_auc": psdist.metrics.auc(yv, out)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jets", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--settings", nargs="+", default=["0.05:0.9", "0.02:0.9"], help="lr:momentum pairs")
    p.add_argument("--max-staleness", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    a = p.parse_args()
    torch.set_num_threads(a.workers)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ds = jetimages.write_dataset(os.path.join(tmp, "jets.zarr"), jets=a.jets)
        for setting in a.settings:
            lr, momentum = (float(v) for v in setting.split(":"))
            for seed in a.seeds:
                ref = plain(ds, a.epochs, a.batch_size, lr, momentum, seed)
                trainer = psdist.Trainer(
                    jet_cnn, torch.nn.functional.cross_entropy, ds,
                    psdist.optim.SGD(lr=lr, momentum=momentum), max_staleness=a.max_staleness,
                    batch_size=a.batch_size, workers=a.workers, seed=seed, metrics={"auc": psdist.metrics.auc},
                )
                last = trainer.fit(epochs=a.epochs).last
                rows.append({"lr": lr, "momentum": momentum, "seed": seed,
                             "plain_acc": ref["val_accuracy"], "psdist_acc": last["val_accuracy"],
                             "plain_auc": ref["val_auc"], "psdist_auc": last["val_auc"],
                             "rejected": sum(r["pushes_rejected"] for r in trainer.history)})
                print(json.dumps(rows[-1]), flush=True)
    print(f"psdist {a.workers} workers vs plain PyTorch, {a.epochs} epochs, {a.jets} jets (accuracy, points):")
    for setting in a.settings:
        lr, momentum = (float(v) for v in setting.split(":"))
        sel = [r for r in rows if (r["lr"], r["momentum"]) == (lr, momentum)]
        d = [r["psdist_acc"] - r["plain_acc"] for r in sel]
        print(f"  lr={lr} momentum={momentum}: plain {np.mean([r['plain_acc'] for r in sel]):.4f}  "
              f"psdist {np.mean([r['psdist_acc'] for r in sel]):.4f}  difference {np.mean(d) * 100:+.2f}")


if __name__ == "__main__":
    main()
