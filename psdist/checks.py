"""Checks a training runs before any cluster starts: real rows through the user's step.

Shape and label mistakes then surface as one clear :class:`~psdist.errors.ModelError` on the
client, not as a task failure on every worker; a validation set that cannot measure a classifier
(one class only) as a :class:`~psdist.errors.DataError`, not as a training that reports
meaningless validation metrics.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from psdist.core.tree import tree_map
from psdist.data.dataset import Chunk, DatasetInfo, ZarrDataset, holdout_chunks
from psdist.data.fields import Fields
from psdist.errors import BadChunkError, DataError, ModelError
from psdist.replica.loop import as_labels
from psdist.replica.replica import Replica
from psdist.replica.steps import SupervisedStep, forward

__all__ = ["check_validation_classes", "chunk_classes", "dry_run", "label_max"]

logger = logging.getLogger(__name__)

#: Classes listed by name in an error message; more are counted.
_SHOWN = 12


def dry_run(step: Any, data: ZarrDataset, models: dict[str, torch.nn.Module], info: DatasetInfo,
            precision: str = "32") -> None:
    """Push up to 64 real rows through ``step`` (train and evaluate); raise on any mismatch.

    Both run under ``precision``'s autocast on the CPU, as on the workers
    (:mod:`psdist.replica.precision`), so a model that cannot compute in bfloat16 or float16,
    or a custom step that calls ``loss.backward()`` itself under ``"16-mixed"``, fails here.

    For integer labels (classification) it also reads every label (never the features) and
    refuses a validation set holding one class while the training set holds several
    (:func:`check_validation_classes`), and a model with fewer outputs than classes.
    """
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
        raise DataError(f"no chunk of {os.fspath(data.path)!r} can be read; list them with {data._code()}.scan()")
    replica = Replica("dry-run", models, precision=precision)
    xt, yt = tree_map(torch.from_numpy, x), tree_map(torch.from_numpy, as_labels(y))
    if isinstance(step, SupervisedStep) and len(models) == 1:
        check_signature(replica.module, data.input_fields, xt)
    try:
        replica.run_step(step, xt, yt)
        replica.train(False)
        with torch.no_grad(), replica.autocast():
            _, out = step.evaluate(replica, xt, yt)
    except Exception as e:
        shape = ""
        if len(models) == 1:
            with torch.no_grad():
                try:
                    shape = f", the model outputs {_shapes(forward(replica.module, xt))}"
                except Exception:
                    shape = ", and the model fails on them"
        under = "" if replica.precision.name == "32" else f" under precision={replica.precision.name!r}"
        rows_of = (f"rows of shape {tuple(xt.shape)}" if isinstance(xt, torch.Tensor)
                   else f"inputs {_shapes(xt)} ({data.input_fields.call()})")
        labels = (f"labels {tuple(yt.shape)} {yt.dtype}" if isinstance(yt, torch.Tensor) else f"targets {_shapes(yt)}")
        raise ModelError(
            f"the model and loss do not fit the data{under}: {rows_of} with {labels}{shape} — {type(e).__name__}: {e}"
        ) from e
    targets = data.target_fields
    classes: dict[int, np.ndarray] = {}
    for t, name in enumerate(targets.names):
        if np.dtype(info.dtype(name)).kind not in "iub":
            continue  # a regression target: no classes to check
        classes = chunk_classes(data, (*info.train, *info.val), t)
        check_validation_classes(data, info, classes)
    if not targets.single or np.dtype(info.y_dtype).kind not in "iub":
        return
    if y.dtype.kind in "iu" and isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] > 1:
        top = max((int(c.max()) for c in classes.values() if c.size), default=0)
        if top >= out.shape[1]:
            raise ModelError(
                f"the labels go up to {top} but the model outputs {out.shape[1]} classes "
                f"(the model outputs {tuple(out.shape)} for {len(x)} rows): give it {top + 1} outputs"
            )


def _shapes(tree: Any) -> Any:
    """Shapes and dtypes of a batch's arrays, for messages (one tensor: its shape)."""
    if isinstance(tree, torch.Tensor):
        return tuple(tree.shape)
    described = tree_map(lambda t: f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}", tree)
    return described if isinstance(described, dict) else list(described)


def check_signature(model: torch.nn.Module, inputs: Fields, batch: Any) -> None:
    """Refuse a model whose ``forward`` cannot take the dataset's inputs as psdist will pass them
    (``model(*inputs)`` or ``model(**inputs)``), showing the signature and the call."""
    if inputs.single:
        return  # one array: the model's own error says it best (the dry run reports it)
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):  # a compiled or scripted forward: nothing to read
        return
    try:
        if isinstance(batch, dict):
            sig.bind(**batch)
        else:
            sig.bind(*batch)
    except TypeError as e:
        raise ModelError(
            f"the model's forward{sig} cannot take the inputs: psdist calls {inputs.call()} "
            f"({type(model).__name__}: {e}); name the arrays in the order of forward's arguments, "
            "or pass inputs={argument: array} to call it with keywords"
        ) from None


def label_max(data: ZarrDataset, info: DatasetInfo | None = None) -> int:
    """Largest integer label of the training and validation chunks (reads labels only)."""
    chunks = info if info is not None else data.describe()
    classes = chunk_classes(data, (*chunks.train, *chunks.val))
    return max((int(c.max()) for c in classes.values() if c.size), default=0)


def chunk_classes(data: ZarrDataset, chunks: Sequence[Chunk], target: int = 0) -> dict[int, np.ndarray]:
    """The distinct labels of each chunk, by :attr:`~psdist.data.dataset.Chunk.index` (labels only);
    ``target``: which of several targets.

    Chunks that cannot be read are missing from the result when the dataset skips bad chunks
    (:attr:`~psdist.data.dataset.ZarrDataset.skip_bad_chunks`); otherwise they raise.
    """
    return {c.index: np.unique(y) for c, y in data.read_labels(chunks, target=target)}


def _union(classes: dict[int, np.ndarray], chunks: Sequence[Chunk]) -> set[int]:
    return {int(v) for c in chunks if c.index in classes for v in classes[c.index].tolist()}


def _shown(values: set[int]) -> str:
    ordered = sorted(values)
    more = f" and {len(ordered) - _SHOWN} more" if len(ordered) > _SHOWN else ""
    return ", ".join(map(str, ordered[:_SHOWN])) + more


def check_validation_classes(data: ZarrDataset, info: DatasetInfo, classes: dict[int, np.ndarray]) -> None:
    """Refuse a validation set of one class when the training labels hold several.

    Its accuracy and AUC would measure nothing (or be NaN) and its loss one class only, and
    early stopping would act on that. ``classes`` is :func:`chunk_classes` of the training and
    validation chunks. The error states the fix: for a held-out split the smallest
    ``val_fraction`` that puts every class in both sets, when there is one.
    """
    train, val = _union(classes, info.train), _union(classes, info.val)
    if len(train) < 2 or not val:
        return
    if len(val) > 1:
        if train - val:  # measurable, but blind to some classes: say so, do not refuse
            logger.warning("psdist: the validation labels of %r lack classes %s of the training labels",
                           os.fspath(data.path), _shown(train - val))
        return
    path = os.fspath(data.path)
    (only,) = val
    held_out = all(c.y == data.target_fields for c in info.val)
    if held_out:
        where = (f"the held-out chunks {[c.index for c in info.val]} of {data.target_fields} hold class {only} only: "
                 "a store written one class after another keeps each class in its own chunks")
        fixes = []
        fraction = _covering_fraction(data, info, classes)
        if fraction is not None:
            fixes.append(f"hold out more chunks, spread over the store: {data._code(val_fraction=fraction)} "
                         f"(YAML: data: {{val_fraction: {fraction}}}) puts every class in both sets")
        fixes += [
            "re-convert with interleave=True (psdist convert: --interleave) so every chunk mixes the classes",
            "write validation arrays that hold every class: "
            f"psdist.write_zarr({path!r}, x, y, x_val, y_val, overwrite=True)",
        ]
    else:
        where = f"{data.y_val!r} holds class {only} only"
        fixes = ["write validation arrays that hold every class: "
                 f"psdist.write_zarr({path!r}, x, y, x_val, y_val, overwrite=True), with x_val, y_val "
                 "drawn from every class"]
    raise DataError(
        f"the validation labels of {path!r} hold one class ({only}) but the training labels hold "
        f"{len(train)} ({_shown(train)}): validation accuracy, AUC and loss would measure one class "
        f"only ({where}). Fix: " + "; or ".join(fixes)
    )


def _covering_fraction(data: ZarrDataset, info: DatasetInfo, classes: dict[int, np.ndarray]) -> float | None:
    """A small ``val_fraction`` whose held-out chunks leave every class in both sets, if any.

    Only for a held-out split, whose chunk indices are the chunks' positions in the store.
    """
    n, v = len(info.train) + len(info.val), len(info.val)
    labels = [classes.get(i, np.empty(0, np.int64)).tolist() for i in range(n)]
    every = {x for row in labels for x in row}
    counts: dict[int, int] = {}  # class -> chunks holding it
    for row in labels:
        for x in row:
            counts[x] = counts.get(x, 0) + 1
    # every count just above the current one, then growing by a quarter: a bounded search
    # (each try costs n_val * classes) that finds the smallest fraction of a small store
    tries = sorted(set(range(v + 1, v + 65)) | {int(v * 1.25**k) for k in range(64)})
    for n_val in (t for t in tries if v < t <= n // 2):
        in_val: dict[int, int] = {}
        for i in holdout_chunks(n, n_val, data.holdout_seed):
            for x in labels[i]:
                in_val[x] = in_val.get(x, 0) + 1
        if set(in_val) == every and all(counts[x] > k for x, k in in_val.items()):
            fraction = round(n_val / n, 4)
            # describe() takes max(1, round(n * val_fraction)) chunks: check the rounding
            return fraction if max(1, round(n * fraction)) == n_val else n_val / n
    return None
