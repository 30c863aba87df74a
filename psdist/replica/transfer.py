"""Host <-> GPU copies of a replica's flat vectors: pinned staging buffers and a side stream.

A CUDA worker moves its whole gradient to the host at every push and the server's weights back
at every pull. From pageable numpy memory both copies are synchronous and run at a fraction of
the bus's speed; from page-locked ("pinned") memory they are DMA transfers that need not block
the host. So each vector gets one pinned buffer, made once, and:

* without overlap the copies run on the compute stream (ordered with the step, no event): the
  gradient's download waits for it once, the weights' upload does not wait at all;
* with overlap (:mod:`psdist.replica.overlap`) the communication thread runs both on a side
  stream, which waits for the step that made the gradient (an event recorded at the hand-over)
  and records an event that the compute stream waits for before it uses the refilled set — so
  the download, the zeroing and the upload overlap the next window's kernels.

A pinned buffer is refilled only after the copy that last read it is known to be done (each
download synchronises; an upload's buffer is next written after the following download). On
CPU nothing here is used: the flat vectors are host memory already.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["Staging"]


class Staging:
    """Pinned host buffers by name, and one side stream, for a replica on ``device`` (CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._host: dict[str, torch.Tensor] = {}
        self._stream: torch.cuda.Stream | None = None
        self._reading: dict[str, torch.cuda.Event] = {}  # the last queued copy out of a buffer

    def host(self, name: str, n: int) -> torch.Tensor:
        """The pinned float32 buffer ``name`` of ``n`` values (made on first use)."""
        buf = self._host.get(name)
        if buf is None or buf.numel() != n:
            buf = self._host[name] = torch.empty(n, dtype=torch.float32, pin_memory=True)
        return buf

    @property
    def stream(self) -> torch.cuda.Stream:
        """The side stream of the communication thread's copies (made on first use)."""
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        return self._stream

    def download(self, name: str, src: torch.Tensor) -> np.ndarray:
        """``src`` (on the GPU) copied into pinned buffer ``name`` on the current stream, after
        everything queued there (the backward); a numpy view of it, complete on return."""
        host = self.host(name, src.numel())
        host.copy_(src, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return host.numpy()

    def upload(self, name: str, src: np.ndarray) -> torch.Tensor:
        """``src`` copied into pinned buffer ``name`` (host memory), to be copied to the GPU with
        ``non_blocking=True`` by the caller, who then calls :meth:`queued`. Waits first for the
        copy that last read this buffer (a pull right after another: validation after a chunk)."""
        pending = self._reading.pop(name, None)
        if pending is not None:
            pending.synchronize()
        host = self.host(name, src.size)
        np.copyto(host.numpy(), src, casting="no")
        return host

    def queued(self, name: str, stream: torch.cuda.Stream | None = None) -> torch.cuda.Event:
        """Record that a copy out of buffer ``name`` is queued on ``stream`` (default: the
        current one); the event marks its end, for :meth:`upload` and for streams to wait on."""
        event = torch.cuda.Event()
        event.record(stream if stream is not None else torch.cuda.current_stream(self.device))
        self._reading[name] = event
        return event
