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
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psdist.cluster.actor import ParameterServer
from psdist.cluster.devices import probe
from psdist.cluster.embedded import embedded_cluster, pick_ps_worker, pick_ps_workers, training_slots
from psdist.cluster.shards import (
    ShardServer,
    call_all,
    gather_state,
    merge_metrics,
    shard_states,
    start_shard,
    wait_future,
)
from psdist.cluster.waiting import wait_sliced
from psdist.cluster.worker import MallocFix, RunPlugin, ShardRoute
from psdist.core.devices import (
    CPU,
    Devices,
    WorkerDevices,
    assign_devices,
    describe,
    embedded_devices,
    visible_gpus,
)
from psdist.core.layout import Layout
from psdist.core.optim.port import OptimizerSpec
from psdist.core.rules import Rule
from psdist.core.shards import ShardPlan
from psdist.data.dataset import ZarrDataset
from psdist.errors import ServerError

__all__ = ["AUTO", "ParameterServerLost", "Session", "SessionSpec", "auto_staleness", "open_session"]

logger = logging.getLogger(__name__)

#: ``max_staleness="auto"`` (the default): a bound sized from the training slots at the start.
AUTO = "auto"


def auto_staleness(slots: int, overlap: bool = False) -> int:
    """The default staleness bound for ``slots`` training slots: ``2 * slots + 2``.

    With n workers pushing in turn, a push is about n - 1 versions stale; bursts (a worker
    that reads or validates while the others push) reach about twice that. A bound of 2n + 2
    rejects nothing in a healthy run, and drops the gradients of a worker that stalled for
    more than two rounds of everybody else's updates — the ones that wreck asynchronous SGD.
    With ``overlap`` (one push in flight per worker) a push is one round staler, about
    2n - 1: the bound doubles to 4n + 2.
    """
    return (4 if overlap else 2) * max(1, slots) + 2


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
    optimizers: Mapping[str, OptimizerSpec]
    max_staleness: int | str | None  # an int, None (no bound) or AUTO (resolved per session)
    workers: int | None  # the embedded cluster's; None: one per GPU, else 2
    threads_per_worker: int
    malloc_fix: bool
    timeout: float
    ps_worker: str | None = None
    resume: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None
    security: Any = None  # for the embedded cluster: see psdist.cluster.embedded.embedded_cluster
    dedicated_ps: bool | None = None  # None: the embedded cluster's PS worker is dedicated, a user's shared
    data_plane: str = "auto"  # psdist.plane backend for pushes and pulls (see the setting)
    overlap: bool | None = None  # one push in flight; None: where the training workers have GPUs
    wire_dtype: str = "float32"  # what the data plane's TCP connections carry (see the setting)
    devices: Devices = "auto"  # what trains (psdist.core.devices.parse_devices)
    precision: str = "32"  # the workers' autocast (psdist.replica.precision)
    ps_shards: int = 1  # parameter-server shards (psdist.core.shards)
    splittable: frozenset[str] = frozenset()  # models whose tensors a shard cut may split (elementwise optimizers)

    def plan(self) -> ShardPlan | None:
        """How the weights are cut over ``ps_shards`` shards (``None``: one server)."""
        return ShardPlan.balanced(self.layout, self.ps_shards, self.splittable) if self.ps_shards > 1 else None

    def sized(self, slots: int, overlap: bool = False) -> tuple[Rule, int | None]:
        """The rule and staleness bound for ``slots`` training slots (EASGD's alpha, ``"auto"``)."""
        bound = auto_staleness(slots, overlap) if self.max_staleness == AUTO else self.max_staleness
        return self.rule.for_workers(slots), bound  # type: ignore[return-value]

    def overlaps(self, devices: Mapping[str, str]) -> bool:
        """Whether workers keep a push in flight: as set, or (``None``) when the rule allows
        it and a training worker trains on a GPU (``devices``: by worker name)."""
        if self.overlap is not None:
            return self.overlap
        return type(self.rule).overlaps and any(d != CPU for d in devices.values())


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
    slots: int = 1  # training slots the rule and staleness bound were sized for
    rule: Rule | None = None  # the rule in force, sized for ``slots`` (EASGD's alpha)
    max_staleness: int | None = None  # the bound in force ("auto" resolved)
    overlap: bool = False  # workers keep one push in flight (the setting resolved)
    dedicated: bool = False  # whether a dedicated PS was asked for (kept across restarts)
    devices: dict[str, str] = field(default_factory=dict)  # worker name -> "cpu" | "cuda:N"
    training_on: str = ""  # the start-up line: each worker's device, and the server's place
    plan: ShardPlan | None = None  # a sharded server's slices (ps, ps_address, future: shard 0's)
    extra: list[ShardServer] = field(default_factory=list)  # shards 1..S-1

    @property
    def servers(self) -> list[ShardServer]:
        """Every shard's actor, shard 0 first (one entry for an unsharded server)."""
        return [ShardServer(self.ps, self.ps_address, self.future, self.exclusive), *self.extra]

    @property
    def placement(self) -> str:
        """Where the PS lives and who trains, in words (logs, the dashboard)."""
        how = "its own worker" if self.exclusive else "a worker that also trains"
        if self.plan is not None:
            where = ", ".join(s.address for s in self.servers)
            return f"{self.plan.shards} shards on {where} (shard 0 on {how}); {self.slots} worker(s) train"
        return f"{self.ps_address} ({how}); {self.slots} worker(s) train"

    @property
    def dashboard_link(self) -> str | None:
        return getattr(self.client, "dashboard_link", None)

    def ps_alive(self) -> bool:
        """Whether the parameter server's workers (every shard's) are still the scheduler's workers."""
        return self._lost() is None

    def _lost(self) -> str | None:
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        return next((s.address for s in self.servers if s.address not in workers), None)

    def check_ps(self, during: str | None = None) -> None:
        """Raise :class:`ParameterServerLost` if a PS worker left (``during``: the call then)."""
        lost = self._lost()
        if lost is not None:
            when = f" during {during}" if during else ""
            which = "the parameter server's worker" if self.plan is None else "a parameter-server shard's worker"
            raise ParameterServerLost(f"{which} {lost} left the cluster{when}")

    def call(self, method: str, *args: Any, timeout: float) -> Any:
        """Call a parameter-server method and wait for it, at most ``timeout`` seconds.

        The wait is cut in slices (:func:`~psdist.cluster.waiting.wait_sliced`); between slices
        the scheduler is asked whether the PS worker is still there, so a dead parameter server
        raises :class:`ParameterServerLost` within about a second instead of hanging until the
        timeout (a Dask actor call to a dead worker waits for the actor's task to be
        recomputed, which never happens here). Past ``timeout``: :class:`ServerError`.
        """
        what = f"{method}()"
        if self.plan is not None:
            return self._call_shards(method, args, timeout)
        fut = getattr(self.ps, method)(*args)
        return wait_sliced(lambda s: fut.result(timeout=s), what=what, timeout=timeout,
                           alive=lambda: self.check_ps(what))

    def _call_shards(self, method: str, args: tuple[Any, ...], timeout: float) -> Any:
        """:meth:`call` on a sharded server: a consistent cut for ``state_dict``, each shard its
        slice for ``load_state_dict``, shard 0's counters (with each shard's) for ``metrics``,
        and every other call on every shard (shard 0's answer)."""
        assert self.plan is not None
        actors = [s.ps for s in self.servers]
        alive = lambda: self.check_ps(f"{method}()")  # noqa: E731 - one line, used thrice
        if method == "state_dict":
            return gather_state(self.plan, actors, timeout, alive)
        if method == "load_state_dict":
            parts = shard_states(self.plan, (args[0], args[1]))
            futures = [ps.load_state_dict(*p) for ps, p in zip(actors, parts, strict=True)]
            versions = [wait_future(f, "load_state_dict()", timeout, alive) for f in futures]
            return versions[0]
        answers = call_all(actors, method, *args, timeout=timeout, alive=alive)
        if method == "metrics":
            return merge_metrics(self.plan, [s.address for s in self.servers], answers)
        return answers[0]

    def restart_ps(self, state: tuple[dict[str, Any], dict[str, np.ndarray]], wait_s: float = 30.0) -> int:
        """Start a new parameter server holding ``state``; every worker is pointed at it.

        Waits up to ``wait_s`` for the cluster to regain its size (a nanny restarts a killed
        worker within seconds; a batch system may not), then places the PS as at the start.
        Returns the version restored.
        """
        assert self.spec is not None
        if self.plan is not None:  # every shard restarts from the point: they stay one state
            self._retire_shards()
        if self.future is not None:
            self.client.cancel([self.future], force=True)  # its recompute would wait forever
        try:
            self.client.wait_for_workers(self.size, timeout=wait_s)
        except TimeoutError:
            logger.warning("psdist: the cluster did not regain its %d workers in %s s; going on with %d",
                           self.size, wait_s, len(self.client.scheduler_info(n_workers=-1)["workers"]))
        self.restarts += 1
        _start_servers(self.client, self.spec, self, None, state, suffix=f"-r{self.restarts}")
        # same plugin name: Dask tears the old one down on every worker (its tasks stop waiting
        # on the dead actor) and sets the new one up, with the slots of the new placement
        _register(self.client, self.spec, self, self.future.key)
        logger.warning("psdist: parameter server restarted on %s at version %d", self.ps_address,
                       int(state[0]["version"]))
        return int(state[0]["version"])


    def _retire_shards(self) -> None:
        """Stop the shards that survived a shard's loss (their data planes, their actors)."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        for s in self.servers:
            if s.address in workers:
                try:
                    s.ps.close_plane().result(timeout=10)
                except (OSError, TimeoutError, ServerError) as e:  # a dying worker: its plane goes with it
                    logger.warning("psdist: the data plane of shard on %s was not closed: %s", s.address, e)
        self.client.cancel([s.future for s in self.extra], force=True)
        self.extra = []


def _client_gpus(devices: Devices) -> tuple[tuple[str, ...], str]:
    """This process's GPUs (``CUDA_VISIBLE_DEVICES`` entries; none asked about for
    ``devices="cpu"``) and, when there are none, why."""
    if devices == CPU:
        return (), ""
    import torch

    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    why = ("CUDA_VISIBLE_DEVICES is empty" if env is not None and not env.strip() else
           "this torch is a CPU build" if torch.version.cuda is None else "no CUDA device or driver")
    return visible_gpus(torch.cuda.device_count(), env), why


def _gpu_capable(facts: list[WorkerDevices], devices: Devices) -> dict[str, str]:
    """Workers that could train on a GPU (``{name: "cuda"}``): the PS prefers another's CPU."""
    if devices == CPU:
        return {}
    return {f.name: "cuda" for f in facts if f.gpus or f.gpu_resource > 0}


def _place_ps(client: Any, preferred: str | None, dedicated: bool, devices: Mapping[str, str]) -> tuple[str, bool]:
    """:func:`pick_ps_worker`, keeping GPUs training: a worker without a GPU is preferred, and a
    dedicated server on a GPU worker shares it rather than leave its GPU idle."""
    gpu = {n for n, d in devices.items() if d != CPU}
    address, exclusive = pick_ps_worker(client, preferred, dedicated, avoid=gpu)
    name = str(client.scheduler_info(n_workers=-1)["workers"].get(address, {}).get("name"))
    if exclusive and name in gpu:
        logger.info("psdist: the parameter server shares GPU worker %s (its CPU): no GPU is left idle", address)
        exclusive = False
    return address, exclusive


def _start_ps(
    client: Any, spec: SessionSpec, run_id: str, ps_address: str, sess: Session,
    state: tuple[dict[str, Any], dict[str, np.ndarray]] | None, suffix: str = "",
) -> tuple[Any, Any]:
    future = client.submit(
        ParameterServer,
        spec.layout.to_dict(),
        spec.weights,
        spec.optimizers,
        sess.rule,
        sess.max_staleness,
        run_id,
        actor=True,
        workers=[ps_address],
        key=f"psdist-ps-{run_id}{suffix}",
    )
    ps = future.result(timeout=spec.timeout)  # no call to the PS waits forever, its start included
    if state is not None:
        version = ps.load_state_dict(*state).result(timeout=spec.timeout)
        logger.info("psdist: parameter server restored at version %d", version)
    return ps, future


def _start_servers(client: Any, spec: SessionSpec, sess: Session, preferred: str | None,
                   state: tuple[dict[str, Any], dict[str, np.ndarray]] | None, suffix: str = "") -> None:
    """Place and start the parameter server (every shard of a sharded one) holding ``state``."""
    if sess.plan is None:
        sess.ps_address, sess.exclusive = _place_ps(client, preferred, sess.dedicated, sess.devices)
        sess.ps, sess.future = _start_ps(client, spec, sess.run_id, sess.ps_address, sess, state, suffix)
        return
    plan = sess.plan
    gpu = {n for n, d in sess.devices.items() if d != CPU}
    placed = pick_ps_workers(client, plan.shards, preferred, sess.dedicated, avoid=gpu)
    parts = shard_states(plan, state) if state is not None else [None] * plan.shards
    assert sess.rule is not None
    started = []
    for i, (address, exclusive) in enumerate(placed):
        ps, future = start_shard(client, plan, i, spec.weights, dict(spec.optimizers), sess.rule, sess.max_staleness,
                                 sess.run_id, address, parts[i], spec.timeout, suffix)
        started.append(ShardServer(ps, address, future, exclusive))
    first = started[0]
    sess.ps, sess.ps_address, sess.future, sess.exclusive = first.ps, first.address, first.future, first.exclusive
    sess.extra = started[1:]
    if state is not None:
        logger.info("psdist: %d parameter-server shards restored at version %d", plan.shards, int(state[0]["version"]))


def _close_plane(sess: Session) -> None:
    """Stop the parameter server's data plane at the end of a training (its port and threads)."""
    try:
        sess.call("close_plane", timeout=10.0)
    except (ServerError, OSError, TimeoutError) as e:  # a lost PS took its data plane with it
        logger.warning("psdist: the data plane of %s was not closed: %s", sess.ps_address, e)


def _register(client: Any, spec: SessionSpec, sess: Session, ps_key: str) -> str:
    assert sess.rule is not None
    plugin = RunPlugin(
        sess.run_id, spec.model_fn, spec.step, sess.rule, spec.data, sess.ps_address, sess.exclusive,
        spec.optimizers, ps_key=ps_key, data_plane=spec.data_plane, overlap=sess.overlap,
        wire_dtype=spec.wire_dtype, devices=sess.devices, gpu=any(d != CPU for d in sess.devices.values()),
        precision=spec.precision,
        shards=None if sess.plan is None else ShardRoute(
            sess.plan, tuple(s.address for s in sess.servers), tuple(s.future.key for s in sess.servers),
            frozenset(s.address for s in sess.servers if s.exclusive)),
    )
    client.register_plugin(plugin, name=plugin.name)
    return plugin.name


@contextlib.contextmanager
def open_session(spec: SessionSpec, client: Any | None = None) -> Iterator[Session]:
    """Start (or join) a cluster, place the parameter server, register the worker plugins."""
    spec.plan()  # a shard count with nothing for some shard to hold raises before any process starts
    stack = contextlib.ExitStack()
    with stack:
        embedded = client is None
        if client is None:
            # the GPUs are chosen (and a bad devices= refused) before any process starts
            visible, why = _client_gpus(spec.devices)
            gpus, workers = embedded_devices(spec.devices, visible, spec.workers, why)
            cluster, client = embedded_cluster(workers, spec.threads_per_worker, spec.malloc_fix,
                                               security=spec.security, gpus=gpus, ps_workers=spec.ps_shards)
            stack.callback(cluster.close)
            stack.callback(client.close)
        if spec.malloc_fix:  # also fixes workers of an existing cluster, and future ones
            client.register_plugin(MallocFix(), name=MallocFix.name)
        run_id = uuid.uuid4().hex[:10]
        # the embedded cluster starts one worker more for the PS; a user's cluster trains on all
        dedicated = spec.dedicated_ps if spec.dedicated_ps is not None else embedded
        facts = probe(client)
        gpu_workers = _gpu_capable(facts, spec.devices)
        plan = spec.plan()
        placed = pick_ps_workers(client, spec.ps_shards, spec.ps_worker, dedicated, avoid=set(gpu_workers))
        ps_address, exclusive = placed[0]
        servers = {a for a, excl in placed if excl}
        slots = training_slots(client, servers or ps_address, exclusive)
        training = [f.address for f in facts if f.address not in servers]
        devices = assign_devices(facts, training, spec.devices)  # DeviceError before training starts
        overlap = spec.overlaps(devices)
        rule, bound = spec.sized(slots, overlap)
        size = len(client.scheduler_info(n_workers=-1)["workers"])
        sess = Session(client, None, ps_address, f"psdist-run-{run_id}", run_id, spec, None, exclusive,
                       size=size, slots=slots, rule=rule, max_staleness=bound, dedicated=dedicated,
                       overlap=overlap, devices=devices, plan=plan)
        where = (f"the parameter server on {ps_address}'s CPU" if plan is None else
                 f"the parameter server in {plan.describe()} on {', '.join(sorted({a for a, _ in placed}))}")
        sess.training_on = f"training on {describe(devices, facts)}; {where}"
        logger.info("psdist: %s", sess.training_on)
        _start_servers(client, spec, sess, spec.ps_worker, spec.resume)
        # cancel, not release: the Actor handle holds its own reference to the key (kept alive by
        # reference cycles inside distributed until the garbage collector runs), which otherwise
        # keeps the parameter server and its weights on the cluster after the training; a
        # restarted server's future is the one cancelled
        stack.callback(lambda: client.cancel([s.future for s in sess.servers]))
        stack.callback(_close_plane, sess)  # before the cancel: the data plane's port and threads go now
        name = _register(client, spec, sess, sess.future.key)
        stack.callback(client.unregister_worker_plugin, name)
        logger.info("psdist: parameter server on %s", sess.placement)
        yield sess
