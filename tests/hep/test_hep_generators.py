"""Tests of the offline physics generators: Pythia 8 + FastJet jets/events and parametric showers.

Pythia tests use a few tens of jets per class (about 100 jets/s per core with MPI, 3x more
without) and skip when pythia8mc or fastjet is missing; the shower tests need only numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from psdist.data import ZarrDataset
from psdist.errors import ConfigError
from psdist.hep import pythia, showers


@pytest.fixture(scope="module")
def pythia8mc():
    pytest.importorskip("fastjet", reason="fastjet is not installed: pip install fastjet==3.5.2.0")
    return pytest.importorskip(
        "pythia8mc", reason="pythia8mc is not installed: pip install pythia8mc==8.317.2"
    )


@pytest.fixture(scope="module")
def qg_jets(pythia8mc) -> dict[str, np.ndarray]:
    """100 quark + 100 gluon jets with the default settings (MPI on)."""
    return pythia.generate_jets("qg", 100, seed=5)


# ----------------------------------------------------------------------------------- Pythia jets
def test_jets_shapes_masks_and_determinism(pythia8mc) -> None:
    kw = dict(max_particles=20, image_pixels=16, mpi=False)
    d = pythia.generate_jets("qg", 10, seed=11, **kw)
    assert d["x"].shape == (20, 20, 4) and d["x"].dtype == np.float32
    assert d["x_image"].shape == (20, 1, 16, 16) and d["x_image"].dtype == np.float32
    assert d["mask"].shape == (20, 20) and d["mask"].dtype == bool
    assert d["jet"].shape == (20, 5) and d["y"].dtype == np.int64
    # points: the (Δη, Δφ) columns alone, zero where masked (point-cloud taggers' coordinates)
    assert d["points"].shape == (20, 20, 2) and d["points"].dtype == np.float32
    assert np.array_equal(d["points"], d["x"][..., 1:3]) and not d["points"][~d["mask"]].any()
    assert np.bincount(d["y"]).tolist() == [10, 10]
    # padding: masked-out rows are all zero, real rows have a pid code 1..5 and pT sorted
    assert np.array_equal(d["mask"], d["x"][..., 3] > 0)
    assert not d["x"][~d["mask"]].any()
    assert set(np.unique(d["x"][..., 3][d["mask"]])) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert np.all(np.diff(d["x"][..., 0], axis=1) <= 1e-7)
    assert np.array_equal(d["mask"].sum(1), np.minimum(d["jet"][:, 4], 20))
    assert np.all(np.abs(d["x"][..., 1:3][d["mask"]]) < 0.6)  # constituents near the R = 0.4 axis
    assert np.all(d["jet"][:, 0] > 200) and np.allclose(d["x_image"].sum((1, 2, 3)), 1, atol=0.1)
    again = pythia.generate_jets("qg", 10, seed=11, **kw)
    assert all(np.array_equal(d[k], again[k]) for k in d)
    other = pythia.generate_jets("qg", 10, seed=12, **kw)
    assert not np.array_equal(d["x"], other["x"])


@pytest.mark.slow
def test_gluon_jets_have_more_constituents_than_quark_jets(qg_jets) -> None:
    d = qg_jets
    assert np.bincount(d["y"]).tolist() == [100, 100]
    n_gluon = d["jet"][d["y"] == 0, 4].mean()
    n_quark = d["jet"][d["y"] == 1, 4].mean()
    assert n_gluon > 1.2 * n_quark, (n_gluon, n_quark)
    # gluon jets are also wider: pT-weighted mean distance of the constituents from the axis
    width = (d["x"][..., 0] * np.hypot(d["x"][..., 1], d["x"][..., 2])).sum(1)
    assert width[d["y"] == 0].mean() > width[d["y"] == 1].mean()
    assert 450 < np.median(d["jet"][:, 0]) < 600  # the pT-hat window 500-550 GeV


@pytest.mark.slow
def test_top_and_w_jets_are_heavier_than_qcd(pythia8mc) -> None:
    top = pythia.generate_jets("tqcd", 40, seed=3, mpi=False)
    m_qcd, m_top = (top["jet"][top["y"] == c, 3] for c in (0, 1))
    assert np.median(m_top) > np.median(m_qcd) + 50, (np.median(m_top), np.median(m_qcd))
    assert 130 < np.median(m_top) < 200
    w = pythia.generate_jets("wqcd", 40, seed=3, mpi=False)
    in_window = (w["jet"][:, 3] > 65) & (w["jet"][:, 3] < 105)
    frac_w, frac_qcd = in_window[w["y"] == 1].mean(), in_window[w["y"] == 0].mean()
    assert frac_w > frac_qcd + 0.25, (frac_w, frac_qcd)
    assert w["x_image"].shape == (80, 1, 32, 32) and np.abs(w["x"][..., 1:3][w["mask"]]).max() < 1.2


@pytest.mark.slow
def test_events_vector_and_topology(pythia8mc) -> None:
    d = pythia.generate_events(12, seed=3, mpi=False, max_particles=40)
    cols = pythia.event_columns()
    assert d["x"].shape == (48, len(cols)) == (48, 40) and d["x"].dtype == np.float32
    assert d["x_particles"].shape == (48, 40, 4) and d["mask"].shape == (48, 40)
    assert np.bincount(d["y"]).tolist() == [12, 12, 12, 12]
    col = {c: d["x"][:, i] for i, c in enumerate(cols)}
    by = {name: d["y"] == k for k, name in enumerate(pythia.EVENT_CLASSES)}
    assert col["n_leptons"][by["zjets"]].mean() > 1.0 > 0.2 > col["n_leptons"][by["qcd"]].mean()
    assert col["met"][by["wjets"]].mean() > 20 > 5 > col["met"][by["qcd"]].mean()
    assert col["n_jets"][by["ttbar"]].mean() > col["n_jets"][by["zjets"]].mean()
    lep = col["lep1_pt"] > 0
    assert set(np.unique(col["lep1_charge"][lep])) <= {-1.0, 1.0}
    assert np.all(np.diff(d["x"][:, [0, 4, 8]], axis=1) <= 0)  # jet1..3 pT, ordered (0 if absent)


@pytest.mark.slow
def test_dask_generation_equals_in_process_and_writes_zarr(pythia8mc, tmp_path) -> None:
    from distributed import Client, LocalCluster

    kw = dict(tasks=2, mpi=False, max_particles=10, image_pixels=8)
    with (
        LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        ds = pythia.write_jets(tmp_path / "j.zarr", "qg", 8, 4, seed=21, client=client, **kw)
    train = pythia.generate_jets("qg", 8, seed=21, **kw)
    g = zarr.open_group(str(tmp_path / "j.zarr"), mode="r")
    for k in ("x", "y", "points", "mask", "x_image", "jet"):
        assert np.array_equal(np.asarray(g[k]), train[k]), k
        # every array chunked by the same rows: a task's chunk reads aligned rows of each
        assert g[k].chunks[0] == g["x"].chunks[0] and g[f"{k}_val"].chunks[0] == g["x_val"].chunks[0], k
    assert g["x_val"].shape == (8, 10, 4) and g["x_image_val"].shape == (8, 1, 8, 8)
    assert g["points_val"].shape == (8, 10, 2) and g["points_val"].dtype == np.float32
    assert g.attrs["classes"] == ["gluon", "quark"] and g.attrs["seed"] == 21
    assert g.attrs["pythia_seeds"] == {"train": [21, 22, 23, 24], "val": [1000021, 1000022, 1000023, 1000024]}
    assert g.attrs["settings"]["mpi"] is False and g.attrs["versions"]["pythia8mc"] == "8.317.2"
    info = ds.describe()
    assert info.rows == 16 and info.val_rows == 8 and info.x_shape == (10, 4)
    assert ZarrDataset(tmp_path / "j.zarr", x="x_image", x_val="x_image_val").describe().x_shape == (1, 8, 8)


def test_pythia_bad_settings_are_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match="kind='zz'"):
        pythia.generate_jets("zz", 10)
    with pytest.raises(ConfigError, match="seed=0"):
        pythia.generate_jets("qg", 10, seed=0)
    with pytest.raises(ConfigError, match=r"1\.\.900000000"):
        pythia.generate_events(10, seed=900_000_000, tasks=2)
    with pytest.raises(ConfigError, match="pT-hat window"):
        pythia.generate_jets("qg", 10, pthat=(550.0, 500.0))
    with pytest.raises(ConfigError, match="val_seed=2 reuses"):
        pythia.write_jets(tmp_path / "j.zarr", "qg", 10, seed=1, val_seed=2, tasks=1)
    with pytest.raises(ConfigError, match="unknown generator setting"):
        pythia.generate_jets("qg", 10, radius_typo=0.5)
    assert not (tmp_path / "j.zarr").exists()


# ------------------------------------------------------------------------------------- showers
def test_showers_shapes_labels_and_determinism() -> None:
    x, p, e = showers.generate(60, energy_range=(10, 100), seed=3)
    assert x.shape == (60, 1, 25, 25, 25) and x.dtype == np.float32
    assert p.dtype == np.int64 and np.bincount(p).tolist() == [20, 20, 20]
    assert e.dtype == np.float32 and e.min() >= 10 and e.max() <= 100
    assert np.all(x >= 0)
    x2, p2, e2 = showers.generate(60, energy_range=(10, 100), seed=3)
    assert np.array_equal(x, x2) and np.array_equal(p, p2) and np.array_equal(e, e2)
    assert not np.array_equal(x, showers.generate(60, seed=4)[0])
    small = showers.generate(4, particles=("pi-",), grid=(10, 8, 6), seed=0)[0]
    assert small.shape == (4, 1, 10, 8, 6)


def test_shower_energy_is_conserved_within_the_sampling_model() -> None:
    x, _, e = showers.generate(200, energy_range=(50, 50), particles=("e-",), seed=1)
    resp = showers.total_energy(x) / e
    # electrons: everything visible at the EM scale, minus a little lateral/longitudinal leakage
    assert 0.95 < resp.mean() < 1.0 and resp.max() < 1.1
    model = showers.ShowerModel(sampling_fraction=0.25)
    xs, _, _ = showers.generate(200, energy_range=(50, 50), particles=("e-",), seed=1, model=model)
    np.testing.assert_allclose(showers.total_energy(xs), 0.25 * showers.total_energy(x), rtol=1e-5)
    xp, _, ep = showers.generate(200, energy_range=(50, 50), particles=("pi+",), seed=1)
    resp_pi = showers.total_energy(xp) / ep
    # pions: invisible hadronic energy (e/h > 1) lowers the response and widens it
    assert 0.5 < resp_pi.mean() < 0.85 and resp_pi.std() > 3 * resp.std() and resp_pi.max() < 1.1


def _mean_depth(x: np.ndarray) -> float:
    prof = showers.longitudinal_profile(x)
    return float((prof * np.arange(len(prof))).sum() / prof.sum())


def _mean_radius(x: np.ndarray) -> float:
    prof = showers.lateral_profile(x)
    return float((prof * np.arange(len(prof))).sum() / prof.sum())


def test_shower_shapes_electrons_photons_pions() -> None:
    xe = showers.generate(150, particles=("e-",), energy_range=(50, 50), seed=2)[0]
    xg = showers.generate(150, particles=("gamma",), energy_range=(50, 50), seed=2)[0]
    xp = showers.generate(150, particles=("pi+",), energy_range=(50, 50), seed=2)[0]
    long_e, long_p = showers.longitudinal_profile(xe), showers.longitudinal_profile(xp)
    assert long_e.shape == (25,) and showers.lateral_profile(xe).shape == (14,)
    assert long_e.argmax() < long_p.argmax()
    # t_max = ln(E/E_c) - 0.5 ≈ 7.3 X0 at 50 GeV: layer 3 of 2 X0; photons one X0 deeper
    assert 2 <= long_e.argmax() <= 4
    assert _mean_depth(xe) < _mean_depth(xg) < _mean_depth(xp)
    assert _mean_radius(xp) > 1.5 * _mean_radius(xe)


def test_shower_resolution_improves_with_energy() -> None:
    res = {}
    for particle in ("e-", "pi+"):
        for energy in (10.0, 80.0):
            x, _, e = showers.generate(300, energy_range=(energy, energy), particles=(particle,), seed=7)
            r = showers.total_energy(x) / e
            res[particle, energy] = r.std() / r.mean()
    assert res["e-", 10.0] > 1.5 * res["e-", 80.0]
    # the stochastic term a/√E comes back: a ≈ 12 % at both energies
    for energy in (10.0, 80.0):
        assert 0.09 < res["e-", energy] * np.sqrt(energy) < 0.15, res
    assert res["pi+", 10.0] > res["pi+", 80.0] > 2 * res["e-", 80.0]


def test_shape_distance() -> None:
    e1 = showers.generate(150, particles=("e-",), seed=1)[0]
    e2 = showers.generate(150, particles=("e-",), seed=2)[0]
    pi = showers.generate(150, particles=("pi+",), seed=1)[0]
    assert showers.shape_distance(e1, e1) == 0.0
    d_same, d_diff = showers.shape_distance(e1, e2), showers.shape_distance(e1, pi)
    assert 0 < d_same and d_diff > 5 * d_same
    parts = showers.shape_distances(e1, pi)
    assert set(parts) == {"longitudinal", "lateral", "energy"} and all(v > 0 for v in parts.values())
    assert showers.shape_distance(e1[:, 0], e2[:, 0]) == d_same  # (N, L, X, Y) works too


def test_showers_write_dataset(tmp_path) -> None:
    ds = showers.write_dataset(str(tmp_path / "s.zarr"), 12, 6, grid=(8, 6, 6), seed=1, chunk_rows=4)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert g["x"].shape == (12, 1, 8, 6, 6) and g["x_val"].shape == (6, 1, 8, 6, 6)
    assert g["energy"].shape == (12,) and g["energy_val"].shape == (6,)
    assert g.attrs["classes"] == ["e", "gamma", "pi"] and g.attrs["val_seed"] == 1_000_004
    x, _, e = showers.generate(12, grid=(8, 6, 6), seed=1)
    assert np.array_equal(np.asarray(g["x"]), x) and np.array_equal(np.asarray(g["energy"]), e)
    assert ds.describe().rows == 12
    assert ZarrDataset(tmp_path / "s.zarr", y="energy", y_val="energy_val").describe().y_dtype == "float32"


def test_showers_bad_input_is_named() -> None:
    with pytest.raises(ConfigError, match="'mu-'"):
        showers.generate(3, particles=("mu-",))
    with pytest.raises(ConfigError, match="energy_range"):
        showers.generate(3, energy_range=(-1, 10))
    with pytest.raises(ConfigError, match="spots_per_gev"):
        showers.generate(3, model=showers.ShowerModel(spots_per_gev=10))
    with pytest.raises(ConfigError, match="shape"):
        showers.total_energy(np.zeros((3, 4)))


def test_command_lines(tmp_path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(pythia, "write_jets", lambda *a, **kw: calls.append((a, kw)))
    pythia.main(
        [
            "jets",
            "--kind",
            "tqcd",
            str(tmp_path / "j.zarr"),
            "--per-class",
            "5",
            "--no-mpi",
            "--pthat",
            "300",
            "-1",
            "--seed",
            "9",
        ]
    )
    ((args, kw),) = calls
    assert args == (str(tmp_path / "j.zarr"), "tqcd", 5) and kw["client"] is None
    assert kw["mpi"] is False and kw["pthat"] == (300.0, None) and kw["seed"] == 9
    showers.main([str(tmp_path / "s.zarr"), "--showers", "6", "--val-showers", "3", "--particles", "gamma"])
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert g["x"].shape == (6, 1, 25, 25, 25) and set(np.asarray(g["y"]).tolist()) == {1}
