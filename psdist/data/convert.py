"""Streaming converters from NumPy, HDF5 and ROOT files to psdist's Zarr layout.

Every converter reads and writes ``chunk_rows`` rows at a time, so a file larger than memory
converts. The output has the codecs, chunk shapes and dtype rules of
:func:`psdist.data.write_zarr` (features become float32, float64 becomes float32), and these
arrays:

==================  ==========================================================================
``x``, ``y``        features (N, ...) and labels (N,): what the trainer reads
``x_<name>``        HDF5 with several feature datasets: one array each, and no ``x``; train
                    on all with ``ZarrDataset(path, inputs=["x_a", "x_b"])`` (the model is
                    called ``model(x_a, x_b)``), or on one with ``x="x_<name>", x_val=...``
``x`` + ``mask``    ROOT jagged branches: ``x`` (N, max_particles, n_jagged) float32, padded
                    (or truncated) per event; ``mask`` (N, max_particles) bool, True on real
                    particles
``x_flat``          ROOT flat branches when jagged ones are given too: (N, n_flat) float32;
                    ``ZarrDataset(path, inputs=["x", "x_flat", "mask"])`` trains on all three
                    (YAML ``data: {path: ..., inputs: [x, x_flat, mask]}``), each its own dtype
``<name>_val``      the same arrays for validation inputs
==================  ==========================================================================

Without validation inputs no ``*_val`` array is written and ``ZarrDataset(val_fraction=...)``
holds out chunks spread over the store. Files are concatenated in order, so with one file per
class every chunk holds one class, each training task sees one class, and a small hold-out may
miss classes (the trainer refuses a validation set of one class before it starts): pass
``interleave=True`` to mix the files through every chunk.
The store is written next to ``out`` and renamed into place at the end, so a failed conversion
never leaves a store that looks complete.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from psdist.data.convert_sources import (
    Source,
    hdf5_source,
    numpy_source,
    require_file,
    root_source,
    stream,
    with_label,
    x_names,
)
from psdist.data.dataset import EVERY_CHUNK_ATTR, ZarrDataset
from psdist.data.write import compressor_codecs
from psdist.errors import ConfigError, DataError

__all__ = ["Progress", "from_hdf5", "from_numpy", "from_root"]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called as ``progress(rows_done, rows_total)`` after every block written."""

StrPath = str | os.PathLike[str]
# a mapping's key type is invariant: Mapping[str, float] lets a plain dict[str, float] in
Files = StrPath | Sequence[StrPath] | Mapping[str, float] | Mapping[StrPath, float]


def from_numpy(
    out: StrPath,
    x: StrPath | np.ndarray,
    y: StrPath | np.ndarray,
    x_val: StrPath | np.ndarray | None = None,
    y_val: StrPath | np.ndarray | None = None,
    *,
    npz: StrPath | None = None,
    chunk_rows: int = 1024,
    compressor: str | None = "lz4",
    overwrite: bool = False,
    attrs: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> ZarrDataset:
    """Convert ``.npy`` files (memory-mapped) or arrays of an ``.npz`` archive.

    Parameters
    ----------
    out
        Target Zarr directory.
    x, y
        ``.npy`` paths (read through ``np.load(mmap_mode="r")``), array keys of ``npz``, or arrays
        (a ``np.memmap`` stays on disk).
    x_val, y_val
        Optional validation inputs of the same kind, written as ``x_val``/``y_val``.
    npz
        An ``.npz`` archive holding the keys given as ``x``, ``y``...; its members are read as a
        stream, compressed (``np.savez_compressed``) or not.
    chunk_rows, compressor, overwrite, attrs
        As in :func:`psdist.data.write_zarr`.
    progress
        ``progress(rows_done, rows_total)`` after every block.

    Returns
    -------
    ZarrDataset
        The converted store.
    """
    splits = {"": [numpy_source(x, y, npz)]}
    if (x_val is None) != (y_val is None):
        raise DataError("give both x_val and y_val, or neither")
    if x_val is not None:
        splits["_val"] = [numpy_source(x_val, y_val, npz)]
    return _write(out, splits, "x", chunk_rows, compressor, overwrite, attrs, progress, False)


def from_hdf5(
    out: StrPath,
    files: Files,
    x: str | Sequence[str] | Mapping[str, str],
    y: str | None = None,
    x_val: str | Sequence[str] | Mapping[str, str] | None = None,
    y_val: str | None = None,
    *,
    val_files: Files | None = None,
    interleave: bool = False,
    chunk_rows: int = 1024,
    compressor: str | None = "lz4",
    overwrite: bool = False,
    attrs: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> ZarrDataset:
    """Convert named datasets of one or several HDF5 files, concatenated in order.

    Parameters
    ----------
    out
        Target Zarr directory.
    files
        One path, several paths, or ``{path: label}`` to give every row of a file a constant
        label (then ``y`` is not needed).
    x
        Feature dataset path(s) inside each file, e.g. ``"jets/features"``. One name writes
        ``x``; several write one array each, ``x_<name>`` with the path's ``/`` and other
        non-alphanumerics as ``_`` (``x_jets_features``); a ``{name: path}`` dict picks the names.
    y
        Label dataset path, e.g. ``"jets/label"``; its length must match the features'.
    x_val, y_val
        Validation dataset paths (same form as ``x``/``y``), read from ``val_files`` or, without
        them, from ``files``. With ``val_files`` they default to ``x`` and ``y``.
    val_files
        Validation files (same form as ``files``), written as ``*_val`` arrays.
    interleave
        Mix the files through every chunk in proportion to their sizes instead of concatenating
        them (for one file per class).
    chunk_rows, compressor, overwrite, attrs, progress
        As in :func:`from_numpy`.

    Returns
    -------
    ZarrDataset
        The converted store (over ``x_<first name>`` for several feature datasets).
    """
    names = x_names(x)
    train_files, train_labels = _files(files, "files")
    if train_labels is None and y is None:
        raise ConfigError("give the label dataset y=..., or per-file labels as files={path: label}")
    if train_labels is not None and y is not None:
        raise ConfigError(f"y={y!r} and per-file labels both given: use one of them")
    splits = {"": _hdf5_split(train_files, train_labels, names, y)}
    _warn_order(train_labels, interleave)
    if val_files is not None or x_val is not None or y_val is not None:
        if val_files is None and (x_val is None or (y_val is None and train_labels is None)):
            raise ConfigError("for validation give val_files=..., or x_val= and y_val= datasets of the same files")
        vfiles, vlabels = _files(val_files, "val_files") if val_files is not None else (train_files, train_labels)
        vnames = names if x_val is None else x_names(x_val)
        if len(vnames) != len(names):
            raise ConfigError(f"x_val={x_val!r} names {len(vnames)} datasets but x={x!r} names {len(names)}")
        # validation arrays are named after the training ones, whatever their paths
        vnames = dict(zip(names, vnames.values(), strict=True))
        splits["_val"] = _hdf5_split(vfiles, vlabels, vnames, y_val if y_val is not None else y)
    first = next(iter(names))
    meta = {"converted_from": "hdf5", "features": dict(names)}
    return _write(out, splits, first, chunk_rows, compressor, overwrite, {**meta, **(attrs or {})},
                  progress, interleave)


def from_root(
    out: StrPath,
    files: Files,
    tree: str = "Events",
    branches: Sequence[str] = (),
    jagged: Sequence[str] | Mapping[str, float] = (),
    max_particles: int | None = None,
    label: str | None = None,
    *,
    val_files: Files | None = None,
    interleave: bool = False,
    chunk_rows: int = 1024,
    compressor: str | None = "lz4",
    overwrite: bool = False,
    attrs: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> ZarrDataset:
    """Convert branches of a ROOT TTree (or RNTuple) with uproot, ``chunk_rows`` events at a time.

    Parameters
    ----------
    out
        Target Zarr directory.
    files
        One path, several paths, or ``{path: label}`` for a constant label per file (e.g.
        ``{"sig.root": 1, "bkg.root": 0}``; then ``label`` is not needed).
    tree
        Name of the tree in every file.
    branches
        Flat branches (one number per event): the columns of ``x`` (N, n_flat) float32, or of
        ``x_flat`` when ``jagged`` is given too.
    jagged
        Per-particle branches (a list per event), all of the same length per event: padded or
        truncated to ``max_particles`` (the first ones are kept, in stored order) into ``x``
        (N, max_particles, n_jagged) float32 with ``mask`` (N, max_particles) bool. A dict
        ``{branch: pad_value}`` sets what padded slots hold (default 0).
    max_particles
        Particles kept per event; required with ``jagged``.
    label
        Flat branch holding each event's label.
    val_files
        Validation files (same form as ``files``), written as ``*_val`` arrays.
    interleave, chunk_rows, compressor, overwrite, attrs, progress
        As in :func:`from_hdf5`.

    Returns
    -------
    ZarrDataset
        The converted store.
    """
    flat = list(branches)
    pads = {b: 0.0 for b in jagged} if not isinstance(jagged, Mapping) else {b: float(v) for b, v in jagged.items()}
    if not flat and not pads:
        raise ConfigError("give flat branches=[...] and/or jagged=[...] to convert")
    if pads:
        if not isinstance(max_particles, int | np.integer) or max_particles < 1:
            raise ConfigError(f"max_particles={max_particles!r}: jagged branches need a positive particle count "
                              "(--max-particles), e.g. 30")
        max_particles = int(max_particles)
    else:
        max_particles = None
    if label is not None and label in (*flat, *pads):
        raise ConfigError(f"label={label!r} is also a feature branch: the model would see the answer")
    train_files, train_labels = _files(files, "files")
    if (train_labels is None) == (label is None):
        raise ConfigError("give either a label branch (label=...) or per-file labels (files={path: label}), not both or neither")
    splits = {"": _root_split(train_files, train_labels, tree, flat, pads, max_particles, label)}
    _warn_order(train_labels, interleave)
    if val_files is not None:
        vfiles, vlabels = _files(val_files, "val_files")
        if (vlabels is None) != (train_labels is None):
            raise ConfigError("give val_files labels the same way as files: both {path: label}, or neither")
        splits["_val"] = _root_split(vfiles, vlabels, tree, flat, pads, max_particles, label)
    meta: dict[str, Any] = {"converted_from": "root", "tree": tree}
    meta |= {"x_features": list(pads), "x_flat_features": flat, "max_particles": max_particles} if pads else {"x_features": flat}
    return _write(out, splits, "x", chunk_rows, compressor, overwrite, {**meta, **(attrs or {})},
                  progress, interleave)


# ----------------------------------------------------------------------------- inputs
def _files(files: Files | None, what: str) -> tuple[list[str], list[Any] | None]:
    """Paths in order, and their constant labels when ``files`` is a mapping."""
    labels = list(files.values()) if isinstance(files, Mapping) else None
    if isinstance(files, str | os.PathLike):
        files = [files]
    paths = [os.fspath(p) for p in files or ()]
    if not paths:
        raise ConfigError(f"{what} is empty: give at least one input file")
    for p in paths:  # every missing file is reported before any file is read
        require_file(p)
    return paths, labels


def _warn_order(labels: list[Any] | None, interleave: bool) -> None:
    if labels is not None and len(set(labels)) > 1 and not interleave:
        logger.warning(
            "files with different labels are concatenated: most chunks hold one class, so each "
            "training task sees one class and a small val_fraction holdout may miss classes; pass "
            "interleave=True (--interleave) to mix them"
        )


def _hdf5_split(paths: list[str], labels: list[Any] | None, names: dict[str, str], y: str | None) -> list[Source]:
    if labels is None:
        if y is None:
            raise ConfigError(f"files {paths} have no per-file labels: give the label dataset (y= or y_val=)")
        return [hdf5_source(p, {**names, "y": y}) for p in paths]
    return [with_label(hdf5_source(p, names), v) for p, v in zip(paths, labels, strict=True)]


def _root_split(paths: list[str], labels: list[Any] | None, tree: str, flat: list[str], pads: dict[str, float],
                max_particles: int | None, label: str | None) -> list[Source]:
    srcs = [root_source(p, tree, flat, pads, max_particles, label) for p in paths]
    if labels is None:
        return srcs
    return [with_label(s, v) for s, v in zip(srcs, labels, strict=True)]


# ----------------------------------------------------------------------------- output
def _write(out: StrPath, splits: dict[str, list[Source]], x: str, chunk_rows: int,
           compressor: str | None, overwrite: bool, attrs: dict[str, Any] | None,
           progress: Progress | None, interleave: bool) -> ZarrDataset:
    import zarr

    if not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1:
        raise ConfigError(f"chunk_rows={chunk_rows!r} must be a positive integer, e.g. 1024")
    codecs = compressor_codecs(compressor)
    columns = {suffix: _columns(srcs, suffix) for suffix, srcs in splits.items()}
    path = os.fspath(out)
    if os.path.exists(path) and not overwrite:
        raise DataError(f"{path!r} already exists; pass overwrite=True (--overwrite) to replace it")
    # local stores are written beside the target and renamed into place at the end
    local = "://" not in path
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.partial-{os.getpid()}") if local else path
    _remove(tmp)
    total = sum(s.rows for srcs in splits.values() for s in srcs)
    done = 0
    try:
        g = zarr.open_group(tmp, mode="w")
        if attrs:
            g.attrs.update(attrs)
        if progress:
            progress(0, total)
        for suffix, srcs in splits.items():
            rows = sum(s.rows for s in srcs)
            sinks = {name: _Sink(g, name + suffix, rows, shape, dtype, chunk_rows, codecs)
                     for name, (shape, dtype) in columns[suffix].items()}
            for block in stream(srcs, chunk_rows, interleave):
                n = len(next(iter(block.values())))
                for name, sink in sinks.items():
                    sink.write(block[name])
                done += n
                if progress:
                    progress(done, total)
            for sink in sinks.values():
                sink.close()
        if local:
            _remove(path)
            os.replace(tmp, path)
    except BaseException:
        if local:
            _remove(tmp)
        raise
    logger.info("converted %d rows into %s (arrays %s)", total, path, sorted(g.array_keys()))
    return ZarrDataset(path, x=x, x_val=f"{x}_val")


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def _columns(srcs: list[Source], suffix: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The output arrays of a split; every file must give the same ones with the same row shapes."""
    first = srcs[0]
    if sum(s.rows for s in srcs) == 0:
        what = "validation inputs" if suffix else "inputs"
        raise DataError(f"the {what} {[s.label for s in srcs]} hold no rows: there is nothing to convert")
    out = dict(first.columns)
    for s in srcs[1:]:
        if set(s.columns) != set(first.columns):
            raise DataError(f"{s.label} gives arrays {sorted(s.columns)} but {first.label} gives {sorted(first.columns)}")
        for name, (shape, dtype) in s.columns.items():
            if shape != first.columns[name][0]:
                raise DataError(
                    f"{name!r} rows have shape {shape} in {s.label} but {first.columns[name][0]} in "
                    f"{first.label}: all files must hold the same features"
                )
            out[name] = (shape, np.result_type(out[name][1], dtype))
    return out


class _Sink:
    """One output array, created with its final shape and filled in order, whole chunks at a time."""

    def __init__(self, group: Any, name: str, rows: int, shape: tuple[int, ...], dtype: np.dtype,
                 chunk_rows: int, codecs: Any) -> None:
        dtype = np.dtype(dtype)
        # write_zarr's rules: features are floating point, float64 is stored as float32
        if (name.startswith("x") and dtype.kind != "f") or dtype == np.float64:
            dtype = np.dtype(np.float32)
        self.name, self.rows, self.chunk, self.dtype = name, rows, chunk_rows, dtype
        # every chunk written and marked so: a chunk file missing later is damage (ZarrDataset.read)
        self.z = group.create_array(name, shape=(rows, *shape), dtype=dtype,
                                    chunks=(min(chunk_rows, max(1, rows)), *shape), compressors=codecs,
                                    attributes={EVERY_CHUNK_ATTR: True}, config={"write_empty_chunks": True})
        self.pos = 0
        self._buf: list[np.ndarray] = []
        self._have = 0

    def write(self, a: np.ndarray) -> None:
        self._buf.append(np.asarray(a, dtype=self.dtype))
        self._have += len(a)
        if self._have >= self.chunk:
            data = np.concatenate(self._buf)
            n = self._have - self._have % self.chunk
            self._put(data[:n])
            self._buf, self._have = ([data[n:]] if n < len(data) else []), len(data) - n

    def close(self) -> None:
        if self._buf:
            self._put(np.concatenate(self._buf))
            self._buf, self._have = [], 0
        if self.pos != self.rows:
            raise DataError(f"the inputs gave {self.pos} rows of {self.name!r} where their headers promised {self.rows}")

    def _put(self, data: np.ndarray) -> None:
        if self.pos + len(data) > self.rows:
            raise DataError(f"the inputs gave more rows of {self.name!r} than their headers promised ({self.rows})")
        self.z[self.pos : self.pos + len(data)] = data
        self.pos += len(data)
