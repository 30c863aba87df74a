"""When to give up on a run that only produces NaN (or reads only bad chunks). No Dask here.

The trainer feeds every finished chunk's :class:`~psdist.replica.loop.ChunkResult` to a
:class:`NonfiniteGuard`; when the verdict is not ``None`` it stops the training with that
explanation instead of spinning through epochs in which nothing reaches the weights.

A chunk is *non-finite only* when it had minibatches, none of its pushes was applied, every
push it sent was rejected as non-finite, and something was non-finite (a skipped minibatch or
a rejected push) — so every minibatch was either skipped for NaN/Inf or inside a push the
server refused for NaN/Inf. A chunk with a single applied push is progress and resets the count.
A skipped bad chunk (``skip_bad_chunks``) neither counts nor resets, unless every chunk so far
was bad.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["NonfiniteGuard", "is_nonfinite_only", "nonfinite_verdict"]


def is_nonfinite_only(r: Any) -> bool:
    """Whether a chunk's result (a ``ChunkResult``) produced nothing but NaN/Inf."""
    if getattr(r, "bad_chunks", 0) or not getattr(r, "batches", 0):
        return False
    nonfinite_pushes = r.rejected.get("nonfinite", 0)
    return bool(r.applied == 0 and r.pushes == nonfinite_pushes and (r.nonfinite_batches + nonfinite_pushes) > 0)


class NonfiniteGuard:
    """Counts the finished chunks in a row that produced only NaN; says when to stop.

    Parameters
    ----------
    patience
        Consecutive non-finite-only chunks (or, from the start of the run, bad chunks) after
        which :meth:`update` returns an explanation. At least 1.
    """

    def __init__(self, patience: int = 2) -> None:
        self.patience = max(1, int(patience))
        self.streak = 0  # non-finite-only chunks in a row, the latest included
        self.chunks = 0  # chunks seen
        self.bad_only = 0  # chunks seen, while every one was a bad chunk
        self.progressed = False  # a push was applied at some point (the run diverged later)
        self.batches = self.nonfinite_batches = self.nonfinite_inputs = 0  # over the streak
        self.pushes = self.pushes_nonfinite = 0
        self.bad: list[str] = []

    def update(self, r: Any) -> str | None:
        """Take one finished chunk; the reason to stop the run, or ``None`` to go on."""
        self.chunks += 1
        if getattr(r, "bad_chunks", 0):
            if self.bad_only == self.chunks - 1:
                self.bad_only += 1
                self.bad += list(getattr(r, "bad", []))[:1]
            return self._bad_verdict()
        self.bad_only = -1  # a readable chunk: the "every chunk is bad" verdict is off for good
        if not is_nonfinite_only(r):
            self.progressed = self.progressed or r.applied > 0
            self.streak = self.batches = self.nonfinite_batches = self.nonfinite_inputs = 0
            self.pushes = self.pushes_nonfinite = 0
            return None
        self.streak += 1
        self.batches += r.batches
        self.nonfinite_batches += r.nonfinite_batches
        self.nonfinite_inputs += getattr(r, "nonfinite_inputs", 0)
        self.pushes += r.pushes
        self.pushes_nonfinite += r.rejected.get("nonfinite", 0)
        return self._verdict() if self.streak >= self.patience else None

    def _bad_verdict(self) -> str | None:
        if self.bad_only < self.patience:
            return None
        first = f" The first: {self.bad[0]}" if self.bad else ""
        return (
            f"every chunk read so far ({self.bad_only}) was bad and skipped (skip_bad_chunks): there is "
            f"nothing to train on. Check the store (is it complete, was it copied whole? print(dataset.scan()) lists the bad chunks) and re-convert it.{first}"
        )

    def _verdict(self) -> str:
        loss_batches = self.nonfinite_batches - self.nonfinite_inputs
        when = ("after earlier pushes were applied: the training diverged" if self.progressed
                else "since the start of the run: not one update reached the weights")
        fixes = []
        if self.nonfinite_inputs:
            fixes.append("the inputs hold NaN/Inf: print(dataset.scan()) lists the chunks and rows; "
                         "fix or drop those rows and re-convert the data")
        if loss_batches or self.pushes_nonfinite:
            fixes.append("lower the learning rate (or add gradient clipping / warm-up), check the loss "
                         "for log(0), division by zero or exploding outputs, and normalise the inputs")
        return (
            f"the last {self.streak} chunks produced only NaN/Inf, {when}. Of their {self.batches} "
            f"minibatches, {self.nonfinite_batches} were skipped ({self.nonfinite_inputs} for NaN/Inf "
            f"inputs, {loss_batches} for a NaN/Inf loss) and the server rejected all "
            f"{self.pushes_nonfinite} of {self.pushes} pushes as non-finite. Fix: " + "; ".join(fixes) + "."
        )


def nonfinite_verdict(results: Iterable[Any], patience: int = 2) -> str | None:
    """The reason to stop a run given its finished chunks in order (``None``: go on).

    Stateless form of :class:`NonfiniteGuard`: the last ``patience`` chunks (bad chunks aside)
    produced only NaN/Inf, or the first ``patience`` and all later chunks were all bad.
    """
    guard = NonfiniteGuard(patience)
    verdict = None
    for r in results:
        verdict = guard.update(r)
    return verdict
