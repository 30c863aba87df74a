"""Finite checks on arrays of rows (numpy only): shared by the data layer and the chunk loops."""

from __future__ import annotations

import numpy as np

__all__ = ["nonfinite_rows"]


def nonfinite_rows(*arrays: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows holding NaN or Inf in any of the (floating-point) arrays."""
    bad = np.zeros(len(arrays[0]), dtype=bool)
    for a in arrays:
        if a.dtype.kind in "fc" and a.size:
            bad |= ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    return bad
