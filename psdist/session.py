"""One training's footprint on a Dask cluster: client, parameter-server actor, worker plugins.

:func:`open_session` sets everything up and takes it all down again — the actor released, the
plugin unregistered, an embedded cluster closed — also when training fails.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from psdist.actor import ParameterServer
from psdist.cluster import embedded_cluster, pick_ps_worker
from psdist.data import ZarrDataset
from psdist.flat import Layout
from psdist.optim import Optimizer
from psdist.rules import Rule
from psdist.worker import MallocFix, RunPlugin

__all__ = ["Session", "SessionSpec", "open_session"]

logger = logging.getLogger(__name__)


@dataclass
class SessionSpec:
    """Everything a session needs to start (built by the trainer after its checks)."""

    model_fn: Any
    step: Any
    rule: Rule
    data: ZarrDataset
    layout: Layout
    weights: np.ndarray
    optimizers: dict[str, Optimizer]
    max_staleness: int | None
    workers: int
    threads_per_worker: int
    malloc_fix: bool
    timeout: float
    ps_worker: str | None = None
    resume: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None


@dataclass
class Session:
    """A live training on a cluster."""

    client: Any
    ps: Any  # distributed.Actor of ParameterServer
    ps_address: str
    plugin: str
    run_id: str

    @property
    def dashboard_link(self) -> str | None:
        return getattr(self.client, "dashboard_link", None)


@contextlib.contextmanager
def open_session(spec: SessionSpec, client: Any | None = None) -> Iterator[Session]:
    """Start (or join) a cluster, place the parameter server, register the worker plugins."""
    stack = contextlib.ExitStack()
    with stack:
        if client is None:
            cluster, client = embedded_cluster(spec.workers, spec.threads_per_worker, spec.malloc_fix)
            stack.callback(cluster.close)
            stack.callback(client.close)
        if spec.malloc_fix:  # also fixes workers of an existing cluster, and future ones
            client.register_plugin(MallocFix(), name=MallocFix.name)
        ps_address, exclusive = pick_ps_worker(client, spec.ps_worker)
        run_id = uuid.uuid4().hex[:10]
        future = client.submit(
            ParameterServer,
            spec.layout.to_dict(),
            spec.weights,
            spec.optimizers,
            spec.rule,
            spec.max_staleness,
            run_id,
            actor=True,
            workers=[ps_address],
            key=f"psdist-ps-{run_id}",
        )
        ps = future.result()
        # cancel, not release: the Actor handle holds its own reference to the key (kept alive by
        # reference cycles inside distributed until the garbage collector runs), which otherwise
        # keeps the parameter server and its weights on the cluster after the training
        stack.callback(client.cancel, [future])
        if spec.resume is not None:
            version = ps.load_state_dict(*spec.resume).result()
            logger.info("psdist: parameter server restored at version %d", version)
        plugin = RunPlugin(
            run_id, spec.model_fn, spec.step, spec.rule, spec.data, ps_address, exclusive,
            spec.optimizers, ps_key=future.key,
        )
        client.register_plugin(plugin, name=plugin.name)
        stack.callback(client.unregister_worker_plugin, plugin.name)
        logger.info("psdist: parameter server on %s (exclusive=%s)", ps_address, exclusive)
        yield Session(client, ps, ps_address, plugin.name, run_id)

