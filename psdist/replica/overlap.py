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
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from psdist.core.protocol import Push, PushReply, ServerHandle, push_buffer
from psdist.errors import ServerError
from psdist.replica.replica import Replica

__all__ = ["InFlight"]

logger = logging.getLogger(__name__)


class InFlight:
    """Downpour's communication with one push in flight (see the module docstring).

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

    def communicate(self, batches: int, samples: int, loss: float) -> PushReply | None:
        """Send the mean gradient of the last ``batches`` minibatches; answer the previous push.

        Returns the reply to the push that was in flight (its weights are loaded now), or
        ``None`` at the first push of the chunk.
        """
        previous = self._settle()  # the slot and the connection are ours again
        if self._buffer is None:
            offer = push_buffer(self.server)
            self._buffer = offer if offer is not None else np.empty(self.replica.layout.size, np.float32)
        update = self.replica.gradient_update(scale=1.0 / batches, out=self._buffer)
        # computed on the weights loaded before the previous push left: that version is its base
        push = Push(self.replica.worker, self.replica.version, update, samples, loss)
        if previous is not None:
            self.replica.load(previous.pull)
        else:  # no reply to load (the chunk's first push): this window's buffer change is sent
            self.replica.buffers_sent()
        self.replica.zero_grad()
        self._future = self._pool.submit(self.server.push, push, True)
        return previous

    def finish(self) -> PushReply | None:
        """The reply to the last push (its weights loaded), ``None`` if nothing was sent."""
        last = self._settle()
        if last is not None:
            self.replica.load(last.pull)
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
