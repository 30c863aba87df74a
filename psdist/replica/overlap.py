"""One push in flight: a worker's communication thread (``Trainer(overlap=True)``).

Without overlap a worker idles through every round trip: it pushes, waits for the fresh
weights, then computes. With overlap the push of window i travels on a communication thread
while window i + 1 computes, on the weights loaded before push i left; the reply's weights are
loaded after that. Every gradient is then computed on weights one push older: one more version
of staleness for a lone worker, about one more round (n versions) for n workers pushing in
turn. The server measures it as any staleness (history, dashboard, ``max_staleness``).

It pays where the round trip would leave the device idle: a CUDA step of a few milliseconds
against a round trip of one or two. On a CPU whose cores all compute, the round trip is
mostly CPU work of the server and the copies, and hiding it gains little; hence the default:
on for CUDA workers, opt-in on CPU.

Only rules whose worker side is a plain push and pull can run this way (their class says so
with ``Rule.overlaps``): a barrier cannot hold a worker that is already computing, and rules
that remember what a worker pulled (DC-ASGD) or keep local weights (EASGD, GEM) would pair
an update with the wrong weights.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from psdist.core.protocol import Push, PushReply, ServerHandle, push_buffer
from psdist.errors import ServerError
from psdist.replica.replica import Replica

__all__ = ["InFlight"]

logger = logging.getLogger(__name__)


class InFlight:
    """Downpour's communication with one push in flight (see the module docstring).

    The replica gets a second set of flat vectors (weights and gradients), so the copies stay
    off the training thread: at each communication the module is pointed at the other set (its
    gradients zeroed, its weights the previous reply's, both prepared on the communication
    thread) and the set just trained on goes to the thread, which reads the gradient out into
    the push, zeroes it, sends, and writes the reply's weights into it for next time. The
    training thread only swaps views and writes the buffers' change (BatchNorm statistics).

    Made per chunk; :meth:`close` always runs (a ``finally``), so the connection is quiet
    before the worker leaves. One thread, started on the first push.
    """

    def __init__(self, replica: Replica, server: ServerHandle) -> None:
        self.replica = replica
        self.server = server
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"psdist-comm-{replica.worker}")
        self._future: Future[PushReply] | None = None
        # where the update is written: the server's offer (a shared-memory slot), else one array
        # for the whole chunk; either is free again once the push in flight has its answer
        self._buffer: np.ndarray | None = None
        # per model: the set the module does not use now (weights, gradients); the weights hold
        # the answer to the push in flight once it is settled (``_fresh``), the gradients are zero
        self._spare: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._fresh = False
        # CUDA (psdist.replica.transfer): the thread's copies run on a side stream after the step
        # that filled the set handed over (``_handed``); the compute stream waits for ``_ready``
        # (the spare set zeroed and refilled) before the module uses that set
        self._handed: torch.cuda.Event | None = None
        self._ready: torch.cuda.Event | None = None

    def _spares(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if not self._spare:
            for name, b in self.replica.bindings.items():
                assert b.weights is not None and b.grads is not None
                self._spare[name] = (b.weights.clone(), torch.zeros_like(b.grads))
        return self._spare

    def communicate(self, batches: int, samples: int, loss: float) -> PushReply | None:
        """Send the mean gradient of the last ``batches`` minibatches; answer the previous push.

        Returns the reply to the push that was in flight (its weights in force from now), or
        ``None`` at the first push of the chunk.
        """
        previous = self._settle()  # the slot, the connection and the spare set are ours again
        replica = self.replica
        if self._buffer is None:
            offer = push_buffer(self.server)
            self._buffer = offer if offer is not None else np.empty(replica.layout.size, np.float32)
        update = self._buffer
        replica.buffer_delta(update)  # the small part, now: the module goes on changing buffers
        # computed on the weights in force before the previous push left: that version is its base
        push = Push(replica.worker, replica.version, update, samples, loss)
        spares = self._spares()
        self._wait_ready()
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for g in replica.layout.groups:
            b = replica.bindings[g.name]
            b.check_grads()
            w_spare, g_spare = spares[g.name]
            assert b.weights is not None
            trained_w, trained_g = b.point_to(w_spare if self._fresh else b.weights, g_spare)
            # the weights the module left (or the spare still unused) receive this push's answer
            out[g.name] = (trained_w if self._fresh else w_spare, trained_g)
        if self._fresh:
            assert previous is not None and previous.pull is not None
            replica.version = previous.pull.version
        replica.buffers_sent()  # the change so far is in this push; count anew from here
        self._spare, self._fresh = out, False
        if replica.staging is not None:  # after the last kernel that wrote the set handed over
            self._handed = torch.cuda.Event()
            self._handed.record(torch.cuda.current_stream(replica.device))
        # the set handed over is in units of the loss scale in force now ("16-mixed"); the
        # scale may change while the thread reads it (the next window's minibatches), so its
        # unscaling factor is fixed here, at the hand-over
        self._future = self._pool.submit(self._send, push, replica.grad_unscale / batches)
        return previous

    def _send(self, push: Push, scale: float) -> PushReply:
        """On the communication thread: the trained set's gradient into the push, sent; the
        answer's weights into the spare set. ``scale``: 1 / (minibatches × loss scale), which
        makes the mean true gradient."""
        if self.replica.staging is not None:
            return self._send_cuda(push, scale)
        update = torch.from_numpy(push.update)
        for g in self.replica.layout.groups:
            _, grads = self._spare[g.name]
            torch.mul(grads, scale, out=update[g.params])
            grads.zero_()
        reply = self.server.push(push, True)
        weights = reply.pull.weights if reply.pull is not None else None
        if weights is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # read-only snapshot: only read here
                src = torch.from_numpy(weights)
            for g in self.replica.layout.groups:
                self._spare[g.name][0].copy_(src[g.whole])
            self._fresh = True
        return reply

    def _send_cuda(self, push: Push, scale: float) -> PushReply:
        """:meth:`_send` for a GPU replica: every copy on the side stream, through pinned memory,
        overlapping the next window's kernels (see :mod:`psdist.replica.transfer`)."""
        staging, groups = self.replica.staging, self.replica.layout.groups
        assert staging is not None and self._handed is not None
        side = staging.stream
        hosts = []
        with torch.cuda.stream(side):
            side.wait_event(self._handed)
            for g in groups:
                _, grads = self._spare[g.name]
                host = staging.host(f"push:{g.name}", grads.numel())
                host.copy_(grads, non_blocking=True)
                grads.zero_()
                hosts.append(host)
        side.synchronize()  # the gradients are on the host (and every earlier upload done)
        for g, host in zip(groups, hosts, strict=True):
            np.multiply(host.numpy(), np.float32(scale), out=push.update[g.params])
        reply = self.server.push(push, True)
        weights = reply.pull.weights if reply.pull is not None else None
        with torch.cuda.stream(side):
            if weights is not None:
                for g in groups:
                    src = staging.upload(f"pull:{g.name}", weights[g.whole])
                    self._spare[g.name][0].copy_(src, non_blocking=True)
                    staging.queued(f"pull:{g.name}", side)
                self._fresh = True
            self._ready = torch.cuda.Event()
            self._ready.record(side)
        return reply

    def _wait_ready(self) -> None:
        """The compute stream waits (on the GPU, not the host) until the spare set is ready."""
        if self._ready is not None:
            torch.cuda.current_stream(self.replica.device).wait_event(self._ready)
            self._ready = None

    def finish(self) -> PushReply | None:
        """The reply to the last push (its weights in force), ``None`` if nothing was sent."""
        last = self._settle()
        self._wait_ready()
        if last is not None and self._fresh:
            assert last.pull is not None
            for g in self.replica.layout.groups:
                b = self.replica.bindings[g.name]
                assert b.grads is not None
                w_spare, g_spare = self._spare[g.name]
                old_w, _ = b.point_to(w_spare, b.grads)
                self._spare[g.name] = (old_w, g_spare)
            self.replica.version = last.pull.version
            self.replica.buffers_sent()
            self._fresh = False
        return last

    def close(self) -> None:
        """Wait for a push still in flight (a chunk that failed), then stop the thread.

        Its outcome is logged, not raised: the chunk's own error is already on its way up,
        and a second one from the same broken connection would hide it.
        """
        fut, self._future = self._future, None
        if fut is not None:
            error = fut.exception()
            if error is not None:
                logger.warning("psdist: %s: the push in flight when the chunk failed failed too: %s",
                               self.replica.worker, error)
        self._pool.shutdown(wait=True)

    def _settle(self) -> PushReply | None:
        fut, self._future = self._future, None
        if fut is None:
            return None
        reply = fut.result()
        if reply.wait:
            raise ServerError(
                "the parameter server held back a worker that overlaps its pushes: barrier rules "
                "(Sync, SSP) need overlap=False"
            )
        return reply
