"""Labelled jet and event samples from Pythia 8 + FastJet (pp at 13 TeV), written as Zarr.

What it is: generator-level physics. Each class is a separate Pythia process (settings measured in
``shared/recipes/hep-data.md``); final-state visible particles with |η| < 2.5 are clustered with
anti-kT (FastJet). Jets: quark vs gluon (R = 0.4, Z → νν recoil), W vs QCD and top vs QCD
(R = 0.8; W from WZ with Z → νν, so that the leading visible jet is the W and not a recoil jet).
Events: tt̄ / W(→eν, μν)+jet / Z(→ee, μμ)+jet / QCD, summarised in a fixed-size vector
(:func:`event_columns`) plus a particle list.

What it is not: a detector simulation. Particles are stable generator-level particles, missing ET
is the true neutrino sum; smear the outputs if a study needs detector effects.

Parallelism and seeds: the work is cut into tasks, each one class and one Pythia instance with
``Random:seed = seed + task index``; task ``c * tasks + k`` is chunk ``k`` of class ``c``. Tasks run
in-process or as Dask tasks (``client.map``); results are joined in task order and shuffled with a
permutation seeded by ``seed``, so the arrays depend on (seed, tasks, settings), never on the
cluster. Pythia itself dominates the cost (~10 ms per event with MPI on, ~2 ms without, plus
~0.5-0.8 s to initialise each task): events are exported in batches (``Pythia.nextBatch``) and
processed with numpy, so there is no Python loop over particles.

Command line: ``python -m psdist.hep.pythia jets --kind qg out.zarr --per-class 1000 --workers 2``
or ``python -m psdist.hep.pythia events out.zarr --per-class 1000``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from psdist.errors import ConfigError
from psdist.hep._pythia_core import (
    EVENT_CLASSES,
    JET_KINDS,
    PID_CODES,
    PROCESSES,
    GenSettings,
    event_columns,
    event_task,
    jet_task,
)

__all__ = [
    "EVENT_CLASSES",
    "JET_KINDS",
    "PID_CODES",
    "PROCESSES",
    "GenSettings",
    "event_columns",
    "generate_events",
    "generate_jets",
    "main",
    "write_events",
    "write_jets",
]

logger = logging.getLogger(__name__)

_SEED_MAX = 900_000_000  # Pythia's Random:seed range is 1..900000000
_VAL_SEED_OFFSET = 1_000_000


def _plan(
    classes: Sequence[str], n_per_class: int, seed: int, tasks: int | None
) -> list[tuple[str, int, int, int]]:
    """(process, label, n, pythia seed) per task; task c * tasks + k is chunk k of class c."""
    if not isinstance(n_per_class, int) or n_per_class < 1:
        raise ConfigError(f"n_per_class={n_per_class!r} must be a positive integer")
    tasks = tasks if tasks is not None else max(1, math.ceil(n_per_class / 500))
    if not isinstance(tasks, int) or tasks < 1:
        raise ConfigError(f"tasks={tasks!r} must be a positive integer (tasks per class)")
    if not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed={seed!r} must be an integer >= 1 (Pythia seeds are seed + task index)")
    seed, last = int(seed), int(seed) + len(classes) * tasks - 1
    if seed < 1 or last > _SEED_MAX:
        raise ConfigError(
            f"seed={seed!r} gives Pythia seeds {seed}..{last}; they must lie in 1..{_SEED_MAX}: "
            "pass a seed >= 1 and small enough"
        )
    plan = []
    for c, name in enumerate(classes):
        for k in range(tasks):
            n = n_per_class // tasks + (k < n_per_class % tasks)
            if n:
                plan.append((name, c, n, seed + c * tasks + k))
    return plan


def _run(
    fn: Callable[..., dict[str, np.ndarray]],
    plan: list[tuple[str, int, int, int]],
    seed: int,
    s: GenSettings,
    client: Any | None,
) -> dict[str, np.ndarray]:
    logger.info(
        "psdist: %d Pythia tasks (%d rows) %s",
        len(plan),
        sum(t[2] for t in plan),
        "on Dask" if client is not None else "in this process",
    )
    if client is None:
        parts = [fn(*t, s) for t in plan]
    else:  # gather keeps the order of the plan: the output does not depend on the cluster
        futures = client.map(fn, *zip(*plan, strict=True), [s] * len(plan), pure=False)
        parts = client.gather(futures)
    perm = np.random.default_rng(seed).permutation(sum(len(p["y"]) for p in parts))
    return {k: np.concatenate([p[k] for p in parts])[perm] for k in parts[0]}


def _jet_settings(kind: str, fields: dict[str, Any]) -> tuple[tuple[str, ...], GenSettings]:
    if kind not in JET_KINDS:
        raise ConfigError(f"kind={kind!r} is unknown; choose one of {sorted(JET_KINDS)}")
    classes, radius = JET_KINDS[kind]
    return classes, _settings({"radius": radius, **fields})


def _settings(fields: dict[str, Any]) -> GenSettings:
    pthat = fields.pop("pthat")
    if not isinstance(pthat, (tuple, list)) or len(pthat) != 2:
        raise ConfigError(f"pthat={pthat!r} must be a pair (min, max) in GeV; max None for no upper limit")
    known = set(GenSettings.__dataclass_fields__) - {"pthat_min", "pthat_max"}
    bad = sorted(set(fields) - known)
    if bad:
        raise ConfigError(f"unknown generator setting(s) {bad}; known: {sorted(known)} and pthat")
    s = GenSettings(**fields, pthat_min=pthat[0], pthat_max=pthat[1])
    s.check()
    return s


def generate_jets(
    kind: str = "qg",
    n_per_class: int = 1000,
    seed: int = 1,
    *,
    max_particles: int = 30,
    image_pixels: int = 32,
    pthat: tuple[float, float | None] = (500.0, 550.0),
    mpi: bool = True,
    tasks: int | None = None,
    client: Any | None = None,
    **settings: Any,
) -> dict[str, np.ndarray]:
    """Leading jets of ``kind`` ("qg", "wqcd", "tqcd"), ``n_per_class`` per class, shuffled.

    Returns ``x`` (N, max_particles, 4) float32 constituents sorted by pT with features (pT / jet
    pT, Δη, Δφ to the jet axis, pid code of :data:`PID_CODES`), zero-padded; ``points`` (N,
    max_particles, 2) float32 the (Δη, Δφ) columns of ``x`` alone (the coordinates a point-cloud
    tagger such as :func:`psdist.hep.taggers.particlenet` finds neighbours in, zero where masked);
    ``mask`` (N, max_particles) bool; ``x_image`` (N, 1, P, P) float32, the pT fraction in an η–φ grid over ±R
    (axis 2 η, axis 3 φ); ``jet`` (N, 5) float32 (pT, η, φ, mass, constituents); ``y`` int64
    (index into ``JET_KINDS[kind][0]``, e.g. 1 = quark). ``tasks`` is per class (default
    ceil(n/500)); ``client`` runs them on Dask; ``settings`` are further :class:`GenSettings`
    fields (``jet_pt_min``, ``eta_max``, ``radius``...).
    """
    classes, s = _jet_settings(
        kind, dict(settings, max_particles=max_particles, image_pixels=image_pixels, pthat=pthat, mpi=mpi)
    )
    return _run(jet_task, _plan(classes, n_per_class, seed, tasks), seed, s, client)


def generate_events(
    n_per_class: int = 1000,
    seed: int = 1,
    *,
    max_particles: int = 50,
    pthat: tuple[float, float | None] = (100.0, None),
    mpi: bool = True,
    tasks: int | None = None,
    client: Any | None = None,
    **settings: Any,
) -> dict[str, np.ndarray]:
    """Events of :data:`EVENT_CLASSES` (labels 0..3), ``n_per_class`` each, shuffled.

    Returns ``x`` (N, len(event_columns())) float32, see :func:`event_columns`; ``x_particles``
    (N, max_particles, 4) float32 the leading visible particles (pT [GeV], η, φ, pid code),
    zero-padded; ``mask`` (N, max_particles) bool; ``y`` int64. Jets use R = 0.4 unless
    ``radius=`` is given; other arguments as in :func:`generate_jets`. Features are in physical
    units: standardise them before training.
    """
    s = _settings(dict(settings, max_particles=max_particles, pthat=pthat, mpi=mpi))
    return _run(event_task, _plan(EVENT_CLASSES, n_per_class, seed, tasks), seed, s, client)


def _write(
    path: str | os.PathLike[str],
    task: Callable[..., dict[str, np.ndarray]],
    classes: Sequence[str],
    s: GenSettings,
    n: int,
    n_val: int | None,
    seed: int,
    val_seed: int | None,
    tasks: int | None,
    client: Any | None,
    chunk_rows: int,
    overwrite: bool,
    attrs: dict[str, Any],
) -> Any:
    from importlib.metadata import version

    from psdist.data.write import write_zarr

    n_val = n_val if n_val is not None else max(1, n // 5)
    plan = _plan(classes, n, seed, tasks)
    val_seed = seed + _VAL_SEED_OFFSET if val_seed is None else val_seed
    val_plan = _plan(classes, n_val, val_seed, tasks)
    used = {t[3] for t in plan}
    if used & {t[3] for t in val_plan}:
        raise ConfigError(
            f"val_seed={val_seed} reuses training Pythia seeds {min(used)}..{max(used)}: validation "
            f"events would repeat training ones; pass val_seed > {max(used)}"
        )
    train = _run(task, plan, seed, s, client)
    val = _run(task, val_plan, val_seed, s, client)
    attrs = {
        **attrs,
        "classes": list(classes),
        "processes": {c: list(PROCESSES[c]) for c in classes},
        "settings": asdict(s),
        "seed": seed,
        "val_seed": val_seed,
        "pid_codes": PID_CODES,
        "pythia_seeds": {"train": [t[3] for t in plan], "val": [t[3] for t in val_plan]},
        "versions": {m: version(m) for m in ("pythia8mc", "fastjet")},
    }
    logger.info("psdist: writing %d + %d rows to %s", len(train["y"]), len(val["y"]), path)
    extra = {k: v for k, v in train.items() if k not in ("x", "y")}
    extra.update({f"{k}_val": v for k, v in val.items() if k not in ("x", "y")})
    return write_zarr(
        path, train["x"], train["y"], val["x"], val["y"],
        chunk_rows=chunk_rows, overwrite=overwrite, attrs=attrs, extra=extra,
    )


def write_jets(
    path: str | os.PathLike[str],
    kind: str = "qg",
    n_per_class: int = 1000,
    val_per_class: int | None = None,
    seed: int = 1,
    val_seed: int | None = None,
    *,
    client: Any | None = None,
    tasks: int | None = None,
    max_particles: int = 30,
    image_pixels: int = 32,
    pthat: tuple[float, float | None] = (500.0, 550.0),
    mpi: bool = True,
    chunk_rows: int = 1024,
    overwrite: bool = False,
    **settings: Any,
) -> Any:
    """Generate jets as :func:`generate_jets` and write them to a Zarr group; returns its ZarrDataset.

    Arrays: ``x``/``x_val`` (particle lists), ``y``/``y_val``, and ``points``, ``mask``,
    ``x_image``, ``jet`` with their ``_val`` twins, all chunked alike so that a task reads aligned
    rows (train a CNN with ``ZarrDataset(path, x="x_image", x_val="x_image_val")``, a point-cloud
    tagger with ``ZarrDataset(path, inputs=["points", "x", "mask"], targets="y")``). Validation uses ``val_seed`` (default seed + 1 000 000) and
    ``val_per_class`` (default n/5). The group attrs record classes, settings and Pythia seeds.
    """
    classes, s = _jet_settings(
        kind, dict(settings, max_particles=max_particles, image_pixels=image_pixels, pthat=pthat, mpi=mpi)
    )
    attrs = {
        "generator": "psdist.hep.pythia.jets",
        "kind": kind,
        "features": ["pt_fraction", "deta", "dphi", "pid_code"],
        "jet_columns": ["pt", "eta", "phi", "mass", "n_constituents"],
    }
    return _write(
        path,
        jet_task,
        classes,
        s,
        n_per_class,
        val_per_class,
        seed,
        val_seed,
        tasks,
        client,
        chunk_rows,
        overwrite,
        attrs,
    )


def write_events(
    path: str | os.PathLike[str],
    n_per_class: int = 1000,
    val_per_class: int | None = None,
    seed: int = 1,
    val_seed: int | None = None,
    *,
    client: Any | None = None,
    tasks: int | None = None,
    max_particles: int = 50,
    pthat: tuple[float, float | None] = (100.0, None),
    mpi: bool = True,
    chunk_rows: int = 1024,
    overwrite: bool = False,
    **settings: Any,
) -> Any:
    """Generate events as :func:`generate_events` and write ``x``/``y``/``x_val``/``y_val`` plus
    ``x_particles`` and ``mask`` (and ``_val``); the group attrs name the columns and classes."""
    s = _settings(dict(settings, max_particles=max_particles, pthat=pthat, mpi=mpi))
    attrs = {
        "generator": "psdist.hep.pythia.events",
        "columns": event_columns(s.n_jets, s.n_leptons),
        "particle_features": ["pt", "eta", "phi", "pid_code"],
    }
    return _write(
        path,
        event_task,
        EVENT_CLASSES,
        s,
        n_per_class,
        val_per_class,
        seed,
        val_seed,
        tasks,
        client,
        chunk_rows,
        overwrite,
        attrs,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write Pythia 8 + FastJet jet or event samples as Zarr.")
    p.add_argument("what", choices=["jets", "events"])
    p.add_argument("path", help="output Zarr directory")
    p.add_argument("--kind", choices=sorted(JET_KINDS), default="qg", help="jets: which tagging problem")
    p.add_argument("--per-class", type=int, default=1000, help="training samples per class")
    p.add_argument(
        "--val-per-class", type=int, default=None, help="validation samples per class (default n/5)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--val-seed", type=int, default=None)
    p.add_argument("--workers", type=int, default=0, help="Dask worker processes (0: in this process)")
    p.add_argument("--tasks", type=int, default=None, help="tasks per class (default ceil(n/500))")
    p.add_argument("--max-particles", type=int, default=None)
    p.add_argument("--pixels", type=int, default=32, help="jets: image pixels per side")
    p.add_argument("--pthat", type=float, nargs=2, default=None, metavar=("MIN", "MAX"), help="MAX < 0: none")
    p.add_argument("--no-mpi", action="store_true", help="switch multiparton interactions off (~3x faster)")
    p.add_argument("--chunk-rows", type=int, default=1024)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kw: dict[str, Any] = {"mpi": not a.no_mpi}
    if a.pthat:
        kw["pthat"] = (a.pthat[0], a.pthat[1] if a.pthat[1] >= 0 else None)
    if a.max_particles:
        kw["max_particles"] = a.max_particles
    common = dict(
        val_per_class=a.val_per_class,
        seed=a.seed,
        val_seed=a.val_seed,
        tasks=a.tasks,
        chunk_rows=a.chunk_rows,
        overwrite=a.overwrite,
        **kw,
    )
    client = cluster = None
    if a.workers > 0:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=a.workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    try:
        if a.what == "jets":
            write_jets(a.path, a.kind, a.per_class, client=client, image_pixels=a.pixels, **common)
        else:
            write_events(a.path, a.per_class, client=client, **common)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


if __name__ == "__main__":
    main()
