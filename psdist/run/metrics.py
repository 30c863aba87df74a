"""Validation metrics computed from a model's outputs and the true labels (numpy in, float out).

Every metric has the signature ``metric(targets, outputs) -> float``; pass your own in
``Trainer(metrics={"name": fn})``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["accuracy", "auc", "default_metrics", "mse", "scores"]


def scores(outputs: np.ndarray) -> np.ndarray:
    """Signal score of a binary classifier: softmax of class 1 for two logits, else the logit."""
    if outputs.ndim == 2 and outputs.shape[1] == 2:
        z = outputs - outputs.max(axis=1, keepdims=True)
        e = np.exp(z)
        p1: np.ndarray = e[:, 1] / e.sum(axis=1)
        return p1
    first: np.ndarray = outputs.reshape(len(outputs), -1)[:, 0]
    return first


def accuracy(targets: np.ndarray, outputs: np.ndarray) -> float:
    """Fraction of rows whose arg-max output is the integer label (or sign, for one logit)."""
    if outputs.ndim == 2 and outputs.shape[1] > 1:
        pred = outputs.argmax(axis=1)
    else:
        pred = (outputs.reshape(-1) > 0).astype(np.int64)
    return float(np.mean(pred == targets.reshape(-1)))


def auc(targets: np.ndarray, outputs: np.ndarray) -> float:
    """Area under the ROC curve for binary labels (rank statistic; ties get half credit)."""
    s = scores(outputs)
    y = targets.reshape(-1).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mse(targets: np.ndarray, outputs: np.ndarray) -> float:
    """Mean squared error for regression."""
    return float(np.mean((outputs.reshape(targets.shape) - targets) ** 2))


def default_metrics(y_dtype: str) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """Accuracy for integer labels (classification); nothing extra for regression."""
    return {"accuracy": accuracy} if np.dtype(y_dtype).kind in "iub" else {}
