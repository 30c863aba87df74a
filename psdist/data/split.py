"""Which chunk goes where: the held-out validation chunks, each epoch's order, each task's seed.

Every choice here is a pure function of integers hashed with blake2b, so it is the same in
every process and on every machine, and a resumed training makes the same choices again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from psdist.errors import ConfigError

__all__ = ["epoch_order", "holdout_chunks", "task_seed"]

T = TypeVar("T")


def task_seed(seed: int, epoch: int, chunk: int) -> int:
    """A well-mixed 63-bit seed for one chunk of one epoch (stable across processes)."""
    h = hashlib.blake2b(f"{seed}:{epoch}:{chunk}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def holdout_chunks(n: int, n_val: int, seed: int = 0) -> list[int]:
    """Which ``n_val`` of ``n`` chunks to hold out: one drawn from each of ``n_val`` equal stretches.

    Stretch ``j`` is chunks ``j*n//n_val`` up to ``(j+1)*n//n_val``; the chunk taken from it
    comes from a hash of ``seed``, ``n`` and ``j`` (blake2b, so the same on every machine, Python and
    NumPy version). The held-out chunks thus cover the whole store, the way a random sample
    would, but never cluster at one end: a store written one class after another keeps its
    classes in the validation set (as long as ``n_val`` is at least the number of class
    blocks). Returns sorted chunk positions.

    Examples
    --------
    >>> holdout_chunks(10, 2, seed=0)
    [1, 7]
    """
    if not 0 < n_val < n:
        raise ConfigError(f"cannot hold out {n_val} of {n} chunks: need 0 < n_val < n")
    picks = []
    for j in range(n_val):
        lo, hi = j * n // n_val, (j + 1) * n // n_val
        # n in the hash: stores of different sizes get independent draws
        h = hashlib.blake2b(f"psdist-holdout:{seed}:{n}:{j}".encode(), digest_size=8).digest()
        picks.append(lo + int.from_bytes(h, "little") % (hi - lo))
    return picks


def epoch_order(chunks: Sequence[T], seed: int, epoch: int) -> list[T]:
    """The chunks of an epoch in a seeded random order (a new order every epoch)."""
    rng = np.random.default_rng(task_seed(seed, epoch, -1))
    return [chunks[i] for i in rng.permutation(len(chunks))]
