"""The four workloads of the suite: data written once to Zarr, a model, a loss and a metric.

    python -m benchmarks.suite.workloads /tmp/wl --size tiny     # write the stores, print a summary

Every contender trains the same model factory (from :mod:`psdist.hep.models`, so Dask workers
import it by reference) with the same loss on the same rows; the metric is a fraction in
[0, 1] (accuracy), computed on the same validation rows by every contender.

- ``jet_cnn``: toy quark/gluon jet images (:mod:`psdist.hep.jetimages`), the jet CNN.
- ``particle_flow``: quark/gluon particle lists (z, Δη, Δφ, pid code) from the same flavour
  parameters as the jet images (a toy generator here: Pythia is too slow for a CI smoke run and
  absent on the GPU machine), the Particle Flow Network with psdist's Pythia feature scaling.
- ``calo_cnn``: parametric calorimeter showers (:mod:`psdist.hep.showers`, a 16³ grid to keep the
  3D convolutions affordable on 2 cores), the 3D CNN with its type + energy heads; metric: the
  particle-type accuracy.
- ``wide_mlp``: Gaussian blobs in 256 dimensions and a 3-layer MLP of width 1024 (~2.4 M
  parameters, ~10 MB per push and per pull): communication-bound by design.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["WORKLOADS", "Workload", "load_arrays", "metric", "write_all"]

MAX_PARTICLES = 30


@dataclass(frozen=True)
class Workload:
    """One benchmark problem; ``model`` and ``loss`` are picklable module-level callables."""

    name: str
    model: Callable[[], Any]
    loss: Callable[..., Any]
    metric_name: str
    target: float  # validation metric for "time to target"
    # SGD learning rate (momentum 0.9 for all): 0.05 trains plain PyTorch faster, but with one
    # version of staleness (2 asynchronous workers) it diverges on the CNNs; 0.02 trains all
    lr: float
    description: str
    y: str = "y"  # label array in the store (calo: "target" = class + energy)

    @property
    def y_val(self) -> str:
        return f"{self.y}_val"


def _workloads() -> dict[str, Workload]:
    import torch.nn.functional as F

    from psdist.hep import models as m

    return {
        "jet_cnn": Workload(
            "jet_cnn", m.jet_cnn, F.cross_entropy, "accuracy", 0.65, 0.02,
            "jet_cnn on 1x32x32 toy q/g jet images"),
        "particle_flow": Workload(
            "particle_flow", m.particle_flow, F.cross_entropy, "accuracy", 0.75, 0.02,
            f"Particle Flow Network on {MAX_PARTICLES} particles x (z, deta, dphi, pid)"),
        "calo_cnn": Workload(
            "calo_cnn", functools.partial(m.calo_cnn, grid=16), m.calo_loss, "type accuracy", 0.50, 0.02,
            "3D CNN (type + energy heads) on 16^3 parametric showers (e-, gamma, pi+)", y="target"),
        "wide_mlp": Workload(
            "wide_mlp", functools.partial(m.mlp, inputs=256, hidden=1024, classes=4, depth=3),
            F.cross_entropy, "accuracy", 0.90, 0.02,
            "MLP 256-1024-1024-1024-4 (~2.4 M params) on Gaussian blobs: communication-bound"),
    }


WORKLOADS: dict[str, Workload] = _workloads()


def metric(name: str, targets: np.ndarray, outputs: np.ndarray) -> float:
    """The workload's validation metric (the same function for every contender)."""
    if WORKLOADS[name].y == "target":  # calorimeter: class logits then the energy column
        from psdist.hep.evaluate import calo_accuracy

        return calo_accuracy(targets, outputs)
    from psdist.metrics import accuracy

    return accuracy(targets, outputs)


# psdist calls metrics as fn(targets, outputs): one picklable function per workload
def jet_cnn_metric(t: np.ndarray, o: np.ndarray) -> float:
    return metric("jet_cnn", t, o)


def particle_flow_metric(t: np.ndarray, o: np.ndarray) -> float:
    return metric("particle_flow", t, o)


def calo_cnn_metric(t: np.ndarray, o: np.ndarray) -> float:
    return metric("calo_cnn", t, o)


def wide_mlp_metric(t: np.ndarray, o: np.ndarray) -> float:
    return metric("wide_mlp", t, o)


METRIC_FNS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "jet_cnn": jet_cnn_metric, "particle_flow": particle_flow_metric,
    "calo_cnn": calo_cnn_metric, "wide_mlp": wide_mlp_metric,
}


# ---------------------------------------------------------------------------- generators
def particle_lists(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` jets as zero-padded particle lists (n, 30, 4) = (z, Δη, Δφ, pid code); 1 = quark.

    The same flavour parameters as :mod:`psdist.hep.jetimages` (multiplicity, width, momentum
    sharing); pid codes 1..5 as psdist's Pythia samples (gluon jets a little richer in photons).
    Particles are pT-ordered, the softest dropped beyond 30.
    """
    from psdist.hep.jetimages import GLUON, QUARK

    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2).astype(np.int64)
    x = np.zeros((n, MAX_PARTICLES, 4), np.float32)
    for label, model in ((1, QUARK), (0, GLUON)):
        idx = np.flatnonzero(y == label)
        k = len(idx)
        counts = np.clip(rng.poisson(model.mean_particles, k), 2, None)
        kmax = int(counts.max())
        alive = np.arange(kmax)[None, :] < counts[:, None]
        z = rng.gamma(model.concentration, 1.0, (k, kmax)) * alive
        z /= z.sum(axis=1, keepdims=True)
        r = rng.exponential(model.width, (k, kmax))
        phi = rng.uniform(0, 2 * np.pi, (k, kmax))
        photon_p = 0.30 if label == 0 else 0.24
        pid = rng.choice([1, 2, 3, 4, 5], size=(k, kmax),
                         p=[0.60 - photon_p / 2, 0.10, photon_p, 0.15 - photon_p / 2, 0.15])
        order = np.argsort(-z, axis=1)[:, :MAX_PARTICLES]  # pT-ordered: hardest first
        take = np.take_along_axis
        feats = np.stack([take(z, order, 1), take(r * np.cos(phi), order, 1),
                          take(r * np.sin(phi), order, 1), take(pid * alive, order, 1)], axis=-1)
        feats *= take(alive, order, 1)[..., None]
        x[idx, : feats.shape[1]] = feats
    return x, y


def blobs(n: int, seed: int, d: int = 256, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters with fixed centres (seed 1234) and overlap: a small-data MLP reaches ~94 %."""
    centres = np.random.default_rng(1234).normal(0, 1, (k, d)) * 0.2
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n).astype(np.int64)
    return (centres[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y


def write_all(root: str, rows: dict[str, tuple[int, int]], chunk_rows: int, seed: int,
              names: list[str] | None = None) -> dict[str, str]:
    """Write each workload's store under ``root`` once; ``rows[name]`` = (train, val) rows."""
    import psdist
    from psdist.hep import jetimages, showers

    paths: dict[str, str] = {}
    for name in names or list(WORKLOADS):
        n, nv = rows[name]
        path = os.path.join(root, f"{name}.zarr")
        if name == "jet_cnn":
            jetimages.write_dataset(path, jets=n, val_jets=nv, seed=seed, chunk_rows=chunk_rows, overwrite=True)
        elif name == "particle_flow":
            x, y = particle_lists(n, seed)
            xv, yv = particle_lists(nv, seed + 1_000_003)
            psdist.write_zarr(path, x, y, xv, yv, chunk_rows=chunk_rows, overwrite=True)
        elif name == "calo_cnn":
            showers.write_dataset(path, n, nv, grid=(16, 16, 16), seed=seed, chunk_rows=chunk_rows,
                                  overwrite=True)
        elif name == "wide_mlp":
            x, y = blobs(n, seed)
            xv, yv = blobs(nv, seed + 1_000_003)
            psdist.write_zarr(path, x, y, xv, yv, chunk_rows=chunk_rows, overwrite=True)
        else:
            raise KeyError(name)
        paths[name] = path
    return paths


def load_arrays(path: str, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and validation arrays of a store, read into memory (what the baselines train on)."""
    import zarr

    from psdist.replica.loop import as_labels

    wl = WORKLOADS[name]
    g = zarr.open_group(path, mode="r")
    x, xv = np.ascontiguousarray(g["x"][:]), np.ascontiguousarray(g["x_val"][:])
    y, yv = as_labels(np.asarray(g[wl.y][:])), as_labels(np.asarray(g[wl.y_val][:]))
    return x, y, xv, yv


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="write the suite's Zarr stores")
    p.add_argument("root")
    p.add_argument("--rows", type=int, default=1024)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    paths = write_all(a.root, dict.fromkeys(WORKLOADS, (a.rows, a.rows // 4)), 256, 0)
    for name, path in paths.items():
        x, y, xv, _ = load_arrays(path, name)
        print(name, x.shape, y.shape, xv.shape, path)


if __name__ == "__main__":
    main()
