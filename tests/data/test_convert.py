"""Tests of psdist.data.convert: real .npy/.npz, HDF5 and ROOT files converted to the Zarr layout."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import zarr

from psdist.data import ZarrDataset
from psdist.data.convert import from_hdf5, from_numpy, from_root
from psdist.data.convert_cli import parse_files
from psdist.errors import ConfigError, DataError

h5py = pytest.importorskip("h5py")
uproot = pytest.importorskip("uproot")
ak = pytest.importorskip("awkward")


def features(n: int, d: int = 3, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row i holds i + start in column 0: easy to see which row went where."""
    x = np.random.default_rng(start).standard_normal((n, d)).astype(np.float32)
    x[:, 0] = np.arange(start, start + n)
    return x, (np.arange(start, start + n) % 3).astype(np.int64)


def arrays(path) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(path), mode="r")
    return {k: np.asarray(g[k][:]) for k in g.array_keys()}


def particles(n: int, seed: int) -> tuple[list[list[float]], list[list[float]]]:
    """Per-event particle lists of 0..6 particles; pt of particle j of event i is 100 i + j + 1."""
    counts = np.random.default_rng(seed).integers(0, 7, n)
    pt = [[100.0 * i + j + 1 for j in range(c)] for i, c in enumerate(counts)]
    eta = [[-(100.0 * i + j + 1) for j in range(c)] for i, c in enumerate(counts)]
    return pt, eta


def write_ttree(path, n: int, seed: int = 0, **extra) -> dict:
    pt, eta = particles(n, seed)
    branches = {
        "jet_pt": np.arange(n, dtype=np.float64) + 0.5,
        "jet_mass": np.arange(n, dtype=np.float32) * 2,
        "is_signal": (np.arange(n) % 2 == 0),
        "part_pt": ak.Array(pt),
        "part_eta": ak.Array(eta),
        **extra,
    }
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in branches.items()})
        f["Events"].extend(branches)
    return {"pt": pt, "eta": eta, **branches}


def padded(lists: list[list[float]], p: int) -> tuple[np.ndarray, np.ndarray]:
    """The expected (N, p) padded values and mask, element by element."""
    out, mask = np.zeros((len(lists), p), np.float32), np.zeros((len(lists), p), bool)
    for i, row in enumerate(lists):
        for j, v in enumerate(row[:p]):
            out[i, j], mask[i, j] = v, True
    return out, mask


# ----------------------------------------------------------------------------- numpy
def test_npy_larger_than_a_chunk_converts_exactly(tmp_path) -> None:
    x, y = features(2500)
    np.save(tmp_path / "x.npy", x.astype(np.float64))
    np.save(tmp_path / "y.npy", y)
    xv, yv = features(300, start=5000)
    np.save(tmp_path / "xv.npy", xv)
    np.save(tmp_path / "yv.npy", yv)
    seen: list[tuple[int, int]] = []
    ds = from_numpy(tmp_path / "o.zarr", tmp_path / "x.npy", tmp_path / "y.npy", tmp_path / "xv.npy",
                    tmp_path / "yv.npy", chunk_rows=1000, progress=lambda d, t: seen.append((d, t)))
    out = arrays(tmp_path / "o.zarr")
    assert np.array_equal(out["x"], x) and out["x"].dtype == np.float32
    assert np.array_equal(out["y"], y) and np.array_equal(out["x_val"], xv) and np.array_equal(out["y_val"], yv)
    assert seen[0] == (0, 2800) and seen[-1] == (2800, 2800)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    g = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")
    assert g["x"].chunks == (1000, 3) and g["x_val"].chunks == (300, 3)
    info = ds.describe()
    assert (info.rows, info.train_rows, info.val_rows, len(info.train)) == (2500, 2500, 300, 3)


def test_npz_compressed_streams_named_keys(tmp_path) -> None:
    y = np.arange(1234) % 2
    x3 = np.arange(1234 * 6, dtype=np.int16).reshape(1234, 2, 3)
    np.savez_compressed(tmp_path / "d.npz", feats=x3, labels=y.astype(bool))
    from_numpy(tmp_path / "o.zarr", "feats", "labels", npz=tmp_path / "d.npz", chunk_rows=500)
    out = arrays(tmp_path / "o.zarr")
    assert out["x"].dtype == np.float32 and np.array_equal(out["x"], x3.astype(np.float32))
    assert out["y"].dtype == np.int64 and np.array_equal(out["y"], y.astype(bool).astype(np.int64))
    info = ZarrDataset(tmp_path / "o.zarr", val_fraction=0.3).describe()
    # one of the 3 chunks (500, 500, 234 rows) is held out: the draw of holdout_chunks(3, 1) is chunk 0
    assert info.x_shape == (2, 3) and info.val_rows == 500 and [c.index for c in info.val] == [0]


def test_numpy_bad_inputs(tmp_path) -> None:
    x, y = features(100)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y[:99])
    with pytest.raises(DataError, match=r"have 99 rows but the features .*x\.npy' have 100"):
        from_numpy(tmp_path / "o.zarr", tmp_path / "x.npy", tmp_path / "y.npy")
    with pytest.raises(DataError, match=r"input file .*nope\.npy' does not exist"):
        from_numpy(tmp_path / "o.zarr", tmp_path / "nope.npy", tmp_path / "y.npy")
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(DataError, match=r"has no array 'label'.* It has: \['x', 'y'\]"):
        from_numpy(tmp_path / "o.zarr", "x", "label", npz=tmp_path / "d.npz")
    with pytest.raises(DataError, match=r"is an \.npz archive: pass npz="):
        from_numpy(tmp_path / "o.zarr", tmp_path / "d.npz", tmp_path / "y.npy")
    assert not (tmp_path / "o.zarr").exists()  # nothing is written before the inputs check out


def test_existing_output_and_failed_conversion_leave_no_partial_store(tmp_path) -> None:
    x, y = features(50)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    from_numpy(tmp_path / "o.zarr", tmp_path / "x.npy", tmp_path / "y.npy")
    with pytest.raises(DataError, match="already exists; pass overwrite=True"):
        from_numpy(tmp_path / "o.zarr", tmp_path / "x.npy", tmp_path / "y.npy")

    def boom(done: int, total: int) -> None:
        if done:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        from_numpy(tmp_path / "o.zarr", tmp_path / "x.npy", tmp_path / "y.npy", overwrite=True, progress=boom)
    # the old store is intact and no temporary directory is left behind
    assert np.array_equal(arrays(tmp_path / "o.zarr")["x"], x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr", "x.npy", "y.npy"]


# ----------------------------------------------------------------------------- HDF5
def write_h5(path, x: np.ndarray, y: np.ndarray, **more: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("jets/features", data=x, chunks=True)
        f.create_dataset("jets/label", data=y)
        for name, a in more.items():
            f.create_dataset(name, data=a)


def test_hdf5_several_files_concatenate_in_order(tmp_path) -> None:
    parts = [features(n, start=s) for n, s in ((700, 0), (1100, 700), (700, 1800))]
    for i, (x, y) in enumerate(parts):
        write_h5(tmp_path / f"{i}.h5", x, y)
    xv, yv = features(200, start=9000)
    write_h5(tmp_path / "val.h5", xv, yv)
    ds = from_hdf5(tmp_path / "o.zarr", [tmp_path / f"{i}.h5" for i in range(3)], x="jets/features",
                   y="jets/label", val_files=[tmp_path / "val.h5"], chunk_rows=1000)
    out = arrays(tmp_path / "o.zarr")
    assert np.array_equal(out["x"], np.concatenate([p[0] for p in parts]))
    assert np.array_equal(out["y"], np.concatenate([p[1] for p in parts]))
    assert np.array_equal(out["x_val"], xv) and np.array_equal(out["y_val"], yv)
    info = ds.describe()
    assert (info.rows, info.val_rows, [c.rows for c in info.train]) == (2500, 200, [1000, 1000, 500])


def test_hdf5_multi_input_writes_x_name_arrays(tmp_path) -> None:
    x, y = features(300)
    tracks = np.arange(300 * 4 * 2, dtype=np.float64).reshape(300, 4, 2)
    write_h5(tmp_path / "a.h5", x, y, **{"tracks/features": tracks})
    ds = from_hdf5(tmp_path / "o.zarr", tmp_path / "a.h5", x=["jets/features", "tracks/features"],
                   y="jets/label", chunk_rows=128)
    out = arrays(tmp_path / "o.zarr")
    assert sorted(out) == ["x_jets_features", "x_tracks_features", "y"]
    assert np.array_equal(out["x_jets_features"], x)
    assert np.array_equal(out["x_tracks_features"], tracks.astype(np.float32))
    assert ds.x == "x_jets_features" and ds.describe().x_shape == (3,)
    assert ZarrDataset(tmp_path / "o.zarr", x="x_tracks_features").describe().x_shape == (4, 2)
    # a {name: path} dict picks the names; x_val/y_val read other datasets of the same file
    write_h5(tmp_path / "b.h5", x, y, **{"tracks/features": tracks, "val/jets": x[:50] + 1, "val/tracks": tracks[:50], "val/label": y[:50]})
    from_hdf5(tmp_path / "p.zarr", tmp_path / "b.h5", x={"jets": "jets/features", "trk": "tracks/features"},
              y="jets/label", x_val={"jets": "val/jets", "trk": "val/tracks"}, y_val="val/label")
    out = arrays(tmp_path / "p.zarr")
    assert sorted(out) == ["x_jets", "x_jets_val", "x_trk", "x_trk_val", "y", "y_val"]
    assert np.array_equal(out["x_jets_val"], x[:50] + 1) and np.array_equal(out["y_val"], y[:50])


def test_hdf5_per_file_labels_interleave(tmp_path) -> None:
    write_h5(tmp_path / "sig.h5", np.full((300, 2), 1.0), np.zeros(300))
    write_h5(tmp_path / "bkg.h5", np.full((900, 2), 0.0), np.zeros(900))
    ds = from_hdf5(tmp_path / "o.zarr", {tmp_path / "sig.h5": 1, tmp_path / "bkg.h5": 0}, x="jets/features",
                   interleave=True, chunk_rows=100)
    out = arrays(tmp_path / "o.zarr")
    assert np.array_equal(out["x"][:, 0], out["y"]) and out["y"].dtype == np.int64
    # every chunk of 100 rows holds 25 signal and 75 background rows, in the files' order
    assert all(out["y"][s : s + 100].sum() == 25 for s in range(0, 1200, 100))
    assert len(ds.describe().val) == 1


def test_hdf5_bad_inputs(tmp_path) -> None:
    x, y = features(100)
    write_h5(tmp_path / "a.h5", x, y[:97])
    with pytest.raises(DataError, match=r"'jets/label' has 97 rows but 'jets/features' has 100"):
        from_hdf5(tmp_path / "o.zarr", tmp_path / "a.h5", x="jets/features", y="jets/label")
    with pytest.raises(DataError, match=r"dataset 'jets/feature' does not exist.*did you mean 'jets/features'\?"
                                        r".*jets/label \(97,\)"):
        from_hdf5(tmp_path / "o.zarr", tmp_path / "a.h5", x="jets/feature", y="jets/label")
    with pytest.raises(DataError, match=r"dataset 'jets' is a group, not a dataset"):
        from_hdf5(tmp_path / "o.zarr", tmp_path / "a.h5", x="jets", y="jets/label")
    with pytest.raises(DataError, match=r"input file .*missing\.h5' does not exist"):
        from_hdf5(tmp_path / "o.zarr", [tmp_path / "a.h5", tmp_path / "missing.h5"], x="jets/features", y="jets/label")
    write_h5(tmp_path / "b.h5", x[:, :2], y)
    write_h5(tmp_path / "c.h5", x, y)
    with pytest.raises(DataError, match=r"'x' rows have shape \(3,\) in .*c\.h5' but \(2,\)"):
        from_hdf5(tmp_path / "o.zarr", [tmp_path / "b.h5", tmp_path / "c.h5"], x="jets/features", y="jets/label")
    with pytest.raises(ConfigError, match="give the label dataset"):
        from_hdf5(tmp_path / "o.zarr", tmp_path / "c.h5", x="jets/features")
    with pytest.raises(ConfigError, match="reserved for validation"):
        from_hdf5(tmp_path / "o.zarr", tmp_path / "c.h5", x={"val": "jets/features", "a": "jets/label"}, y="jets/label")
    assert not (tmp_path / "o.zarr").exists()


# ----------------------------------------------------------------------------- ROOT
def test_root_jagged_padding_truncation_and_mask(tmp_path) -> None:
    t = write_ttree(tmp_path / "a.root", 2500)
    ds = from_root(tmp_path / "o.zarr", tmp_path / "a.root", jagged=["part_pt", "part_eta"], max_particles=4,
                   branches=["jet_pt", "jet_mass"], label="is_signal", chunk_rows=1000)
    out = arrays(tmp_path / "o.zarr")
    assert sorted(out) == ["mask", "x", "x_flat", "y"]
    assert out["x"].shape == (2500, 4, 2) and out["x"].dtype == np.float32
    pt, mask = padded(t["pt"], 4)
    eta, _ = padded(t["eta"], 4)
    assert np.array_equal(out["x"][..., 0], pt) and np.array_equal(out["x"][..., 1], eta)
    assert out["mask"].dtype == bool and np.array_equal(out["mask"], mask)
    counts = np.array([len(r) for r in t["pt"]])
    assert (counts > 4).any() and (counts == 0).any()  # both truncation and empty events are exercised
    assert np.array_equal(out["mask"].sum(axis=1), np.minimum(counts, 4))
    assert np.array_equal(out["x_flat"], np.stack([t["jet_pt"], t["jet_mass"]], axis=1).astype(np.float32))
    assert out["y"].dtype == np.int64 and np.array_equal(out["y"], t["is_signal"].astype(np.int64))
    info = ds.describe()
    # 3 chunks (1000, 1000, 500 rows); the default 10 % holds out one, chunk 0 (holdout_chunks(3, 1))
    assert info.x_shape == (4, 2) and [c.rows for c in info.train] == [1000, 500]
    assert [(c.start, c.stop) for c in info.val] == [(0, 1000)]
    attrs = dict(zarr.open_group(str(tmp_path / "o.zarr"), mode="r").attrs)
    assert attrs["x_features"] == ["part_pt", "part_eta"] and attrs["x_flat_features"] == ["jet_pt", "jet_mass"]


def test_root_per_file_labels_pad_value_val_files_and_flat_only(tmp_path) -> None:
    sig, bkg, val = (write_ttree(tmp_path / f"{n}.root", r, seed=s)
                     for n, r, s in (("sig", 300, 1), ("bkg", 500, 2), ("val", 100, 3)))
    ds = from_root(tmp_path / "o.zarr", {tmp_path / "sig.root": 1, tmp_path / "bkg.root": 0}, branches=["jet_pt"],
                   val_files={tmp_path / "val.root": 1}, chunk_rows=256, jagged={"part_pt": -1.0},
                   max_particles=2)
    out = arrays(tmp_path / "o.zarr")
    assert sorted(out) == ["mask", "mask_val", "x", "x_flat", "x_flat_val", "x_val", "y", "y_val"]
    assert np.array_equal(out["y"], np.r_[np.ones(300), np.zeros(500)]) and np.array_equal(out["y_val"], np.ones(100))
    assert np.array_equal(out["x_flat"][:, 0], np.r_[sig["jet_pt"], bkg["jet_pt"]].astype(np.float32))
    pt, mask = padded(val["pt"], 2)
    assert np.array_equal(out["x_val"][..., 0], np.where(mask, pt, -1.0))  # the pad value fills empty slots
    assert ds.describe().val_rows == 100
    from_root(tmp_path / "p.zarr", tmp_path / "sig.root", branches=["jet_pt", "jet_mass"], label="is_signal")
    out = arrays(tmp_path / "p.zarr")
    assert sorted(out) == ["x", "y"] and out["x"].shape == (300, 2)
    assert np.array_equal(out["x"][:, 1], sig["jet_mass"])


def test_root_rntuple_written_by_dict_assignment(tmp_path) -> None:
    # uproot 5.7 writes an RNTuple for f[name] = {...}; it converts the same way as a TTree
    with uproot.recreate(tmp_path / "n.root") as f:
        f["Events"] = {"jet_pt": np.arange(5.0), "part_pt": ak.Array([[1.0, 2.0], [], [3.0], [4.0, 5.0, 6.0], [7.0]])}
    from_root(tmp_path / "o.zarr", {tmp_path / "n.root": 1}, branches=["jet_pt"], jagged=["part_pt"], max_particles=2)
    out = arrays(tmp_path / "o.zarr")
    assert out["x"][..., 0].tolist() == [[1, 2], [0, 0], [3, 0], [4, 5], [7, 0]]
    assert out["mask"].tolist() == [[1, 1], [0, 0], [1, 0], [1, 1], [1, 0]]


def test_root_bad_inputs(tmp_path) -> None:
    write_ttree(tmp_path / "a.root", 50, other_pt=ak.Array([[1.0]] * 50))
    kw = {"label": "is_signal", "max_particles": 5}
    with pytest.raises(DataError, match=r"has no branch 'part_ptt'; did you mean 'part_pt'\?.*'jet_mass'"):
        from_root(tmp_path / "o.zarr", tmp_path / "a.root", jagged=["part_ptt"], **kw)
    with pytest.raises(DataError, match=r"'part_pt' .* holds a list per event .* given as a flat branch"):
        from_root(tmp_path / "o.zarr", tmp_path / "a.root", branches=["jet_pt", "part_pt"], **kw)
    with pytest.raises(DataError, match=r"'jet_pt' .* holds one value per event.*--flat"):
        from_root(tmp_path / "o.zarr", tmp_path / "a.root", jagged=["part_pt", "jet_pt"], **kw)
    with pytest.raises(DataError, match=r"no tree 'Event'; did you mean 'Events'\?"):
        from_root(tmp_path / "o.zarr", tmp_path / "a.root", tree="Event", branches=["jet_pt"], label="is_signal")
    with pytest.raises(DataError, match=r"input file .*b\.root' does not exist"):
        from_root(tmp_path / "o.zarr", {tmp_path / "a.root": 1, tmp_path / "b.root": 0}, branches=["jet_pt"])
    with pytest.raises(DataError, match=r"entries in 'part_pt' but 1 in 'other_pt'"):
        from_root(tmp_path / "o.zarr", tmp_path / "a.root", jagged=["part_pt", "other_pt"], **kw)
    with pytest.raises(ConfigError, match="max_particles=None"):
        from_root(tmp_path / "o.zarr", tmp_path / "a.root", jagged=["part_pt"], label="is_signal")
    with pytest.raises(ConfigError, match="not both or neither"):
        from_root(tmp_path / "o.zarr", {tmp_path / "a.root": 1}, branches=["jet_pt"], label="is_signal")
    assert not (tmp_path / "o.zarr").exists()


# ----------------------------------------------------------------------------- CLI
def test_parse_files() -> None:
    assert parse_files(["a.h5", "b.h5"]) == ["a.h5", "b.h5"]
    assert parse_files(["sig.root:1", "root://eos//bkg.root:0.5"]) == {"sig.root": 1, "root://eos//bkg.root": 0.5}
    with pytest.raises(ConfigError, match=r"\['b.root'\] have no :LABEL"):
        parse_files(["a.root:1", "b.root"])


def test_cli_convert_root_and_missing_branch(tmp_path) -> None:
    t = write_ttree(tmp_path / "sig.root", 40, seed=1)
    write_ttree(tmp_path / "bkg.root", 60, seed=2)
    cmd = [sys.executable, "-m", "psdist.cli", "convert", "root", str(tmp_path / "o.zarr"),
           f"{tmp_path / 'sig.root'}:1", f"{tmp_path / 'bkg.root'}:0", "--tree", "Events",
           "--jagged", "part_pt", "part_eta", "--max-particles", "3", "--flat", "jet_pt", "jet_mass",
           "--chunk-rows", "32"]
    bad = [*cmd[:11], "part_pt", "part_phi", *cmd[13:]]
    bad[5] = str(tmp_path / "p.zarr")
    # both runs at once: each pays the interpreter's start-up (torch import) in parallel
    runs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in (cmd, bad)]
    (stdout, stderr), (_, bad_stderr) = (r.communicate(timeout=120) for r in runs)
    assert runs[0].returncode == 0, stderr
    assert "x (100, 3, 2) float32" in stdout and "mask (100, 3) bool" in stdout
    assert "--interleave" in stderr  # one file per class, concatenated: the user is warned
    got = arrays(tmp_path / "o.zarr")
    assert np.array_equal(got["x"][:40, :, 0], padded(t["pt"], 3)[0])
    assert np.array_equal(got["y"], np.r_[np.ones(40), np.zeros(60)])
    # 2 of the 4 chunks (32, 32, 32, 4 rows) held out, one from each half: chunks 1 and 2
    assert ZarrDataset(tmp_path / "o.zarr", val_fraction=0.5).describe().val_rows == 64

    assert runs[1].returncode == 2
    assert "psdist: error:" in bad_stderr and "no branch 'part_phi'" in bad_stderr and "'part_eta'" in bad_stderr
    assert "Traceback" not in bad_stderr and not (tmp_path / "p.zarr").exists()
