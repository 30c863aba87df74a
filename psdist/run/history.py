"""The training history: one record per epoch, exportable as a table, CSV or JSON."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["History"]


class History:
    """A list of per-epoch records (dicts of numbers) with table helpers.

    Each record holds at least ``epoch``, ``train_loss``, ``samples``, ``samples_per_s``,
    ``pushes_applied``, ``pushes_rejected``, ``staleness_mean``, ``staleness_max``,
    ``version``, ``lr``, ``chunks``, ``wall_s`` and the validation metrics (``val_loss``,
    ``val_<metric>``).
    """

    def __init__(self, records: list[dict[str, Any]] | None = None) -> None:
        self.records: list[dict[str, Any]] = list(records) if records else []

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(dict(record))

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.records[i]

    @property
    def last(self) -> dict[str, Any]:
        if not self.records:
            raise IndexError("the history is empty: no epoch has finished")
        return self.records[-1]

    def column(self, key: str) -> list[Any]:
        return [r.get(key) for r in self.records]

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per epoch."""
        import pandas as pd

        return pd.DataFrame(self.records)

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        text = json.dumps(self.records, indent=1)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        keys: list[str] = []
        for r in self.records:
            keys += [k for k in r if k not in keys]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.records)

    def __repr__(self) -> str:
        return f"History({len(self.records)} epochs)"
