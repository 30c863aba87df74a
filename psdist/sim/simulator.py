"""A discrete-event simulator of psdist training with many workers, in one process.

It answers the question asked before renting 256 GPUs: *which update rule and which staleness
bound still converge at that scale?* The simulator runs the real :class:`~psdist.core.server.
ServerState` and the real rule objects (server and worker sides, barriers included), and every
simulated worker computes real gradients of a real model on real data. Only time is simulated:
each worker has its own compute speed, per-step jitter and message delay, so the order in which
pushes reach the server — hence staleness — is what a cluster of that shape would produce.

The run is deterministic for a seed (a heap of timed events, ties broken by insertion order).

With ``overlap=True`` each simulated worker has a communication thread that keeps one push in
flight while the next minibatch computes, as the real worker loop does: gradient ``i`` is
computed on the weights of the reply to push ``i − 2`` (the reply to push ``i − 1`` is loaded only
once gradient ``i`` is done), so every push is one own push staler, and the round trip no longer
idles the worker.

>>> result = simulate(model_fn, (x, y, x_val, y_val), rule=StalenessAware(),
...                   optimizer=SGD(lr=0.05), workers=64, batch_size=32, epochs=3)  # doctest: +SKIP
>>> result.final["val_accuracy"], result.updates_to_target                            # doctest: +SKIP
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from psdist.core.protocol import Push, PushReply
from psdist.core.rules import Downpour, Rule, WorkerRule
from psdist.core.rules.base import rule_code
from psdist.core.server import ServerState
from psdist.errors import ConfigError
from psdist.optim import TorchOptimizer, as_optimizer
from psdist.replica.binding import flatten
from psdist.replica.loop import as_labels, batch_bounds
from psdist.replica.replica import Replica, as_model_dict, layout_of
from psdist.replica.steps import SupervisedStep, reported_loss
from psdist.run.metrics import accuracy

__all__ = ["SimResult", "SimWorker", "heterogeneous", "simulate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimWorker:
    """Speed of one simulated worker (times in arbitrary units, e.g. seconds).

    Parameters
    ----------
    step_time
        Mean compute time of one minibatch.
    jitter
        σ of the log-normal factor drawn for each communication period's compute time.
    delay
        One-way latency of every message (push, pull reply).
    """

    step_time: float = 1.0
    jitter: float = 0.1
    delay: float = 0.05


def heterogeneous(
    n: int, *, spread: float = 0.2, step_time: float = 1.0, jitter: float = 0.1,
    delay: float = 0.05, seed: int = 0,
) -> list[SimWorker]:
    """``n`` workers whose mean speeds differ by a log-normal factor of σ = ``spread``."""
    if not (isinstance(n, int) and n >= 1):
        raise ConfigError(f"workers={n!r} must be an integer >= 1")
    rng = np.random.default_rng(seed)
    speeds = step_time * np.exp(rng.normal(0.0, spread, n))
    return [SimWorker(float(s), jitter, delay) for s in speeds]


@dataclass
class SimResult:
    """What a simulated run produced: evaluations over versions, and the server's counters."""

    rule: dict[str, Any]
    workers: int
    history: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    updates_to_target: int | None = None
    time_to_target: float | None = None
    server: dict[str, Any] = field(default_factory=dict)
    weights: np.ndarray | None = None  # the server's weights at the end
    overlap: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "workers": self.workers, "overlap": self.overlap, "final": self.final,
            "updates_to_target": self.updates_to_target, "time_to_target": self.time_to_target,
            "history": self.history, "server": self.server,
        }


class _Sim:
    """The event loop. Events: 'begin' (a worker's first pull reaches the server), 'arrive' (its
    push reaches the server); parked workers wait for a barrier and are re-checked after every
    server change. With ``overlap``: 'ready' (a worker's gradient is computed) and 'back' (the
    reply to its push in flight is back at the worker)."""

    def __init__(
        self, *, state: ServerState, specs: list[SimWorker], names: list[str], replicas: list[Replica],
        rules: list[WorkerRule], x: np.ndarray, y: np.ndarray, epochs: float, batch_size: int,
        push_every: int, seed: int, rng: np.random.Generator, step: SupervisedStep, eval_every: int,
        evaluate: Callable[[], dict[str, float]], overlap: bool = False,
    ) -> None:
        self.state = state
        self.overlap = overlap
        self.specs = specs
        self.names = names
        self.replicas = replicas
        self.rules = rules
        self.started = [False] * len(specs)
        self.x = x
        self.y = y
        self.epochs = epochs
        self.batch_size = batch_size
        self.push_every = push_every
        self.seed = seed
        self.rng = rng
        self.step = step
        self.eval_every = eval_every
        self.evaluate = evaluate
        self.history: list[dict[str, float]] = []
        self.now = 0.0
        self.events: list[tuple[float, int, str, int]] = []
        self.seq = itertools.count()
        self.parked: list[int] = []
        self.batch_iter = self._batches()
        self.pending: dict[int, tuple[int, int, float]] = {}  # worker -> (batches, samples, loss)
        self.next_eval = 0
        # overlap: the push each worker's communication thread holds (until it arrives), the
        # reply to it (once computed by the server), whether that reply is back at the worker,
        # whether the worker waits for it with a gradient ready, and whether it has no rows left
        self.in_flight: dict[int, Push] = {}
        self.replies: dict[int, PushReply] = {}
        self.back = [True] * len(specs)
        self.waiting = [False] * len(specs)
        self.done = [False] * len(specs)

    # ---------------------------------------------------------------- data and time
    def _batches(self) -> Iterator[np.ndarray]:
        n = len(self.x)
        for epoch in range(math.ceil(self.epochs)):
            perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            bounds = batch_bounds(n, self.batch_size)
            if epoch == math.ceil(self.epochs) - 1 and self.epochs != math.ceil(self.epochs):
                bounds = bounds[: max(1, round(len(bounds) * (self.epochs - epoch)))]
            for lo, hi in bounds:
                yield perm[lo:hi]

    def _at(self, t: float, kind: str, w: int) -> None:
        heapq.heappush(self.events, (t, next(self.seq), kind, w))

    # ---------------------------------------------------------------- the loop
    def run(self) -> None:
        for w in range(len(self.specs)):
            self.state.join(self.names[w])
            self._at(self.specs[w].delay, "begin", w)
        self._evaluate_if_due(force=True)
        while self.events:
            self.now, _, kind, w = heapq.heappop(self.events)
            if kind == "begin":
                pull = self.state.pull_if_ready(self.names[w], self.replicas[w].version)
                if pull is None:
                    self.parked.append(w)
                    continue
                self.rules[w].begin(self.replicas[w], pull)
                self.replicas[w].zero_grad()
                self.started[w] = True
                self._compute(w, self.now + self.specs[w].delay)
            elif kind == "arrive":
                self._arrive(w)
            elif kind == "ready":
                if self.back[w]:
                    self._hand_off(w)
                else:  # the previous push's reply is not back: its round trip is longer than a period
                    self.waiting[w] = True
            elif kind == "back":
                self.back[w] = True
                if self.waiting[w]:
                    self.waiting[w] = False
                    self._hand_off(w)
            self._unpark()
            self._evaluate_if_due()
        self._evaluate_if_due(force=True)

    def _compute(self, w: int, t: float) -> None:
        """Start worker ``w``'s next communication period at time ``t`` (or let it leave)."""
        rows = list(itertools.islice(self.batch_iter, self.push_every))
        if not rows:  # the sample budget is spent: this worker stops
            if self.overlap and w in self.in_flight:
                self.done[w] = True  # once its last push has arrived
            else:
                self.state.leave(self.names[w])
            return
        replica, rule = self.replicas[w], self.rules[w]
        samples, loss_sum = 0, 0.0
        for idx in rows:
            xb = torch.from_numpy(self.x[idx])
            yb = torch.from_numpy(self.y[idx])
            loss, _ = reported_loss(self.step(replica, xb, yb))
            rule.after_backward(replica)
            samples += len(idx)
            loss_sum += loss * len(idx)
        spec = self.specs[w]
        factor = float(np.exp(self.rng.normal(0.0, spec.jitter))) if spec.jitter > 0 else 1.0
        duration = spec.step_time * len(rows) * factor
        self.pending[w] = (len(rows), samples, loss_sum / samples)
        if self.overlap:  # the gradient is ready at t + duration; it is pushed from there
            self._at(t + duration, "ready", w)
        else:
            self._at(t + duration + spec.delay, "arrive", w)

    def _hand_off(self, w: int) -> None:
        """Overlap: worker ``w`` hands its ready gradient to its communication thread, loads the
        reply to its previous push and starts computing the next period at once.

        The steps of the real worker's :class:`~psdist.replica.overlap.InFlight`: the push's
        base is the version loaded before the previous push left; the previous reply's weights
        are loaded only now (at the first push, with none, the buffers' change counts as sent).
        """
        batches, samples, loss = self.pending.pop(w)
        replica = self.replicas[w]
        update = replica.gradient_update(scale=1.0 / batches)
        self.in_flight[w] = Push(replica.worker, replica.version, update, samples, loss)
        previous = self.replies.pop(w, None)
        if previous is not None:
            replica.load(previous.pull)
        else:
            replica.buffers_sent()
        replica.zero_grad()
        self.back[w] = False
        self._at(self.now + self.specs[w].delay, "arrive", w)
        self._compute(w, self.now)

    def _arrive(self, w: int) -> None:
        if self.overlap:
            reply = self.state.push(self.in_flight.pop(w), pull=True)
            assert not reply.wait  # rules with overlap hold nobody back
            self.replies[w] = reply
            if self.done[w]:  # its last push: the worker stops training
                self.state.leave(self.names[w])
            else:
                self._at(self.now + self.specs[w].delay, "back", w)
            return
        batches, samples, loss = self.pending.pop(w)
        reply = self.rules[w].communicate(self.replicas[w], self.state, batches, samples, loss)
        if reply.wait:
            self.parked.append(w)
        else:
            self._compute(w, self.now + self.specs[w].delay)

    def _unpark(self) -> None:
        """Let every parked worker whose barrier opened go on (the reply travels ``delay``)."""
        progress = True
        while progress and self.parked:
            progress = False
            for w in list(self.parked):
                if self.state.may_proceed(self.names[w]):
                    self.parked.remove(w)
                    if self.started[w]:
                        self.rules[w].resume(self.replicas[w], self.state)
                        self._compute(w, self.now + self.specs[w].delay)
                    else:
                        self._at(self.now, "begin", w)
                    progress = True

    # ---------------------------------------------------------------- evaluation
    def _evaluate_if_due(self, force: bool = False) -> None:
        if not force and self.state.version < self.next_eval:
            return
        while self.next_eval <= self.state.version:
            self.next_eval += self.eval_every
        version = self.state.version
        if self.history and self.history[-1]["version"] == version:
            return
        self.history.append({"version": version, "time": self.now,
                             "samples": self.state.samples_applied, **self.evaluate()})


def _evaluator(model_fn: Callable[[], Any], step: SupervisedStep, x_val: np.ndarray, y_val: np.ndarray,
               metric: Callable[[np.ndarray, np.ndarray], float], state_ref: list[ServerState],
               ) -> Callable[[], dict[str, float]]:
    replica = Replica("sim-eval", as_model_dict(model_fn()))
    xv, yv = torch.from_numpy(x_val), torch.from_numpy(as_labels(y_val))

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        replica.load(state_ref[0].pull("sim-eval", replica.version))
        replica.train(False)
        loss, outs = 0.0, []
        for lo, hi in batch_bounds(len(xv), 4096):
            ls, out = step.evaluate(replica, xv[lo:hi], yv[lo:hi])
            loss += ls
            outs.append(out.float().numpy())
        out = np.concatenate(outs)
        return {"val_loss": loss / len(xv), "val_metric": float(metric(y_val, out))}

    return evaluate


def simulate(
    model_fn: Callable[[], Any],
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    rule: Rule | None = None,
    optimizer: Any,
    workers: int | Sequence[SimWorker] = 4,
    batch_size: int = 32,
    push_every: int = 1,
    max_staleness: int | None = None,
    epochs: float = 1.0,
    loss_fn: Callable[..., torch.Tensor] = torch.nn.functional.cross_entropy,
    metric: Callable[[np.ndarray, np.ndarray], float] = accuracy,
    eval_every: int = 50,
    target: float | None = None,
    seed: int = 0,
    overlap: bool = False,
) -> SimResult:
    """Simulate a psdist training of ``model_fn`` on ``data`` with many workers.

    Parameters
    ----------
    model_fn
        Factory of the (small) model; called once per simulated worker and once for evaluation.
    data
        ``(x, y, x_val, y_val)`` numpy arrays (e.g. read from a psdist Zarr store).
    rule, optimizer, batch_size, push_every, max_staleness
        As for :class:`psdist.Trainer`; the rule is resolved for the number of workers.
    workers
        A count (identical workers of step time 1, jitter 0.1, delay 0.05) or one
        :class:`SimWorker` per worker (see :func:`heterogeneous`).
    epochs
        Passes over the training rows, shared by all workers (fractions allowed): the sample
        budget is the same whatever the number of workers.
    metric
        ``metric(y_true, outputs)`` evaluated on the validation rows (accuracy by default),
        every ``eval_every`` server versions and at the end.
    target
        Validation metric whose first reach is reported as ``updates_to_target`` (server
        versions) and ``time_to_target`` (simulated time).
    seed
        Seeds the model, the batch order and the jitter.
    overlap
        Simulate the worker loop's overlap of communication and compute (as
        ``Trainer(overlap=True)``): each worker keeps one push in flight while it computes the
        next period, starting it as soon as it has handed its push over (the round trip is
        hidden unless it is longer than the compute), and computes gradient ``i`` on the reply
        to push ``i − 2``. Pushes are one own push staler (one worker: staleness 1 instead of 0;
        n workers pushing in turn: about 2n − 1 instead of n − 1). Only rules whose worker only
        pushes and pulls allow it (``Rule.overlaps``: Downpour, StalenessAware, DynSGD).

    Returns
    -------
    SimResult
    """
    specs = [SimWorker() for _ in range(workers)] if isinstance(workers, int) else list(workers)
    if not specs:
        raise ConfigError(f"workers={workers!r}: give a count >= 1 or a list of SimWorker")
    for name, v in (("batch_size", batch_size), ("push_every", push_every), ("eval_every", eval_every)):
        if not (isinstance(v, int) and v >= 1):
            raise ConfigError(f"{name}={v!r} must be an integer >= 1")
    if not epochs > 0:
        raise ConfigError(f"epochs={epochs!r} must be > 0")
    x, y, x_val, y_val = (np.asarray(a) for a in data)
    rule = (rule if rule is not None else Downpour()).for_workers(len(specs))
    if not isinstance(overlap, bool):
        raise ConfigError(f"overlap={overlap!r} must be True or False")
    if overlap and not rule.overlaps:
        raise ConfigError(
            f"overlap=True keeps a push in flight while the next minibatch computes, which only rules "
            f"whose worker just pushes and pulls allow (Downpour, StalenessAware, DynSGD); "
            f"{type(rule).__name__} does not: use overlap=False with rule={rule_code(rule)}, or "
            f"rule=psdist.rules.StalenessAware() to keep overlap"
        )
    recipe: TorchOptimizer = as_optimizer(optimizer)
    # seeded, without touching the caller's global RNG (dropout draws inside stay reproducible)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        models = as_model_dict(model_fn())
        layout = layout_of(models)
        if len(layout.groups) != 1:
            raise ConfigError("the simulator trains single-model steps; give model_fn returning one module")
        weights = np.concatenate([flatten(models[g.name], g.spec) for g in layout.groups])
        state = ServerState(layout, weights, {layout.names[0]: recipe}, rule, max_staleness)
        rule.check(push_every, max_staleness, {n: o.info for n, o in state.optimizers.items()})
        names = [f"sim-{i}" for i in range(len(specs))]
        replicas: list[Replica] = []
        rules: list[WorkerRule] = []
        for i in range(len(specs)):
            replicas.append(Replica(names[i], as_model_dict(model_fn())))
            rules.append(rule.worker_side({layout.names[0]: recipe}))
        step = SupervisedStep(loss_fn)
        sim = _Sim(
            state=state, specs=specs, names=names, replicas=replicas, rules=rules,
            x=np.ascontiguousarray(x), y=np.ascontiguousarray(as_labels(y)), epochs=float(epochs),
            batch_size=batch_size, push_every=rule.comm_period(push_every), seed=seed,
            rng=np.random.default_rng([seed, 1]), step=step, eval_every=eval_every,
            evaluate=_evaluator(model_fn, step, x_val, y_val, metric, [state]), overlap=overlap,
        )
        state.clock = lambda: sim.now  # the server's clock is the simulated one
        sim.run()
    state.validate_state()  # the server's invariants hold after the whole simulated run
    result = SimResult(rule.to_config(), len(specs), sim.history, dict(sim.history[-1]), overlap=overlap)
    if target is not None:
        for rec in sim.history:
            if rec["val_metric"] >= target:
                result.updates_to_target, result.time_to_target = int(rec["version"]), rec["time"]
                break
    m = state.metrics()
    m.pop("workers")
    result.server = m
    result.weights = state.weights.copy()
    return result

