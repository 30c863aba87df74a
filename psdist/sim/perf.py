"""An analytic performance model of psdist training: samples/s and scaling efficiency.

Where :mod:`psdist.sim.simulator` answers *does it converge at that scale*, this module answers
*how fast is it*, in closed form plus a short mean-value recursion, so that a table of 1–256
workers × 1–16 shards costs milliseconds. Pure Python and numpy: no torch, no Dask.

One push (every ``push_every`` minibatches of a worker) moves the gradient up and the fresh
weights down: ``P × wire_bytes`` each way, split over ``S`` contiguous shards served in parallel
(each shard moves ``P/S`` values). Per push:

- ``fixed``: the per-push fixed cost (latency, syscalls, message handling) of the transport;
- ``link = 2 P b / link_bandwidth``: the bytes through the worker's own link (or, over shared
  memory, its copies);
- ``nic = 2 (P/S) b / nic_bandwidth``: the bytes through one shard's NIC;
- ``cpu = per_push + per_param × P/S``: one shard's step (finite check, optimizer, reply copy);
- ``fanout = fanout_per_push + fanout_per_param × P`` when ``S > 1`` (else 0): what the worker pays
  once per push for talking to several shards (cutting the update into their slots, the
  whole-update check, the fan-out threads, gathering the replies, and on one host the shards'
  contention for its cores and memory bus), measured as the sharded round trip's excess.

The transfer is cut-through, so a push pays ``max(link, nic)`` for its bytes, not the sum; a
shard is *occupied* for ``service = nic + cpu`` per push, and every push visits every shard, so
each shard sees every worker's pushes: sharding divides the per-parameter work and bytes, never
the per-push costs. The wait at a shard comes from mean value analysis of the closed system of
``W`` workers and one (representative) shard with deterministic service (:func:`_mva`): a lone
worker never queues behind itself, and throughput tends to the shard's capacity. One cycle is

- without overlap ``k·t_c + fixed + fanout + max(link, nic) + cpu + wait``;
- with overlap (one push in flight) ``max(k·t_c, fixed + fanout + max(link, nic) + cpu + wait)``,

and samples/s = ``W · k · B / cycle`` plateaus at ``k · B / service`` as workers are added. The
shards are taken as symmetric and the slowest one as the mean one (no fork-join penalty).

Optional, off by default: *per-chunk costs* (``Workload.rows_per_chunk``, ``Cluster.chunk_overhead_s``:
a chunk task's overhead over its ``n`` pushes, outside any overlap, and with overlap the chunk's
pipeline drain ``min(k·t_c, round trip) / n`` per push) and *core sharing* (``Cluster.host_cores``:
CPU times stretched by processor sharing on one host, :mod:`psdist.sim.contention`).

**Scaling efficiency** is ``samples/s ÷ (W · B / t_c)``: the throughput over that of ``W``
independent workers that never communicate. It is 1 only when communication is free (or fully
hidden by overlap and never queued) and folds in both the per-push cost and the queueing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from psdist.errors import ConfigError
from psdist.sim.contention import core_stretch

__all__ = [
    "SHARD_COUNTS",
    "WORKER_COUNTS",
    "Calibration",
    "Cluster",
    "Prediction",
    "Workload",
    "calibrate",
    "local_cluster",
    "micro_points",
    "predict",
    "predict_table",
    "recommend_shards",
    "server_step_points",
]

#: the grid of :func:`predict_table`
WORKER_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SHARD_COUNTS = (1, 2, 4, 8, 16)

_INF = math.inf


def _positive(name: str, value: float, *, allow_zero: bool = False, allow_inf: bool = False) -> None:
    """Raise ConfigError naming ``name`` unless ``value`` is a positive (or zero) finite number."""
    bad = (not isinstance(value, (int, float)) or math.isnan(value) or value < 0
           or (value == 0 and not allow_zero) or (math.isinf(value) and not allow_inf))
    if bad:
        raise ConfigError(f"{name} must be {'≥ 0' if allow_zero else '> 0'}"
                          f"{'' if allow_inf else ' and finite'}, got {value!r}")


def _count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer ≥ 1, got {value!r}")


@dataclass(frozen=True)
class Workload:
    """What one worker trains.

    Parameters
    ----------
    name
        A label for tables.
    params
        Values in the flat weight vector (parameters and float buffers): what a push moves.
    batch_size
        Samples per minibatch.
    compute_s
        Compute time of one minibatch (forward, backward) on the worker's device, in seconds.
    push_every
        Minibatches per push (``k``).
    rows_per_chunk
        Rows of one chunk task (a push never spans two: ``m`` minibatches make ``ceil(m / k)``
        pushes). ``None``: chunks long enough that their costs do not count.
    host_compute_s
        The part of ``compute_s`` that keeps a host core busy (``Cluster.host_cores``). ``None``:
        all of it (a CPU worker); about 0 for a GPU worker whose thread waits for its kernels.
    """

    name: str
    params: int
    batch_size: int
    compute_s: float
    push_every: int = 1
    rows_per_chunk: int | None = None
    host_compute_s: float | None = None

    def __post_init__(self) -> None:
        _count("params", self.params)
        _count("batch_size", self.batch_size)
        _count("push_every", self.push_every)
        _positive("compute_s", self.compute_s)
        if self.rows_per_chunk is not None:
            _count("rows_per_chunk", self.rows_per_chunk)
        if self.host_compute_s is not None:
            _positive("host_compute_s", self.host_compute_s, allow_zero=True)
            if self.host_compute_s > self.compute_s:
                raise ConfigError(f"host_compute_s must be ≤ compute_s, got {self.host_compute_s!r}")

    def windows(self) -> tuple[float, float, float]:
        """Minibatches per push, samples per push and pushes per chunk (``inf`` without chunks)."""
        if self.rows_per_chunk is None:
            return float(self.push_every), float(self.push_every * self.batch_size), _INF
        minibatches = math.ceil(self.rows_per_chunk / self.batch_size)
        pushes = math.ceil(minibatches / self.push_every)
        return minibatches / pushes, self.rows_per_chunk / pushes, float(pushes)


@dataclass(frozen=True)
class Cluster:
    """The machines and their costs (SI units: seconds, bytes/s).

    Parameters
    ----------
    name
        A label for tables.
    workers
        Training workers ``W``.
    shards
        Parameter-server shards ``S`` (each its own process and NIC).
    link_bytes_per_s
        A worker's link bandwidth (over shared memory: its copy rate). ``inf``: free.
    nic_bytes_per_s
        One shard's NIC bandwidth. ``inf``: free.
    push_fixed_s
        Fixed cost of one push round trip on the transport (latency, message handling).
    server_per_param_s
        A shard's step time per parameter it holds (finite check, optimizer, reply copy).
    server_per_push_s
        A shard's fixed step time per push.
    wire_bytes
        Bytes per value on the wire: 4 (float32) or 2 (bf16).
    overlap
        One push in flight while the next window computes (``overlap=True``).
    fanout_per_push_s, fanout_per_param_s
        The *shard fan-out* cost: what a worker's push costs beyond one shard's round trip when
        the server is sharded (``shards > 1``; nothing for one shard), fixed and per parameter of
        the whole model, paid once per push on the worker's side: the update cut into each
        shard's slot, the whole-update finiteness check and norms, the threads that talk to the
        shards at once, the replies gathered into one weight vector, and, with the shards on the
        worker's host, their contention for its cores and memory bus (the per-parameter work of
        co-located shards does not divide by ``S``). Calibrate it from the sharded round trip:
        ``benchmarks/bench_shards.py``.
    chunk_overhead_s
        A worker's time per chunk task outside its compute and pushes (scheduling, reading and
        shuffling its rows, join, first pull, leave); used when the workload has ``rows_per_chunk``.
    host_cores
        Workers and shards share one host of this many cores (a float: effective cores); CPU times
        stretch by processor sharing (:mod:`psdist.sim.contention`). ``None``: dedicated cores.
    """

    name: str = "cluster"
    workers: int = 1
    shards: int = 1
    link_bytes_per_s: float = _INF
    nic_bytes_per_s: float = _INF
    push_fixed_s: float = 0.0
    server_per_param_s: float = 0.0
    server_per_push_s: float = 0.0
    wire_bytes: int = 4
    overlap: bool = False
    fanout_per_push_s: float = 0.0
    fanout_per_param_s: float = 0.0
    chunk_overhead_s: float = 0.0
    host_cores: float | None = None

    def __post_init__(self) -> None:
        _count("workers", self.workers)
        _count("shards", self.shards)
        _positive("link_bytes_per_s", self.link_bytes_per_s, allow_inf=True)
        _positive("nic_bytes_per_s", self.nic_bytes_per_s, allow_inf=True)
        _positive("push_fixed_s", self.push_fixed_s, allow_zero=True)
        _positive("server_per_param_s", self.server_per_param_s, allow_zero=True)
        _positive("server_per_push_s", self.server_per_push_s, allow_zero=True)
        _positive("fanout_per_push_s", self.fanout_per_push_s, allow_zero=True)
        _positive("fanout_per_param_s", self.fanout_per_param_s, allow_zero=True)
        _positive("chunk_overhead_s", self.chunk_overhead_s, allow_zero=True)
        if self.host_cores is not None:
            _positive("host_cores", self.host_cores)
        if self.wire_bytes not in (2, 4):
            raise ConfigError(f"wire_bytes must be 4 (float32) or 2 (bf16), got {self.wire_bytes!r}")

    def with_(self, **changes: Any) -> Cluster:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one workload on one cluster (times per push cycle, in seconds)."""

    workload: str
    cluster: str
    workers: int
    shards: int
    overlap: bool
    wire_bytes: int
    compute_s: float      #: k · t_c (its host part × stretch)
    fixed_s: float        #: the transport's per-push cost
    link_s: float         #: bytes through the worker's link
    nic_s: float          #: bytes through one shard's NIC
    cpu_s: float          #: one shard's step
    wait_s: float         #: queueing at a shard
    cycle_s: float        #: one push cycle of one worker
    samples_per_s: float  #: all workers together
    efficiency: float     #: samples_per_s / (W · B / t_c)
    utilisation: float    #: ρ of each shard
    bottleneck: str       #: compute, latency, shard fan-out, worker link, shard NIC/CPU, per-chunk, host cores
    bytes_per_push: float = field(default=0.0)  #: up + down, all shards
    fanout_s: float = field(default=0.0)  #: the worker's shard fan-out per push (0 for one shard)
    chunk_s: float = field(default=0.0)   #: per-chunk costs per push (overhead, overlap's drain)
    stretch: float = field(default=1.0)   #: core sharing: CPU times × this (1: dedicated cores)
    busy: float = field(default=0.0)      #: runnable processes, were all on one host (core sharing)

    def as_dict(self) -> dict[str, Any]:
        """The prediction as JSON-ready values."""
        return dict(self.__dict__)


def _mva(workers: int, service: float, extra: float, compute: float, overlap: bool,
         serial: float = 0.0, drain: float = 0.0) -> tuple[float, float]:
    """Cycle and queueing wait at a shard by mean value analysis (MVA) of the closed system.

    ``W`` workers circulate between their own work (``compute``, ``serial``: the per-chunk costs
    per push, and ``extra``: the fixed cost, the shard fan-out and the link time beyond the
    shard's NIC time) and one shard station of deterministic ``service``. MVA adds workers one
    at a time: an arriving push finds the queue that the system with one worker fewer had
    (``q``), the push in service having half its time left on average (deterministic service:
    ``q − u/2`` services ahead). Unlike an open M/D/1 queue, a lone worker never waits behind
    itself, and throughput tends to the capacity ``1/service``. With overlap a cycle is
    ``serial + max(compute, round trip) + drain · min(compute, round trip)`` (``drain``: the
    chunk's pipeline fill and drain, per push).

    Returns
    -------
    tuple of (float, float)
        The cycle of one worker (s) and the mean wait at a shard (s).
    """
    def cycle_of(trip: float) -> float:
        return serial + (max(compute, trip) + drain * min(compute, trip) if overlap else compute + trip)

    def trip_of(cycle: float) -> float:  # the inverse of cycle_of, for the round trip
        if not overlap:
            return cycle - serial - compute
        trip = cycle - serial - drain * compute  # when the round trip is the longer
        return trip if trip >= compute or drain == 0.0 else (cycle - serial - compute) / drain

    q = u = 0.0
    cycle, resp = cycle_of(extra), service
    for n in range(1, workers + 1):
        resp = service * (1.0 + q - u / 2.0)
        cycle = cycle_of(extra + resp)
        if n * service > cycle:  # past the capacity (the approximation's overshoot): queue longer
            cycle = n * service
            resp = trip_of(cycle) - extra
        x = n / cycle
        q, u = x * resp, x * service
    return cycle, resp - service


def predict(workload: Workload, cluster: Cluster) -> Prediction:
    """Predict samples/s, efficiency, utilisation and bottleneck of one configuration.

    Parameters
    ----------
    workload
        The model, batch and compute time per minibatch (and its chunks, if given).
    cluster
        Workers, shards, bandwidths, costs, wire dtype and overlap (and the host's cores, if shared).

    Returns
    -------
    Prediction
        The per-push times and the derived figures (see the module docstring for the model).
    """
    w, s = cluster.workers, cluster.shards
    batches, samples_per_push, pushes_per_chunk = workload.windows()
    per_shard = workload.params / s
    moved = 2.0 * workload.params * cluster.wire_bytes  # gradient up + weights down
    nic = 2.0 * per_shard * cluster.wire_bytes / cluster.nic_bytes_per_s  # a NIC keeps its speed
    # the CPU times at full speed; core sharing stretches them all by f
    link1 = moved / cluster.link_bytes_per_s
    cpu1 = cluster.server_per_push_s + cluster.server_per_param_s * per_shard
    fanout1 = cluster.fanout_per_push_s + cluster.fanout_per_param_s * workload.params if s > 1 else 0.0
    chunk1 = cluster.chunk_overhead_s / pushes_per_chunk
    drain = 1.0 / pushes_per_chunk if cluster.overlap else 0.0
    host = workload.compute_s if workload.host_compute_s is None else workload.host_compute_s

    def at(f: float) -> tuple[float, ...]:
        """(compute, fixed, link, cpu, fan-out, chunk, cycle, wait, busy) with CPU times × f."""
        compute = batches * (workload.compute_s + (f - 1.0) * host)
        fixed, link, cpu, fanout, chunk = (f * t for t in (cluster.push_fixed_s, link1, cpu1, fanout1, chunk1))
        # beyond the shard's own time: the transport's fixed cost, the worker's shard fan-out, and
        # the worker's link where it is slower than the shard's NIC (cut-through: max(link, nic))
        extra = fixed + fanout + max(link - nic, 0.0)
        cycle, wait = _mva(w, nic + cpu, extra, compute, cluster.overlap, chunk, drain)
        # CPU work per cycle (waits, a device, a NIC and the drain are none): W · D / cycle runnable
        busy = w * (batches * f * host + chunk + fixed + fanout + link + s * cpu) / cycle
        return compute, fixed, link, cpu, fanout, chunk, cycle, wait, busy

    stretch = 1.0
    if cluster.host_cores is not None:
        stretch, _ = core_stretch(lambda f: at(f)[-1], cluster.host_cores)
    compute, fixed, link, cpu, fanout, chunk, cycle, wait, busy = at(stretch)
    trip = fixed + fanout + max(link, nic) + cpu + wait
    chunk_s = chunk + drain * min(compute, trip)  # per push: the overhead and the pipeline's drain
    rho = w * (nic + cpu) / cycle
    samples = w * samples_per_push / cycle
    ideal = w * workload.batch_size / workload.compute_s
    return Prediction(
        workload=workload.name, cluster=cluster.name, workers=w, shards=s, overlap=cluster.overlap,
        wire_bytes=cluster.wire_bytes, compute_s=compute, fixed_s=fixed, link_s=link,
        nic_s=nic, cpu_s=cpu, wait_s=wait, cycle_s=cycle, samples_per_s=samples,
        efficiency=samples / ideal, utilisation=rho,
        bottleneck=("host cores" if stretch > 1.0 + 1e-9  # out of cores: every CPU time stretched
                    else "compute" if cycle <= compute * (1 + 1e-9)  # overlap hides all the rest
                    else _bottleneck(compute, fixed, link, nic, cpu, wait, rho, fanout, chunk_s)),
        bytes_per_push=moved, fanout_s=fanout, chunk_s=chunk_s, stretch=stretch, busy=busy)


def _bottleneck(compute: float, fixed: float, link: float, nic: float, cpu: float, wait: float,
                rho: float, fanout: float = 0.0, chunk: float = 0.0) -> str:
    """Name the resource that limits the cycle (after a host out of cores, and compute filling it).

    A shard whose utilisation exceeds 0.9, or whose queue costs more than the compute, is the
    limit (its NIC or its CPU, whichever takes longer per push); otherwise the largest term of
    the cycle: compute, the per-chunk costs, or one of the communication costs.
    """
    if rho > 0.9 or wait > compute:
        return "shard NIC" if nic > cpu else "shard CPU"
    terms = {"compute": compute, "latency": fixed, "shard fan-out": fanout, "worker link": link if link >= nic else 0.0,
             "shard NIC": nic if nic > link else 0.0, "shard CPU": cpu, "per-chunk": chunk}
    return max(terms, key=lambda k: terms[k])


def recommend_shards(workload: Workload, cluster: Cluster, target_efficiency: float = 0.9,
                     max_shards: int = 16) -> tuple[int, Prediction]:
    """The smallest shard count reaching ``target_efficiency``, else the best up to ``max_shards``.

    Parameters
    ----------
    workload, cluster
        As for :func:`predict`; ``cluster.shards`` is ignored.
    target_efficiency
        In (0, 1].
    max_shards
        The largest count tried.

    Returns
    -------
    tuple of (int, Prediction)
        The shard count and its prediction; ``prediction.efficiency < target_efficiency`` when
        no count up to ``max_shards`` reaches it (then the count with the best efficiency, the
        smallest among equals).
    """
    if not 0 < target_efficiency <= 1:
        raise ConfigError(f"target_efficiency must be in (0, 1], got {target_efficiency!r}")
    _count("max_shards", max_shards)
    best: tuple[int, Prediction] | None = None
    for s in range(1, max_shards + 1):
        p = predict(workload, cluster.with_(shards=s))
        if p.efficiency >= target_efficiency:
            return s, p
        if best is None or p.efficiency > best[1].efficiency * (1 + 1e-9):
            best = (s, p)
    assert best is not None
    return best


def predict_table(workloads: Iterable[Workload], cluster: Cluster,
                  workers: Sequence[int] = WORKER_COUNTS, shards: Sequence[int] = SHARD_COUNTS,
                  overlaps: Sequence[bool] = (False, True),
                  wires: Sequence[int] = (4, 2)) -> list[Prediction]:
    """Predictions over a grid of workers × shards × overlap × wire dtype.

    Parameters
    ----------
    workloads
        The workloads.
    cluster
        The base cluster; ``workers``, ``shards``, ``overlap`` and ``wire_bytes`` are replaced.
    workers, shards, overlaps, wires
        The grid (defaults: 1–256 workers, 1–16 shards, overlap off/on, float32 and bf16).

    Returns
    -------
    list of Prediction
        One per workload and grid point, in loop order workload, wire, overlap, shards, workers.
    """
    out = []
    for wl in workloads:
        for b in wires:
            for ov in overlaps:
                for s in shards:
                    for w in workers:
                        out.append(predict(wl, cluster.with_(workers=w, shards=s, overlap=ov, wire_bytes=b)))
    return out


# -- calibration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """A least-squares line ``time = a + b · n`` through measured points.

    Attributes
    ----------
    a_s
        Intercept: the fixed cost, seconds.
    b_s
        Slope: seconds per parameter.
    points
        The ``(n, seconds)`` points used.
    source
        Where they came from (files and keys).
    """

    a_s: float
    b_s: float
    points: tuple[tuple[float, float], ...]
    source: str = ""

    def __call__(self, n: float) -> float:
        """The fitted time at ``n`` parameters."""
        return self.a_s + self.b_s * n

    def max_rel_error(self) -> float:
        """The largest relative residual over the points."""
        return max(abs(self(n) - t) / t for n, t in self.points)


def calibrate(points: Iterable[tuple[float, float]], source: str = "") -> Calibration:
    """Fit ``time = a + b · n`` by least squares.

    Parameters
    ----------
    points
        ``(parameters, seconds)`` pairs, at least two distinct sizes.
    source
        A note on where the points came from, kept in the result.

    Returns
    -------
    Calibration
        ``a`` (s) and ``b`` (s per parameter). An exact line through the points is recovered
        exactly (up to rounding).
    """
    pts = tuple((float(n), float(t)) for n, t in points)
    if len({n for n, _ in pts}) < 2:
        raise ConfigError(f"calibrate needs points at two or more sizes, got {pts!r}")
    for n, t in pts:
        _positive("calibration size", n)
        _positive("calibration time", t)
    x = np.array([[1.0, n] for n, _ in pts])
    y = np.array([t for _, t in pts])
    (a, b), *_ = np.linalg.lstsq(x, y, rcond=None)
    return Calibration(float(a), float(b), pts, source)


def micro_points(doc: Mapping[str, Any] | str | Path, backend: str = "shm",
                 measure: str = "push_pull") -> list[tuple[float, float]]:
    """``(params, seconds)`` of one backend from a suite result's ``ps_micro`` section.

    Parameters
    ----------
    doc
        The suite JSON (``benchmarks/run_suite.py``), or its path.
    backend
        ``"actor"`` (the flat ``psdist_<measure>_ms`` keys) or a data-plane backend of the row's
        ``plane`` map (``"shm"``, ``"tcp"``, ``"tcp+bf16"``, ``"tcp+tls"``).
    measure
        ``"push_pull"``, ``"pull"`` or ``"push_only"``.

    Returns
    -------
    list of (float, float)
        Sizes with an ``ok`` figure; empty when the file has none for that backend.
    """
    d = _load(doc)
    # a suite result keeps the rows under "ps_micro"; the micro's own output under "rows"
    micro = d.get("ps_micro") or d.get("micro") or d.get("rows") or {}
    out = []
    for row in micro.values():
        if not isinstance(row, dict) or row.get("status") != "ok":
            continue
        if backend == "actor":
            ms = row.get(f"psdist_{measure}_ms")
        else:
            entry = (row.get("plane") or {}).get(backend) or {}
            ms = entry.get(f"{measure}_ms") if entry.get("status") == "ok" else None
        if ms:
            out.append((float(row["params"]), ms / 1000.0))
    return sorted(out)


def server_step_points(doc: Mapping[str, Any] | str | Path, optimizer: str = "sgd-momentum",
                       path: str = "torch", measure: str = "push+pull",
                       buffer: str = "reused") -> list[tuple[float, float]]:
    """``(params, seconds)`` from ``benchmarks/bench_server_step.py``'s JSON (median times).

    Parameters
    ----------
    doc
        The JSON or its path.
    optimizer, path, measure, buffer
        Which rows: by default the torch server's in-process push with its reply's weights
        (the server's whole work per push) for SGD with momentum.

    Returns
    -------
    list of (float, float)
        One point per size.
    """
    d = _load(doc)
    return sorted((float(r["params"]), r["ms"] / 1000.0) for r in d.get("results", [])
                  if r.get("optimizer") == optimizer and r.get("path") == path
                  and r.get("measure") == measure and r.get("buffer", buffer) == buffer)


def _load(doc: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    if isinstance(doc, Mapping):
        return doc
    with open(doc, encoding="utf-8") as fh:
        loaded: dict[str, Any] = json.load(fh)
    return loaded


def local_cluster(transport: Calibration, server: Calibration, name: str = "vm-shm",
                  worker_copy_bytes_per_s: float = _INF) -> Cluster:
    """A one-machine cluster (workers and server on one host) from two calibrations.

    Parameters
    ----------
    transport
        Push+pull as a worker sees it, the whole round trip (``micro_points(..., "shm")``, or
        ``"actor"`` for the Dask actor path).
    server
        The server's own work per push (``server_step_points``, or the micro's in-process
        ``psdist_server_push_ms``).
    name
        The cluster's label.
    worker_copy_bytes_per_s
        The worker's memory-copy rate, for the two copies a *training* worker makes per push
        that the microbenchmark leaves out (the gradient into the push slot, the reply's weights
        into the model); ``inf`` leaves them out too.

    Returns
    -------
    Cluster
        ``server_per_push_s``/``server_per_param_s`` from ``server``; the rest of the round trip
        goes to the transport: its intercept beyond the server's to ``push_fixed_s``, its slope
        beyond the server's, plus the worker's two copies, to the worker's "link" (8 bytes per
        parameter per push); no NIC (one memory bus). Negative remainders count as 0 (free).
    """
    _positive("worker_copy_bytes_per_s", worker_copy_bytes_per_s, allow_inf=True)
    fixed = max(transport.a_s - max(server.a_s, 0.0), 0.0)
    # seconds per parameter on the worker's side: what the round trip costs beyond the server's
    # step, and the two float32 copies of the training loop (4 bytes each)
    extra = max(transport.b_s - server.b_s, 0.0) + 8.0 / worker_copy_bytes_per_s
    link = 8.0 / extra if extra > 0 else _INF
    return Cluster(name=name, link_bytes_per_s=link, push_fixed_s=fixed,
                   server_per_param_s=max(server.b_s, 0.0), server_per_push_s=max(server.a_s, 0.0))
