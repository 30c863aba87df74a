"""One training's footprint on a Dask cluster: client, parameter-server actor, worker plugins.

:func:`open_session` sets everything up and takes it all down again — the actor released, the
plugin unregistered, an embedded cluster closed — also when training fails.

A Dask actor dies with its worker. :meth:`Session.call` notices (the PS worker left the
scheduler) instead of waiting out its timeout, and :meth:`Session.restart_ps` starts a new
parameter server from a saved state and points every worker at it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from psdist.actor import ParameterServer
from psdist.cluster import embedded_cluster, pick_ps_worker
from psdist.data import ZarrDataset
from psdist.errors import ServerError
from psdist.flat import Layout
from psdist.optim import Optimizer
from psdist.rules import Rule
from psdist.worker import MallocFix, RunPlugin

__all__ = ["ParameterServerLost", "Session", "SessionSpec", "open_session"]

logger = logging.getLogger(__name__)

#: How often a blocked call looks whether the parameter server's worker is still there (s).
LIVENESS_SLICE = 1.0


class ParameterServerLost(ServerError):
    """The worker holding the parameter server left the cluster (killed, pre-empted)."""


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
    security: Any = None  # for the embedded cluster: see psdist.cluster.embedded_cluster


@dataclass
class Session:
    """A live training on a cluster: the client, the parameter server and its placement."""

    client: Any
    ps: Any  # distributed.Actor of ParameterServer
    ps_address: str
    plugin: str
    run_id: str
    spec: SessionSpec | None = None
    future: Any = None  # the actor's task; cancelled when the actor is replaced or at the end
    exclusive: bool = False
    restarts: int = 0
    size: int = 1  # workers when the training started: a restart waits for them to come back

    @property
    def dashboard_link(self) -> str | None:
        return getattr(self.client, "dashboard_link", None)

    def ps_alive(self) -> bool:
        """Whether the parameter server's worker is still one of the scheduler's workers."""
        return self.ps_address in self.client.scheduler_info(n_workers=-1)["workers"]

    def call(self, method: str, *args: Any, timeout: float) -> Any:
        """Call a parameter-server method and wait for it, at most ``timeout`` seconds.

        The wait is cut in slices; between slices the scheduler is asked whether the PS worker
        is still there, so a dead parameter server raises :class:`ParameterServerLost` within
        about a second instead of hanging until the timeout (a Dask actor call to a dead
        worker waits for the actor's task to be recomputed, which never happens here).
        """
        fut = getattr(self.ps, method)(*args)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fut.result(timeout=min(LIVENESS_SLICE, max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                if not self.ps_alive():
                    raise ParameterServerLost(
                        f"the parameter server's worker {self.ps_address} left the cluster during {method}()"
                    ) from None
                if time.monotonic() >= deadline:
                    raise ServerError(
                        f"the parameter server did not answer {method}() within {timeout} s; "
                        "raise Trainer(timeout=...) if it is overloaded"
                    ) from None

    def restart_ps(self, state: tuple[dict[str, Any], dict[str, np.ndarray]], wait_s: float = 30.0) -> int:
        """Start a new parameter server holding ``state``; every worker is pointed at it.

        Waits up to ``wait_s`` for the cluster to regain its size (a nanny restarts a killed
        worker within seconds; a batch system may not), then places the PS as at the start.
        Returns the version restored.
        """
        assert self.spec is not None
        if self.future is not None:
            self.client.cancel([self.future], force=True)  # its recompute would wait forever
        try:
            self.client.wait_for_workers(self.size, timeout=wait_s)
        except TimeoutError:
            logger.warning("psdist: the cluster did not regain its %d workers in %s s; going on with %d",
                           self.size, wait_s, len(self.client.scheduler_info(n_workers=-1)["workers"]))
        self.restarts += 1
        self.ps, self.future, self.ps_address, self.exclusive = _start_ps(
            self.client, self.spec, self.run_id, state, suffix=f"-r{self.restarts}"
        )
        # same plugin name: Dask tears the old one down on every worker (its tasks stop waiting
        # on the dead actor) and sets the new one up, with the slots of the new placement
        _register(self.client, self.spec, self.run_id, self.ps_address, self.exclusive, self.future.key)
        logger.warning("psdist: parameter server restarted on %s at version %d", self.ps_address,
                       int(state[0]["version"]))
        return int(state[0]["version"])


def _start_ps(
    client: Any, spec: SessionSpec, run_id: str, state: tuple[dict[str, Any], dict[str, np.ndarray]] | None,
    suffix: str = "",
) -> tuple[Any, Any, str, bool]:
    ps_address, exclusive = pick_ps_worker(client, spec.ps_worker if suffix == "" else None)
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
        key=f"psdist-ps-{run_id}{suffix}",
    )
    ps = future.result(timeout=spec.timeout)  # no call to the PS waits forever, its start included
    if state is not None:
        version = ps.load_state_dict(*state).result(timeout=spec.timeout)
        logger.info("psdist: parameter server restored at version %d", version)
    return ps, future, ps_address, exclusive


def _register(client: Any, spec: SessionSpec, run_id: str, ps_address: str, exclusive: bool, ps_key: str) -> str:
    plugin = RunPlugin(
        run_id, spec.model_fn, spec.step, spec.rule, spec.data, ps_address, exclusive,
        spec.optimizers, ps_key=ps_key,
    )
    client.register_plugin(plugin, name=plugin.name)
    return plugin.name


@contextlib.contextmanager
def open_session(spec: SessionSpec, client: Any | None = None) -> Iterator[Session]:
    """Start (or join) a cluster, place the parameter server, register the worker plugins."""
    stack = contextlib.ExitStack()
    with stack:
        if client is None:
            cluster, client = embedded_cluster(spec.workers, spec.threads_per_worker, spec.malloc_fix,
                                               security=spec.security)
            stack.callback(cluster.close)
            stack.callback(client.close)
        if spec.malloc_fix:  # also fixes workers of an existing cluster, and future ones
            client.register_plugin(MallocFix(), name=MallocFix.name)
        run_id = uuid.uuid4().hex[:10]
        ps, future, ps_address, exclusive = _start_ps(client, spec, run_id, spec.resume)
        size = len(client.scheduler_info(n_workers=-1)["workers"])
        sess = Session(client, ps, ps_address, f"psdist-run-{run_id}", run_id, spec, future, exclusive, size=size)
        # cancel, not release: the Actor handle holds its own reference to the key (kept alive by
        # reference cycles inside distributed until the garbage collector runs), which otherwise
        # keeps the parameter server and its weights on the cluster after the training; a
        # restarted server's future is the one cancelled
        stack.callback(lambda: client.cancel([sess.future]))
        name = _register(client, spec, run_id, ps_address, exclusive, future.key)
        stack.callback(client.unregister_worker_plugin, name)
        logger.info("psdist: parameter server on %s (exclusive=%s)", ps_address, exclusive)
        yield sess
