"""Pythia 8 + FastJet internals of :mod:`psdist.hep.pythia`: processes, event read-out, clustering.

One task = one Pythia instance of one process: events come in batches as numpy arrays (Pythia's
``nextBatch`` export, no Python loop over particles), are clustered with anti-kT (one FastJet call
per batch) and turned into fixed-size records by vectorised numpy. The public API is in
:mod:`psdist.hep.pythia`; task functions live here so that Dask workers import them by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from psdist.errors import ConfigError, DataError

__all__ = [
    "EVENT_CLASSES",
    "JET_KINDS",
    "PID_CODES",
    "PROCESSES",
    "GenSettings",
    "event_columns",
    "event_task",
    "jet_task",
]

_ZNUNU = ("23:onMode = off", "23:onIfAny = 12 14 16")
_WQQ = ("24:onMode = off", "24:onIfAny = 1 2 3 4")
#: Pythia settings of each process (added to beams, pT-hat window, MPI switch and seed).
PROCESSES: dict[str, tuple[str, ...]] = {
    "quark": ("WeakBosonAndParton:qg2gmZq = on", *_ZNUNU),
    "gluon": ("WeakBosonAndParton:qqbar2gmZg = on", *_ZNUNU),
    "w": ("WeakDoubleBoson:ffbar2ZW = on", *_ZNUNU, *_WQQ),
    "top": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on", *_WQQ),
    "qcd": ("HardQCD:all = on",),
    "ttbar": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on"),
    "wjets": (
        "WeakBosonAndParton:qqbar2Wg = on",
        "WeakBosonAndParton:qg2Wq = on",
        "24:onMode = off",
        "24:onIfAny = 11 13",
    ),
    # gmZmode = 2: a pure Z, without the low-mass γ* Drell–Yan tail
    "zjets": (
        "WeakBosonAndParton:qqbar2gmZg = on",
        "WeakBosonAndParton:qg2gmZq = on",
        "WeakZ0:gmZmode = 2",
        "23:onMode = off",
        "23:onIfAny = 11 13",
    ),
}
#: kind -> (class names in label order, jet radius)
JET_KINDS: dict[str, tuple[tuple[str, ...], float]] = {
    "qg": (("gluon", "quark"), 0.4),
    "wqcd": (("qcd", "w"), 0.8),
    "tqcd": (("qcd", "top"), 0.8),
}
EVENT_CLASSES: tuple[str, ...] = ("ttbar", "wjets", "zjets", "qcd")
#: coarse particle-id codes; 0 marks padding, so a padded row of a particle list is all zeros
PID_CODES = {"charged_hadron": 1, "neutral_hadron": 2, "photon": 3, "electron": 4, "muon": 5}


@dataclass(frozen=True)
class GenSettings:
    """Generator settings shared by all tasks of one sample (picklable, stored in the attrs)."""

    radius: float = 0.4
    max_particles: int = 30
    image_pixels: int = 32
    pthat_min: float = 500.0
    pthat_max: float | None = 550.0
    mpi: bool = True
    eta_max: float = 2.5
    jet_pt_min: float = 20.0
    n_jets: int = 6  # events: jets kept in the vector
    n_leptons: int = 2  # events: leptons kept in the vector
    lepton_pt_min: float = 10.0
    batch: int = 64  # events clustered by one FastJet call (the Python overhead is per call)

    def check(self) -> None:
        if not 0 < self.radius <= 1.5:
            raise ConfigError(f"radius={self.radius!r}: use an anti-kT radius in (0, 1.5], e.g. 0.4")
        for name in ("max_particles", "image_pixels", "n_jets", "n_leptons", "batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}={v!r} must be a positive integer")
        if self.pthat_min <= 0 or (self.pthat_max is not None and self.pthat_max <= self.pthat_min):
            raise ConfigError(
                f"pT-hat window ({self.pthat_min!r}, {self.pthat_max!r}) GeV is empty or open at 0; "
                "use e.g. (500, 550) or (100, None)"
            )


def _require(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(
            f"{name} is needed for Pythia samples: pip install pythia8mc==8.317.2 fastjet==3.5.2.0 "
            "(or psdist[hep])"
        ) from e


def _pythia(process: str, pythia_seed: int, s: GenSettings) -> Any:
    pythia8mc = _require("pythia8mc")
    p = pythia8mc.Pythia("", False)  # no banner
    pthat_max = -1.0 if s.pthat_max is None else s.pthat_max  # negative: no upper limit
    lines = (
        "Beams:eCM = 13000",
        *PROCESSES[process],
        f"PhaseSpace:pTHatMin = {s.pthat_min}",
        f"PhaseSpace:pTHatMax = {pthat_max}",
        f"PartonLevel:MPI = {'on' if s.mpi else 'off'}",
        "Print:quiet = on",
        "Random:setSeed = on",
        f"Random:seed = {pythia_seed}",
    )
    for line in lines:
        if not p.readString(line):
            raise ConfigError(f"Pythia rejected the setting {line!r}; check the name against its manual")
    if not p.init():
        raise ConfigError(f"Pythia failed to initialise process {process!r} with {lines}")
    return p


class _Reader:
    """Events from Pythia as numpy arrays, a batch at a time.

    ``Pythia.nextBatch`` exports whole event records as one awkward array in C++: no Python loop
    over particles (that loop, ~3 ms per event, cost more than clustering). It draws the same
    events as repeated ``next()`` calls.
    """

    def __init__(self, pythia: Any, eta_max: float) -> None:
        self.pythia, self.eta_max = pythia, eta_max
        self._charge: dict[int, float] = {}

    def _codes(self, ids: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(ids, return_inverse=True)
        for i in uniq.tolist():
            if i not in self._charge:
                self._charge[i] = self.pythia.particleData.charge(i)
        charged = np.array([self._charge[i] != 0 for i in uniq.tolist()], dtype=bool)[inv]
        a = np.abs(ids)
        return np.select(
            [a == 11, a == 13, a == 22, charged],
            [PID_CODES["electron"], PID_CODES["muon"], PID_CODES["photon"], PID_CODES["charged_hadron"]],
            PID_CODES["neutral_hadron"],
        ).astype(np.int64)

    def batch(self, n: int) -> list[tuple[np.ndarray, ...]]:
        """Up to ``n`` events (failed ones are skipped), each a tuple of its visible particles in
        the acceptance: p4 (k, 4), (pT, η, φ) (k, 3), pid code, PDG id; and the summed (px, py)
        of all its neutrinos (any η)."""
        ak = _require("awkward")
        prt = self.pythia.nextBatch(n, "skip").prt
        final = prt[prt.status > 0]
        counts = ak.to_numpy(ak.num(final))
        event = np.repeat(np.arange(len(counts)), counts)
        p4 = np.stack([ak.to_numpy(ak.flatten(final.p[c])) for c in ("px", "py", "pz", "e")], axis=1)
        ids = ak.to_numpy(ak.flatten(final.id)).astype(np.int64)
        nu = np.isin(np.abs(ids), (12, 14, 16))
        nu_pxpy = np.stack([np.bincount(event[nu], p4[nu, i], minlength=len(counts)) for i in (0, 1)], axis=1)
        kin = _kin(p4)
        keep = ~nu & (kin[:, 0] > 0) & (np.abs(kin[:, 1]) < self.eta_max)
        p4, kin, ids, event = p4[keep], kin[keep, :3], ids[keep], event[keep]
        code = self._codes(ids)
        off = np.concatenate([[0], np.cumsum(np.bincount(event, minlength=len(counts)))])
        cut = [slice(off[e], off[e + 1]) for e in range(len(counts))]
        return [(p4[c], kin[c], code[c], ids[c], nu_pxpy[e]) for e, c in enumerate(cut)]


def _kin(p4: np.ndarray) -> np.ndarray:
    """(pt, eta, phi, m) of four-vectors (n, 4) (px, py, pz, E)."""
    pt = np.hypot(p4[:, 0], p4[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, p4[:, 2] / np.where(pt > 0, pt, 1), 0.0))
    m2 = p4[:, 3] ** 2 - (pt**2 + p4[:, 2] ** 2)
    return np.stack([pt, eta, np.arctan2(p4[:, 1], p4[:, 0]), np.sqrt(np.maximum(m2, 0))], axis=1)


def _wrap(dphi: np.ndarray) -> np.ndarray:
    return (dphi + np.pi) % (2 * np.pi) - np.pi


def _cluster(
    batch: list[np.ndarray], radius: float, pt_min: float
) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Anti-kT on many events in one FastJet call: per event, jets (pT-sorted p4) and constituents."""
    ak, fastjet = _require("awkward"), _require("fastjet")
    try:  # FastJet prints a banner on first use; it would interleave with the workers' logs
        fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)
    except AttributeError:
        pass
    counts = np.array([len(p) for p in batch])
    p4 = np.concatenate(batch)
    arr = ak.unflatten(ak.zip({c: p4[:, i] for i, c in enumerate(("px", "py", "pz", "E"))}), counts)
    cs = fastjet.ClusterSequence(arr, fastjet.JetDefinition(fastjet.antikt_algorithm, radius))
    jets, cidx = cs.inclusive_jets(pt_min), cs.constituent_index(pt_min)  # same jet order
    jp4 = np.stack([ak.to_numpy(ak.flatten(jets[c])) for c in ("px", "py", "pz", "E")], axis=1)
    jet_off = np.concatenate([[0], np.cumsum(ak.to_numpy(ak.num(jets)))])
    con_off = np.concatenate([[0], np.cumsum(ak.to_numpy(ak.flatten(ak.num(cidx, axis=2))))])
    flat = ak.to_numpy(ak.flatten(cidx, axis=None)).astype(np.int64)
    out = []
    for e in range(len(batch)):
        a, b = jet_off[e], jet_off[e + 1]
        order = a + np.argsort(-np.hypot(jp4[a:b, 0], jp4[a:b, 1]), kind="stable")
        out.append((jp4[order], [flat[con_off[j] : con_off[j + 1]] for j in order]))
    return out


def _sample(process: str, n: int, pythia_seed: int, s: GenSettings, record: Callable[..., Any]) -> list[Any]:
    """``n`` records from one Pythia instance.

    ``record(p4, kin, code, ids, nu, jets, cons, s)`` turns one event (its visible particles, their
    (pT, η, φ), pid codes, PDG ids, the neutrinos' (px, py), the pT-sorted jets and their
    constituent indices) into a tuple of arrays, or None to skip the event.
    """
    pythia = _pythia(process, pythia_seed, s)
    reader = _Reader(pythia, s.eta_max)
    out: list[Any] = []
    tries = 0
    while len(out) < n:
        want = min(s.batch, n - len(out))
        tries += want
        if tries > 10 * n + 100:
            raise DataError(
                f"Pythia gave only {len(out)} of {n} {process!r} samples in {tries} events "
                f"(seed {pythia_seed}); widen the pT-hat window or lower jet_pt_min"
            )
        events = [ev for ev in reader.batch(want) if len(ev[0])]
        if not events:
            continue
        for ev, (jets, cons) in zip(
            events, _cluster([e[0] for e in events], s.radius, s.jet_pt_min), strict=True
        ):
            r = record(*ev, jets, cons, s)
            if r is not None and len(out) < n:
                out.append(r)
    return out


def _stack(records: list[tuple[np.ndarray, ...]], label: int) -> dict[str, np.ndarray]:
    cols = list(zip(*records, strict=True))
    return {"y": np.full(len(records), label, np.int64), **{f"_{i}": np.stack(c) for i, c in enumerate(cols)}}


# ------------------------------------------------------------------------------------------- jets
def _jet_record(
    p4: np.ndarray,
    kin: np.ndarray,
    code: np.ndarray,
    ids: np.ndarray,
    nu: np.ndarray,
    jets: np.ndarray,
    cons: list[np.ndarray],
    s: GenSettings,
) -> tuple[np.ndarray, ...] | None:
    if not len(jets):
        return None
    jet = _kin(jets[:1])[0]
    idx = cons[0][np.argsort(-kin[cons[0], 0], kind="stable")]
    z = kin[idx, 0] / jet[0]
    deta, dphi = kin[idx, 1] - jet[1], _wrap(kin[idx, 2] - jet[2])
    k = min(s.max_particles, len(idx))
    parts = np.zeros((s.max_particles, 4), np.float32)
    parts[:k] = np.stack([z, deta, dphi, code[idx]], axis=1)[:k]
    # image from all constituents; the few just outside the ±R square (jets are not exact cones) drop out
    pix, r = s.image_pixels, s.radius
    ie = np.floor((deta + r) / (2 * r) * pix).astype(np.int64)
    ip = np.floor((dphi + r) / (2 * r) * pix).astype(np.int64)
    ok = (ie >= 0) & (ie < pix) & (ip >= 0) & (ip < pix)
    img = np.bincount(ie[ok] * pix + ip[ok], weights=z[ok], minlength=pix * pix).reshape(1, pix, pix)
    return (
        parts,
        np.arange(s.max_particles) < k,
        img.astype(np.float32),
        np.append(jet, len(idx)).astype(np.float32),
    )


def jet_task(process: str, label: int, n: int, pythia_seed: int, s: GenSettings) -> dict[str, np.ndarray]:
    """One task: ``n`` leading jets of ``process`` labelled ``label`` (arrays as in generate_jets)."""
    d = _stack(_sample(process, n, pythia_seed, s, _jet_record), label)
    # the (Δη, Δφ) coordinates again, on their own: point-cloud taggers find neighbours in this
    # plane (padded rows of x are zero, so the points are zero where masked too)
    points = np.ascontiguousarray(d["_0"][..., 1:3])
    return {"x": d["_0"], "points": points, "mask": d["_1"], "x_image": d["_2"], "jet": d["_3"], "y": d["y"]}


# ----------------------------------------------------------------------------------------- events
def event_columns(n_jets: int = 6, n_leptons: int = 2) -> list[str]:
    """Names of the columns of the event vector ``x`` (GeV, radians; zeros where absent).

    ``jet{i}_pt/eta/phi/m``: the leading anti-kT jets (not overlapping a selected lepton);
    ``lep{i}_pt/eta/phi/charge/is_muon``: leading isolated electrons or muons (pT > 10 GeV, summed
    pT of other particles within ΔR < 0.3 below 15 % of the lepton's); ``met, met_phi``: the true
    missing transverse momentum (sum of neutrinos); ``n_jets, n_leptons``: counts before
    truncation; ``ht``: scalar sum of the jets' pT; ``n_particles``: visible particles in |η| < 2.5.
    """
    cols = [f"jet{i}_{v}" for i in range(1, n_jets + 1) for v in ("pt", "eta", "phi", "m")]
    cols += [
        f"lep{i}_{v}" for i in range(1, n_leptons + 1) for v in ("pt", "eta", "phi", "charge", "is_muon")
    ]
    return [*cols, "met", "met_phi", "n_jets", "n_leptons", "ht", "n_particles"]


def _event_record(
    p4: np.ndarray,
    kin: np.ndarray,
    code: np.ndarray,
    ids: np.ndarray,
    nu: np.ndarray,
    jets: np.ndarray,
    cons: list[np.ndarray],
    s: GenSettings,
) -> tuple[np.ndarray, ...] | None:
    cand = np.flatnonzero((code >= PID_CODES["electron"]) & (kin[:, 0] > s.lepton_pt_min))
    if len(cand):
        dr = np.hypot(kin[cand, 1, None] - kin[None, :, 1], _wrap(kin[cand, 2, None] - kin[None, :, 2]))
        iso = (np.where(dr < 0.3, kin[None, :, 0], 0).sum(axis=1) - kin[cand, 0]) / kin[cand, 0]
        cand = cand[iso < 0.15]
        cand = cand[np.argsort(-kin[cand, 0], kind="stable")]
    jk = _kin(jets) if len(jets) else np.zeros((0, 4))
    if len(cand) and len(jk):  # a lepton is also clustered into a jet: keep it as the lepton only
        dr = np.hypot(jk[:, 1, None] - kin[None, cand, 1], _wrap(jk[:, 2, None] - kin[None, cand, 2]))
        jk = jk[(dr >= s.radius).all(axis=1)]
    jv = np.zeros((s.n_jets, 4))
    jv[: min(len(jk), s.n_jets)] = jk[: s.n_jets]
    lv = np.zeros((s.n_leptons, 5))
    lep = cand[: s.n_leptons]
    lv[: len(lep)] = np.stack(
        [kin[lep, 0], kin[lep, 1], kin[lep, 2], -np.sign(ids[lep]), np.abs(ids[lep]) == 13], axis=1
    )
    # the true missing transverse momentum: the neutrinos' (px, py), all η
    glob = [np.hypot(*nu), np.arctan2(nu[1], nu[0]), len(jk), len(cand), jk[:, 0].sum(), len(kin)]
    vec = np.concatenate([jv.ravel(), lv.ravel(), glob]).astype(np.float32)
    order = np.argsort(-kin[:, 0], kind="stable")[: s.max_particles]
    parts = np.zeros((s.max_particles, 4), np.float32)
    parts[: len(order)] = np.concatenate([kin[order], code[order, None]], axis=1)
    return vec, parts, np.arange(s.max_particles) < len(order)


def event_task(process: str, label: int, n: int, pythia_seed: int, s: GenSettings) -> dict[str, np.ndarray]:
    """One task: ``n`` events of ``process`` labelled ``label`` (arrays as in generate_events)."""
    d = _stack(_sample(process, n, pythia_seed, s, _event_record), label)
    return {"x": d["_0"], "x_particles": d["_1"], "mask": d["_2"], "y": d["y"]}
