"""Starting the embedded LocalCluster, and choosing where the parameter server lives.

psdist does not manage clusters beyond this: give ``Trainer(client=...)`` any Dask client
(LocalCluster, dask-jobqueue, a scheduler started by hand) and it uses it as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import dask

from psdist.cluster.worker import PS_RESOURCE
from psdist.errors import ClusterError

__all__ = ["embedded_cluster", "malloc_config", "pick_ps_worker", "pick_ps_workers", "training_slots"]

logger = logging.getLogger(__name__)

# What a nanny writes into os.environ of the process that starts it (distributed's nanny.py).
_SPAWN_VARS = (
    "MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED",
)


@contextlib.contextmanager
def malloc_config(enabled: bool = True) -> Iterator[None]:
    """Start nannies inside this block without ``MALLOC_TRIM_THRESHOLD_=65536``.

    Setting the config key to ``None`` is how distributed lets one drop a pre-spawn variable;
    the env-variable form of the override does not work (measured).
    """
    if not enabled:
        yield
        return
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        yield


@contextlib.contextmanager
def _restore_environ() -> Iterator[None]:
    # Starting nannies leaks OMP_NUM_THREADS=1 etc. into this process; keep the user's own.
    saved = {k: os.environ.get(k) for k in _SPAWN_VARS}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def embedded_cluster(
    workers: int, threads_per_worker: int, malloc_fix: bool = True, dashboard_address: str | None = ":0",
    security: Any = None, gpus: Sequence[str] = (), ps_workers: int = 1, **kwargs: Any,
) -> tuple[Any, Any]:
    """Start a LocalCluster of ``workers`` data workers plus ``ps_workers`` for the parameter
    server (one per shard of a sharded server).

    ``gpus`` (``CUDA_VISIBLE_DEVICES`` entries, see :func:`psdist.cluster.devices.embedded_devices`)
    starts one data worker per GPU instead, each seeing only its own (``CUDA_VISIBLE_DEVICES``)
    and advertising the ``GPU`` resource, and a parameter-server worker that sees none.

    ``security`` turns on TLS for every connection (client, scheduler, workers, and so every
    pull and push): ``True`` makes a temporary self-signed certificate (needs ``cryptography``),
    or give a ``distributed.Security`` or ``{"ca_file": ..., "cert": ..., "key": ...}`` (see
    :func:`psdist.cluster.security.as_security`). The cluster then listens on ``tls://`` addresses and
    the returned client holds the credentials; ``cluster.security`` has them for other clients.
    TLS does not cover the dashboard (plain HTTP): with ``security``, a ``dashboard_address``
    without a host (``":0"``, ``":8787"``) listens on 127.0.0.1 only; name a host to expose it.

    Returns ``(cluster, client)``; the caller closes both.
    """
    from distributed import Client, LocalCluster

    from psdist.cluster.security import as_security

    sec = as_security(security)
    if sec is not None:
        kwargs = {"protocol": "tls://", **kwargs, "security": sec}
        if dashboard_address is not None and dashboard_address.startswith(":"):
            # the dashboard is plain HTTP: ":port" would listen on every interface
            dashboard_address = "127.0.0.1" + dashboard_address
    n = len(gpus) + ps_workers if gpus else workers + ps_workers if workers >= 1 else ps_workers
    with malloc_config(malloc_fix), _restore_environ():
        if gpus:
            cluster = _pinned_cluster(gpus, threads_per_worker, dashboard_address, ps_workers, **kwargs)
        else:
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=threads_per_worker,
                processes=True,
                dashboard_address=dashboard_address,
                **kwargs,
            )
        try:
            client = Client(cluster, security=sec)
            if gpus:  # scaled after the start: wait as LocalCluster's own start would
                try:
                    client.wait_for_workers(n, timeout=300)
                except TimeoutError:
                    raise ClusterError(f"the embedded cluster's {n} workers (GPUs {list(gpus)} and the "
                                       "parameter server's) did not all start in 300 s; see the log above "
                                       "for the worker's error") from None
        except BaseException:
            cluster.close()
            raise
    logger.info("psdist: embedded LocalCluster with %d workers at %s; dashboard %s", n,
                cluster.scheduler_address, client.dashboard_link)
    return cluster, client


def _pinned_cluster(gpus: Sequence[str], threads_per_worker: int, dashboard_address: str | None,
                   ps_workers: int = 1, **kwargs: Any) -> Any:
    """A LocalCluster whose worker ``i`` sees only ``gpus[i]``, and whose last ``ps_workers`` see none.

    LocalCluster gives all workers one spec; like dask-cuda's ``LocalCUDACluster``, this starts
    it empty and scales it with a spec per worker name (a nanny keeps its worker's environment,
    so a killed worker comes back on the same GPU).
    """
    from distributed import LocalCluster
    from distributed.system import MEMORY_LIMIT

    class Pinned(LocalCluster):
        def new_worker_spec(self) -> dict[Any, dict[str, Any]]:
            name, spec = next(iter(super().new_worker_spec().items()))
            i = int(name)
            options = dict(spec["options"])
            options["env"] = {**options.get("env", {}), "CUDA_VISIBLE_DEVICES": gpus[i] if i < len(gpus) else ""}
            if i < len(gpus):
                options["resources"] = {**(options.get("resources") or {}), "GPU": 1}
            return {name: {**spec, "options": options}}

    n = len(gpus) + ps_workers
    cluster = Pinned(n_workers=0, threads_per_worker=threads_per_worker, processes=True,
                     dashboard_address=dashboard_address, memory_limit=MEMORY_LIMIT // n, **kwargs)
    try:
        cluster.scale(n)
    except BaseException:
        cluster.close()
        raise
    return cluster


def pick_ps_worker(client: Any, preferred: str | None = None, dedicated: bool | None = None,
                   avoid: Collection[str] = ()) -> tuple[str, bool]:
    """Choose the parameter server's worker; returns (address, exclusive).

    ``exclusive`` means the PS worker gets no training slot. Where the PS lives:

    - a worker started for it (resource ``psdist-ps``: the batch configs' PS job) always hosts
      it, and never trains;
    - ``preferred`` (a worker's name or address) hosts it when given;
    - otherwise the last worker by name (deterministic; in the embedded cluster that is the
      extra worker started for it), among those not named in ``avoid`` (the GPU workers) if any.

    ``dedicated`` says whether that worker also trains. ``None`` (default) means no: on a
    user's cluster every worker trains and the actor shares one (actor calls run in the
    worker's actor thread and need no task slot), so a cluster of N workers trains on N, not
    N - 1 (on a GPU node, no GPU idles). ``True`` keeps training tasks off the PS's worker
    (the embedded cluster asks for this: it starts one worker more for the PS). A cluster of
    one worker always shares it.
    """
    info = client.scheduler_info(n_workers=-1)["workers"]
    ps_only = sorted(a for a, w in info.items() if PS_RESOURCE in (w.get("resources") or {}))
    if preferred is None and ps_only:  # a worker started for it (psdist.cluster.batch): never a data worker
        return ps_only[0], True
    if not info:
        raise ClusterError(
            "the Dask cluster has no workers; start some first, e.g. cluster.scale(2), "
            "or let psdist start its own by passing no client"
        )
    if preferred is not None:
        matches = [a for a, w in info.items() if preferred in (a, str(w.get("name")))]
        if not matches:
            raise ClusterError(
                f"ps_worker={preferred!r} is not a worker of this cluster; "
                f"workers are {sorted(str(w.get('name')) for w in info.values())}"
            )
        address = matches[0]
    else:
        def key(item: tuple[str, dict[str, Any]]) -> tuple[int, str]:
            name = str(item[1].get("name"))
            return (int(name), "") if name.isdigit() else (1 << 30, name)

        spare = [item for item in info.items() if str(item[1].get("name")) not in avoid]
        address = max(spare or info.items(), key=key)[0]
    exclusive = bool(dedicated) and len(info) > 1
    if dedicated and not exclusive:
        logger.warning("psdist: dedicated_ps=True, but the cluster has one worker; the parameter server shares it")
    return address, exclusive


def pick_ps_workers(client: Any, shards: int, preferred: str | None = None, dedicated: bool | None = None,
                    avoid: Collection[str] = ()) -> list[tuple[str, bool]]:
    """The workers of a sharded parameter server's ``shards`` shards; ``(address, exclusive)`` each.

    Shard 0 goes where :func:`pick_ps_worker` puts a lone server; the others to the next
    workers started for a server (``psdist-ps``), then to the last workers by name (the embedded
    cluster starts one worker per shard after its data workers), GPU workers (``avoid``) last.
    With fewer workers than shards, shards share workers (each is an actor of its own).
    """
    first = pick_ps_worker(client, preferred, dedicated, avoid)
    if shards == 1:
        return [first]
    info = client.scheduler_info(n_workers=-1)["workers"]

    def key(item: tuple[str, dict[str, Any]]) -> tuple[int, int, int, str]:
        w = item[1]
        name = str(w.get("name"))
        return (PS_RESOURCE in (w.get("resources") or {}), name not in avoid,
                int(name) if name.isdigit() else 1 << 30, name)

    rest = [a for a, _ in sorted(info.items(), key=key, reverse=True) if a != first[0]]
    picked = [first]
    for k in range(1, shards):
        if rest:
            address = rest.pop(0)
            ps_only = PS_RESOURCE in (info[address].get("resources") or {})
            picked.append((address, ps_only or (first[1] and len(info) > shards)))
        else:
            picked.append(picked[k % len(picked)])
    if len({a for a, _ in picked}) < shards:
        logger.warning("psdist: %d parameter-server shards on %d workers: some share a worker", shards,
                       len({a for a, _ in picked}))
    return picked


def training_slots(client: Any, ps_address: str | Collection[str], exclusive: bool) -> int:
    """Training slots of a cluster for a PS placed at ``ps_address``: now, or as planned if more.

    Workers started for a PS (``psdist-ps``) never train, nor does an exclusive PS's worker. A
    cluster that is still starting (a batch system's jobs in the queue, ``cluster.scale(n)``
    just called) counts what it plans (``SpecCluster.plan``), so that settings sized from it
    (EASGD's alpha, the default staleness bound) fit the cluster the training will have.
    """
    servers = {ps_address} if isinstance(ps_address, str) else set(ps_address)
    info = client.scheduler_info(n_workers=-1)["workers"]
    ps_only = {a for a, w in info.items() if PS_RESOURCE in (w.get("resources") or {})}
    now = sum(1 for a in info if a not in ps_only and not (exclusive and a in servers))
    plan = getattr(getattr(client, "cluster", None), "plan", None)
    planned = 0
    if plan:
        names = {str(n) for n in plan}
        # PS workers in the plan (the embedded cluster's) are no training slots when exclusive
        planned = len(names) - sum(1 for a in servers if (exclusive or a in ps_only)
                                   and str(info.get(a, {}).get("name")) in names)
    return max(1, now, planned)
