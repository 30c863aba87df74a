"""Chunk tasks on the cluster: submitted through a window, watched while they run.

:class:`ChunkRunner` is the trainer's hands on the cluster for one training. Waiting for tasks
is cut into one-second slices; between them it looks at the cluster: a lost parameter server
raises :class:`~psdist.cluster.session.ParameterServerLost`, workers the scheduler removed are told to
leave the server (barrier rules stop waiting for them), and a chunk task older than the chunk
timeout gets its worker restarted (Dask reruns its tasks elsewhere).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from psdist.cluster.session import Session
from psdist.cluster.waiting import wait_sliced
from psdist.cluster.worker import SLOT, evaluate_task, train_key, train_task
from psdist.data.dataset import Chunk, task_seed
from psdist.errors import ServerError
from psdist.replica.loop import ChunkResult, EvalResult
from psdist.run.epoch import EpochProgress

__all__ = ["ChunkRunner"]

logger = logging.getLogger(__name__)


@dataclass
class ChunkRunner:
    """Submit and watch one training's chunk tasks.

    Parameters
    ----------
    sess
        The live session (its parameter server may be replaced meanwhile).
    seed, batch_size, comm_period, timeout
        What every task gets (see :func:`psdist.cluster.worker.train_task`).
    chunk_timeout
        A task older than this counts as hung (``None``: the larger of ``timeout`` and 20
        times the slowest chunk so far).
    stop
        Set by ``Trainer.stop``: tasks running finish, no new one starts.
    """

    sess: Session
    seed: int
    batch_size: int
    comm_period: int
    timeout: float
    chunk_timeout: float | None
    stop: threading.Event
    slowest: float = 0.0  # the longest chunk task so far (s)
    gone: set[str] = field(default_factory=set)  # removed workers the server was told of

    # ------------------------------------------------------------------ training
    def _submit(self, chunk: Chunk, rank: int, epoch: int) -> Any:
        s = self.sess
        return s.client.submit(
            train_task, s.plugin, chunk, epoch, task_seed(self.seed, epoch, chunk.index), self.batch_size,
            self.comm_period, self.timeout,
            key=train_key(s.run_id, epoch, chunk.index, s.restarts),
            resources={SLOT: 1}, priority=-rank, pure=False,
        )

    def train(self, todo: list[tuple[int, Chunk]], epoch: int, prog: EpochProgress) -> Iterator[ChunkResult]:
        """Run chunk tasks through a bounded window, in the seeded order; yield their results.

        Not the whole epoch at once: the scheduler releases tasks that wait for a resource in
        no fixed order. With one training slot the window is one task, so the chunks are
        trained strictly in order and a run is reproducible (a second queued task was seen to
        overtake the first on a fresh cluster); with several slots, two per slot keep every
        worker busy (the next task waits on the worker while the current one runs). The slots
        are counted again after every chunk: workers that join (``cluster.scale``, ``adapt``)
        widen the window at once, workers that leave narrow it (their tasks are rescheduled).
        Unfinished tasks are cancelled when the caller stops early or fails.
        """
        client = self.sess.client

        def window() -> int:
            slots = sum(1 for w in client.scheduler_info(n_workers=-1)["workers"].values()
                        if w.get("resources", {}).get(SLOT, 0) >= 1)
            return 1 if slots <= 1 else 2 * slots

        pending = iter(todo)
        running: dict[Any, float] = {}

        def top_up() -> None:
            for i, c in islice(pending, max(0, window() - len(running))):
                running[self._submit(c, i, epoch)] = time.monotonic()

        top_up()  # the first window goes out even if stop() came early: a stop trains those
        logger.info("psdist: epoch %d, %d tasks in flight", epoch + 1, len(running))
        try:
            while running:
                for fut in self._await(running, prog):
                    result = self._result(fut, running, prog)
                    started = running.pop(fut)
                    # released now, not when garbage-collected: a finished chunk whose result
                    # still sits on a worker that dies would be recomputed (trained twice)
                    fut.release()
                    self.slowest = max(self.slowest, time.monotonic() - started)
                    yield result
                if not self.stop.is_set():  # stop: drain, add none
                    top_up()
        finally:
            if running:
                client.cancel(list(running))

    def validate(self, chunks: tuple[Chunk, ...], epoch: int, prog: EpochProgress) -> list[EvalResult]:
        """Evaluate the server's weights on every validation chunk; the results by chunk."""
        s = self.sess
        futs = {
            s.client.submit(
                evaluate_task, s.plugin, c, self.batch_size, self.timeout,
                key=f"psdist-val-{s.run_id}-e{epoch}-c{c.index}-r{s.restarts}",
                resources={SLOT: 1}, pure=False,
            ): time.monotonic()
            for c in chunks
        }
        gathered: list[EvalResult] = []
        try:
            while futs:
                for f in self._await(futs, prog):
                    gathered.append(self._result(f, futs, prog))
                    del futs[f]
                    f.release()
        finally:
            if futs:
                s.client.cancel(list(futs))
        return sorted(gathered, key=lambda r: r.chunk)

    # ------------------------------------------------------------------ watching
    def _await(self, running: dict[Any, float], prog: EpochProgress) -> list[Any]:
        """Futures of ``running`` (future → submit time) that finished, in submission order."""
        from distributed import wait

        def finished(slice_s: float) -> list[Any]:
            done, _ = wait(list(running), timeout=slice_s, return_when="FIRST_COMPLETED")
            if not done:
                raise TimeoutError
            return sorted(done, key=lambda f: running[f])

        # no deadline: a hung task is restarted by the watch, a lost server raises
        return wait_sliced(finished, what="chunk tasks", alive=self.sess.check_ps,
                           on_idle=lambda: self._watch(running, prog))

    def _result(self, fut: Any, running: dict[Any, float], prog: EpochProgress) -> Any:
        """``fut.result()``, watching the cluster meanwhile.

        A finished task's result can still be lost with its worker before it is fetched; Dask
        then recomputes it, and that rerun may wait on a barrier that only the watch releases.
        """
        return wait_sliced(lambda s: fut.result(timeout=s), what=f"task {fut.key}",
                           alive=self.sess.check_ps, on_idle=lambda: self._watch(running, prog))

    def _watch(self, running: dict[Any, float], prog: EpochProgress) -> None:
        self.forget_lost()
        self._restart_hung(running, prog)

    def forget_lost(self) -> None:
        """Tell the server that workers the scheduler removed are gone: barriers stop waiting for them."""
        for _ts, msg in self.sess.client.get_events("all"):
            w = msg.get("worker") if isinstance(msg, dict) and msg.get("action") == "remove-worker" else None
            if w is not None and w not in self.gone:
                self.gone.add(w)
                if w != self.sess.ps_address:
                    self.sess.call("leave", w, timeout=self.timeout)

    def _restart_hung(self, running: dict[Any, float], prog: EpochProgress) -> None:
        limit = self.chunk_timeout or max(self.timeout, 20 * self.slowest)
        now = time.monotonic()
        old = {f.key for f, t in running.items() if now - t > limit}
        if not old:
            return
        client = self.sess.client
        hung = {w: old & set(keys) for w, keys in client.processing().items() if old & set(keys)}
        workers = client.scheduler_info(n_workers=-1)["workers"]
        for w in sorted(hung):
            if not workers.get(w, {}).get("nanny"):
                raise ServerError(
                    f"worker {w} has run chunk task(s) {sorted(hung[w])} for more than {limit:.0f} s and "
                    "has no nanny to restart it; use a cluster with processes (LocalCluster(processes=True)) "
                    "or raise Trainer(chunk_timeout=...)"
                )
            logger.warning("psdist: %s hung on %s for more than %.0f s; restarting it", w, sorted(hung[w]), limit)
            client.restart_workers([w], raise_for_error=True)
            prog.faults["chunks_hung"] += len(hung[w])
        for f in running:
            if f.key in old:
                running[f] = now  # its rerun gets a fresh allowance

    def count_worker_losses(self, prog: EpochProgress, epoch: int, since: float) -> None:
        """Workers the scheduler removed since ``since`` and the epoch's chunks Dask reran for it."""
        prefix = f"psdist-train-{self.sess.run_id}-e{epoch}-"
        for ts, msg in self.sess.client.get_events("all"):
            if ts < since or not isinstance(msg, dict) or msg.get("action") != "remove-worker":
                continue
            # a graceful retirement (adapt, scale down) is no loss; its tasks still run again
            prog.faults["workers_lost"] += not msg.get("expected", False)
            prog.faults["chunks_rerun"] += sum(1 for k in msg.get("processing-tasks", ()) if str(k).startswith(prefix))
