"""What runs on the Dask workers: the per-training plugin and the task functions.

The model is built once per worker (lazily, by :class:`RunPlugin`) from the user's factory,
which travels once with the plugin — never with each task. Tasks carry only a chunk's
coordinates; the rows are read here, straight from the Zarr store.
"""

from __future__ import annotations

import ctypes
import logging
import re
import socket
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, NamedTuple

import numpy as np
import torch
from distributed import WorkerPlugin, get_worker

from psdist.cluster.waiting import wait_sliced
from psdist.core.devices import CPU
from psdist.core.protocol import Pull, Push, PushReply, run_version
from psdist.core.rules import Rule
from psdist.core.shards import ShardPlan
from psdist.data.dataset import Chunk, ZarrDataset
from psdist.data.prefetch import ReadAhead, Rows
from psdist.errors import BadChunkError, DeviceError, ServerError
from psdist.plane.client import PlaneClient
from psdist.plane.sharded import ShardedClient
from psdist.replica.loop import ChunkResult, EvalResult, evaluate_rows, train_rows
from psdist.replica.replica import Replica, as_model_dict

__all__ = ["PS_RESOURCE", "SLOT", "ActorServer", "MallocFix", "RunPlugin", "ShardRoute", "evaluate_task", "train_key",
           "train_task"]

logger = logging.getLogger(__name__)

#: Worker resource that admits one psdist training task at a time per worker.
SLOT = "psdist-slot"
#: Worker resource of a worker dedicated to parameter servers (psdist.cluster.batch): never a data worker.
PS_RESOURCE = "psdist-ps"

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_MAX = 32 * 1024 * 1024  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit


def train_key(run_id: str, epoch: int, index: int, restarts: int) -> str:
    """The Dask key of a training task: the worker plugin reads the chunk index back from it."""
    return f"psdist-train-{run_id}-e{epoch}-c{index}-r{restarts}"


def _train_index(key: object, run_id: str) -> int | None:
    """The chunk index of one of this run's training task keys (:func:`train_key`), else None."""
    prefix = f"psdist-train-{run_id}-e"
    if not isinstance(key, str) or not key.startswith(prefix):
        return None
    m = re.fullmatch(r"\d+-c(\d+)-r\d+", key[len(prefix):])
    return int(m.group(1)) if m else None


def fix_malloc() -> bool:
    """Undo the nanny's ``MALLOC_TRIM_THRESHOLD_=65536`` in this process.

    That setting freezes glibc's mmap threshold at 128 KiB, so every tensor buffer is mapped and
    unmapped on each step (page faults halve PyTorch CPU speed). Returns whether glibc took it.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): the trap does not exist there
        return False
    ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX)
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    return bool(ok_mmap and ok_trim)


class MallocFix(WorkerPlugin):
    """Worker plugin applying :func:`fix_malloc` on every worker, new ones included."""

    name = "psdist-malloc-fix"

    def setup(self, worker: Any) -> None:
        if not fix_malloc():
            logger.warning("psdist: mallopt not available on %s; malloc fix not applied", worker.address)


class ShardRoute(NamedTuple):
    """Where a sharded server's shards are: what a worker needs to reach every one."""

    plan: ShardPlan
    addresses: tuple[str, ...]  # each shard's worker, shard 0 first
    keys: tuple[str, ...]  # each shard's actor key
    exclusive: frozenset[str]  # shard workers that train nothing


class RunPlugin(WorkerPlugin):
    """One training's state on a worker: the user's factories and a lazily built replica.

    Parameters
    ----------
    run_id
        Unique id of the training (the plugin is registered as ``psdist-run-<run_id>``).
    model_fn
        Picklable factory returning an ``nn.Module`` (or a dict of them).
    step
        The training step object (``__call__`` trains one batch, ``evaluate`` scores one).
    rule
        The update rule; each worker makes its own worker side.
    data
        The dataset, opened on the worker.
    ps_address
        Worker holding the parameter server; it gets no training slot when ``ps_exclusive``.
    ps_exclusive
        Keep training tasks off the parameter server's worker.
    optimizers
        The training's optimizers (rules with local steps build their local optimizers from them).
    ps_key
        The parameter server actor's key.
    data_plane
        The ``data_plane`` setting: how pushes and pulls travel (:meth:`handle`).
    overlap
        Whether training tasks keep one push in flight (the ``overlap`` setting, resolved).
    wire_dtype
        What the data plane's TCP connection carries (the ``wire_dtype`` setting).
    devices
        The device of each training worker by name (:func:`psdist.core.devices.assign_devices`);
        a worker not named (one that joined after the start) uses its ``cuda:0`` where it has
        the ``GPU`` resource or ``gpu`` says the training is on GPUs, else its CPU.
    gpu
        Whether the training runs on GPUs (any worker of ``devices`` on one).
    precision
        The ``precision`` setting (:mod:`psdist.replica.precision`).
    """

    def __init__(
        self,
        run_id: str,
        model_fn: Any,
        step: Any,
        rule: Rule,
        data: ZarrDataset,
        ps_address: str,
        ps_exclusive: bool,
        optimizers: Mapping[str, Any] | None = None,
        ps_key: str | None = None,
        data_plane: str = "auto",
        overlap: bool = False,
        wire_dtype: str = "float32",
        devices: Mapping[str, str] | None = None,
        gpu: bool = False,
        precision: str = "32",
        shards: ShardRoute | None = None,
    ) -> None:
        self.name = f"psdist-run-{run_id}"
        self.run_id = run_id
        self.model_fn = model_fn
        self.step = step
        self.rule = rule
        self.data = data
        self.ps_address = ps_address
        self.ps_exclusive = ps_exclusive
        self.optimizers = optimizers
        self.ps_key = ps_key
        self.data_plane = data_plane
        self.overlap = overlap
        self.wire_dtype = wire_dtype
        self.devices = dict(devices or {})
        self.gpu = gpu
        self.precision = precision
        # a sharded server: the plan, and each shard's worker address and actor key (shard 0's
        # are ps_address and ps_key: registration and control go there)
        self.shards = shards
        self._ps: Any = None
        self._plane: PlaneClient | ShardedClient | None = None
        self._plane_tried = False  # connected, or auto fell back to the actor (then _plane is None)
        self._replica: Replica | None = None
        self._worker_rule: Any = None
        self._group: Any = None
        self._lock = threading.Lock()
        self._open = threading.Lock()  # the store is opened once, by a task or the read-ahead thread
        self._chunks: dict[int, Chunk] | None = None
        self.ahead = ReadAhead(self._read_index)
        self.closed = threading.Event()  # set at teardown: this run's tasks stop waiting

    def __getstate__(self) -> dict[str, Any]:
        # only the recipe travels; the replica, lock and open store are per process
        state = dict(self.__dict__)
        for k in ("_replica", "_worker_rule", "_group", "_lock", "_worker", "_ps", "closed", "_plane", "_plane_tried",
                  "_open", "_chunks", "ahead"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._replica, self._worker_rule, self._group, self._ps, self._plane = None, None, None, None, None
        self._plane_tried = False
        self._lock = threading.Lock()
        self._open = threading.Lock()
        self._chunks = None
        self.ahead = ReadAhead(self._read_index)
        self.closed = threading.Event()

    async def setup(self, worker: Any) -> None:
        self._worker = worker
        dedicated = worker.state.total_resources.get(PS_RESOURCE, 0) > 0
        if self.shards is not None:  # the workers that hold a shard and do not train
            busy = worker.address in self.shards.exclusive
        else:
            busy = self.ps_exclusive and worker.address == self.ps_address
        slots = 0 if dedicated or busy else 1
        await worker.set_resources(**{SLOT: slots})

    def teardown(self, worker: Any) -> None:
        # the training ended, or its parameter server was replaced (a new plugin of the same
        # name): a task still waiting on the old server gives up now, not at its timeout
        self.closed.set()
        self.ahead.close()
        self._replica = None
        self._group = None
        if self._plane is not None:
            self._plane.close()
        self._plane, self._plane_tried = None, False

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        """Read ahead: a training task of this run queued here (waiting for the training slot)
        has its rows read on a thread while the current chunk trains; a cancelled one is dropped.

        Called on the worker's event loop for every task transition: only a dictionary look-up
        and a thread hand-off happen here.
        """
        index = _train_index(key, self.run_id)
        if index is None:
            return
        if finish in ("constrained", "ready"):
            self.ahead.start(index)
        elif finish in ("released", "forgotten", "cancelled"):
            self.ahead.drop(index)

    def _read_index(self, index: int) -> Rows | None:
        """The read-ahead thread's work: the training chunk of ``index`` and its rows."""
        if self._chunks is None:
            self._chunks = {c.index: c for c in self.data.describe().train}
        chunk = self._chunks.get(index)
        if chunk is None:
            return None
        x, y = self.read(chunk)
        return chunk, x, y

    def server(self) -> Any:
        """This worker's handle on the parameter server, made once from its address and key.

        Tasks do not carry the Actor: an Actor argument is a dependency on the actor's key, and
        the scheduler then sends every chunk task to the workers already holding a copy of it —
        workers that join later (scale, adapt) would get none.
        """
        if self._ps is None:
            from distributed import Actor

            from psdist.cluster.actor import ParameterServer

            self._ps = Actor(ParameterServer, self.ps_address, self.ps_key, worker=self._worker)
        return self._ps

    def handle(self, ps: Any, timeout: float) -> ActorServer:
        """The server handle of this worker's tasks: pushes and pulls over the data plane
        (:mod:`psdist.plane`, connected on first use), the rest through the actor."""
        actor = ActorServer(ps, timeout, self.closed)
        if self.data_plane == "actor":
            return actor
        if not self._plane_tried:
            self._plane, self._plane_tried = self._connect(ps, timeout), True
        return actor if self._plane is None else PlaneServerHandle(ps, timeout, self.closed, self._plane)

    def _connect(self, ps: Any, timeout: float) -> PlaneClient | ShardedClient | None:
        if self.shards is not None:
            return self._connect_shards(timeout)
        worker = self._worker
        try:
            # sliced: a server killed meanwhile is replaced and this plugin torn down, which ends
            # the wait at once (an actor call to a dead worker would wait the whole timeout)
            endpoint = ActorServer(ps, timeout, self.closed).call("the data plane's endpoint", ps.plane_endpoint())
            ssl = None
            if endpoint.get("tls"):
                ssl = worker.security.get_connection_args("worker").get("ssl_context")
            client = PlaneClient.connect(endpoint, worker.address, self.data_plane, timeout, ssl,
                                         wire_dtype=self.wire_dtype)
        except (OSError, ServerError, ValueError) as e:
            if self.closed.is_set():  # the run's plugin was replaced or ended: nothing to fall back to
                raise
            if self.data_plane != "auto":
                raise ServerError(f"data_plane={self.data_plane!r}: {worker.address} could not connect to the "
                                  f"parameter server's data plane ({e}); use data_plane='auto' or 'actor'") from e
            logger.warning("psdist: %s: no data plane (%s); pushes and pulls go through the actor",
                           worker.address, e)
            return None
        logger.info("psdist: %s: data plane over %s (%s)", worker.address, client.backend, client.wire_dtype)
        return client

    def _connect_shards(self, timeout: float) -> ShardedClient:
        """One data-plane connection per shard (no actor fallback: a sharded server needs the plane)."""
        from distributed import Actor

        from psdist.cluster.actor import ParameterServer

        assert self.shards is not None
        plan, addresses, keys = self.shards.plan, self.shards.addresses, self.shards.keys
        worker = self._worker
        clients: list[PlaneClient] = []
        try:
            for address, key in zip(addresses, keys, strict=True):
                actor = Actor(ParameterServer, address, key, worker=worker)
                endpoint = ActorServer(actor, timeout, self.closed).call("a shard's data-plane endpoint",
                                                                         actor.plane_endpoint())
                ssl = worker.security.get_connection_args("worker").get("ssl_context") if endpoint.get("tls") else None
                backend = "auto" if self.data_plane == "actor" else self.data_plane
                clients.append(PlaneClient.connect(endpoint, worker.address, backend, timeout, ssl,
                                                   wire_dtype=self.wire_dtype))
        except (OSError, ServerError, ValueError) as e:
            for c in clients:
                c.close()
            if self.closed.is_set():
                raise
            raise ServerError(f"{worker.address} could not connect to shard {len(clients)} of the parameter server "
                              f"({addresses[len(clients)]}): {e}; a sharded server needs its data plane") from e
        logger.info("psdist: %s: data plane to %d shards over %s (%s)", worker.address, len(clients),
                    clients[0].backend, clients[0].wire_dtype)
        return ShardedClient(clients, plan)

    @property
    def plane(self) -> PlaneClient | ShardedClient | None:
        """This worker's data-plane connection for the run (``None``: not connected, or the actor path)."""
        return self._plane

    @property
    def lock(self) -> threading.Lock:
        """Held while a task uses the replica (guards against misconfigured resources)."""
        return self._lock

    def replica(self, ps: Any, timeout: float) -> tuple[Replica, Any]:
        """The worker's model replica and rule state, built on first use."""
        if self._replica is None:
            worker = self._worker
            device = self.device()
            if device == CPU:
                torch.set_num_threads(max(1, worker.state.nthreads))
            else:
                torch.cuda.set_device(torch.device(device))  # kernels and cuDNN on this worker's GPU
                torch.backends.cudnn.benchmark = True  # a chunk's minibatches share their shape
            self._replica = Replica(worker.address, as_model_dict(self.model_fn()), device, self.precision)
            self._worker_rule = self.rule.worker_side(self.optimizers)
            info = {
                "host": socket.gethostname(),
                "device": device,
                "threads": torch.get_num_threads(),
                "name": str(worker.name),
            }
            ActorServer(ps, timeout, self.closed).call("a registration", ps.register(worker.address, info))
        return self._replica, self._worker_rule

    def device(self) -> str:
        """This worker's training device: as assigned at the start, or for a worker that joined
        later its ``cuda:0`` on a GPU training (:class:`~psdist.errors.DeviceError` without one)."""
        worker = self._worker
        name = str(worker.name)
        if name in self.devices:
            return self.devices[name]
        advertised = worker.state.total_resources.get("GPU", 0) > 0
        if not (advertised or self.gpu):
            return CPU
        if not torch.cuda.is_available():
            if not advertised:
                return CPU
            raise DeviceError(f"worker {name!r} ({worker.address}) advertises the GPU resource, but torch sees no "
                              "CUDA device there; install a CUDA build of torch on it or start it without GPU=")
        logger.info("psdist: %s joined after the start: it trains on cuda:0", worker.address)
        return "cuda:0"

    def read(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
        """The chunk's rows, from the store opened once per worker.

        :class:`~psdist.errors.BadChunkError` when a chunk of the store is missing or corrupted;
        the task functions skip it or fail as the dataset's ``skip_bad_chunks`` says.
        """
        with self._open:
            if self._group is None:
                self._group = self.data.open_group()
        return self.data.read(chunk, self._group)

    def skip(self, chunk: Chunk, error: BadChunkError, what: str) -> bool:
        """Whether to skip a bad chunk (``skip_bad_chunks``); logs a warning naming it if so."""
        if not self.data.skip_bad_chunks:
            return False
        logger.warning("psdist: skipping bad %s chunk %d: %s", what, chunk.index, error)
        return True


class ActorServer:
    """:class:`~psdist.core.protocol.ServerHandle` over the actor, with a timeout on every call.

    A call waits in slices of :data:`~psdist.cluster.waiting.SLICE` seconds
    (:func:`~psdist.cluster.waiting.wait_sliced`); between slices it gives up when the run's
    plugin was torn down (training over, or the parameter server replaced after its worker
    died): an actor call to a dead worker would otherwise wait until the timeout.
    """

    def __init__(self, ps: Any, timeout: float, closed: threading.Event | None = None) -> None:
        self.ps = ps
        self.timeout = timeout
        self.closed = closed if closed is not None else _closed_event(ps)

    def call(self, what: str, fut: Any, timeout: float | None = None) -> Any:
        """Wait for an actor call's future in slices, abandoned when the run's plugin is torn down."""
        def not_abandoned() -> None:
            if self.closed is not None and self.closed.is_set():
                raise ServerError(
                    f"{what} was abandoned: this training's parameter server was replaced or the training ended"
                )

        return wait_sliced(lambda s: fut.result(timeout=timedelta(seconds=s)), what=what,
                           timeout=timeout or self.timeout, alive=not_abandoned)

    def pull(self, worker: str, have_version: int = -1) -> Pull:
        return self.call("a pull", self.ps.pull(worker, have_version))

    def push(self, push: Push, pull: bool = True) -> PushReply:
        return self.call("a push", self.ps.push(push, pull))

    def join(self, worker: str) -> None:
        self.call("a join", self.ps.join(worker))

    def leave(self, worker: str) -> None:
        self.call("a leave", self.ps.leave(worker))

    def wait(self, worker: str, have_version: int = -1) -> Pull:
        # the server gives up (evicting silent workers) after `timeout`; we allow it that long
        return self.call("a wait", self.ps.wait(worker, have_version, self.timeout), 2 * self.timeout + 10)


class PlaneServerHandle(ActorServer):
    """Pushes and pulls over the data plane (one persistent connection), the rest as :class:`ActorServer`."""

    def __init__(self, ps: Any, timeout: float, closed: threading.Event | None,
                 plane: PlaneClient | ShardedClient) -> None:
        super().__init__(ps, timeout, closed)
        self.plane = plane

    def pull(self, worker: str, have_version: int = -1) -> Pull:
        return self.plane.pull(worker, have_version)

    def push(self, push: Push, pull: bool = True) -> PushReply:
        return self.plane.push(push, pull)

    def push_buffer(self) -> np.ndarray | None:
        return self.plane.push_buffer()

    def run_version(self, version: int) -> int:
        return run_version(self.plane, version)

    def join(self, worker: str) -> None:
        self.plane.join(worker)

    def leave(self, worker: str) -> None:
        self.plane.leave(worker)

    def wait(self, worker: str, have_version: int = -1) -> Pull:
        return self.plane.wait(worker, have_version)


def _closed_event(ps: Any) -> threading.Event | None:
    """The teardown event of the run plugin that made ``ps`` (None outside a worker)."""
    try:
        plugins = get_worker().plugins
    except ValueError:
        return None
    for p in plugins.values():
        if isinstance(p, RunPlugin) and p._ps is ps:
            return p.closed
    return None


def _plugin(name: str) -> RunPlugin:
    plugin = get_worker().plugins[name]
    assert isinstance(plugin, RunPlugin), f"worker plugin {name!r} is a {type(plugin).__name__}"
    return plugin


def train_task(
    plugin: str,
    chunk: Chunk,
    epoch: int,
    seed: int,
    batch_size: int,
    push_every: int,
    timeout: float,
) -> ChunkResult:
    """Dask task: train on one chunk against the parameter server.

    A bad chunk (:class:`~psdist.errors.BadChunkError`) fails the task, or with the dataset's
    ``skip_bad_chunks`` gives a result of 0 samples with ``bad_chunks=1``.
    """
    run = _plugin(plugin)
    with run.lock:
        ps = run.server()
        replica, rule = run.replica(ps, timeout)
        t0 = time.time()
        try:
            # read ahead while the previous chunk trained (then only what is left is waited for)
            rows = run.ahead.take(chunk)
            x, y = rows if rows is not None else run.read(chunk)
        except BadChunkError as e:
            if not run.skip(chunk, e, "training"):
                raise
            result = ChunkResult.skipped(chunk.index, epoch, replica.worker, str(replica.device), e)
            result.read_s = time.time() - t0
            result.spans.append(("read", t0, t0 + result.read_s))
            return result
        t1 = time.time()
        torch.manual_seed(seed)  # dropout and friends: reproducible per chunk and epoch
        result = train_rows(
            replica, run.handle(ps, timeout), rule, run.step, x, y,
            batch_size=batch_size, push_every=push_every, seed=seed,
            chunk=chunk.index, epoch=epoch, overlap=run.overlap,
        )
        result.read_s = t1 - t0  # with a read ahead: only what the task waited for
        result.chunks_read_ahead = int(rows is not None)
        result.spans.insert(0, ("read", t0, t1))
        return result


def evaluate_task(plugin: str, chunk: Chunk, batch_size: int, timeout: float) -> EvalResult:
    """Dask task: evaluate the current weights on one validation chunk.

    A bad chunk fails the task, or with ``skip_bad_chunks`` gives a result with ``bad_chunks=1``,
    no samples and ``outputs=None``, to be left out of the metrics.
    """
    run = _plugin(plugin)
    with run.lock:
        ps = run.server()
        replica, rule = run.replica(ps, timeout)
        try:
            x, y = run.read(chunk)
        except BadChunkError as e:
            if not run.skip(chunk, e, "validation"):
                raise
            return EvalResult.skipped(chunk.index, replica.worker, e)
        return evaluate_rows(
            replica, run.handle(ps, timeout), run.step.evaluate, x, y,
            batch_size=batch_size, chunk=chunk.index, keep_local=rule.keeps_local,
        )
