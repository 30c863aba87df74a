"""Bounded plot series for the dashboard, and tolerant number conversion of feed values.

A :class:`Series` that fills up drops every other point and from then on keeps one append in
two (then four, ...), so a long training keeps its whole curve at a coarser resolution instead
of losing its beginning, in bounded memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["Series", "as_float", "as_int"]


def as_float(v: Any) -> float:
    """A float for plotting: ``None`` (NaN/Inf on the wire) and junk become NaN."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return math.nan


def as_int(v: Any, default: int = 0) -> int:
    """An int from a counter value; ``default`` for ``None``, NaN and junk."""
    x = as_float(v)
    return int(x) if math.isfinite(x) else default


class Series:
    """Columns of equal length with a bounded size (thinned by two when full).

    Parameters
    ----------
    columns
        Column names.
    maxlen
        Most points kept (at least 4).
    """

    def __init__(self, columns: Iterable[str], maxlen: int = 2000) -> None:
        self.columns: tuple[str, ...] = tuple(columns)
        self.maxlen = max(4, int(maxlen))
        self.stride = 1  # keep one point in ``stride`` appends
        self._skipped = 0
        self._data: dict[str, list[Any]] = {c: [] for c in self.columns}

    def append(self, **values: Any) -> None:
        """Add one point (missing columns are NaN); may be skipped once the series was thinned."""
        self._skipped += 1
        if self._skipped < self.stride:
            return
        self._skipped = 0
        for c in self.columns:
            self._data[c].append(values.get(c, math.nan))
        if len(self) >= self.maxlen:
            for c in self.columns:
                self._data[c] = self._data[c][::2]
            self.stride *= 2

    def __len__(self) -> int:
        return len(self._data[self.columns[0]]) if self.columns else 0

    def data(self) -> dict[str, list[Any]]:
        """A copy of the columns (for a ``ColumnDataSource``)."""
        return {c: list(v) for c, v in self._data.items()}

    def last(self, column: str) -> Any:
        col = self._data[column]
        return col[-1] if col else None
