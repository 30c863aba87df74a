"""Structured rows: one array, a tuple of arrays, or a dict of arrays (several inputs or targets).

A model that takes ``forward(points, features, mask)`` gets a tuple of three arrays per batch; a
loss over (class, energy) a tuple of two; ``model(**inputs)`` a dict. Everything that moves rows
(shuffling, minibatches, the device copy, concatenation of outputs) maps one function over the
leaves, so the arrays of one row stay aligned. Plain Python: numpy and torch arrays alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["concat", "leaves", "rows", "tree_map"]


def tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    """``fn`` applied to each array of ``tree``, keeping its structure (tuple, dict or one array)."""
    if isinstance(tree, dict):
        return {k: fn(v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return tuple(fn(v) for v in tree)
    return fn(tree)


def leaves(tree: Any) -> list[Any]:
    """The arrays of ``tree``, in order (a dict's in its key order)."""
    if isinstance(tree, dict):
        return list(tree.values())
    if isinstance(tree, (tuple, list)):
        return list(tree)
    return [tree]


def rows(tree: Any) -> int:
    """The number of rows (the first axis, shared by every array of ``tree``)."""
    return len(leaves(tree)[0])


def concat(parts: Sequence[Any], join: Callable[[list[Any]], Any]) -> Any:
    """Join per-batch trees of one structure array by array with ``join`` (``np.concatenate``)."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: join([p[k] for p in parts]) for k in first}
    if isinstance(first, (tuple, list)):
        return tuple(join([p[i] for p in parts]) for i in range(len(first)))
    return join(list(parts))
