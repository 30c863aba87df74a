"""The parameter server's logic as a plain state machine (no Dask, no threads, no network).

:class:`ServerState` holds the master weights of every model group, the version counter, the
server optimizers and the bookkeeping (staleness, applied/rejected counts, per-worker figures).
The Dask actor in :mod:`psdist.cluster.actor` is a thin shell around it; tests and the simulator drive
it directly. Every method is short numpy work.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from psdist.core.layout import Group, Layout
from psdist.core.optim.port import BoundOptimizer, OptimizerSpec
from psdist.core.protocol import Pull, Push, PushReply, Rejection, RejectKind
from psdist.core.rules import Downpour, Rule
from psdist.core.snapshots import SnapshotPool
from psdist.errors import ConfigError, InvalidServerState, ServerError

__all__ = ["NONFINITE_ELSEWHERE", "WHOLE_NORMS", "InvalidServerState", "ServerState", "WorkerStats"]

#: ``Push.info`` key: the worker found NaN/Inf in the whole update (a sharded server's push)
NONFINITE_ELSEWHERE = "nonfinite"
#: ``Push.info`` key: each model's norm over the whole update's trainable parameters (clipping on shards)
WHOLE_NORMS = "norms"


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
        One optimizer recipe per group name (:class:`~psdist.core.optim.port.OptimizerSpec`:
        ``psdist.optim.TorchOptimizer`` or a flat numpy one). The server binds each to its
        group's parameter section: the objects given are never changed (not by training, not
        by :meth:`set_lr`), and one recipe given for two groups (a GAN's generator and
        discriminator) still gives each group its own state (momentum, Adam moments, steps).
    rule
        The update rule (default :class:`~psdist.core.rules.Downpour`).
    max_staleness
        Pushes whose staleness exceeds it are rejected; ``None`` admits any staleness.
    clock
        Time source for the per-worker table (injectable for deterministic tests).
    """

    def __init__(
        self,
        layout: Layout,
        weights: np.ndarray,
        optimizers: Mapping[str, OptimizerSpec],
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
        # read on every push: the layout's properties compute them (np.prod over shapes) each time
        self._size = layout.size
        self._groups_all = list(layout.groups)
        self._sections = {g.name: (g.params, g.buffers if g.spec.n_buffers else None) for g in layout.groups}
        self._configs = {name: spec.to_config() for name, spec in optimizers.items()}
        # bound per group: a shared recipe must not share momentum or step counts
        self.optimizers: dict[str, BoundOptimizer] = {
            g.name: optimizers[g.name].bind(g, weights[g.params]) for g in layout.groups
        }
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
        self._snapshots = SnapshotPool()
        # the norms the finite check measured, per group, of the update being admitted: an
        # optimizer that clips reuses them instead of reading the update again
        self._measured: tuple[np.ndarray, dict[str, float]] | None = None
        # membership for barrier rules: active worker -> clock (pushes since it joined the run)
        self.active: dict[str, int] = {}
        self._left_clock: dict[str, int] = {}
        self._seen: dict[str, float] = {}
        self.waits = 0  # replies that held a worker back
        self.clock_gap_max = 0  # largest clock gap at which a worker was let go on
        self.evicted = 0  # workers dropped after a silence longer than the wait timeout
        self._reset_baseline()

    def _reset_baseline(self) -> None:
        """Remember what :meth:`validate_state` compares against: counters restored from a
        checkpoint (the per-worker table starts empty) and a digest of the frozen ranges."""
        #: counters at construction or at the last :meth:`load_state_dict` (for invariants)
        self.baseline: dict[str, int] = {
            "version": self.version,
            "applied": self.applied,
            "rejected": sum(self.rejected.values()),
            "nonfinite": self.rejected.get(RejectKind.NONFINITE, 0),
            "pushes": sum(self.staleness_hist),
            "samples": self.samples_applied,
        }
        self._frozen_digest = self._digest_frozen()

    def _digest_frozen(self) -> bytes:
        # a digest, not a copy: a frozen backbone may be most of the model
        h = hashlib.blake2b(digest_size=16)
        for sl in self.layout.frozen:
            h.update(np.ascontiguousarray(self.weights[sl]).data)
        return h.digest()

    # ------------------------------------------------------------------ pull / push
    def pull(self, worker: str, have_version: int = -1, into: np.ndarray | None = None) -> Pull:
        """Current version and weights; no weights when ``have_version`` is current.

        ``into``: copy the weights into that array (a worker's shared-memory slot) and answer it,
        instead of the per-version snapshot.
        """
        self.server_rule.on_pull(self, worker)
        if have_version == self.version:
            weights = None
        elif into is not None:
            np.copyto(into, self.weights)
            weights = into
        else:
            weights = self.snapshot()
        lrs = {n: opt.base_lr() for n, opt in self.optimizers.items()}
        return Pull(self.version, weights, self.lr, lrs)

    def snapshot(self) -> np.ndarray:
        """A read-only copy of the weights at this version, made once per version.

        Replies are serialised after the call returns, while the next push may already be
        changing ``weights`` in place: every pull therefore gets this immutable copy.
        """
        if self._snapshot is None or self._snapshot[0] != self.version:
            self._snapshot = None  # released first: its buffer may be the one reused
            self._snapshot = (self.version, self._snapshots.copy(self.weights))
        return self._snapshot[1]

    def push(self, push: Push, pull: bool = True, into: np.ndarray | None = None) -> PushReply:
        """Admit or reject one update; with ``pull``, answer with the weights after it (copied
        ``into`` that array if given, see :meth:`pull`)."""
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
        rejection = self._admission(push, tau) or self._rule_admission(push, tau)
        if rejection is None:
            self.server_rule.apply(self, push, tau)
            self.applied += 1
            self.samples_applied += push.samples
            self.loss_sum += push.loss * push.samples
            stats.applied += 1
            stats.samples += push.samples
            stats.last_loss = push.loss
        else:
            # counted under the plain string: metrics and checkpoints keep JSON's own keys
            kind = rejection.kind.value
            self.rejected[kind] = self.rejected.get(kind, 0) + 1
            self.samples_rejected += push.samples
            stats.rejected += 1
            stats.nonfinite += rejection.kind is RejectKind.NONFINITE
        self._measured = None  # the update is not kept past its push
        reply, wait = None, False
        if pull:
            reply = self.pull_if_ready(push.worker, push.base_version, into)
            wait = reply is None
            self.waits += wait
        return PushReply(rejection is None, self.version, tau, rejection, reply, wait)

    def _check_shape(self, push: Push) -> None:
        u = push.update
        if not isinstance(u, np.ndarray) or u.shape != (self._size,):
            got = getattr(u, "shape", type(u).__name__)
            raise ServerError(
                f"push from {push.worker} has an update of shape {got}; this server holds "
                f"{self._size} float32 values: the worker's model differs from the server's"
            )
        if push.groups is not None:
            unknown = set(push.groups) - self._sections.keys()
            if unknown:
                raise ServerError(f"push names unknown model groups {sorted(unknown)}")

    def _admission(self, push: Push, tau: int) -> Rejection | None:
        if push.info.get(NONFINITE_ELSEWHERE):
            # a sharded server: the worker found NaN/Inf in another shard's slice, and every
            # shard refuses the push, so none applies part of what another rejects
            return Rejection(RejectKind.NONFINITE, "the update holds NaN/Inf (in another shard's slice); "
                                                   "lower the learning rate or check the data")
        if not math.isfinite(push.loss) or not self._finite(push.update):
            overflow = math.isfinite(push.loss) and bool(np.isfinite(push.update).all())
            why = ("the update's norm overflows float32 (values beyond ~1e19)" if overflow
                   else "the update or loss holds NaN/Inf")
            return Rejection(RejectKind.NONFINITE, f"{why}; lower the learning rate or check the data")
        if self.max_staleness is not None and tau > self.max_staleness:
            return Rejection(RejectKind.STALE,
                             f"staleness {tau} > max_staleness {self.max_staleness}; pull and recompute")
        return None

    def _finite(self, update: np.ndarray) -> bool:
        """Whether every value is finite, in one pass: a dot product of each section with itself
        is NaN/Inf exactly when a value is (or when the norm overflows, refused as well). The
        parameter sections' norms are kept for gradient clipping (no second pass)."""
        norms: dict[str, float] = {}
        finite = True
        for name, (p, b) in self._sections.items():
            params = update[p]
            sq = float(np.dot(params, params))
            if b is not None:
                buffers = update[b]
                finite = finite and math.isfinite(float(np.dot(buffers, buffers)))
            finite = finite and math.isfinite(sq)
            norms[name] = math.sqrt(sq) if math.isfinite(sq) else math.inf
        self._measured = (update, norms)
        return finite

    def _rule_admission(self, push: Push, tau: int) -> Rejection | None:
        rejection = self.server_rule.admit(self, push, tau)
        # a rule written for the old text protocol returns a string: say how to port it
        if rejection is not None and not isinstance(rejection, Rejection):
            raise ServerError(
                f"{type(self.server_rule).__name__}.admit returned {rejection!r}; return "
                "psdist.core.protocol.Rejection(RejectKind.<kind>, reason) or None"
            )
        return rejection

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
            left = self._left_clock.pop(worker, 0)
            self.active[worker] = min(self.active.values()) if self.active else left

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

    def pull_if_ready(self, worker: str, have_version: int = -1, into: np.ndarray | None = None) -> Pull | None:
        """A pull if ``worker`` may go on, else ``None`` (the shell makes it wait)."""
        self._seen[worker] = self.clock()
        if not self.may_proceed(worker):
            return None
        self.clock_gap_max = max(self.clock_gap_max, self.clock_gap(worker))
        return self.pull(worker, have_version, into)

    def wait(self, worker: str, have_version: int = -1) -> Pull:
        """:meth:`pull_if_ready` for single-threaded callers, which cannot block."""
        pull = self.pull_if_ready(worker, have_version)
        if pull is None:
            raise ServerError(
                f"{worker} must wait for other workers under {type(self.rule).__name__}, which "
                "one thread cannot do: drive the state through psdist.core.inprocess.LocalServer"
            )
        return pull

    def held_too_long(self, worker: str, timeout: float) -> ServerError:
        """The error for ``worker`` held by a barrier past ``timeout`` although silent workers were evicted."""
        return ServerError(f"{worker} waited {timeout} s for workers {sorted(self.active)} under "
                           f"{type(self.rule).__name__}; none of them moved")

    def evict_silent(self, silence: float) -> list[str]:
        """Make active workers not heard of for ``silence`` seconds leave; returns them."""
        now = self.clock()
        gone = [w for w in self.active if now - self._seen.get(w, now) > silence]
        for w in gone:
            self.leave(w)
        self.evicted += len(gone)
        return gone

    # ------------------------------------------------------------------ applying updates
    def _groups(self, push: Push) -> list[Group]:
        if push.groups is None:
            return self._groups_all
        return [self.layout.group(n) for n in push.groups]

    def apply_gradient(self, push: Push, lr_scale: float = 1.0) -> None:
        """Parameters through each group's optimizer; buffers by adding their change.

        Frozen parameters (``requires_grad=False``) are skipped by the optimizer: no weight
        decay, no momentum, their values stay bit-identical.
        """
        measured = self._measured
        norms = measured[1] if measured is not None and measured[0] is push.update else {}
        # a sharded server: clipping needs the norm over the whole model, which the worker measured
        whole = push.info.get(WHOLE_NORMS) or {}
        for g in self._groups(push):
            params, buffers = self._sections[g.name]
            self.optimizers[g.name].step(push.update[params], lr_scale, norms.get(g.name), whole.get(g.name))
            if buffers is not None:
                self.weights[buffers] += push.update[buffers]
        self.version += 1

    def apply_delta(self, push: Push) -> None:
        """Add the update to the weights as it is (elastic averaging, model deltas).

        Frozen parameter ranges are left out, whatever the update holds there.
        """
        for g in self._groups(push):
            for part in g.updatable:
                self.weights[part] += push.update[part]
        self.version += 1

    # ------------------------------------------------------------------ control and metrics
    @property
    def lr(self) -> float:
        """Learning rate in force for the first model group (the dashboard's figure)."""
        return self.optimizers[self.layout.groups[0].name].lr()

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

        ``rejected`` counts rejected pushes by kind (the values of
        :class:`~psdist.core.protocol.RejectKind`: ``"nonfinite"``, ``"stale"``, ...); ``nonfinite`` repeats the non-finite
        count so it is there (0) before the first such push.
        """
        pushes = sum(self.staleness_hist)
        mean_tau = (
            sum(t * c for t, c in enumerate(self.staleness_hist)) / pushes if pushes else 0.0
        )
        return {
            **self._counters(),
            "nonfinite": self.rejected.get(RejectKind.NONFINITE, 0),  # = rejected["nonfinite"], always present
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

    # ------------------------------------------------------------------ invariants
    def validate_state(self) -> None:
        """Check every invariant of the state; raise :class:`InvalidServerState` naming the first broken.

        In the manner of ``distributed``'s ``WorkerState.validate_state()``: tests and the
        simulator call it between steps of a scripted scenario. It reads every weight (and
        hashes the frozen ranges), so the actor never calls it per push.
        """
        w = self.weights
        _ensure(w.shape == (self.layout.size,) and w.dtype == np.float32, "weights layout",
                f"weights are {w.dtype}{list(w.shape)}, the layout needs float32[{self.layout.size}]")
        _ensure(bool(np.isfinite(w).all()), "finite weights",
                f"{int((~np.isfinite(w)).sum())} weights are NaN/Inf")
        _ensure(self._digest_frozen() == self._frozen_digest, "frozen parameters unchanged",
                "a requires_grad=False parameter changed on the server")
        self._validate_counters()
        self._validate_workers()
        self._validate_membership()
        if self._snapshot is not None:
            snap_version, snap = self._snapshot
            _ensure(0 <= snap_version <= self.version, "snapshot version",
                    f"snapshot of version {snap_version}, server at {self.version}")
            _ensure(snap_version < self.version or snap.tobytes() == w.tobytes(), "snapshot is current",
                    f"the snapshot of version {snap_version} differs from the weights of that version")
        opts = [self.optimizers[g.name] for g in self.layout.groups]
        _ensure(len({id(o) for o in opts}) == len(opts), "one optimizer per group",
                "two model groups share one optimizer object (and its state)")
        for opt in opts:
            opt.validate()
        self.server_rule.validate(self)

    def _validate_counters(self) -> None:
        _ensure(self.version >= self.baseline["version"] >= 0, "version non-negative and increasing",
                f"version {self.version}, {self.baseline['version']} at start or restore")
        _ensure(self.applied >= 0 and self.samples_applied >= 0 and self.samples_rejected >= 0,
                "counters non-negative",
                f"applied {self.applied}, samples {self.samples_applied}/{self.samples_rejected}")
        _ensure(all(isinstance(c, int) and c > 0 for c in self.rejected.values()), "rejection counts",
                f"rejected {self.rejected}")
        _ensure(all(isinstance(c, int) and c >= 0 for c in self.staleness_hist), "staleness histogram",
                f"staleness_hist {self.staleness_hist}")
        _ensure(math.isfinite(self.loss_sum), "finite loss sum", f"loss_sum {self.loss_sum}")
        pushes = sum(self.staleness_hist)
        _ensure(pushes == self.applied + sum(self.rejected.values()), "pushes = applied + rejected",
                f"{pushes} pushes in the staleness histogram, {self.applied} applied, "
                f"{sum(self.rejected.values())} rejected")
        _ensure(min(self.waits, self.evicted, self.clock_gap_max) >= 0, "membership counters",
                f"waits {self.waits}, evicted {self.evicted}, clock_gap_max {self.clock_gap_max}")

    def _validate_workers(self) -> None:
        for name, st in self.workers.items():
            _ensure(st.pushes == st.applied + st.rejected, "per-worker pushes = applied + rejected",
                    f"{name}: {st.pushes} pushes, {st.applied} applied, {st.rejected} rejected")
            _ensure(0 <= st.nonfinite <= st.rejected and st.samples >= 0, "per-worker counts",
                    f"{name}: nonfinite {st.nonfinite} of {st.rejected} rejected, samples {st.samples}")
        # the table starts empty after a restore: totals = restored counters + the table's sums
        base, table = self.baseline, self.workers.values()
        sums = {
            "applied": (self.applied, sum(s.applied for s in table)),
            "rejected": (sum(self.rejected.values()), sum(s.rejected for s in table)),
            "nonfinite": (self.rejected.get(RejectKind.NONFINITE, 0), sum(s.nonfinite for s in table)),
            "pushes": (sum(self.staleness_hist), sum(s.pushes for s in table)),
            "samples": (self.samples_applied, sum(s.samples for s in table)),
        }
        for key, (total, per_worker) in sums.items():
            _ensure(total == base[key] + per_worker, f"workers' {key} sum to the total",
                    f"total {total}, workers {per_worker}, restored {base[key]}")

    def _validate_membership(self) -> None:
        both = set(self.active) & set(self._left_clock)
        _ensure(not both, "active and left disjoint", f"{sorted(both)} are both active and left")
        clocks = [*self.active.values(), *self._left_clock.values()]
        _ensure(all(c >= 0 for c in clocks), "clocks non-negative", f"clocks {clocks}")
        unseen = set(self.active) - set(self._seen)
        _ensure(not unseen, "active workers were seen", f"{sorted(unseen)} active but never heard of")

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
            scalars["optimizers"][name] = {"config": self._configs[name], "state": s}
            arrays.update({f"optim/{name}/{k}": v for k, v in a.items()})
        arrays.update({f"rule/{k}": v for k, v in self.server_rule.state_dict().items()})
        return scalars, arrays

    def load_state_dict(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output (layouts must match; checked by the caller).

        The optimizers load first: state that does not fit (another optimizer, other parameter
        groups) raises before the weights or counters change.
        """
        for name, opt in self.optimizers.items():
            prefix = f"optim/{name}/"
            stored = scalars["optimizers"][name]
            opt.load_state_dict(
                {**stored["state"], "config": stored["config"]},  # the config says which optimizer wrote it
                {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)},
            )
        self.weights[:] = arrays["weights"]
        self.version = int(scalars["version"])
        self.applied = int(scalars["applied"])
        self.rejected = {str(k): int(v) for k, v in scalars["rejected"].items()}
        self.samples_applied = int(scalars["samples_applied"])
        self.samples_rejected = int(scalars["samples_rejected"])
        self.loss_sum = float(scalars["loss_sum"])
        self.staleness_hist = [int(c) for c in scalars["staleness_hist"]]
        self.server_rule.load_state_dict(
            {k[5:]: v for k, v in arrays.items() if k.startswith("rule/")}
        )
        self._snapshot = None
        self._reset_baseline()


def _ensure(ok: bool, invariant: str, detail: str) -> None:
    if not ok:
        raise InvalidServerState(f"invariant {invariant!r} broken: {detail}")
