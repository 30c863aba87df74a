"""Training data as a Zarr v3 group, cut into chunk-aligned tasks.

Layout of a psdist dataset (a Zarr group): ``x`` (N, ...) float features, ``y`` (N, ...) labels
(integers for classes, floats for regression), and optionally ``x_val``/``y_val``. Without them a
fraction of the training chunks is held out for validation (by chunk, so no task straddles the
split). Workers read their rows straight from the store; the client and the parameter server
never touch the data.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psdist.errors import BadChunkError, ConfigError, DataError

__all__ = [
    "EVERY_CHUNK_ATTR",
    "Chunk",
    "DatasetInfo",
    "ScanReport",
    "ZarrDataset",
    "compressor_codecs",
    "epoch_order",
    "nonfinite_rows",
    "task_seed",
    "write_zarr",
]

logger = logging.getLogger(__name__)

#: Array attribute set by :func:`write_zarr`: every chunk of the array was written (even chunks
#: holding only the fill value), so a chunk file that is not in the store was lost.
EVERY_CHUNK_ATTR = "psdist_every_chunk"


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


@dataclass
class ScanReport:
    """What :meth:`ZarrDataset.scan` found: unreadable chunks and rows holding NaN/Inf."""

    chunks: int = 0  # chunks read (training and validation)
    rows: int = 0
    bad: dict[int, str] = field(default_factory=dict)  # chunk index -> the BadChunkError message
    nonfinite: dict[int, int] = field(default_factory=dict)  # chunk index -> rows with NaN/Inf

    @property
    def ok(self) -> bool:
        return not self.bad and not self.nonfinite

    def __str__(self) -> str:
        if self.ok:
            return f"{self.chunks} chunks, {self.rows} rows: every chunk reads, no NaN/Inf"
        lines = [f"{self.chunks} chunks, {self.rows} rows: {len(self.bad)} bad chunks, "
                 f"{sum(self.nonfinite.values())} rows with NaN/Inf in {len(self.nonfinite)} chunks"]
        lines += [f"  chunk {i}: {msg}" for i, msg in sorted(self.bad.items())]
        lines += [f"  chunk {i}: {n} rows with NaN/Inf" for i, n in sorted(self.nonfinite.items())]
        return "\n".join(lines)


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
    skip_bad_chunks
        What a task does with a chunk that cannot be read (see :meth:`read`): ``False`` (default)
        fails the training with :class:`~psdist.errors.BadChunkError`; ``True`` skips the chunk,
        logs a warning naming it and counts it (``bad_chunks`` of the task's result).
    """

    path: str | os.PathLike[str]
    x: str = "x"
    y: str = "y"
    x_val: str = "x_val"
    y_val: str = "y_val"
    val_fraction: float = 0.1
    chunk_rows: int | None = None
    skip_bad_chunks: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction={self.val_fraction!r} must lie in [0, 1), e.g. 0.1")
        if self.chunk_rows is not None and (not isinstance(self.chunk_rows, int) or self.chunk_rows < 1):
            raise ConfigError(f"chunk_rows={self.chunk_rows!r} must be a positive integer")
        if not isinstance(self.skip_bad_chunks, bool):
            raise ConfigError(f"skip_bad_chunks={self.skip_bad_chunks!r} must be true or false")

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
        """Read one chunk's rows ``(x, y)``.

        Raises
        ------
        BadChunkError
            A Zarr chunk of these rows cannot be decoded (bytes overwritten, file truncated) or
            its file is missing. The error names the store, the array, the task's chunk index and
            rows, the Zarr chunk and the cause. Whether the caller skips it is the caller's
            business (:attr:`skip_bad_chunks`): this method always raises.
        DataError
            An array is missing altogether, or the store cannot be opened.

        Notes
        -----
        Zarr reads a chunk whose file is absent as the array's fill value, silently, and it
        legitimately leaves out chunks that hold nothing but the fill value (a chunk of labels
        that are all class 0, say). A missing chunk file is therefore treated as bad

        - in an array written by :func:`write_zarr` (attribute :data:`EVERY_CHUNK_ATTR`: every
          chunk was written, so a missing one was lost), and
        - in the feature array ``x`` of any store (a whole chunk of features equal to the fill
          value is not data);

        in other arrays (labels of stores written by other tools) it is read as the fill value.
        The check costs one existence test of each Zarr chunk file of the task per array (a
        ``stat`` on a local store). Bytes overwritten inside an *uncompressed* chunk without a
        checksum codec decode without error and cannot be detected here.
        """
        g = group if group is not None else self.open_group()
        x = self._read_rows(g, chunk.x, chunk, features=True)
        y = self._read_rows(g, chunk.y, chunk, features=False)
        return x, y

    def _read_rows(self, g: Any, name: str, chunk: Chunk, features: bool) -> np.ndarray:
        try:
            arr = g[name]
        except Exception as e:
            raise DataError(
                f"cannot open array {name!r} in {os.fspath(self.path)!r} to read rows "
                f"{chunk.start}:{chunk.stop}: {type(e).__name__}: {e}"
            ) from e
        grid = _store_chunks(arr, chunk.start, chunk.stop)
        if features or arr.attrs.get(EVERY_CHUNK_ATTR, False):
            for coords in grid:
                if not _chunk_exists(arr, coords):
                    raise self._bad(arr, name, chunk, coords, "its chunk file is missing from the store")
        try:
            return np.asarray(arr[chunk.start : chunk.stop])
        except Exception as e:
            cause = f"{type(e).__name__}: {e}".rstrip(". ")
            raise self._bad(arr, name, chunk, _first_unreadable(arr, grid), cause) from e

    def _bad(self, arr: Any, name: str, chunk: Chunk, coords: tuple[int, ...] | None, cause: str) -> BadChunkError:
        path = os.fspath(self.path)
        where = "a Zarr chunk"
        if coords is not None:
            try:
                where = f"Zarr chunk {coords} (key {arr.metadata.encode_chunk_key(coords)!r})"
            except Exception:
                where = f"Zarr chunk {coords}"
        return BadChunkError(
            f"bad chunk in {path!r}: array {name!r}, chunk {chunk.index} (rows "
            f"{chunk.start}:{chunk.stop}), {where}: {cause}. Re-convert or re-write the data "
            "(psdist convert / psdist.write_zarr), or skip and count bad chunks with "
            "ZarrDataset(..., skip_bad_chunks=True) (YAML: data: {skip_bad_chunks: true})",
            path=path, array=name, chunk=chunk.index, rows=(chunk.start, chunk.stop), store_chunk=coords,
        )

    def scan(self) -> ScanReport:
        """Read every chunk once: which cannot be read, which rows hold NaN/Inf (slow: all data).

        The check to run when a training reports bad chunks or NaN; it never raises for a bad
        chunk, whatever :attr:`skip_bad_chunks` says.
        """
        info = self.describe()
        g = self.open_group()
        report = ScanReport()
        for c in info.train + info.val:
            report.chunks += 1
            report.rows += c.rows
            try:
                x, y = self.read(c, g)
            except BadChunkError as e:
                report.bad[c.index] = str(e)
                continue
            n = int(nonfinite_rows(x, y).sum())
            if n:
                report.nonfinite[c.index] = n
        return report

    def read_validation(self) -> tuple[np.ndarray, np.ndarray]:
        """All validation rows ``(x, y)`` in memory (for evaluating a trained model)."""
        info = self.describe()
        if not info.val:
            raise DataError(f"{os.fspath(self.path)!r} has no validation rows; give val_fraction=0.2")
        g = self.open_group()
        parts = []
        for c in info.val:
            try:
                parts.append(self.read(c, g))
            except BadChunkError as e:
                if not self.skip_bad_chunks:
                    raise
                logger.warning("psdist: skipping a bad validation chunk: %s", e)
        if not parts:
            raise DataError(f"every validation chunk of {os.fspath(self.path)!r} is bad")
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


def _grid_shape(arr: Any) -> tuple[int, ...]:
    """The shape of one stored chunk (one shard, for sharded arrays)."""
    try:
        return tuple(int(c) for c in arr.metadata.chunk_grid.chunk_shape)
    except AttributeError:  # zarr v2 metadata
        return tuple(int(c) for c in arr.metadata.chunks)


def _store_chunks(arr: Any, start: int, stop: int) -> list[tuple[int, ...]]:
    """Grid coordinates of the Zarr chunks (shards, for sharded arrays) holding rows start:stop."""
    shape = _grid_shape(arr)
    if stop <= start or not shape:
        return []
    axes = [range(start // shape[0], math.ceil(stop / shape[0]))]
    axes += [range(math.ceil(int(n) / c)) for n, c in zip(arr.shape[1:], shape[1:], strict=True)]
    return list(itertools.product(*axes))


def _chunk_exists(arr: Any, coords: tuple[int, ...]) -> bool:
    """Whether the store holds the file (object) of one chunk; ``True`` if it cannot tell."""
    from zarr.core.sync import sync

    try:
        key = arr.metadata.encode_chunk_key(coords)
        prefix = arr.store_path.path
        return bool(sync(arr.store_path.store.exists(f"{prefix}/{key}" if prefix else key)))
    except Exception:  # an exotic store or metadata: leave it to the read
        logger.debug("psdist: cannot check chunk %s of %s", coords, arr, exc_info=True)
        return True


def _first_unreadable(arr: Any, grid: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The first of ``grid``'s chunks that fails to decode on its own (the error path only)."""
    if len(grid) == 1:
        return grid[0]
    shape = _grid_shape(arr)
    for coords in grid:
        region = tuple(slice(i * c, min((i + 1) * c, int(n))) for i, c, n in zip(coords, shape, arr.shape, strict=True))
        try:
            arr[region]
        except Exception:
            return coords
    return None


def nonfinite_rows(*arrays: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows holding NaN or Inf in any of the (floating-point) arrays."""
    bad = np.zeros(len(arrays[0]), dtype=bool)
    for a in arrays:
        if a.dtype.kind in "fc" and a.size:
            bad |= ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    return bad


def task_seed(seed: int, epoch: int, chunk: int) -> int:
    """A well-mixed 63-bit seed for one chunk of one epoch (stable across processes)."""
    h = hashlib.blake2b(f"{seed}:{epoch}:{chunk}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def epoch_order(chunks: tuple[Chunk, ...], seed: int, epoch: int) -> list[Chunk]:
    """The chunks of an epoch in a seeded random order (a new order every epoch)."""
    rng = np.random.default_rng(task_seed(seed, epoch, -1))
    return [chunks[i] for i in rng.permutation(len(chunks))]


def compressor_codecs(name: str | None) -> list[Any]:
    """The Zarr compressor codecs for a Blosc name (``None``/``"none"``: uncompressed).

    A CRC32C checksum follows the compressor, so a chunk whose bytes were overwritten or cut
    short fails to read (:class:`~psdist.errors.BadChunkError`) instead of decoding to garbage:
    Blosc stores incompressible data verbatim and does not notice either.
    """
    from zarr.codecs import BloscCodec, Crc32cCodec

    if name is None or name == "none":
        return [Crc32cCodec()]
    if name in ("zstd", "lz4", "lz4hc", "zlib", "blosclz"):
        blosc = BloscCodec(cname=name, clevel=3 if name == "zstd" else 5, shuffle="shuffle")
        return [blosc, Crc32cCodec()]
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
            attributes={EVERY_CHUNK_ATTR: True},
            config={"write_empty_chunks": True},  # so a chunk missing later was lost (see read)
        )
        for s, e in _blocks(len(arr), chunk_rows):
            z[s:e] = arr[s:e]
    return ZarrDataset(path)
