"""Readers behind :mod:`psdist.data.convert`: one :class:`Source` per input file, read in row blocks.

A source checks its file when it is made (file, datasets or branches, lengths, kinds), so every
input is checked before the output is created, and reads only when :attr:`Source.read` runs.
h5py, uproot and awkward are imported only when a file of their kind is read.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from psdist.errors import ConfigError, DataError

__all__ = [
    "Source", "hdf5_source", "numpy_source", "require_file", "root_source", "stream", "with_label", "x_names",
]

Block = dict[str, np.ndarray]


@dataclass(frozen=True)
class Source:
    """One input: its rows, the output arrays it fills and a reader of blocks of rows.

    ``columns`` maps an output array name to its row shape and dtype; ``read(n)`` yields
    dicts of those arrays, at most ``n`` rows each, in order.
    """

    label: str
    rows: int
    columns: dict[str, tuple[tuple[int, ...], np.dtype]]
    read: Callable[[int], Iterator[Block]]


def _blocks(n: int, rows: int) -> Iterator[tuple[int, int]]:
    for s in range(0, n, rows):
        yield s, min(s + rows, n)


def _missing(msg: str, name: str, names: Sequence[str], shown: Sequence[str] | None = None) -> str:
    """``msg``, a close match if there is one, and what there is (the first 40)."""
    close = difflib.get_close_matches(name, names, n=1)
    shown = list(shown if shown is not None else names)
    more = f" and {len(shown) - 40} more" if len(shown) > 40 else ""
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{msg}{hint} It has: {shown[:40]}{more}"


def require_file(path: str) -> None:
    """:class:`DataError` naming ``path`` unless it is a file (or a URL)."""
    if "://" not in path and not os.path.isfile(path):
        what = "is a directory, not a file" if os.path.isdir(path) else "does not exist"
        raise DataError(f"input file {path!r} {what} (relative paths start at {os.getcwd()!r})")


def _numeric(label: str, dtype: np.dtype) -> None:
    if np.dtype(dtype).kind not in "biuf":
        raise DataError(f"{label} has dtype {dtype}: features and labels must be numbers")


def _label_dtype(dtype: np.dtype) -> np.dtype:
    # torch losses take integer class labels, not booleans
    return np.dtype(np.int64) if np.dtype(dtype).kind == "b" else np.dtype(dtype)


def _hep(*modules: str) -> list[Any]:
    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError as e:
        raise ConfigError(
            f"reading these files needs {e.name}: pip install 'psdist[hep]' (h5py, uproot, awkward)"
        ) from e


def with_label(src: Source, value: Any) -> Source:
    """``src`` with a ``y`` column holding ``value`` on every row (a per-file label)."""
    v = np.asarray(value)
    if v.ndim or v.dtype.kind not in "biuf":
        raise ConfigError(f"label {value!r} of {src.label} must be a number, e.g. 1 for signal and 0 for background")
    dtype = _label_dtype(v.dtype)

    def read(n: int) -> Iterator[Block]:
        for b in src.read(n):
            yield {**b, "y": np.full(len(next(iter(b.values()))), v, dtype=dtype)}

    return Source(src.label, src.rows, {**src.columns, "y": ((), dtype)}, read)


def stream(srcs: list[Source], block: int, interleave: bool) -> Iterator[Block]:
    """Blocks of rows of the sources, concatenated in order or interleaved by size."""
    if not interleave or len(srcs) == 1:
        for s in srcs:
            yield from s.read(block)
        return
    total = sum(s.rows for s in srcs)
    cursors = [_Cursor(s, block) for s in srcs]
    taken = [0] * len(srcs)
    for end in range(block, total + block, block):
        end = min(end, total)
        parts = []
        for i, (s, c) in enumerate(zip(srcs, cursors, strict=True)):
            # source i has given s.rows * end / total of its rows when `end` rows are out
            upto = s.rows * end // total
            if upto > taken[i]:
                parts.append(c.take(upto - taken[i]))
                taken[i] = upto
        yield _concat(parts)


def _concat(blocks: list[Block]) -> Block:
    if len(blocks) == 1:
        return blocks[0]
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


class _Cursor:
    """Hands out the next ``m`` rows of a source, whatever sizes its blocks come in."""

    def __init__(self, src: Source, block: int) -> None:
        self.label, self._it = src.label, src.read(block)
        self._buf: list[Block] = []
        self._have = 0

    def take(self, m: int) -> Block:
        while self._have < m:
            b = next(self._it, None)
            if b is None:
                raise DataError(f"{self.label} ended early: it holds fewer rows than its header says")
            self._buf.append(b)
            self._have += len(next(iter(b.values())))
        data = _concat(self._buf)
        self._have -= m
        self._buf = [{k: v[m:] for k, v in data.items()}] if self._have else []
        return {k: v[:m] for k, v in data.items()}


# ----------------------------------------------------------------------------- numpy
@dataclass(frozen=True)
class _Column:
    label: str
    shape: tuple[int, ...]
    dtype: np.dtype
    blocks: Callable[[int], Iterator[np.ndarray]]


def _array_column(label: str, arr: Any) -> _Column:
    if arr.ndim == 0:
        raise DataError(f"{label} is a scalar; it needs one row per sample")
    _numeric(label, arr.dtype)
    return _Column(label, tuple(arr.shape), arr.dtype, lambda n: (arr[s:e] for s, e in _blocks(len(arr), n)))


def _npy_header(f: Any, label: str, path: str) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    # what rewrites the archive readably: numpy writes format 1.0 (2.0 for huge headers), C order
    resave = f"np.savez({path!r}, **{{k: np.ascontiguousarray(v) for k, v in np.load({path!r}).items()}})"
    try:
        version = fmt.read_magic(f)
        reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if reader is None:
            raise DataError(f"{label} uses .npy format {version}, which is not supported; re-save it: {resave}")
        shape, fortran, dtype = reader(f)
    except ValueError as e:
        raise DataError(f"{label} is not a .npy array: {e}") from e
    if fortran and len(shape) > 1:
        # rows of a Fortran-ordered array are not contiguous: they cannot be streamed
        raise DataError(f"{label} is stored in Fortran order, whose rows cannot be streamed; re-save it "
                        f"in C order: {resave}")
    if not shape:
        raise DataError(f"{label} is a scalar; it needs one row per sample")
    _numeric(label, dtype)
    return tuple(shape), dtype


def _npz_column(path: str, key: str) -> _Column:
    require_file(path)
    label = f"{path!r}[{key!r}]"
    try:
        with zipfile.ZipFile(path) as z:
            keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
            if key not in keys:
                raise DataError(_missing(f"{path!r} has no array {key!r}", key, keys))
            with z.open(f"{key}.npy") as f:
                shape, dtype = _npy_header(f, label, path)
    except zipfile.BadZipFile as e:
        raise DataError(f"{path!r} is not an .npz archive: {e}") from e
    row_bytes = dtype.itemsize * math.prod(shape[1:])

    def blocks(n: int) -> Iterator[np.ndarray]:
        # members are read as a stream: works for np.savez_compressed too, never all at once
        with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
            _npy_header(f, label, path)
            for s, e in _blocks(shape[0], n):
                buf = f.read((e - s) * row_bytes)
                if len(buf) != (e - s) * row_bytes:
                    raise DataError(f"{label} is truncated: it ends before row {e} of {shape[0]}")
                yield np.frombuffer(buf, dtype).reshape(e - s, *shape[1:])

    return _Column(label, shape, dtype, blocks)


def _numpy_column(spec: Any, npz: str | os.PathLike[str] | None, role: str) -> _Column:
    if isinstance(spec, np.ndarray):
        return _array_column(f"the {role} array", spec)
    if npz is not None:
        return _npz_column(os.fspath(npz), str(spec))
    path = os.fspath(spec)
    require_file(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
        raise DataError(f"{role}={path!r} is an .npz archive: pass npz={path!r} (--npz) and {role}= one of its keys {keys}")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # numpy raises ValueError, OSError or UnpicklingError for a bad file
        raise DataError(f"cannot memory-map {role}={path!r} as a .npy array ({e}); save a numeric array with np.save") from e
    return _array_column(repr(path), arr)


def numpy_source(x: Any, y: Any, npz: str | os.PathLike[str] | None) -> Source:
    """Features and labels from ``.npy`` files, ``.npz`` keys or arrays."""
    cx, cy = _numpy_column(x, npz, "x"), _numpy_column(y, npz, "y")
    if cx.shape[0] != cy.shape[0]:
        raise DataError(
            f"the labels {cy.label} have {cy.shape[0]} rows but the features {cx.label} have {cx.shape[0]}: "
            "every sample needs exactly one label; write the labels to match"
        )

    def read(n: int) -> Iterator[Block]:
        for a, b in zip(cx.blocks(n), cy.blocks(n), strict=True):
            yield {"x": a, "y": b}

    columns = {"x": (cx.shape[1:], cx.dtype), "y": (cy.shape[1:], _label_dtype(cy.dtype))}
    return Source(f"{cx.label} and {cy.label}", cx.shape[0], columns, read)


# ----------------------------------------------------------------------------- HDF5
def _safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")


def x_names(x: str | Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """Output array name -> dataset path: ``x`` for one dataset, ``x_<name>`` for several."""
    if isinstance(x, str):
        return {"x": x}
    if isinstance(x, Mapping):
        pairs = [(f"x_{_safe(str(k))}", str(v)) for k, v in x.items()]
    else:
        paths = [str(p) for p in x]
        if len(paths) == 1:
            return {"x": paths[0]}
        pairs = [(f"x_{_safe(p)}", p) for p in paths]
    if not pairs:
        raise ConfigError("x is empty: name at least one feature dataset")
    names = [n for n, _ in pairs]
    for n in names:
        if n == "x_" or n.endswith("_val") or names.count(n) > 1:
            raise ConfigError(
                f"feature datasets {[p for m, p in pairs if m == n]} would be written as array {n!r}, which is "
                "empty, reserved for validation or taken twice: pass x as a {name: path} dict"
            )
    return dict(pairs)


def _h5_datasets(h5py: Any, f: Any) -> list[tuple[str, tuple[int, ...]]]:
    have: list[tuple[str, tuple[int, ...]]] = []
    f.visititems(lambda n, o: have.append((n, o.shape)) if isinstance(o, h5py.Dataset) else None)
    return have


def hdf5_source(path: str, datasets: dict[str, str]) -> Source:
    """The named datasets of one HDF5 file (output name -> path inside the file)."""
    (h5py,) = _hep("h5py")
    require_file(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"cannot open {path!r} as an HDF5 file: {e}") from e
    with f:
        found: list[tuple[str, str, tuple[int, ...], np.dtype]] = []
        for out, name in datasets.items():
            obj = f.get(name)
            if not isinstance(obj, h5py.Dataset):
                have = _h5_datasets(h5py, f)
                what = "is a group, not a dataset" if isinstance(obj, h5py.Group) else "does not exist"
                raise DataError(_missing(f"dataset {name!r} {what} in {path!r}", name, [n for n, _ in have],
                                         [f"{n} {s}" for n, s in have]))
            label = f"dataset {name!r} of {path!r}"
            if obj.ndim == 0:
                raise DataError(f"{label} is a scalar; it needs one row per sample")
            _numeric(label, obj.dtype)
            found.append((out, name, obj.shape, obj.dtype))
    _, first, shape0, _ = found[0]
    for _, name, shape, _ in found[1:]:
        if shape[0] != shape0[0]:
            raise DataError(
                f"in {path!r}, {name!r} has {shape[0]} rows but {first!r} has {shape0[0]}: every dataset "
                "needs exactly one row per sample (one label per feature row); fix the file or pick other datasets"
            )

    def read(n: int) -> Iterator[Block]:
        with h5py.File(path, "r") as f:
            ds = {out: f[name] for out, name in datasets.items()}
            for s, e in _blocks(shape0[0], n):
                yield {out: d[s:e] for out, d in ds.items()}

    columns = {out: (shape[1:], _label_dtype(dt) if out == "y" else dt) for out, _, shape, dt in found}
    return Source(repr(path), shape0[0], columns, read)


# ----------------------------------------------------------------------------- ROOT
def _tree(f: Any, path: str, tree: str) -> Any:
    try:
        t = f[tree]
    except KeyError:
        trees = sorted({k.split(";")[0] for k, c in f.classnames().items() if c in ("TTree", "TNtuple", "ROOT::RNTuple")})
        raise DataError(_missing(f"{path!r} has no tree {tree!r}", tree, trees)) from None
    if not hasattr(t, "iterate"):
        raise DataError(f"{tree!r} in {path!r} is a {type(t).__name__}, not a TTree or RNTuple")
    return t


def root_source(path: str, tree: str, flat: list[str], pads: dict[str, float], max_particles: int | None,
                label: str | None) -> Source:
    """Flat and jagged branches (and a label branch) of one ROOT file's tree."""
    uproot, ak = _hep("uproot", "awkward")
    require_file(path)
    names = [*flat, *pads, *([label] if label else [])]
    try:
        f = uproot.open(path)
    except Exception as e:  # uproot raises ValueError, OSError... for a file that is not ROOT
        raise DataError(f"cannot open {path!r} as a ROOT file: {e}") from e
    with f:
        t = _tree(f, path, tree)
        keys = list(t.keys())
        for b in names:
            if b not in keys:
                raise DataError(_missing(f"tree {tree!r} of {path!r} has no branch {b!r}", b, keys))
        probe = t.arrays(names, entry_stop=0, library="ak")  # no events: just the types
        rows = int(t.num_entries)
    dtypes = {}
    for b in names:
        nd = probe[b].ndim
        if b in pads and nd == 1:
            raise DataError(f"branch {b!r} of {path!r} holds one value per event, not a list of particles: "
                            "give it as a flat branch (branches=[...], --flat)")
        if b not in pads and nd != 1:
            role = "the label branch" if b == label else "a flat branch"
            raise DataError(f"branch {b!r} of {path!r} holds a list per event ({ak.type(probe[b]).content}) but was given "
                            f"as {role}: give it as a jagged branch (jagged=[...], --jagged)")
        if nd > 2:
            raise DataError(f"branch {b!r} of {path!r} is nested ({ak.type(probe[b]).content}): only lists of numbers convert")
        try:
            dtypes[b] = np.asarray(ak.to_numpy(ak.flatten(probe[b], axis=None))).dtype
        except Exception as e:  # strings, records, objects
            raise DataError(f"branch {b!r} of {path!r} is not numeric ({ak.type(probe[b]).content})") from e
        _numeric(f"branch {b!r} of {path!r}", dtypes[b])

    columns: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    if pads:
        assert max_particles is not None
        columns["x"] = ((max_particles, len(pads)), np.dtype(np.float32))
        columns["mask"] = ((max_particles,), np.dtype(bool))
    if flat:
        columns["x_flat" if pads else "x"] = ((len(flat),), np.dtype(np.float32))
    if label:
        columns["y"] = ((), _label_dtype(dtypes[label]))

    def read(n: int) -> Iterator[Block]:
        start = 0
        with uproot.open(path) as f:
            for arrays in f[tree].iterate(names, step_size=n, library="ak"):
                yield _root_block(ak, arrays, path, flat, pads, max_particles, label, start)
                start += len(arrays)

    return Source(repr(path), rows, columns, read)


def _root_block(ak: Any, arrays: Any, path: str, flat: list[str], pads: dict[str, float],
                max_particles: int | None, label: str | None, start: int) -> Block:
    out: Block = {}
    if pads:
        assert max_particles is not None  # root_source sets it whenever there are jagged branches
        jagged = list(pads)
        counts = np.asarray(ak.to_numpy(ak.num(arrays[jagged[0]], axis=1)))
        for b in jagged[1:]:
            c = np.asarray(ak.to_numpy(ak.num(arrays[b], axis=1)))
            bad = np.flatnonzero(c != counts)
            if len(bad):
                i = int(bad[0])
                raise DataError(
                    f"event {start + i} of {path!r} has {counts[i]} entries in {jagged[0]!r} but {c[i]} in {b!r}: "
                    "jagged branches must list the same particles; convert other collections in another call"
                )
        feats = [
            np.asarray(ak.to_numpy(ak.fill_none(ak.pad_none(arrays[b], max_particles, axis=1, clip=True), pad)), np.float32)
            for b, pad in pads.items()
        ]
        out["x"] = np.stack(feats, axis=-1)
        out["mask"] = np.arange(max_particles)[None, :] < counts[:, None]
    if flat:
        out["x_flat" if pads else "x"] = np.stack([np.asarray(ak.to_numpy(arrays[b]), np.float32) for b in flat], axis=1)
    if label:
        out["y"] = np.asarray(ak.to_numpy(arrays[label]))
    return out
