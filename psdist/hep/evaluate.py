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
    "calo_type_auc",
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


def _calo(targets: Any, outputs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(class, true energy in GeV, type logits, predicted energy in GeV) from either form: packed
    arrays ((N, 2) targets, (N, classes + 1) outputs) or pairs ((class, energy) targets as
    ``targets=["y", "energy"]`` gives them, (logits, energy) outputs of ``calo_cnn(split=True)``)."""
    if isinstance(targets, np.ndarray):
        cls, true = targets[:, 0], targets[:, 1]
    else:
        cls, true = (np.asarray(t).reshape(-1) for t in targets)
    if isinstance(outputs, np.ndarray):
        logits, pred = outputs[:, :-1], outputs[:, -1]
    else:
        logits, pred = np.asarray(outputs[0]), np.asarray(outputs[1]).reshape(-1)
    return cls.astype(np.int64), true.astype(np.float64), logits, pred.astype(np.float64) * ENERGY_SCALE


def calo_accuracy(targets: Any, outputs: Any) -> float:
    """Particle-type accuracy of a :class:`~psdist.hep.models.CaloCNN`.

    Parameters
    ----------
    targets
        Packed (N, 2) = (class, energy), or the pair (class, energy) of two target arrays.
    outputs
        Packed (N, classes + 1), or the pair (logits, energy) of ``calo_cnn(split=True)``.

    Returns
    -------
    float
        Fraction of showers whose arg-max logit is the true class.
    """
    cls, _, logits, _ = _calo(targets, outputs)
    return float(np.mean(logits.argmax(axis=1) == cls))


def calo_type_auc(targets: Any, outputs: Any) -> float:
    """Particle-type ROC AUC, one class against the rest, averaged over the classes present.

    Takes the same forms as :func:`calo_accuracy`; each class is scored by its softmax
    probability (for two classes this is the plain binary AUC).
    """
    cls, _, logits, _ = _calo(targets, outputs)
    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    per_class = [auc((cls == c).astype(np.int64), prob[:, c]) for c in range(prob.shape[1])
                 if 0 < (cls == c).sum() < len(cls)]
    return float(np.mean(per_class)) if per_class else float("nan")


def energy_resolution(targets: Any, outputs: Any) -> float:
    """σ of (E_pred − E)/E over the sample (robust: half the 16–84 % interquantile range).

    Takes the same forms as :func:`calo_accuracy`; energies are in GeV in the targets and in
    units of :data:`~psdist.hep.models.ENERGY_SCALE` in the outputs.
    """
    _, true, _, pred = _calo(targets, outputs)
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
