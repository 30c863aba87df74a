"""Training data as a Zarr v3 group, cut into chunk-aligned tasks.

Layout of a psdist dataset (a Zarr group): ``x`` (N, ...) float features, ``y`` (N, ...) labels
(integers for classes, floats for regression), and optionally ``x_val``/``y_val``. Without them a
fraction of the training chunks is held out for validation (by chunk, so no task straddles the
split). Workers read their rows straight from the store; the client and the parameter server
never touch the data.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from psdist.errors import ConfigError, DataError

__all__ = ["Chunk", "DatasetInfo", "ZarrDataset", "compressor_codecs", "epoch_order", "task_seed", "write_zarr"]


@dataclass(frozen=True)
class Chunk:
    """A range of rows of one array pair; the unit of work of one task."""

    index: int
    x: str
    y: str
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class DatasetInfo:
    """What :meth:`ZarrDataset.describe` found in the store."""

    rows: int
    x_shape: tuple[int, ...]
    x_dtype: str
    y_shape: tuple[int, ...]
    y_dtype: str
    train: tuple[Chunk, ...]
    val: tuple[Chunk, ...]

    @property
    def train_rows(self) -> int:
        return sum(c.rows for c in self.train)

    @property
    def val_rows(self) -> int:
        return sum(c.rows for c in self.val)


@dataclass(frozen=True)
class ZarrDataset:
    """A Zarr v3 group of training (and validation) arrays.

    Parameters
    ----------
    path
        Directory (or URL understood by zarr) of the group.
    x, y
        Names of the feature and label arrays.
    x_val, y_val
        Names of validation arrays; used when present in the group.
    val_fraction
        Fraction of training chunks held out when there are no validation arrays (0 for none).
    chunk_rows
        Rows per task; default the store's chunk length along axis 0. Must be a multiple of it,
        so every task reads whole chunks.
    """

    path: str | os.PathLike[str]
    x: str = "x"
    y: str = "y"
    x_val: str = "x_val"
    y_val: str = "y_val"
    val_fraction: float = 0.1
    chunk_rows: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction={self.val_fraction!r} must lie in [0, 1), e.g. 0.1")
        if self.chunk_rows is not None and (not isinstance(self.chunk_rows, int) or self.chunk_rows < 1):
            raise ConfigError(f"chunk_rows={self.chunk_rows!r} must be a positive integer")

    def open_group(self) -> Any:
        """The zarr group (read-only); :class:`DataError` if it is missing or not a group."""
        import zarr

        path = os.fspath(self.path)
        if "://" not in path and not os.path.exists(path):
            raise DataError(
                f"data path {path!r} does not exist; write a dataset there first, e.g. "
                "psdist.write_zarr(path, x, y) or `psdist convert`"
            )
        try:
            return zarr.open_group(path, mode="r")
        except Exception as e:  # zarr raises several types for "not a group"
            raise DataError(f"{path!r} is not a readable Zarr group: {e}") from e

    def _array(self, group: Any, name: str) -> Any:
        if name not in group:
            raise DataError(
                f"the Zarr group {os.fspath(self.path)!r} has no array {name!r} "
                f"(it has {sorted(group.array_keys())}); pass x=/y= with the right names"
            )
        return group[name]

    def describe(self) -> DatasetInfo:
        """Open the store, check it, and plan the chunks (cheap: metadata only)."""
        g = self.open_group()
        xa, ya = self._array(g, self.x), self._array(g, self.y)
        _check_pair(self.x, xa, self.y, ya)
        train = self._chunks(xa, self.x, self.y, 0)
        if self.x_val in g and self.y_val in g:
            xv, yv = g[self.x_val], g[self.y_val]
            _check_pair(self.x_val, xv, self.y_val, yv)
            if tuple(xv.shape[1:]) != tuple(xa.shape[1:]):
                raise DataError(
                    f"{self.x_val!r} rows have shape {xv.shape[1:]}, {self.x!r} rows {xa.shape[1:]}"
                )
            val = self._chunks(xv, self.x_val, self.y_val, len(train))
        elif self.val_fraction > 0:
            n_val = max(1, round(len(train) * self.val_fraction)) if len(train) > 1 else 0
            if n_val == 0:
                raise DataError(
                    f"{os.fspath(self.path)!r} has one chunk: nothing to hold out for validation; "
                    "write x_val/y_val, use smaller chunks, or pass val_fraction=0"
                )
            if n_val >= len(train):
                raise DataError(
                    f"val_fraction={self.val_fraction} holds out all {len(train)} chunks of "
                    f"{os.fspath(self.path)!r}: lower it or write x_val/y_val"
                )
            train, val = train[:-n_val], train[-n_val:]
        else:
            val = []
        return DatasetInfo(
            rows=int(xa.shape[0]),
            x_shape=tuple(int(s) for s in xa.shape[1:]),
            x_dtype=str(xa.dtype),
            y_shape=tuple(int(s) for s in ya.shape[1:]),
            y_dtype=str(ya.dtype),
            train=tuple(train),
            val=tuple(val),
        )

    def _chunks(self, xa: Any, xname: str, yname: str, first: int) -> list[Chunk]:
        store_rows = int(xa.chunks[0])
        rows = self.chunk_rows or store_rows
        if rows % store_rows:
            raise ConfigError(
                f"chunk_rows={rows} is not a multiple of the store's chunk length {store_rows} "
                f"of {xname!r}; use chunk_rows={store_rows * max(1, rows // store_rows)}"
            )
        n = int(xa.shape[0])
        return [
            Chunk(first + i, xname, yname, s, min(s + rows, n))
            for i, s in enumerate(range(0, n, rows))
        ]

    def read(self, chunk: Chunk, group: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read one chunk's rows; errors name the array and the rows."""
        g = group if group is not None else self.open_group()
        try:
            x = np.asarray(g[chunk.x][chunk.start : chunk.stop])
            y = np.asarray(g[chunk.y][chunk.start : chunk.stop])
        except Exception as e:
            raise DataError(
                f"cannot read rows {chunk.start}:{chunk.stop} of {chunk.x!r}/{chunk.y!r} in "
                f"{os.fspath(self.path)!r}: {e}"
            ) from e
        return x, y

    def read_validation(self) -> tuple[np.ndarray, np.ndarray]:
        """All validation rows ``(x, y)`` in memory (for evaluating a trained model)."""
        info = self.describe()
        if not info.val:
            raise DataError(f"{os.fspath(self.path)!r} has no validation rows; give val_fraction=0.2")
        g = self.open_group()
        parts = [self.read(c, g) for c in info.val]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _check_pair(xname: str, xa: Any, yname: str, ya: Any) -> None:
    if xa.shape[0] != ya.shape[0]:
        raise DataError(
            f"{xname!r} has {xa.shape[0]} rows but {yname!r} has {ya.shape[0]}: every sample "
            "needs exactly one label; rewrite the labels to match"
        )
    if xa.shape[0] == 0:
        raise DataError(f"{xname!r} is empty: there is nothing to train on")
    if np.dtype(str(xa.dtype)).kind != "f":
        raise DataError(f"{xname!r} has dtype {xa.dtype}; features must be floating point")


def task_seed(seed: int, epoch: int, chunk: int) -> int:
    """A well-mixed 63-bit seed for one chunk of one epoch (stable across processes)."""
    h = hashlib.blake2b(f"{seed}:{epoch}:{chunk}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def epoch_order(chunks: tuple[Chunk, ...], seed: int, epoch: int) -> list[Chunk]:
    """The chunks of an epoch in a seeded random order (a new order every epoch)."""
    rng = np.random.default_rng(task_seed(seed, epoch, -1))
    return [chunks[i] for i in rng.permutation(len(chunks))]


def compressor_codecs(name: str | None) -> Any:
    """The Zarr codecs for a Blosc compressor name (``None``/``"none"``: uncompressed)."""
    from zarr.codecs import BloscCodec

    if name is None or name == "none":
        return None
    if name in ("zstd", "lz4", "lz4hc", "zlib", "blosclz"):
        return BloscCodec(cname=name, clevel=3 if name == "zstd" else 5, shuffle="shuffle")
    raise ConfigError(f"unknown compressor {name!r}; choose zstd, lz4, lz4hc, zlib, blosclz or none")


def _blocks(n: int, rows: int) -> Iterator[tuple[int, int]]:
    for s in range(0, n, rows):
        yield s, min(s + rows, n)


def write_zarr(
    path: str | os.PathLike[str],
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    *,
    chunk_rows: int = 1024,
    compressor: str | None = "lz4",
    overwrite: bool = False,
    attrs: dict[str, Any] | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> ZarrDataset:
    """Write numpy arrays as a psdist dataset and return a :class:`ZarrDataset` over it.

    Parameters
    ----------
    path
        Target directory.
    x, y
        Features (float) and labels, same length.
    x_val, y_val
        Optional validation arrays.
    chunk_rows
        Rows per Zarr chunk (= rows per training task by default).
    compressor
        Blosc codec name (``"lz4"`` is fastest to read, ``"zstd"`` smallest) or ``None``.
    overwrite
        Replace an existing group; otherwise an existing path is an error.
    attrs
        Free-form metadata stored on the group (class names, generator settings...).
    extra
        Further row-aligned arrays (masks, other inputs or targets, their ``_val`` twins),
        stored with the same chunking and compressor, dtypes unchanged.
    """
    import zarr

    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigError(f"chunk_rows={chunk_rows!r} must be a positive integer, e.g. 1024")
    pairs = [("x", x, "y", y)]
    if (x_val is None) != (y_val is None):
        raise DataError("give both x_val and y_val, or neither")
    if x_val is not None:
        pairs.append(("x_val", x_val, "y_val", y_val))
    for xn, xa, yn, ya in pairs:
        if len(xa) != len(ya):
            raise DataError(f"{xn} has {len(xa)} rows but {yn} has {len(ya)}; they must match")
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise DataError(f"{path!r} already exists; pass overwrite=True to replace it")
    g = zarr.open_group(path, mode="w")
    if attrs:
        g.attrs.update(attrs)
    codecs = compressor_codecs(compressor)
    arrays: list[tuple[str, np.ndarray]] = []
    for xn, xa, yn, ya in pairs:
        for name, arr in ((xn, np.asarray(xa)), (yn, np.asarray(ya))):
            if name.startswith("x") and arr.dtype.kind != "f":
                arr = arr.astype(np.float32)
            if arr.dtype == np.float64:
                arr = arr.astype(np.float32)
            arrays.append((name, arr))
    for name, arr in (extra or {}).items():
        if name in dict(arrays):
            raise DataError(f"extra array {name!r} would overwrite the dataset's own {name!r}")
        arrays.append((name, np.asarray(arr)))
    for name, arr in arrays:
        z = g.create_array(
            name,
            shape=arr.shape,
            dtype=arr.dtype,
            chunks=(min(chunk_rows, max(1, len(arr))), *arr.shape[1:]),
            compressors=codecs,
        )
        for s, e in _blocks(len(arr), chunk_rows):
            z[s:e] = arr[s:e]
    return ZarrDataset(path)
