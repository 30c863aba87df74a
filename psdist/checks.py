"""Checks a training runs before any cluster starts: real rows through the user's step.

Shape and label mistakes then surface as one clear :class:`~psdist.errors.ModelError` on the
client, not as a task failure on every worker.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from psdist.data import Chunk, DatasetInfo, ZarrDataset
from psdist.errors import BadChunkError, DataError, ModelError
from psdist.loop import as_labels
from psdist.replica import Replica

__all__ = ["dry_run", "label_max"]


def dry_run(step: Any, data: ZarrDataset, models: dict[str, torch.nn.Module], info: DatasetInfo) -> None:
    """Push up to 64 real rows through ``step`` (train and evaluate); raise on any mismatch."""
    x = y = None
    for first in (*info.train, *info.val):  # with skip_bad_chunks, the first readable chunk
        rows = Chunk(first.index, first.x, first.y, first.start, min(first.stop, first.start + 64))
        try:
            x, y = data.read(rows)
            break
        except BadChunkError:
            if not data.skip_bad_chunks:
                raise
    if x is None or y is None:
        raise DataError(f"no chunk of {data.path!r} can be read; run ZarrDataset(...).scan() to list them")
    replica = Replica("dry-run", models)
    xt, yt = torch.from_numpy(x), torch.from_numpy(as_labels(y))
    try:
        step(replica, xt, yt)
        replica.train(False)
        with torch.no_grad():
            _, out = step.evaluate(replica, xt, yt)
    except Exception as e:
        shape = ""
        if len(models) == 1:
            with torch.no_grad():
                try:
                    shape = f", the model outputs {tuple(replica.module(xt).shape)}"
                except Exception:
                    shape = ", and the model fails on them"
        raise ModelError(
            f"the model and loss do not fit the data: rows of shape {tuple(xt.shape)} with "
            f"labels {tuple(yt.shape)} {yt.dtype}{shape} — {type(e).__name__}: {e}"
        ) from e
    if y.dtype.kind in "iu" and isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] > 1:
        top = label_max(data)
        if top >= out.shape[1]:
            raise ModelError(
                f"the labels go up to {top} but the model outputs {out.shape[1]} classes "
                f"(the model outputs {tuple(out.shape)} for {len(x)} rows): give it {top + 1} outputs"
            )


def label_max(data: ZarrDataset) -> int:
    """Largest integer label in the training and validation arrays (read in chunks)."""
    g = data.open_group()
    top = 0
    for name in (data.y, data.y_val):
        if name in g:
            arr = g[name]
            step = int(arr.chunks[0]) * 16
            for s in range(0, arr.shape[0], step):
                top = max(top, int(np.max(arr[s : s + step])))
    return top
