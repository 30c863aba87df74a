"""Writing a psdist dataset: numpy arrays into a Zarr v3 group (:func:`write_zarr`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from psdist.data.dataset import EVERY_CHUNK_ATTR, ZarrDataset
from psdist.errors import ConfigError, DataError

__all__ = ["compressor_codecs", "write_zarr"]


def compressor_codecs(name: str | None) -> list[Any]:
    """The Zarr compressor codecs for a Blosc name (``None``/``"none"``: uncompressed).

    A CRC32C checksum follows the compressor, so a chunk whose bytes were overwritten or cut
    short fails to read (:class:`~psdist.errors.BadChunkError`) instead of decoding to garbage:
    Blosc stores incompressible data verbatim and does not notice either.
    """
    from zarr.codecs import BloscCname, BloscCodec, Crc32cCodec

    if name is None or name == "none":
        return [Crc32cCodec()]
    if name in ("zstd", "lz4", "lz4hc", "zlib", "blosclz"):
        blosc = BloscCodec(cname=BloscCname(name), clevel=3 if name == "zstd" else 5, shuffle="shuffle")
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
    if x_val is not None and y_val is not None:  # both or neither, checked above
        pairs.append(("x_val", x_val, "y_val", y_val))
    for xn, xa, yn, ya in pairs:
        if len(xa) != len(ya):
            raise DataError(f"{xn} has {len(xa)} rows but {yn} has {len(ya)}; they must match")
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise DataError(f"{path!r} already exists; replace it with psdist.write_zarr({path!r}, x, y, overwrite=True)")
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
            # so a chunk missing later was lost (see read). The ignore: zarr types this argument
            # with a TypedDict built on typing.NotRequired (Python 3.11+), which mypy's
            # python_version = 3.10 cannot read, so no dict literal matches it
            config={"write_empty_chunks": True},  # type: ignore[arg-type]
        )
        for s, e in _blocks(len(arr), chunk_rows):
            z[s:e] = arr[s:e]
    return ZarrDataset(path)
