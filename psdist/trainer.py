"""The user-facing :class:`Trainer`: checks everything, then drives epochs on a Dask cluster.

The trainer owns no weights while training runs — the parameter server does. It submits one task
per Zarr chunk, validates on the workers at each epoch end, keeps the history, and fetches the
server's state at the end (for ``model()`` and ``save()``).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING, Any

import cloudpickle
import numpy as np
import torch

from psdist.checks import dry_run
from psdist.cluster.driver import EpochDriver, Progress
from psdist.cluster.session import Session, SessionSpec, open_session
from psdist.cluster.tasks import ChunkRunner
from psdist.core.layout import Layout
from psdist.core.server import ServerState
from psdist.data.dataset import DatasetInfo, ZarrDataset
from psdist.errors import ConfigError, DataError, ModelError
from psdist.export import export_safetensors, plain_state_dict
from psdist.optim import TorchOptimizer
from psdist.optim.adopt import adopt_optimizers
from psdist.optim.sharding import ELEMENTWISE
from psdist.replica.binding import flatten, unflatten_into
from psdist.replica.replica import as_model_dict, layout_of
from psdist.replica.steps import SupervisedStep
from psdist.run.checkpoint import read_checkpoint, write_checkpoint
from psdist.run.events import TOPIC, EndEvent, EpochEvent, Event, LrEvent, StartEvent
from psdist.run.history import History
from psdist.run.metrics import default_metrics
from psdist.run.recovery import RecoveryPoint
from psdist.run.state import RunState
from psdist.settings import Settings

if TYPE_CHECKING:
    from psdist.handle import TrainingHandle

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)


def _int_at_least(name: str, value: Any, low: int, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}={value!r} must be an integer >= {low}, e.g. {example}")
    return value


class Trainer:
    """Train a PyTorch model data-parallel through a Dask-actor parameter server.

    Parameters
    ----------
    model_fn
        Picklable function returning a fresh ``nn.Module`` (or a dict of named modules when
        ``step`` trains several). Built once per worker.
    loss_fn
        ``loss_fn(output, target) -> scalar tensor`` (mean over the batch). Not needed with a
        custom ``step``.
    data
        A :class:`~psdist.data.dataset.ZarrDataset` or the path of one.
    optimizer
        The server's ``torch.optim`` optimizer: a class (``torch.optim.AdamW``), a factory
        (``functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01)``, or a function of
        the ``(name, parameter)`` pairs building parameter groups), or a
        :class:`psdist.optim.TorchOptimizer` with a scheduler and ``clip_norm``; a dict of them
        per model name (a GAN). Default ``psdist.optim.SGD(lr=0.01)``. The server builds it over
        its weights; the object you pass is a recipe and never changes.
    rule
        Update rule (:mod:`psdist.rules`); default :class:`~psdist.rules.Downpour`. Settings
        that depend on the number of workers (EASGD's alpha) are sized at each ``fit`` from the
        training slots the cluster really has; the history records them.
    max_staleness
        Reject pushes computed on weights more than this many versions old. ``"auto"``
        (default): ``2 * n + 2`` for n training slots, sized at each ``fit`` (see
        :func:`psdist.cluster.session.auto_staleness`); ``None``: no bound.
    push_every
        Minibatches whose gradients a worker accumulates before each push.
    overlap
        Keep one push in flight while the next window of minibatches computes
        (:mod:`psdist.replica.overlap`): the round trip hides behind compute, and every
        gradient is computed on weights one push older (one more round of staleness, counted
        in the history and on the dashboard; ``"auto"`` staleness bounds double). ``None``
        (default): on for CUDA workers when the rule allows it, off on CPU, where both cores
        already compute. Only rules whose workers just push and pull (Downpour,
        StalenessAware, DynSGD); ``True`` with another is a ``ConfigError``.
    batch_size
        Rows per minibatch.
    workers, threads_per_worker
        Size of the embedded LocalCluster (ignored when a client is given). ``workers=None``
        (default): one per GPU of ``devices``, else 2.
    devices
        What trains (:mod:`psdist.core.devices`): ``"auto"`` (default) every GPU torch sees, one
        worker process each pinned by ``CUDA_VISIBLE_DEVICES``, the parameter server on a CPU
        worker (no GPU: CPU workers); ``"cpu"``; a number of GPUs; or GPU ordinals ``[0, 2]``.
        With ``client=`` only ``"auto"`` (each worker on the GPU it was given) or ``"cpu"``.
    precision
        ``"32"`` (default), ``"bf16-mixed"`` (autocast to bfloat16, CPU or GPU) or
        ``"16-mixed"`` (float16 with a loss scaler per worker; overflowing minibatches skipped
        and counted). The server's weights and optimizer state stay float32.
    client
        An existing ``distributed.Client``; without it each ``fit`` starts and closes a
        LocalCluster.
    ps_worker
        Name or address of the worker to host the parameter server (default: chosen).
    dedicated_ps
        Whether the parameter server's worker is kept free of training. ``None`` (default):
        the embedded cluster starts one worker more for it; on a cluster you give
        (``client=``) every worker trains and the server shares one, unless the cluster has a
        worker started for it (the batch configs' ``psdist-ps`` job). ``True`` keeps training
        tasks off its worker.
    data_plane
        How pushes and pulls travel (:mod:`psdist.plane`): ``"auto"`` (default) shared memory
        when the parameter server is on the worker's host, TCP otherwise (TLS on a TLS cluster),
        the Dask actor if neither connects (logged); ``"shm"`` or ``"tcp"`` force one (an error
        if it cannot connect); ``"actor"`` keeps the actor path.
    wire_dtype
        What gradients and pulled weights travel as over the data plane's TCP connections:
        ``"float32"`` (default, exact), ``"bf16"`` or ``"fp16"`` (half the bytes between hosts,
        rounded to nearest even; fp16 overflows past 65504). The server's weights and optimizer
        state stay float32. Shared memory on one host always carries float32.
    metrics
        Extra validation metrics ``{name: fn(targets, outputs) -> float}``.
    early_stopping
        An :class:`~psdist.run.stopping.EarlyStopping` (patience and/or target).
    step
        Custom training step object (``__call__(replica, x, y) -> loss`` after backward, and
        ``evaluate(replica, x, y) -> (loss_sum, outputs)``); default supervised.
    seed
        Seeds initial weights, chunk order and in-chunk shuffles.
    malloc_fix
        Undo Dask's ``MALLOC_TRIM_THRESHOLD_`` on workers (about 2x faster PyTorch CPU training).
    timeout
        Seconds any call to the parameter server may take before it is an error.
    checkpoints
        Recovery points (:class:`~psdist.run.recovery.Checkpoints`): how often the server's state is
        saved within an epoch, to which file, how many lost parameter servers to replace.
        Default: in memory, every 60 s and at each epoch end.
    security
        TLS for the embedded cluster: ``True`` (a temporary certificate), a
        ``distributed.Security`` or ``{"ca_file", "cert", "key"}`` (see :mod:`psdist.cluster.security`).
        With ``client=`` the client's own security applies.
    chunk_timeout
        Seconds a chunk task may take before its worker counts as hung and is restarted (its
        tasks then run elsewhere). Default: the larger of ``timeout`` and 20 times the
        slowest chunk so far.
    """

    def __init__(
        self,
        model_fn: Callable[[], Any],
        loss_fn: Callable[..., torch.Tensor] | None = None,
        data: ZarrDataset | str | None = None,
        optimizer: Any = None,
        **settings: Any,
    ) -> None:
        # every setting checked (and the optimizers copied, one per model) by psdist.settings
        self.settings = Settings.from_kwargs(model_fn=model_fn, loss_fn=loss_fn, optimizer=optimizer, **settings)
        if data is None:
            raise DataError("give data=psdist.ZarrDataset('path.zarr') (or a path)")
        training = self.settings.training
        self.step = training.step if training.step is not None else SupervisedStep(loss_fn)  # type: ignore[arg-type]
        self.data = data if isinstance(data, ZarrDataset) else ZarrDataset(data)
        # history, epoch, progress, the server's state, recovery points: shared by the thread
        # that trains and the user's (save, model, set_lr while fit(block=False) runs)
        self.run = RunState(self.settings.faults.checkpoints)
        self.dashboard_link: str | None = None
        self._ps_address: str | None = None  # where the last fit's parameter server was
        self._ps_addresses: list[str] = []  # and its shards'
        self.dashboard_url: str | None = None  # the psdist page of the current/last training
        self.run_id: str | None = None
        self._sess: Session | None = None  # the live session of a running fit
        self._running = False  # a fit is under way (from its checks to its end)
        self._stop = threading.Event()  # replaced by a fresh one at every fit
        self._live = threading.Event()  # the cluster and the server are up (or the fit ended)
        for name, fn in (("model_fn", model_fn), ("loss_fn", loss_fn), ("step", self.step)):
            try:
                cloudpickle.dumps(fn)
            except Exception as e:
                raise ModelError(
                    f"{name} cannot be pickled for the workers ({type(e).__name__}: {e}); define "
                    "it at module level (or with functools.partial) without open files, locks or clients"
                ) from e

    # ------------------------------------------------------------------ checks
    def _optimizers(self, layout: Layout) -> dict[str, TorchOptimizer]:
        given = self.settings.training.optimizer
        if not isinstance(given, dict):
            if len(layout.groups) > 1:
                raise ConfigError(
                    f"the models {list(layout.names)} need one optimizer each: "
                    f"optimizer={{{', '.join(f'{n!r}: psdist.optim.Adam(lr=2e-4)' for n in layout.names)}}}"
                )
            return {layout.names[0]: given}
        if set(given) != set(layout.names):
            raise ConfigError(f"optimizers given for {sorted(given)}, models are {list(layout.names)}")
        return dict(given)

    def _check_optimizers(self, layout: Layout, weights: np.ndarray, optimizers: dict[str, TorchOptimizer]) -> frozenset[str]:
        """Build each optimizer over the model's real parameter names, as the server will, and
        load the checkpoint's optimizer state into it: a factory's error, a rule that refuses
        the optimizer or state that does not fit raises here, before any cluster starts.
        Returns the models whose optimizer works value by value (a sharded server may cut their tensors)."""
        probe = ServerState(layout, weights.copy(), optimizers)
        if self.run.server_state is not None:
            probe.load_state_dict(*self.run.server_state)
        staleness = self.settings.algorithm.max_staleness
        self.settings.algorithm.rule.check(self.settings.algorithm.push_every,
                                           staleness if isinstance(staleness, int) else None,
                                           {n: o.info for n, o in probe.optimizers.items()})
        return frozenset(n for n, o in probe.optimizers.items() if o.info.name in ELEMENTWISE)

    def _build(self) -> tuple[dict[str, torch.nn.Module], Layout]:
        # seeded initial weights, without touching the caller's global RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.training.seed)
            try:
                built = self.settings.training.model_fn()
            except Exception as e:
                raise ModelError(f"model_fn raised {type(e).__name__}: {e}") from e
        models = as_model_dict(built)
        return models, layout_of(models)

    def _prepare(self) -> tuple[DatasetInfo, SessionSpec, dict[str, Any]]:
        info = self.data.describe()
        if not info.train:
            raise DataError(f"{self.data.path!r} leaves no training chunks after the validation split")
        self._check_same_split(info)
        models, layout = self._build()
        weights = np.concatenate([flatten(models[g.name], g.spec) for g in layout.groups])
        with torch.random.fork_rng(devices=[]):  # dropout in the dry run: no global side effect
            dry_run(self.step, self.data, models, info, self.settings.training.precision)
        optimizers = self._optimizers(layout)
        if self.run.server_state is not None:
            layout.check_same(Layout.from_dict(self.run.server_state[0]["layout"]))
        splittable = self._check_optimizers(layout, weights, optimizers)
        spec = SessionSpec(
            self.settings.training.model_fn, self.step, self.settings.algorithm.rule, self.data, layout, weights, optimizers,
            self.settings.algorithm.max_staleness, self.settings.scaling.workers, self.settings.scaling.threads_per_worker, self.settings.scaling.malloc_fix,
            self.settings.faults.timeout, self.settings.scaling.ps_worker, self.run.server_state, self.settings.scaling.security, self.settings.scaling.dedicated_ps,
            self.settings.scaling.data_plane, self.settings.algorithm.overlap, self.settings.scaling.wire_dtype,
            self.settings.scaling.devices, self.settings.training.precision, self.settings.scaling.ps_shards,
            splittable,
        )
        # accuracy by default for one integer target; several targets: the metrics given
        metrics = {**(default_metrics(info.y_dtype) if info.single_target else {}), **self.settings.training.metrics}
        return info, spec, metrics

    def _check_same_split(self, info: DatasetInfo) -> None:
        """A resumed training validates on the chunks it validated on (never on trained rows)."""
        saved = self.run.held_out
        now = [c.index for c in info.val if c.x == self.data.input_fields]  # held-out chunks of the training arrays
        if saved is None or saved == now:
            return
        raise DataError(
            f"the checkpoint held out chunks {saved} of {self.data.path!r} for validation, this dataset holds out "
            f"{now}: the resumed run would validate on rows it trained on. Give the dataset of that training, "
            f"e.g. psdist.ZarrDataset({str(self.data.path)!r}, val_fraction=..., holdout_seed=...) with its values"
        )

    # ------------------------------------------------------------------ training
    def fit(
        self, epochs: int = 1, *, progress: Progress | None = None, block: bool = True
    ) -> History | TrainingHandle:
        """Train ``epochs`` more epochs; returns the (whole) history.

        Everything is checked before a cluster starts; the embedded cluster (if any) is closed
        at the end, also on error. With ``block=False`` the training runs in a background
        thread and a :class:`~psdist.handle.TrainingHandle` comes back at once (live progress
        in Jupyter, ``handle.stop()``, ``handle.result()``, ``trainer.set_lr()`` meanwhile).
        Every ``fit`` starts with a fresh stop signal: a ``stop()`` ends only the fit it was
        meant for.
        """
        _int_at_least("epochs", epochs, 1, "fit(epochs=5)")
        with self.run.lock:
            if self._running:
                raise ConfigError("this trainer is already training; wait for handle.result() or call handle.stop()")
            prepared = self._prepare()  # bad input raises here, in the caller, before any cluster
            self._running = True
            self._stop = threading.Event()
            self._live.clear()
        if block:
            return self._run(epochs, progress, prepared)
        from psdist.handle import TrainingHandle
        from psdist.progress import progress_bar

        bar = progress_bar(epochs, self.epoch)

        def report(ev: dict[str, Any]) -> None:
            bar(ev)
            if progress is not None:
                progress(ev)

        future: Future[History] = Future()
        future.set_running_or_notify_cancel()

        def run() -> None:
            try:
                future.set_result(self._run(epochs, report, prepared))
            except BaseException as e:  # handed to the caller by handle.result()
                logger.error("psdist: background training failed: %r", e)
                future.set_exception(e)

        # a daemon thread, not an executor: a kernel that exits does not wait for the training
        threading.Thread(target=run, name=f"psdist-fit-{self.name}", daemon=True).start()
        return TrainingHandle(self, future, epochs)

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until the running fit's cluster and parameter server are up (or it ended)."""
        return self._live.wait(timeout)

    def _run(self, epochs: int, progress: Progress | None, prepared: Any) -> History:
        """The body of a fit (in the caller's thread or a background one); ends the fit's state."""
        try:
            return self._fit(epochs, progress, prepared, self._stop)
        finally:
            with self.run.lock:
                self._running = False
            self._live.set()  # nobody waits forever for a fit that failed to start

    def _fit(self, epochs: int, progress: Progress | None, prepared: Any, stop: threading.Event) -> History:
        info, spec, metrics = prepared
        with open_session(spec, self.settings.scaling.client) as sess:
            self.dashboard_link, self.run_id = sess.dashboard_link, sess.run_id
            self.dashboard_url = self._dashboard(sess)
            publish = partial(self._publish, sess)
            publish(StartEvent(run=sess.run_id, name=self.name, ps=sess.ps_address, epochs=epochs,
                               config=self._config(sess)))
            logger.info("psdist: training %d epochs; parameter server on %s; live page %s", epochs,
                        sess.placement, self.dashboard_url or self.dashboard_link)
            assert sess.rule is not None
            runner = ChunkRunner(sess, self.settings.training.seed, self.settings.training.batch_size, sess.rule.comm_period(self.settings.algorithm.push_every),
                                 self.settings.faults.timeout, self.settings.faults.chunk_timeout, stop)
            write = self._write_point if self.settings.faults.checkpoints.path is not None else None
            driver = EpochDriver(runner, self.run, info, metrics, self.settings.training.seed, self.settings.faults.checkpoints.max_restarts,
                                 publish, write, progress, str(self.data.path))
            with self.run.lock:
                self._sess = sess
                self.run.points.last = None
            self._live.set()
            if progress is not None:
                progress({"event": "start", "run": sess.run_id, "dashboard": self.dashboard_url or self.dashboard_link,
                          "training_on": sess.training_on})
            try:
                reason = self._epochs(driver, epochs, progress, stop)
            except BaseException as exc:
                # keep what the server learned (Ctrl-C in a notebook, a failed task), without
                # letting a second failure hide the first
                self._end(sess, f"error: {exc!r}", exc)
                raise
            self._end(sess, reason)
        return self.history

    def _epochs(self, driver: EpochDriver, epochs: int, progress: Progress | None, stop: threading.Event) -> str:
        """Run the fit's epochs; why they ended.

        A stop ends the epoch early when chunks are still to be submitted (a partial epoch);
        when the whole epoch was already in flight (a window as wide as the epoch), the fit ends
        after it instead — the stop is never lost.
        """
        driver.take_point(write=False)  # a lost server before any point restarts here
        for _ in range(epochs):
            record = driver.epoch()
            self.run.epoch_done(record)  # the record, the epoch count and the progress together
            driver.sess.call("publish", timeout=self.settings.faults.timeout)  # a fresh snapshot for the page
            driver.publish(EpochEvent(run=driver.sess.run_id, record=record))
            if record.get("partial"):
                logger.info("psdist: stopped after %d of the epoch's chunks", record["chunks"])
                return self._stopped("stopped by the user")
            driver.take_point(write=True)
            if progress is not None:
                progress({"event": "epoch", "record": record})
            if stop.is_set():
                logger.info("psdist: stopped after epoch %d", record["epoch"])
                return self._stopped("stopped by the user")
            if self.settings.training.early_stopping is not None and self.settings.training.early_stopping.update(record):
                logger.info("psdist: early stop: %s", self.settings.training.early_stopping.reason)
                return self._stopped(self.settings.training.early_stopping.reason or "early stopping")
        return "completed"

    def _stopped(self, reason: str) -> str:
        self.run.stopped_reason = reason
        return reason

    def _end(self, sess: Session, reason: str, exc: BaseException | None = None) -> None:
        """Fetch the server's final state (or fall back to the last point) and leave the session."""
        with self.run.lock:
            try:
                self.run.fetched(sess.call("state_dict", timeout=self.settings.faults.timeout),
                                 sess.call("metrics", timeout=self.settings.faults.timeout))
                self._publish(sess, EndEvent(run=sess.run_id, reason=reason))
            except Exception as second:
                if exc is None:
                    raise
                # the bookkeeping goes back to the last recovery point, so that save() never
                # pairs old weights with a newer epoch count or progress
                self.run.back_to_last_point()
                note = (f"psdist could not fetch the server state afterwards ({second!r}); "
                        "the trainer holds its last recovery point")
                if hasattr(exc, "add_note"):
                    exc.add_note(note)
                else:  # Python 3.10
                    logger.error(note)
            finally:
                self._ps_address = sess.ps_address  # a restarted server's, if it was replaced
                self._ps_addresses = [s.address for s in sess.servers]
                self._sess = None

    @property
    def name(self) -> str:
        """A label for logs and the dashboard: the model factory's name."""
        fn = getattr(self.settings.training.model_fn, "func", self.settings.training.model_fn)  # functools.partial
        return str(getattr(fn, "__name__", type(fn).__name__))

    def _config(self, sess: Session) -> dict[str, Any]:
        """The run's settings as the dashboard shows them: sized for this session's cluster."""
        opts = self.settings.training.optimizer if isinstance(self.settings.training.optimizer, dict) else {"model": self.settings.training.optimizer}
        assert sess.rule is not None
        return {
            "rule": sess.rule.to_config(), "optimizers": {k: o.to_config() for k, o in opts.items()},
            "batch_size": self.settings.training.batch_size, "push_every": self.settings.algorithm.push_every, "workers": self.settings.scaling.workers,
            # the store's name, not its path: the page shows nothing a Dask dashboard would not
            "max_staleness": sess.max_staleness, "data": os.path.basename(str(self.data.path).rstrip("/")),
            "seed": self.settings.training.seed, "parameter_server": sess.placement, "training_workers": sess.slots,
            "overlap": sess.overlap, "devices": ", ".join(f"{k}: {v}" for k, v in sorted(sess.devices.items())), "precision": self.settings.training.precision,
        }

    def _publish(self, sess: Session, record: Event) -> None:
        sess.client.log_event(TOPIC, record.to_message())

    def _dashboard(self, sess: Session) -> str | None:
        """Install the psdist page in the cluster's dashboard; its URL for this run (or None)."""
        from psdist import dashboard

        return dashboard.page_url(sess.client, sess.run_id)

    # ------------------------------------------------------------------ control while training
    def set_lr(self, lr: float, model: str | None = None) -> float:
        """Change the learning rate (all models, or ``model``); takes effect at the server now.

        While a training runs (``fit(block=False)`` or from another thread) the parameter server
        switches at once and the dashboard shows it; otherwise the next ``fit`` starts with it.
        Schedules keep applying their factor on top of the new base rate. Returns the rate in
        force for the first model.
        """
        if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"lr={lr!r} must be a positive number, e.g. trainer.set_lr(0.01)")
        opts = self.settings.training.optimizer if isinstance(self.settings.training.optimizer, dict) else {"model": self.settings.training.optimizer}
        if model is not None and model not in opts:
            raise ConfigError(f"no model {model!r}; models are {sorted(opts)}")
        with self.run.lock:
            state = self.run.server_state
            stored = state[0]["optimizers"] if state is not None else {}
            changed = {}
            for name, opt in opts.items():  # recipes are immutable: the next fit's get the new base rate
                changed[name] = opt.with_lr(lr) if model in (None, name) else opt
                # one optimizer for a model named otherwise ({"net": module}): its group's name
                key = next(iter(stored)) if len(opts) == 1 and len(stored) == 1 else name
                if model in (None, name) and key in stored:
                    stored[key]["state"]["set_lr"] = float(lr)  # applied after the state loads
            given = self.settings.training.optimizer
            self.settings = self.settings.replace(optimizer=changed if isinstance(given, dict) else changed["model"])
            sess = self._sess
            if sess is None:
                return float(lr)
            now = sess.call("set_lr", float(lr), model, timeout=self.settings.faults.timeout)
        self._publish(sess, LrEvent(run=sess.run_id, lr=float(lr), model=model))
        logger.info("psdist: learning rate set to %g%s", lr, f" for {model}" if model else "")
        return float(now)

    def stop(self) -> None:
        """Ask a running ``fit`` to end after the chunk tasks already running (see the handle)."""
        self._stop.set()

    def trace(self, path: str | None = None) -> dict[str, Any]:
        """The timeline (pull/compute/push/wait/read/validate per worker) as a Chrome trace.

        Open the file in ``chrome://tracing`` or https://ui.perfetto.dev. Returns the trace dict.
        """
        from psdist.run.trace import chrome_trace, write_trace

        trace = chrome_trace(self.timeline, name=self.name)
        if path is not None:
            write_trace(path, trace)
        return trace

    # ------------------------------------------------------------------ results
    @property
    def ps_address(self) -> str | None:
        """The worker of the running fit's parameter server (after a restart, the new one's)."""
        sess = self._sess
        return sess.ps_address if sess is not None else self._ps_address

    @property
    def ps_addresses(self) -> list[str]:
        """The workers of the running fit's parameter-server shards, shard 0 first (one for ``ps_shards=1``)."""
        sess = self._sess
        return [s.address for s in sess.servers] if sess is not None else list(self._ps_addresses)

    @property
    def history(self) -> History:
        """One record per epoch (``.to_pandas()``, ``.to_csv()``, ``.to_json()``)."""
        return self.run.history

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return self.run.epoch

    @property
    def server_metrics(self) -> dict[str, Any]:
        """The parameter server's counters at the end of the last fit."""
        return self.run.server_metrics

    @property
    def timeline(self) -> deque[tuple[str, str, float, float, int, int]]:
        """(worker, phase, start, stop, epoch, chunk) of every span of the fits so far."""
        return self.run.timeline

    @property
    def stopped_reason(self) -> str | None:
        """Why the last fit ended early (``None``: it ran all its epochs)."""
        return self.run.stopped_reason

    @property
    def resumes_mid_epoch(self) -> bool:
        """Whether the next ``fit`` first finishes an epoch a checkpoint interrupted."""
        return self.run.resumes_mid_epoch

    @property
    def version(self) -> int:
        """Server version reached (0 before any training)."""
        return self.run.version

    def models(self) -> dict[str, torch.nn.Module]:
        """Fresh modules holding the latest weights (the initial ones before any fit).

        While a fit runs in the background, the weights are fetched from the server now.
        """
        models, layout = self._build()
        with self.run.lock:
            sess = self._sess
            state = sess.call("state_dict", timeout=self.settings.faults.timeout) if sess is not None else self.run.server_state
        if state is not None:
            w = state[1]["weights"]
            for g in layout.groups:
                unflatten_into(models[g.name], g.spec, w[g.whole])
        return models

    def state_dict(self, model: str | None = None) -> dict[str, torch.Tensor]:
        """The trained model's plain ``model.state_dict()`` (of ``model``, with several), no psdist inside.

        Parameters and buffers in their own dtypes; while a fit runs, the server's weights now.
        """
        return plain_state_dict(self.models(), model)

    def export(self, path: str, model: str | None = None) -> str:
        """Write :meth:`state_dict` as a safetensors file; any PyTorch program loads it without psdist:
        ``model.load_state_dict(safetensors.torch.load_file(path))``. Returns the path."""
        return export_safetensors(self.state_dict(model), path, {
            "format": "pt", "producer": "psdist", "model": model or "model", "server_version": self.version,
            "epochs": self.epoch})

    def model(self) -> torch.nn.Module:
        """A plain ``nn.Module`` with the latest weights."""
        models = self.models()
        if len(models) != 1:
            raise ModelError(f"this training has several models {list(models)}; use models()")
        return next(iter(models.values()))

    def save(self, path: str) -> None:
        """Write a checkpoint (weights, optimizer state, version, epoch, history), atomically.

        While a fit runs (``fit(block=False)``), this takes one consistent snapshot: the
        server's state and the trainer's epoch, progress and history of the same moment (no
        chunk result is counted meanwhile). ``Trainer.load`` then resumes mid-epoch with the
        chunks not done; chunks that were running rerun, and the pushes they had made are
        applied again (``pushes_replayed`` in the resumed epoch's record).
        """
        with self.run.lock:
            sess = self._sess
            if sess is not None:
                point = self.run.snapshot(lambda: sess.call("state_dict", timeout=self.settings.faults.timeout))
            elif self.run.server_state is not None:
                point = self.run.at_rest()
            else:
                raise ConfigError("nothing to save yet: call fit() first")
            self._write(path, point)

    def _write_point(self, point: RecoveryPoint) -> None:
        assert self.settings.faults.checkpoints.path is not None
        self._write(self.settings.faults.checkpoints.path, point)
        logger.info("psdist: checkpoint %s at version %d", self.settings.faults.checkpoints.path, point.version)

    def _write(self, path: str, point: RecoveryPoint) -> None:
        held_out = [c.index for c in self.data.describe().val if c.x == self.data.input_fields]
        settings = self.settings.to_checkpoint()
        stopping = self.settings.training.early_stopping.state() if self.settings.training.early_stopping else None
        meta, arrays = self.run.checkpoint(point, settings, held_out, stopping)
        write_checkpoint(path, meta, arrays)

    @classmethod
    def load(cls, path: str, model_fn: Callable[[], Any], loss_fn: Callable[..., Any] | None = None,
             data: ZarrDataset | str | None = None, **kwargs: Any) -> Trainer:
        """Rebuild a trainer from a checkpoint; ``fit`` then continues where it stopped.

        Settings stored in the checkpoint (batch size, push_every, staleness bound, seed, rule,
        optimizer) are used unless given again in ``kwargs``. The model built by ``model_fn``
        must have the checkpoint's architecture (checked at ``fit``/``model``).
        """
        meta, arrays = read_checkpoint(path)
        server = meta["server"]
        settings = Settings.from_checkpoint(meta, model_fn=model_fn, loss_fn=loss_fn, **kwargs)
        t = cls(data=data, **settings.to_kwargs())
        _models, layout = t._build()
        layout.check_same(Layout.from_dict(server["layout"]))
        if "optimizer" in kwargs:  # given again: its settings win over the stored ones
            arrays = adopt_optimizers(t.settings.training.optimizer, server, arrays)
        t.run.restore(meta, arrays)
        if t.run.held_out is None and any(c.x == t.data.input_fields for c in t.data.describe().val):
            logger.warning("psdist: %s was written before held-out chunks were recorded; the training then held "
                           "out the last chunks, the resumed run holds out chunks spread over the store", path)
        if t.settings.training.early_stopping is not None and meta.get("early_stopping"):
            t.settings.training.early_stopping.load_state(meta["early_stopping"])
        return t

