"""ReadAhead: background chunk reads handed to the task that needs them, errors included."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import psdist
from psdist.data.dataset import Chunk
from psdist.data.prefetch import ReadAhead
from psdist.errors import BadChunkError


@pytest.fixture
def store(tmp_path):
    x = np.arange(64 * 3, dtype=np.float32).reshape(64, 3)
    y = (np.arange(64) % 2).astype(np.int64)
    psdist.write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=16)
    return psdist.ZarrDataset(tmp_path / "d.zarr", val_fraction=0)


def reader(ds, started=None, release=None):
    chunks = {c.index: c for c in ds.describe().train}

    def read(index):
        if started is not None:
            started.set()
        if release is not None:
            assert release.wait(10)
        c = chunks.get(index)
        return None if c is None else (c, *ds.read(c))
    return read, chunks


def test_a_chunk_read_ahead_is_the_chunk_read_directly(store):
    read, chunks = reader(store)
    ahead = ReadAhead(read)
    ahead.start(2)
    x, y = ahead.take(chunks[2])
    dx, dy = store.read(chunks[2])
    np.testing.assert_array_equal(x, dx)
    np.testing.assert_array_equal(y, dy)
    assert (ahead.started, ahead.taken) == (1, 1)
    assert ahead.take(chunks[2]) is None  # handed out once
    assert ahead.take(chunks[1]) is None  # never started: the task reads it itself
    ahead.close()


def test_the_task_waits_for_a_read_under_way(store):
    started, release = threading.Event(), threading.Event()
    read, chunks = reader(store, started, release)
    ahead = ReadAhead(read)
    ahead.start(0)
    assert started.wait(10)
    got: list = []
    t = threading.Thread(target=lambda: got.append(ahead.take(chunks[0])))
    t.start()
    release.set()
    t.join(10)
    np.testing.assert_array_equal(got[0][0], store.read(chunks[0])[0])
    ahead.close()


def test_at_most_depth_chunks_are_held_and_a_dropped_one_is_forgotten(store):
    read, chunks = reader(store)
    ahead = ReadAhead(read, depth=2)
    for i in (0, 1, 2):
        ahead.start(i)
    assert ahead.started == 2  # the third waits for room
    ahead.drop(0)
    assert ahead.take(chunks[0]) is None
    ahead.start(2)
    assert ahead.take(chunks[2]) is not None and ahead.take(chunks[1]) is not None
    ahead.close()


def test_an_unknown_index_or_another_chunk_is_read_directly(store):
    read, _ = reader(store)
    ahead = ReadAhead(read)
    ahead.start(99)  # no training chunk of this store
    assert ahead.take(Chunk(99, "x", "y", 0, 16)) is None
    ahead.start(1)
    assert ahead.take(Chunk(1, "x", "y", 0, 8)) is None  # same index, other rows
    ahead.close()


def test_a_bad_chunk_read_ahead_raises_in_the_task(store):
    read, chunks = reader(store)
    (Path(store.path) / "x" / "c" / "1" / "0").unlink()  # the second Zarr chunk of x is lost
    ahead = ReadAhead(read)
    ahead.start(1)
    with pytest.raises(BadChunkError):
        ahead.take(chunks[1])
    ahead.close()
