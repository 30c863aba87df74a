"""Calorimeter showers (3D energy deposits) of e-, γ and π± from a parametric shower model.

What it is: a fast, documented stand-in for a calorimeter benchmark (CaloGAN/CaloChallenge-like
voxel showers, no downloads) to train generative models and regressors and to exercise the
physics metrics below. Each shower is a cloud of energy spots sampled from textbook profiles and
histogrammed into a grid (layers × x × y, default 25³) of an iron-like sampling calorimeter:
layers of 2 X0 (50 X0 = 5 λ deep), cells of 0.5 Molière radii (±6.25 R_M).

- Longitudinal (Longo–Sestili): depth t ~ Gamma(a, 1/b) in X0, dE/dt ∝ t^(a−1) e^(−bt), b = 0.5,
  t_max = (a−1)/b = ln(E/E_c) + C with C = −0.5 for electrons, +0.5 for photons, E_c = 21.7 MeV,
  and a per-shower jitter of t_max.
- Lateral (Grindhammer–Peters-like): a core + halo mixture of f(r) ∝ r R²/(r² + R²)² (sampled
  exactly: r = R √(u / (1 − u))); with the depth τ = t / t_max the core radius grows, the core
  fraction falls, and the halo radius is wide early, narrowest near t_max and wide again late.
- Sampling fluctuations: a compound-Poisson number of spots (100 per GeV) with gamma-distributed
  spot energies, tuned so that σ/E = a/√E with the stochastic term a = 12 %.
- Pions: a MIP track (20 MeV/X0) up to an interaction depth ~ Exp(λ = 10 X0), then an EM part
  (π0 → γγ, fraction f_em = 1 − E^(−0.18) on average, Beta-distributed per shower) with the EM
  profiles, and a hadronic part that is longer (Gamma in units of λ, maximum at 0.2 ln E + 0.7 λ),
  wider (core 1.5 R_M, halo 5 R_M) and only partly visible (h/e ≈ 0.6 ± 0.3/√E: nuclear binding
  energy and neutrons), so pions have a lower response and larger fluctuations (e/h > 1).
- Energies in GeV at the EM scale times ``sampling_fraction`` (1: calibrated); what leaves the grid
  is lost (leakage), as in a real calorimeter.

What it is not: a detector simulation. There is no Geant4 (its data files cannot be downloaded
here), no particle transport, noise, readout or magnetic field; the numbers are of the right size,
not a description of any real calorimeter.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import asdict, dataclass

import numpy as np

from psdist.data.dataset import ZarrDataset
from psdist.data.write import write_zarr
from psdist.errors import ConfigError

__all__ = [
    "PARTICLES",
    "ShowerModel",
    "generate",
    "lateral_profile",
    "longitudinal_profile",
    "main",
    "shape_distance",
    "shape_distances",
    "total_energy",
    "write_dataset",
]

logger = logging.getLogger(__name__)

#: particle name -> class label (charge does not enter the model)
PARTICLES = {"e-": 0, "e+": 0, "gamma": 1, "pi+": 2, "pi-": 2}
CLASS_NAMES = ["e", "gamma", "pi"]
_CHUNK = 128  # showers histogrammed at once (bounds memory; fixed so the output is reproducible)


@dataclass(frozen=True)
class ShowerModel:
    """Calorimeter and shower parameters (lengths: depth in X0, lateral in Molière radii)."""

    layer_x0: float = 2.0
    cell_rm: float = 0.5
    lambda_x0: float = 10.0  # interaction length, iron-like
    critical_energy: float = 0.0217  # GeV
    b: float = 0.5
    c_electron: float = -0.5
    c_photon: float = 0.5
    tmax_jitter: float = 0.1  # relative per-shower spread of t_max
    stochastic: float = 0.12  # a in σ/E = a/√E
    spots_per_gev: float = 100.0
    sampling_fraction: float = 1.0
    mip_gev_per_x0: float = 0.02
    fem_k: float = 0.82  # f_em = 1 - (E / 1 GeV)^(k - 1)
    h_over_e: float = 0.6
    had_core_rm: float = 1.5
    had_halo_rm: float = 5.0
    had_b: float = 1.0  # per λ

    def check(self) -> None:
        if self.spots_per_gev * self.stochastic**2 <= 1:
            raise ConfigError(
                f"spots_per_gev={self.spots_per_gev} is too low for stochastic={self.stochastic}: "
                f"Poisson spot counts alone fluctuate more; use spots_per_gev > {1 / self.stochastic**2:.0f}"
            )
        if not 0 < self.sampling_fraction <= 1:
            raise ConfigError(f"sampling_fraction={self.sampling_fraction!r} must lie in (0, 1]")


def _em_lateral(rng: np.random.Generator, tau: np.ndarray) -> np.ndarray:
    """Radii (R_M) of EM spots at relative depth τ: core + halo, both widening with depth."""
    tau = np.clip(tau, 0, 4)
    r_core = 0.05 + 0.1 * tau
    r_halo = 0.6 * (np.exp(-2.6 * (tau - 0.65)) + np.exp(0.4 * (tau - 0.65)))
    core = rng.random(tau.shape, dtype=np.float32) < np.clip(0.9 - 0.2 * tau, 0.4, 0.9)
    u = rng.random(tau.shape, dtype=np.float32)
    radii: np.ndarray = np.where(core, r_core, r_halo) * np.sqrt(u / (1 - u))
    return radii


def _had_lateral(rng: np.random.Generator, depth_lambda: np.ndarray, m: ShowerModel) -> np.ndarray:
    core = rng.random(depth_lambda.shape, dtype=np.float32) < 0.6
    u = rng.random(depth_lambda.shape, dtype=np.float32)
    grow = 1 + 0.2 * np.clip(depth_lambda, 0, 5)
    radii: np.ndarray = np.where(core, m.had_core_rm, m.had_halo_rm) * grow * np.sqrt(u / (1 - u))
    return radii


def _components(
    rng: np.random.Generator, label: np.ndarray, e: np.ndarray, m: ShowerModel
) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Shower components (an EM one each, a hadronic one per pion) as arrays: shower index, visible
    energy, start depth, gamma shape and rate (depth in X0), t_max, hadronic?; and the pions'
    interaction depth and mask."""
    n = len(e)
    jitter = np.exp(m.tmax_jitter * rng.standard_normal(n))
    c = np.where(label == 1, m.c_photon, m.c_electron)
    tmax = np.maximum(np.log(e / m.critical_energy) + c, 0.5) * jitter
    pion = label == 2
    t0 = np.where(pion, rng.exponential(m.lambda_x0, n), 0.0)
    mean_fem = 1 - e ** (m.fem_k - 1)
    conc = 4 + e / 2  # more secondaries at higher E: f_em fluctuates less
    fem = np.where(pion, rng.beta(mean_fem * conc, (1 - mean_fem) * conc), 1.0)
    h = np.clip(m.h_over_e + 0.3 / np.sqrt(e) * rng.standard_normal(n), 0.2, 1.0)
    mip = np.where(pion, m.mip_gev_per_x0 * t0, 0.0)  # energy lost on the track before interacting
    avail = np.maximum(e - mip, 0)
    # the EM part of a pion shower: photons from several π0, each carrying ~1/4 of it
    tmax_pi = (
        np.maximum(
            np.log(np.maximum(avail * fem / 4, 2 * m.critical_energy) / m.critical_energy) + m.c_photon, 0.5
        )
        * jitter
    )
    tmax = np.where(pion, tmax_pi, tmax)
    idx = np.arange(n)
    em = (idx, avail * fem, t0, m.b * tmax + 1, np.full(n, m.b), tmax, np.zeros(n, bool))
    tmax_h = (0.2 * np.log(np.maximum(avail, 1.0)) + 0.7) * m.lambda_x0
    b_h = m.had_b / m.lambda_x0
    had = (
        idx[pion],
        (avail * (1 - fem) * h)[pion],
        t0[pion],
        (b_h * tmax_h + 1)[pion],
        np.full(pion.sum(), b_h),
        tmax_h[pion],
        np.ones(pion.sum(), bool),
    )
    return tuple(np.concatenate([a, b_]) for a, b_ in zip(em, had, strict=True)), t0, pion


def _showers(
    rng: np.random.Generator, label: np.ndarray, e: np.ndarray, grid: tuple[int, int, int], m: ShowerModel
) -> np.ndarray:
    n = len(e)
    nl, nx, ny = grid
    (sh, vis, t0, a, b, tmax, had), pion_t0, pion = _components(rng, label, e, m)
    counts = rng.poisson(m.spots_per_gev * vis)
    c = np.repeat(np.arange(len(sh)), counts)
    t = t0[c] + rng.standard_gamma(a[c].astype(np.float32), dtype=np.float32) / b[c].astype(np.float32)
    r = np.empty(len(c), np.float32)
    hc = had[c]
    r[hc] = _had_lateral(rng, (t[hc] - t0[c[hc]]) / m.lambda_x0, m)
    r[~hc] = _em_lateral(rng, (t[~hc] - t0[c[~hc]]) / tmax[c[~hc]])
    phi = rng.random(len(c), dtype=np.float32) * np.float32(2 * np.pi)
    # impact point: uniform within the central cell, so the axis is not always a cell centre
    off = rng.uniform(-0.5, 0.5, (n, 2)) * m.cell_rm
    s = sh[c]
    ix = np.floor((r * np.cos(phi) + off[s, 0]) / m.cell_rm + nx / 2).astype(np.int64)
    iy = np.floor((r * np.sin(phi) + off[s, 1]) / m.cell_rm + ny / 2).astype(np.int64)
    il = np.floor(t / m.layer_x0).astype(np.int64)
    k = 1 / (m.spots_per_gev * m.stochastic**2 - 1)  # spot-energy shape giving σ/E = a/√E
    w = rng.standard_gamma(k, len(c), dtype=np.float32) * np.float32(1 / (k * m.spots_per_gev))
    ok = (il < nl) & (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    flat = ((s * nl + il) * nx + ix) * ny + iy
    x = np.bincount(flat[ok], weights=w[ok], minlength=n * nl * nx * ny).reshape(n, nl, nx, ny)
    # MIP track of the pions before the first interaction, along the axis
    track = np.clip(pion_t0[:, None] - np.arange(nl)[None, :] * m.layer_x0, 0, m.layer_x0) * m.mip_gev_per_x0
    cx = np.floor(off[:, 0] / m.cell_rm + nx / 2).astype(np.int64)
    cy = np.floor(off[:, 1] / m.cell_rm + ny / 2).astype(np.int64)
    x[np.arange(n)[:, None], np.arange(nl)[None, :], cx[:, None], cy[:, None]] += track * pion[:, None]
    return (x * m.sampling_fraction).astype(np.float32)


def generate(
    n: int,
    energy_range: tuple[float, float] = (10.0, 100.0),
    particles: tuple[str, ...] = ("e-", "gamma", "pi+"),
    grid: tuple[int, int, int] = (25, 25, 25),
    seed: int = 0,
    model: ShowerModel | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` showers, the particles in equal shares (shuffled), energies uniform in ``energy_range``.

    Returns ``x`` (n, 1, layers, x, y) float32 deposited energies in GeV (axis 2 is the depth),
    ``particle`` (n,) int64 labels of :data:`PARTICLES` (0 e±, 1 γ, 2 π±) and ``energy`` (n,)
    float32 true energies in GeV. Deterministic for a seed; ~1000 showers of 25³ per CPU second.
    """
    model = model or ShowerModel()
    model.check()
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"n={n!r} must be a positive integer")
    bad = [p for p in particles if p not in PARTICLES]
    if bad or not particles:
        raise ConfigError(f"particles={particles!r}: choose from {sorted(PARTICLES)}")
    lo, hi = energy_range
    if not 0 < lo <= hi:
        raise ConfigError(f"energy_range={energy_range!r} must satisfy 0 < low <= high (GeV), e.g. (10, 100)")
    if len(grid) != 3 or any(not isinstance(g, int) or g < 1 for g in grid):
        raise ConfigError(f"grid={grid!r} must be three positive integers (layers, x, y)")
    rng = np.random.default_rng(seed)
    label = np.array([PARTICLES[p] for p in particles])[rng.permutation(np.arange(n) % len(particles))]
    energy = rng.uniform(lo, hi, n)
    x = np.concatenate(
        [
            _showers(rng, label[i : i + _CHUNK], energy[i : i + _CHUNK], grid, model)
            for i in range(0, n, _CHUNK)
        ]
    )
    return x[:, None], label.astype(np.int64), energy.astype(np.float32)


def write_dataset(
    path: str | os.PathLike[str],
    n: int = 10000,
    val_n: int | None = None,
    *,
    energy_range: tuple[float, float] = (10.0, 100.0),
    particles: tuple[str, ...] = ("e-", "gamma", "pi+"),
    grid: tuple[int, int, int] = (25, 25, 25),
    seed: int = 0,
    val_seed: int | None = None,
    model: ShowerModel | None = None,
    chunk_rows: int = 256,
    overwrite: bool = False,
) -> ZarrDataset:
    """Write ``x``/``y`` (particle class), ``energy``, ``target`` and ``_val`` twins to Zarr.

    ``y`` (N,) int64 is the particle class and ``energy`` (N,) float32 the true energy in GeV:
    the two targets of the calorimeter CNN, ``ZarrDataset(path, targets=["y", "energy"])`` with
    ``calo_cnn(split=True)`` and :func:`psdist.hep.models.calo_loss`. ``target`` is the same
    pair packed into one (N, 2) float32 array (class, energy), the labels of the GAN and of the
    single-target form ``ZarrDataset(path, y="target", y_val="target_val")``. Validation showers
    use ``val_seed`` (default seed + 1 000 003) and ``val_n`` (default n/5). For energy
    regression alone use ``ZarrDataset(path, y="energy", y_val="energy_val")``.
    """
    model = model or ShowerModel()
    val_n = val_n if val_n is not None else max(1, n // 5)
    val_seed = val_seed if val_seed is not None else seed + 1_000_003
    if val_seed == seed:
        raise ConfigError(f"val_seed={val_seed} equals seed: validation would repeat training showers")
    x, y, e = generate(n, energy_range, particles, grid, seed=seed, model=model)
    xv, yv, ev = generate(val_n, energy_range, particles, grid, seed=val_seed, model=model)
    logger.info("psdist: writing %d + %d showers to %s", n, val_n, path)
    attrs = {
        "generator": "psdist.hep.showers",
        "classes": CLASS_NAMES,
        "particles": list(particles),
        "energy_range": list(energy_range),
        "grid": list(grid),
        "axes": ["channel", "layer", "x", "y"],
        "units": "GeV",
        "seed": seed,
        "val_seed": val_seed,
        "model": asdict(model),
    }
    extra = {
        "energy": e, "energy_val": ev,
        "target": np.stack([y, e], axis=1).astype(np.float32),
        "target_val": np.stack([yv, ev], axis=1).astype(np.float32),
    }
    return write_zarr(path, x, y, xv, yv, chunk_rows=chunk_rows, overwrite=overwrite, attrs=attrs, extra=extra)


# ------------------------------------------------------------------------------- shower shapes
def _cells(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 5:
        x = x[:, 0]
    if x.ndim != 4:
        raise ConfigError(f"showers must have shape (N, 1, layers, x, y) or (N, layers, x, y), not {x.shape}")
    return x


def total_energy(x: np.ndarray) -> np.ndarray:
    """Total deposited energy per shower, (N,)."""
    total: np.ndarray = _cells(x).sum(axis=(1, 2, 3))
    return total


def longitudinal_profiles(x: np.ndarray) -> np.ndarray:
    """Energy per layer of each shower, (N, layers)."""
    profiles: np.ndarray = _cells(x).sum(axis=(2, 3))
    return profiles


def longitudinal_profile(x: np.ndarray) -> np.ndarray:
    """Mean energy per layer over the showers, (layers,)."""
    mean: np.ndarray = longitudinal_profiles(x).mean(axis=0)
    return mean


def lateral_profiles(x: np.ndarray) -> np.ndarray:
    """Energy in rings of one cell width around each shower's axis, (N, ⌈x/2⌉ + 1).

    The axis is the shower's energy-weighted (x, y) centroid; ring k holds the cells whose centres
    lie at k <= r < k + 1 cells from it (the last ring collects everything further out).
    """
    c = _cells(x).sum(axis=1)  # (N, x, y)
    n, nx, ny = c.shape
    tot = np.maximum(c.sum(axis=(1, 2)), 1e-12)
    cx = (c.sum(axis=2) * np.arange(nx)).sum(axis=1) / tot
    cy = (c.sum(axis=1) * np.arange(ny)).sum(axis=1) / tot
    r = np.hypot(
        np.arange(nx)[None, :, None] - cx[:, None, None], np.arange(ny)[None, None, :] - cy[:, None, None]
    )
    nb = (max(nx, ny) + 1) // 2 + 1
    ring = np.minimum(r.astype(np.int64), nb - 1)
    flat = (np.arange(n)[:, None, None] * nb + ring).ravel()
    return np.bincount(flat, weights=c.ravel(), minlength=n * nb).reshape(n, nb)


def lateral_profile(x: np.ndarray) -> np.ndarray:
    """Mean energy per ring over the showers (see :func:`lateral_profiles`)."""
    mean: np.ndarray = lateral_profiles(x).mean(axis=0)
    return mean


def _w1_hist(p: np.ndarray, q: np.ndarray) -> float:
    """Wasserstein-1 distance of two histograms on the same bins, in units of the full range."""
    p, q = p / max(p.sum(), 1e-12), q / max(q.sum(), 1e-12)
    return float(np.abs(np.cumsum(p) - np.cumsum(q)).sum() / len(p))


def profile_distances(
    real_long: np.ndarray, fake_long: np.ndarray, real_lat: np.ndarray, fake_lat: np.ndarray,
    real_total: np.ndarray, fake_total: np.ndarray,
) -> dict[str, float]:
    """:func:`shape_distances` from per-shower profiles and totals (what a GAN's workers send)."""
    qs = np.linspace(0.005, 0.995, 100)
    return {
        "longitudinal": _w1_hist(real_long.mean(axis=0), fake_long.mean(axis=0)),
        "lateral": _w1_hist(real_lat.mean(axis=0), fake_lat.mean(axis=0)),
        "energy": float(
            np.abs(np.quantile(real_total, qs) - np.quantile(fake_total, qs)).mean() / max(real_total.mean(), 1e-12)
        ),
    }


def shape_distances(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """Distances between two sets of showers: 0 when they are the same set, growing as they differ.

    ``longitudinal`` and ``lateral``: Wasserstein-1 distances between the normalised mean profiles
    (units of the grid's depth / radius); ``energy``: Wasserstein-1 distance between the
    total-energy distributions (100 quantiles), divided by the real showers' mean total energy.
    """
    return profile_distances(
        longitudinal_profiles(real), longitudinal_profiles(fake), lateral_profiles(real),
        lateral_profiles(fake), total_energy(real), total_energy(fake),
    )


def shape_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Sum of :func:`shape_distances`: one number to compare generators (lower is better)."""
    return float(sum(shape_distances(real, fake).values()))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write parametric calorimeter showers (e-, γ, π±) as Zarr.")
    p.add_argument("path", help="output Zarr directory")
    p.add_argument("--showers", type=int, default=10000, help="training showers (default 10000)")
    p.add_argument("--val-showers", type=int, default=None, help="validation showers (default showers/5)")
    p.add_argument("--energy", type=float, nargs=2, default=(10.0, 100.0), metavar=("MIN", "MAX"))
    p.add_argument("--particles", nargs="+", default=["e-", "gamma", "pi+"], choices=sorted(PARTICLES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-rows", type=int, default=256)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_dataset(
        a.path,
        a.showers,
        a.val_showers,
        energy_range=tuple(a.energy),
        particles=tuple(a.particles),
        seed=a.seed,
        chunk_rows=a.chunk_rows,
        overwrite=a.overwrite,
    )


if __name__ == "__main__":
    main()
