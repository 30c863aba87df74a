"""Physics-level evaluation of the HEP examples, as ``metric(targets, outputs) -> float``.

Taggers: ROC curve, AUC, background rejection at a fixed signal efficiency. Calorimeter
regression: particle-type accuracy and the energy resolution σ(ΔE/E). GAN: a distance between
the shower shapes of generated and real showers (longitudinal and lateral profiles, total
energy) that shrinks as the generator learns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from psdist.hep.models import ENERGY_SCALE
from psdist.hep.showers import profile_distances
from psdist.run.metrics import auc, scores

__all__ = [
    "auc",
    "background_rejection",
    "calo_accuracy",
    "energy_resolution",
    "rejection_at_50",
    "roc_curve",
    "shower_shape_distance",
]


def roc_curve(targets: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(signal efficiency, background efficiency) for every cut on the score, descending."""
    s = scores(outputs)
    y = targets.reshape(-1).astype(bool)
    order = np.argsort(-s, kind="mergesort")
    tp = np.cumsum(y[order])
    fp = np.cumsum(~y[order])
    return tp / max(int(y.sum()), 1), fp / max(int((~y).sum()), 1)


def background_rejection(targets: np.ndarray, outputs: np.ndarray, efficiency: float = 0.5) -> float:
    """1 / background efficiency at the cut that keeps ``efficiency`` of the signal."""
    tpr, fpr = roc_curve(targets, outputs)
    i = int(np.searchsorted(tpr, efficiency))
    f = fpr[min(i, len(fpr) - 1)]
    return float(1 / f) if f > 0 else float("inf")


def rejection_at_50(targets: np.ndarray, outputs: np.ndarray) -> float:
    """Background rejection at 50 % signal efficiency (a common tagger figure)."""
    return background_rejection(targets, outputs, 0.5)


def calo_accuracy(targets: np.ndarray, outputs: np.ndarray) -> float:
    """Particle-type accuracy of a :class:`~psdist.hep.models.CaloCNN` (targets: class, energy)."""
    return float(np.mean(outputs[:, :-1].argmax(axis=1) == targets[:, 0].astype(np.int64)))


def energy_resolution(targets: np.ndarray, outputs: np.ndarray) -> float:
    """σ of (E_pred − E)/E over the sample (robust: half the 16–84 % interquantile range)."""
    true = targets[:, 1]
    pred = outputs[:, -1] * ENERGY_SCALE
    r = (pred - true) / true
    lo, hi = np.percentile(r, [16, 84])
    return float((hi - lo) / 2)


def shower_shape_distance(targets: Any, outputs: dict[str, np.ndarray]) -> float:
    """Distance between real and generated shower shapes (0 for identical sets).

    ``outputs`` holds per-shower profiles (``real_long``/``fake_long``, ``real_lat``/``fake_lat``)
    and totals (``real_total``/``fake_total``), as :class:`~psdist.hep.gan.CaloGANStep` returns;
    the distance is :func:`psdist.hep.showers.profile_distances` summed.
    """
    d = profile_distances(
        outputs["real_long"], outputs["fake_long"], outputs["real_lat"], outputs["fake_lat"],
        outputs["real_total"], outputs["fake_total"],
    )
    return float(sum(d.values()))
