"""The parameter server's logic as a plain state machine (no Dask, no threads, no network).

:class:`ServerState` holds the master weights of every model group, the version counter, the
server optimizers and the bookkeeping (staleness, applied/rejected counts, per-worker figures).
The Dask actor in :mod:`psdist.actor` is a thin shell around it; tests and the simulator drive
it directly. Every method is short numpy work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from psdist.errors import ConfigError, ServerError
from psdist.flat import Layout
from psdist.optim import Optimizer
from psdist.protocol import NONFINITE, STALE, Pull, Push, PushReply, reason_kind
from psdist.rules import Downpour, Rule

__all__ = ["ServerState", "WorkerStats"]


@dataclass
class WorkerStats:
    """What the server knows of one worker (shown in the dashboard's worker table)."""

    pushes: int = 0
    applied: int = 0
    rejected: int = 0
    nonfinite: int = 0  # of the rejected, those holding NaN/Inf
    samples: int = 0
    last_push: float = 0.0
    last_loss: float = float("nan")
    info: dict[str, Any] = field(default_factory=dict)


class ServerState:
    """Master weights, version and optimizer state, with staleness control.

    Parameters
    ----------
    layout
        The model groups inside the flat weight vector.
    weights
        Initial weights (float32, ``layout.size``); the server owns this array from now on.
    optimizers
        One server optimizer per group name.
    rule
        The update rule (default :class:`~psdist.rules.Downpour`).
    max_staleness
        Pushes whose staleness exceeds it are rejected; ``None`` admits any staleness.
    clock
        Time source for the per-worker table (injectable for deterministic tests).
    """

    def __init__(
        self,
        layout: Layout,
        weights: np.ndarray,
        optimizers: dict[str, Optimizer],
        rule: Rule | None = None,
        max_staleness: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if weights.shape != (layout.size,) or weights.dtype != np.float32:
            raise ConfigError(
                f"initial weights are {weights.dtype}{list(weights.shape)}; "
                f"expected float32[{layout.size}]"
            )
        if set(optimizers) != set(layout.names):
            raise ConfigError(
                f"optimizers given for {sorted(optimizers)}, models are {list(layout.names)}: "
                "give one optimizer per model"
            )
        if max_staleness is not None and (not isinstance(max_staleness, int) or max_staleness < 0):
            raise ConfigError(
                f"max_staleness={max_staleness!r} must be an integer >= 0 "
                "(0 admits only fresh updates) or None for no bound"
            )
        self.layout = layout
        self.weights = weights
        self.optimizers = optimizers
        self.rule = rule if rule is not None else Downpour()
        self.server_rule = self.rule.server_side()
        self.max_staleness = max_staleness
        self.clock = clock
        self.version = 0
        self.applied = 0
        self.rejected: dict[str, int] = {}
        self.samples_applied = 0
        self.samples_rejected = 0
        self.loss_sum = 0.0  # sample-weighted, over applied pushes
        self.staleness_hist: list[int] = []  # staleness_hist[tau] = pushes received at tau
        self.workers: dict[str, WorkerStats] = {}
        self._snapshot: tuple[int, np.ndarray] | None = None
        # membership for barrier rules: active worker -> clock (pushes since it joined the run)
        self.active: dict[str, int] = {}
        self._left_clock: dict[str, int] = {}
        self._seen: dict[str, float] = {}
        self.waits = 0  # replies that held a worker back
        self.clock_gap_max = 0  # largest clock gap at which a worker was let go on
        self.evicted = 0  # workers dropped after a silence longer than the wait timeout

    # ------------------------------------------------------------------ pull / push
    def pull(self, worker: str, have_version: int = -1) -> Pull:
        """Current version and weights; no weights when ``have_version`` is current."""
        self.server_rule.on_pull(self, worker)
        weights = None if have_version == self.version else self.snapshot()
        lrs = {n: opt.lr_at(self.version) for n, opt in self.optimizers.items()}
        return Pull(self.version, weights, self.lr, lrs)

    def snapshot(self) -> np.ndarray:
        """A read-only copy of the weights at this version, made once per version.

        Replies are serialised after the call returns, while the next push may already be
        changing ``weights`` in place: every pull therefore gets this immutable copy.
        """
        if self._snapshot is None or self._snapshot[0] != self.version:
            copy = self.weights.copy()
            copy.flags.writeable = False
            self._snapshot = (self.version, copy)
        return self._snapshot[1]

    def push(self, push: Push, pull: bool = True) -> PushReply:
        """Admit or reject one update; with ``pull``, answer with the weights after it."""
        self._check_shape(push)
        tau = self.version - push.base_version
        if tau < 0:
            raise ServerError(
                f"push from {push.worker} claims base version {push.base_version}, "
                f"newer than the server's {self.version}: it pulled from another server"
            )
        stats = self.workers.setdefault(push.worker, WorkerStats())
        stats.pushes += 1
        stats.last_push = self._seen[push.worker] = self.clock()
        if push.worker in self.active:
            self.active[push.worker] += 1
        self._count_staleness(tau)
        reason = self._admission(push, tau) or self.server_rule.admit(self, push, tau)
        if reason is None:
            self.server_rule.apply(self, push, tau)
            self.applied += 1
            self.samples_applied += push.samples
            self.loss_sum += push.loss * push.samples
            stats.applied += 1
            stats.samples += push.samples
            stats.last_loss = push.loss
        else:
            kind = reason_kind(reason)
            self.rejected[kind] = self.rejected.get(kind, 0) + 1
            self.samples_rejected += push.samples
            stats.rejected += 1
            stats.nonfinite += kind == NONFINITE
        reply, wait = None, False
        if pull:
            reply = self.pull_if_ready(push.worker, push.base_version)
            wait = reply is None
            self.waits += wait
        return PushReply(reason is None, self.version, tau, reason, reply, wait)

    def _check_shape(self, push: Push) -> None:
        u = push.update
        if not isinstance(u, np.ndarray) or u.shape != (self.layout.size,):
            got = getattr(u, "shape", type(u).__name__)
            raise ServerError(
                f"push from {push.worker} has an update of shape {got}; this server holds "
                f"{self.layout.size} float32 values: the worker's model differs from the server's"
            )
        if push.groups is not None:
            unknown = set(push.groups) - set(self.layout.names)
            if unknown:
                raise ServerError(f"push names unknown model groups {sorted(unknown)}")

    def _admission(self, push: Push, tau: int) -> str | None:
        if not math.isfinite(push.loss) or not np.isfinite(push.update).all():
            return f"{NONFINITE}: the update or loss holds NaN/Inf; lower the learning rate or check the data"
        if self.max_staleness is not None and tau > self.max_staleness:
            return f"{STALE}: staleness {tau} > max_staleness {self.max_staleness}; pull and recompute"
        return None

    def _count_staleness(self, tau: int) -> None:
        if tau >= len(self.staleness_hist):
            self.staleness_hist.extend([0] * (tau + 1 - len(self.staleness_hist)))
        self.staleness_hist[tau] += 1

    # ------------------------------------------------------------------ membership and barriers
    def join(self, worker: str) -> None:
        """``worker`` starts training: barrier rules count it until it leaves.

        It enters at the slowest active clock (or its own old clock if nobody trains), so a
        worker that comes back neither races ahead nor holds the others back.
        """
        self._seen[worker] = self.clock()
        if worker not in self.active:
            floor = min(self.active.values()) if self.active else self._left_clock.get(worker, 0)
            self.active[worker] = floor

    def leave(self, worker: str) -> None:
        """``worker`` stops training (end of chunk, lost, evicted); barriers stop waiting for it."""
        clock = self.active.pop(worker, None)
        if clock is not None:
            self._left_clock[worker] = clock
            self.server_rule.on_leave(self, worker)

    def clock_gap(self, worker: str) -> int:
        """How many clocks ``worker`` is ahead of the slowest active worker (0 if inactive)."""
        if worker not in self.active:
            return 0
        return self.active[worker] - min(self.active.values())

    def may_proceed(self, worker: str) -> bool:
        """Whether the rule lets ``worker`` compute its next update now."""
        return worker not in self.active or self.server_rule.may_proceed(self, worker)

    def pull_if_ready(self, worker: str, have_version: int = -1) -> Pull | None:
        """A pull if ``worker`` may go on, else ``None`` (the shell makes it wait)."""
        self._seen[worker] = self.clock()
        if not self.may_proceed(worker):
            return None
        self.clock_gap_max = max(self.clock_gap_max, self.clock_gap(worker))
        return self.pull(worker, have_version)

    def wait(self, worker: str, have_version: int = -1) -> Pull:
        """:meth:`pull_if_ready` for single-threaded callers, which cannot block."""
        pull = self.pull_if_ready(worker, have_version)
        if pull is None:
            raise ServerError(
                f"{worker} must wait for other workers under {type(self.rule).__name__}, which "
                "one thread cannot do: drive the state through psdist.local.LocalServer"
            )
        return pull

    def evict_silent(self, silence: float) -> list[str]:
        """Make active workers not heard of for ``silence`` seconds leave; returns them."""
        now = self.clock()
        gone = [w for w in self.active if now - self._seen.get(w, now) > silence]
        for w in gone:
            self.leave(w)
        self.evicted += len(gone)
        return gone

    # ------------------------------------------------------------------ applying updates
    def _groups(self, push: Push):
        names = push.groups if push.groups is not None else self.layout.names
        return [self.layout.group(n) for n in names]

    def apply_gradient(self, push: Push, lr_scale: float = 1.0) -> None:
        """Parameters through each group's optimizer; buffers by adding their change."""
        for g in self._groups(push):
            self.optimizers[g.name].step(
                self.weights[g.params], push.update[g.params], self.version, lr_scale
            )
            self.weights[g.buffers] += push.update[g.buffers]
        self.version += 1

    def apply_delta(self, push: Push) -> None:
        """Add the update to the weights as it is (elastic averaging, model deltas)."""
        for g in self._groups(push):
            self.weights[g.whole] += push.update[g.whole]
        self.version += 1

    # ------------------------------------------------------------------ control and metrics
    @property
    def lr(self) -> float:
        """Learning rate in force for the first model group (the dashboard's figure)."""
        return self.optimizers[self.layout.groups[0].name].lr_at(self.version)

    def set_lr(self, lr: float, group: str | None = None) -> None:
        """Change the base learning rate of one group (or all) of a running training."""
        names = [group] if group is not None else list(self.layout.names)
        for n in names:
            self.optimizers[n].set_lr(lr)

    def register(self, worker: str, **info: Any) -> None:
        """Record host/device facts of a worker for the metrics table."""
        self.workers.setdefault(worker, WorkerStats()).info.update(info)

    def metrics(self) -> dict[str, Any]:
        """A JSON-safe snapshot of the counters (cumulative; callers take differences).

        ``rejected`` counts rejected pushes by kind (:func:`~psdist.protocol.reason_kind`:
        ``"nonfinite"``, ``"stale"``, or a rule's own); ``nonfinite`` repeats the non-finite
        count so it is there (0) before the first such push.
        """
        pushes = sum(self.staleness_hist)
        mean_tau = (
            sum(t * c for t, c in enumerate(self.staleness_hist)) / pushes if pushes else 0.0
        )
        return {
            **self._counters(),
            "nonfinite": self.rejected.get(NONFINITE, 0),  # = rejected["nonfinite"], always present
            "lr": self.lr,
            "staleness_mean": mean_tau,
            "staleness_max": len(self.staleness_hist) - 1 if pushes else 0,
            "active": sorted(self.active),
            "clock_gap_max": self.clock_gap_max,
            "waits": self.waits,
            "evicted": self.evicted,
            "workers": {w: asdict(s) for w, s in self.workers.items()},
            "time": self.clock(),
        }

    def _counters(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "applied": self.applied,
            "rejected": dict(self.rejected),
            "samples_applied": self.samples_applied,
            "samples_rejected": self.samples_rejected,
            "loss_sum": self.loss_sum,
            "staleness_hist": list(self.staleness_hist),
        }

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-safe scalars, arrays) of everything needed to resume."""
        scalars: dict[str, Any] = {
            **self._counters(),
            "layout": self.layout.to_dict(),
            "optimizers": {},
        }
        arrays: dict[str, np.ndarray] = {"weights": self.weights.copy()}
        for name, opt in self.optimizers.items():
            s, a = opt.state_dict()
            scalars["optimizers"][name] = {"config": opt.to_config(), "state": s}
            arrays.update({f"optim/{name}/{k}": v.copy() for k, v in a.items()})
        arrays.update({f"rule/{k}": v for k, v in self.server_rule.state_dict().items()})
        return scalars, arrays

    def load_state_dict(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output (layouts must match; checked by the caller)."""
        self.weights[:] = arrays["weights"]
        self.version = int(scalars["version"])
        self.applied = int(scalars["applied"])
        self.rejected = {str(k): int(v) for k, v in scalars["rejected"].items()}
        self.samples_applied = int(scalars["samples_applied"])
        self.samples_rejected = int(scalars["samples_rejected"])
        self.loss_sum = float(scalars["loss_sum"])
        self.staleness_hist = [int(c) for c in scalars["staleness_hist"]]
        for name, opt in self.optimizers.items():
            prefix = f"optim/{name}/"
            opt.load_state_dict(
                scalars["optimizers"][name]["state"],
                {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)},
            )
        self.server_rule.load_state_dict(
            {k[5:]: v for k, v in arrays.items() if k.startswith("rule/")}
        )
        self._snapshot = None
