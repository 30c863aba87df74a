"""Zarr datasets: reading chunks, integrity checks, the held-out split, writing, converters."""

from __future__ import annotations

from psdist.data.dataset import (
    EVERY_CHUNK_ATTR,
    Chunk,
    DatasetInfo,
    ScanReport,
    ZarrDataset,
    nonfinite_rows,
)
from psdist.data.fields import Fields
from psdist.data.split import epoch_order, holdout_chunks, task_seed
from psdist.data.write import compressor_codecs, write_zarr

__all__ = [
    "EVERY_CHUNK_ATTR",
    "Chunk",
    "DatasetInfo",
    "Fields",
    "ScanReport",
    "ZarrDataset",
    "compressor_codecs",
    "epoch_order",
    "holdout_chunks",
    "nonfinite_rows",
    "task_seed",
    "write_zarr",
]
