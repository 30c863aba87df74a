"""Zarr loader microbenchmark: psdist.ZarrDataset reading chunks vs a numpy memmap.

    python -m benchmarks.suite.loader --spec spec.json       # spec: workloads, reps, out

For each workload's store: every training chunk read with ``ZarrDataset.read`` (what a psdist
chunk task does: open, slice rows, lz4-decompress into numpy) against the same arrays saved
once as ``.npy`` and sliced from ``np.load(mmap_mode="r")`` with a copy into memory (what a
hand-written loader over raw files does). Both read warm files (just written, in the page
cache): the figure is the loader's CPU cost, not the disk's. Median of ``reps`` passes.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

import numpy as np

from benchmarks.suite import common


def one(name: str, path: str, reps: int, tmp: str) -> dict[str, Any]:
    import psdist
    from benchmarks.suite.workloads import WORKLOADS

    wl = WORKLOADS[name]
    ds = psdist.ZarrDataset(path, y=wl.y, y_val=wl.y_val)
    chunks = ds.describe().train
    rows = sum(c.rows for c in chunks)
    g = ds.open_group()
    npy_x, npy_y = os.path.join(tmp, f"{name}-x.npy"), os.path.join(tmp, f"{name}-y.npy")
    np.save(npy_x, np.asarray(g["x"][:]))
    np.save(npy_y, np.asarray(g[wl.y][:]))

    def zarr_pass() -> None:
        group = ds.open_group()  # as a task does: open the store, read its rows
        for c in chunks:
            ds.read(c, group)

    def memmap_pass() -> None:
        mx, my = np.load(npy_x, mmap_mode="r"), np.load(npy_y, mmap_mode="r")
        for c in chunks:
            np.array(mx[c.start : c.stop]), np.array(my[c.start : c.stop])

    res: dict[str, Any] = {"status": "ok", "rows": rows, "chunks": len(chunks),
                           "chunk_rows": chunks[0].rows if chunks else 0,
                           "bytes_per_row": int(np.prod(g["x"].shape[1:])) * g["x"].dtype.itemsize}
    for label, fn in (("zarr", zarr_pass), ("memmap", memmap_pass)):
        times = []
        for _ in range(reps + 1):  # the first pass warms up imports and caches
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        res[f"{label}_samples_per_s"] = rows / statistics.median(times[1:])
    res["zarr_over_memmap"] = res["zarr_samples_per_s"] / res["memmap_samples_per_s"]
    os.remove(npy_x)
    os.remove(npy_y)
    return res


def main(argv: list[str] | None = None) -> int:
    spec = common.parse(argv)
    common.ensure_path()
    tmp = os.path.dirname(spec["out"])
    return common.run_workloads(spec, "loader", lambda n, info: one(n, info["path"], int(spec["reps"]), tmp),
                                key=lambda n: n)


if __name__ == "__main__":
    sys.exit(main())
