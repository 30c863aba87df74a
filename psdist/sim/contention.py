"""Core sharing on one host: how much a crowded host stretches every CPU-bound time.

:func:`psdist.sim.perf.predict` gives each worker and each shard a core of its own unless
``Cluster.host_cores`` says how many the one host holding them all has. Then the model counts
the processes that want a core, on average, and stretches their CPU times by processor sharing:

- per push cycle of length ``T``, a worker's CPU work is ``D``: its minibatches' host part, its
  share of the per-chunk costs, its side of the round trip (fixed cost, shard fan-out, copies:
  on the training thread, or on the communication thread with overlap) and the ``S`` shards'
  steps for its push. Waiting (a queue, a device, a sleeping kernel, the pipeline's drain) is
  not CPU work. The expected number of runnable processes is ``B = W · D / T`` (Little's law:
  the CPU work arriving per second, each piece runnable as long as it lasts);
- with ``c`` cores shared evenly (processor sharing), a runnable process gets ``min(1, c/B)``
  of a core, so every CPU time stretches by ``f = max(1, B / c)``;
- stretched times lengthen the cycle, which changes ``B``: ``f`` is the fixed point of
  ``f = max(1, W · f · D / (c · T(f)))``. When every time of the cycle is CPU work ``T(f) = f·T(1)``
  and the answer is closed form, ``f = max(1, W · D / (c · T(1)))``: the host then does exactly
  ``c`` cores of work per second, the most it can. A NIC, a device or a queue does not stretch
  with the cores, so in general :func:`core_stretch` solves for ``f``.

This is a mean-field bound: ``B`` is an average, and a host whose processes crowd in bursts
(all runnable at once, then all waiting) is slower than it says. ``c`` is the host's capacity
in single-thread processes: its core count, or the *effective* cores measured as the throughput
of one process on all cores over one thread (hyper-threads and a shared memory bus give less
than their count).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from psdist.errors import ConfigError

__all__ = ["core_stretch", "effective_cores"]


def core_stretch(busy_at: Callable[[float], float], cores: float, *, tol: float = 1e-10) -> tuple[float, float]:
    """The fixed point ``f = max(1, busy_at(f) / cores)`` of processor sharing.

    ``busy_at(f) / f = W · D / T(f)`` does not grow with ``f`` (a stretched cycle is no shorter),
    so ``busy_at(f) / (cores · f)`` crosses 1 once, and bisection finds it.

    Parameters
    ----------
    busy_at
        The expected number of runnable processes when every CPU time is stretched by ``f``
        (``W · f · D / T(f)``).
    cores
        The host's cores (> 0; a float for effective cores).
    tol
        Relative width of the final bracket.

    Returns
    -------
    tuple of (float, float)
        The stretch ``f`` (≥ 1) and the runnable processes ``busy_at(f)`` there.
    """
    if not cores > 0 or math.isinf(cores):
        raise ConfigError(f"host_cores must be > 0 and finite, got {cores!r}")

    def short(f: float) -> bool:  # more runnable processes than cores at stretch f (beyond rounding)
        return busy_at(f) > cores * f * (1.0 + 1e-12)

    if not short(1.0):
        return 1.0, busy_at(1.0)
    lo, hi = 1.0, 2.0
    while short(hi):
        lo, hi = hi, 2.0 * hi
    while hi - lo > tol * lo:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if short(mid) else (lo, mid)
    return hi, busy_at(hi)


def effective_cores(one_thread_per_s: float, all_cores_per_s: float) -> float:
    """A host's capacity in single-thread processes: one process on all its cores over one thread.

    Parameters
    ----------
    one_thread_per_s, all_cores_per_s
        The throughput (samples/s) of the same training on one thread and on all the cores.

    Returns
    -------
    float
        ``all_cores_per_s / one_thread_per_s``, at least 1 (one process never runs slower for
        having more cores). A lower bound: two independent processes share no locks.
    """
    if not one_thread_per_s > 0 or not all_cores_per_s > 0:
        raise ConfigError(f"throughputs must be > 0, got {one_thread_per_s!r} and {all_cores_per_s!r}")
    return max(1.0, all_cores_per_s / one_thread_per_s)
