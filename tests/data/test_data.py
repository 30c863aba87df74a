"""Tests of psdist.data: writing Zarr datasets, planning chunks, reading rows, seeds."""

from __future__ import annotations

import re

import numpy as np
import pytest
import zarr

from psdist.data import Chunk, ZarrDataset, epoch_order, holdout_chunks, task_seed, write_zarr
from psdist.errors import ConfigError, DataError


def arrays(n: int, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[:, 0] = np.arange(n)  # row index in the first feature: easy to check what was read
    y = (np.arange(n) % 5).astype(np.int64)
    return x, y


def hand_group(path, **named: np.ndarray) -> None:
    """Write arrays into a Zarr group directly (to create stores write_zarr refuses to make)."""
    g = zarr.open_group(str(path), mode="w")
    for name, a in named.items():
        z = g.create_array(name, shape=a.shape, dtype=a.dtype, chunks=(min(4, len(a)), *a.shape[1:]))
        z[...] = a


# ----------------------------------------------------------------------------- describe
def test_write_and_describe_holds_out_chunks(tmp_path) -> None:
    x, y = arrays(1000)
    ds = write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=100, attrs={"classes": ["a", "b"]})
    assert isinstance(ds, ZarrDataset)
    info = ZarrDataset(tmp_path / "d.zarr", val_fraction=0.2).describe()
    assert info.rows == 1000
    assert info.x_shape == (3,) and info.x_dtype == "float32"
    assert info.y_shape == () and info.y_dtype == "int64"
    # chunk-aligned: every task covers exactly one store chunk; 2 of the 10 are held out, one
    # from each half of the store (holdout_chunks(10, 2, seed=0) draws chunks 1 and 7)
    assert [(c.start, c.stop) for c in info.train] == [
        (0, 100), (200, 300), (300, 400), (400, 500), (500, 600), (600, 700), (800, 900), (900, 1000)
    ]
    assert [(c.start, c.stop) for c in info.val] == [(100, 200), (700, 800)]
    assert all(c.x.names == ("x",) and c.y.names == ("y",) and c.x.single for c in info.train + info.val)
    # a chunk's index is its position in the store, wherever it goes
    assert [c.index for c in info.train] == [0, 2, 3, 4, 5, 6, 8, 9]
    assert [c.index for c in info.val] == [1, 7]
    assert info.train_rows == 800 and info.val_rows == 200
    assert dict(ds.open_group().attrs)["classes"] == ["a", "b"]


def test_describe_uneven_last_chunk_and_default_fraction(tmp_path) -> None:
    x, y = arrays(1050)
    write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=100)
    info = ZarrDataset(tmp_path / "d.zarr").describe()  # val_fraction 0.1 of 11 chunks -> 1
    assert len(info.train) == 10 and len(info.val) == 1
    assert (info.val[0].start, info.val[0].stop) == (200, 300)  # not the short last chunk
    assert info.train[-1].rows == 50
    assert (info.train_rows, info.val_rows) == (950, 100)


def test_describe_val_fraction_zero_keeps_everything(tmp_path) -> None:
    x, y = arrays(300)
    write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=100)
    info = ZarrDataset(tmp_path / "d.zarr", val_fraction=0).describe()
    assert len(info.train) == 3 and info.val == ()


def test_describe_uses_validation_arrays(tmp_path) -> None:
    x, y = arrays(400)
    xv, yv = arrays(150, seed=1)
    write_zarr(tmp_path / "d.zarr", x, y, xv, yv, chunk_rows=100)
    info = ZarrDataset(tmp_path / "d.zarr", val_fraction=0.5).describe()
    # with x_val/y_val present nothing of x is held out
    assert info.train_rows == 400 and len(info.train) == 4
    assert [(*c.x.names, *c.y.names, c.start, c.stop) for c in info.val] == [
        ("x_val", "y_val", 0, 100),
        ("x_val", "y_val", 100, 150),
    ]
    assert [c.index for c in info.val] == [4, 5]


def test_chunk_rows_must_be_multiple_of_store_chunks(tmp_path) -> None:
    x, y = arrays(1000)
    write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=100)
    info = ZarrDataset(tmp_path / "d.zarr", chunk_rows=300, val_fraction=0).describe()
    assert [(c.start, c.stop) for c in info.train] == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    with pytest.raises(ConfigError, match="chunk_rows=150") as e:
        ZarrDataset(tmp_path / "d.zarr", chunk_rows=150).describe()
    assert "100" in str(e.value) and "chunk_rows=100" in str(e.value)
    with pytest.raises(ConfigError, match="chunk_rows=0"):
        ZarrDataset(tmp_path / "d.zarr", chunk_rows=0)


def test_one_chunk_cannot_hold_out(tmp_path) -> None:
    x, y = arrays(50)
    write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=100)
    with pytest.raises(DataError, match="one chunk"):
        ZarrDataset(tmp_path / "d.zarr").describe()
    info = ZarrDataset(tmp_path / "d.zarr", val_fraction=0).describe()
    assert info.train_rows == 50


# ----------------------------------------------------------------------------- read
def test_read_returns_the_chunk_rows(tmp_path) -> None:
    x, y = arrays(1000)
    xv, yv = arrays(120, seed=1)
    ds = write_zarr(tmp_path / "d.zarr", x, y, xv, yv, chunk_rows=100)
    info = ds.describe()
    group = ds.open_group()
    for c in (info.train[0], info.train[3], info.train[-1]):
        xr, yr = ds.read(c, group)
        np.testing.assert_array_equal(xr, x[c.start : c.stop])
        np.testing.assert_array_equal(yr, y[c.start : c.stop])
        assert xr.dtype == np.float32
    xr, yr = ds.read(info.val[1])  # opens the group itself
    np.testing.assert_array_equal(xr, xv[100:120])
    np.testing.assert_array_equal(yr, yv[100:120])


def test_write_zarr_converts_features_to_float32(tmp_path) -> None:
    x = np.arange(20, dtype=np.int32).reshape(10, 2)
    y = np.arange(10, dtype=np.float64)
    ds = write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=5, compressor="zstd")
    info = ZarrDataset(ds.path, val_fraction=0).describe()
    assert info.x_dtype == "float32" and info.y_dtype == "float32"
    xr, yr = ds.read(info.train[1])
    np.testing.assert_array_equal(xr, x[5:].astype(np.float32))
    np.testing.assert_array_equal(yr, y[5:].astype(np.float32))


def test_read_missing_rows_names_chunk(tmp_path) -> None:
    x, y = arrays(100)
    ds = write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=50)
    with pytest.raises(DataError, match="'nope'"):
        ds.read(Chunk(0, "nope", "y", 0, 10))


# ----------------------------------------------------------------------------- order and seeds
def test_epoch_order_is_a_seeded_permutation() -> None:
    chunks = tuple(Chunk(i, "x", "y", 10 * i, 10 * i + 10) for i in range(12))
    e0 = epoch_order(chunks, seed=42, epoch=0)
    e1 = epoch_order(chunks, seed=42, epoch=1)
    # pinned: a resumed training (another process, another day) must redo the same order
    assert [c.index for c in e0] == [0, 10, 4, 9, 3, 2, 5, 7, 1, 11, 6, 8]
    assert [c.index for c in e1] == [10, 7, 9, 11, 2, 3, 6, 5, 0, 8, 1, 4]
    assert epoch_order(chunks, seed=42, epoch=0) == e0
    assert epoch_order(chunks, seed=43, epoch=0) != e0


def test_task_seed_is_stable_and_well_spread() -> None:
    # pinned values: the same in every process (no Python hash randomisation) and every release,
    # so a resumed training draws the same batches
    assert task_seed(7, 2, 5) == 3317226693877540281
    assert task_seed(0, 0, 0) == 9044811311333822937
    seeds = {task_seed(0, e, c) for e in range(5) for c in range(-1, 20)}
    assert len(seeds) == 5 * 21
    assert task_seed(1, 0, 0) != task_seed(0, 1, 0) != task_seed(0, 0, 1)


# ----------------------------------------------------------------------------- bad input
def test_missing_path(tmp_path) -> None:
    missing = tmp_path / "nowhere.zarr"
    with pytest.raises(DataError, match="does not exist") as e:
        ZarrDataset(missing).describe()
    assert str(missing) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_path_that_is_not_a_group(tmp_path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("hello")
    with pytest.raises(DataError, match="not a readable Zarr group"):
        ZarrDataset(f).describe()


def test_length_mismatch_written_by_hand(tmp_path) -> None:
    x, _ = arrays(10)
    hand_group(tmp_path / "d.zarr", x=x, y=np.zeros(9, dtype=np.int64))
    with pytest.raises(DataError, match="10 rows") as e:
        ZarrDataset(tmp_path / "d.zarr", val_fraction=0).describe()
    assert "'y' has 9" in str(e.value)


def test_validation_length_mismatch_written_by_hand(tmp_path) -> None:
    x, y = arrays(10)
    hand_group(tmp_path / "d.zarr", x=x, y=y, x_val=x[:6], y_val=y[:5])
    with pytest.raises(DataError, match="'x_val' has 6 rows but 'y_val' has 5"):
        ZarrDataset(tmp_path / "d.zarr").describe()


def test_validation_feature_shape_mismatch(tmp_path) -> None:
    x, y = arrays(10)
    hand_group(tmp_path / "d.zarr", x=x, y=y, x_val=np.zeros((6, 4), np.float32), y_val=y[:6])
    with pytest.raises(DataError, match="x_val"):
        ZarrDataset(tmp_path / "d.zarr").describe()


def test_write_zarr_length_mismatch(tmp_path) -> None:
    x, y = arrays(10)
    with pytest.raises(DataError, match="x has 10 rows but y has 9"):
        write_zarr(tmp_path / "d.zarr", x, y[:9])
    with pytest.raises(DataError, match="both x_val and y_val"):
        write_zarr(tmp_path / "d.zarr", x, y, x_val=x)


def test_write_zarr_refuses_existing_path_without_overwrite(tmp_path) -> None:
    x, y = arrays(10)
    write_zarr(tmp_path / "d.zarr", x, y)
    with pytest.raises(DataError, match="already exists"):
        write_zarr(tmp_path / "d.zarr", x, y)
    x2, y2 = arrays(20, seed=3)
    ds = write_zarr(tmp_path / "d.zarr", x2, y2, overwrite=True, chunk_rows=10)
    assert ds.describe().rows == 20


@pytest.mark.parametrize(("kw", "needle"), [({"chunk_rows": 0}, "chunk_rows=0"), ({"compressor": "brotli"}, "'brotli'")])
def test_write_zarr_bad_options(tmp_path, kw, needle: str) -> None:
    x, y = arrays(10)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        write_zarr(tmp_path / "d.zarr", x, y, **kw)


def test_missing_array_name(tmp_path) -> None:
    x, y = arrays(100)
    write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=50)
    with pytest.raises(DataError, match="no array 'features'") as e:
        ZarrDataset(tmp_path / "d.zarr", x="features").describe()
    assert "['x', 'y']" in str(e.value)
    with pytest.raises(DataError, match="no array 'labels'"):
        ZarrDataset(tmp_path / "d.zarr", y="labels").describe()


def test_integer_features_rejected(tmp_path) -> None:
    hand_group(tmp_path / "d.zarr", x=np.arange(20, dtype=np.int32).reshape(10, 2), y=np.zeros(10, np.int64))
    with pytest.raises(DataError, match="'x' has dtype int32") as e:
        ZarrDataset(tmp_path / "d.zarr", val_fraction=0).describe()
    assert "floating point" in str(e.value)


def test_empty_features_rejected(tmp_path) -> None:
    hand_group(tmp_path / "d.zarr", x=np.zeros((0, 2), np.float32), y=np.zeros(0, np.int64))
    with pytest.raises(DataError, match="empty"):
        ZarrDataset(tmp_path / "d.zarr", val_fraction=0).describe()


@pytest.mark.parametrize("bad", [1.5, 1.0, -0.1, float("nan")])
def test_bad_val_fraction(tmp_path, bad: float) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"val_fraction={bad!r}")):
        ZarrDataset(tmp_path, val_fraction=bad)


def test_holdout_never_takes_every_training_chunk(tmp_path) -> None:
    x, y = arrays(200)
    path = str(tmp_path / "d.zarr")
    write_zarr(path, x, y, chunk_rows=100)
    # 0.9 of 2 chunks rounds to 2: refused, with a fraction that holds out one
    with pytest.raises(DataError, match=r"val_fraction=0\.9 holds out all 2 chunks") as e:
        ZarrDataset(path, val_fraction=0.9).describe()
    assert f"psdist.ZarrDataset({path!r}, val_fraction=0.25)" in str(e.value)
    info = ZarrDataset(path, val_fraction=0.25).describe()
    assert [c.index for c in info.train] == [1] and [c.index for c in info.val] == [0]


# ----------------------------------------------------------------------------- held-out split
def test_holdout_chunks_one_per_stretch_pinned() -> None:
    assert holdout_chunks(10, 2) == [1, 7]  # one of chunks 0-4, one of 5-9
    assert holdout_chunks(10, 2, seed=1) == [2, 7]
    assert holdout_chunks(40, 4) == [4, 15, 27, 36]  # one of each ten
    assert holdout_chunks(40, 4, seed=7) == [5, 14, 26, 30]
    assert holdout_chunks(3, 1) == [0]
    assert holdout_chunks(5, 4) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="cannot hold out 3 of 3 chunks"):
        holdout_chunks(3, 3)


def test_holdout_seed_changes_the_split_and_is_checked(tmp_path) -> None:
    x, y = arrays(4000)
    write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=100)
    val0 = [c.index for c in ZarrDataset(tmp_path / "d.zarr").describe().val]
    val7 = [c.index for c in ZarrDataset(tmp_path / "d.zarr", holdout_seed=7).describe().val]
    assert (val0, val7) == ([4, 15, 27, 36], [5, 14, 26, 30])
    for bad in (-1, 1.5, True, "0"):
        with pytest.raises(ConfigError, match=re.escape(f"holdout_seed={bad!r} must be an integer >= 0")):
            ZarrDataset(tmp_path / "d.zarr", holdout_seed=bad)  # type: ignore[arg-type]


def test_read_labels_reads_runs_of_chunks_and_only_labels(tmp_path, monkeypatch) -> None:
    x, y = arrays(1000)
    ds = write_zarr(tmp_path / "d.zarr", x, y, chunk_rows=100)
    info = ZarrDataset(ds.path, val_fraction=0.2).describe()
    reads: list[tuple[str, int, int]] = []
    real = ZarrDataset._read_rows

    def counted(self, g, name, chunk, features):
        reads.append((name, chunk.start, chunk.stop))
        return real(self, g, name, chunk, features)

    monkeypatch.setattr(ZarrDataset, "_read_rows", counted)
    got = {c.index: ys for c, ys in ds.read_labels(info.val + info.train)}
    assert reads == [("y", 0, 1000)]  # adjacent chunks in one read, and never x
    assert sorted(got) == list(range(10))
    assert got[7].tolist() == [0, 1, 2, 3, 4] * 20  # y = row % 5
    assert got[9].shape == (100,)
