"""wait_sliced and its three users (Session.call, ActorServer, ChunkRunner), on fake futures: no cluster.

Time is a fake clock that a fake future moves forward by the slice it was given, so every
figure below is exact.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from datetime import timedelta
from typing import Any

import pytest

from psdist.cluster.session import ParameterServerLost, Session
from psdist.cluster.waiting import MIN_SLICE, SLICE, wait_sliced
from psdist.cluster.worker import ActorServer
from psdist.errors import ServerError


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Answer:
    """A future whose answer comes ``after`` seconds of waiting (never: ``None``)."""

    def __init__(self, clock: Clock, after: float | None, value: Any = "answer") -> None:
        self.clock, self.value = clock, value
        self.ready_at = None if after is None else clock.t + after
        self.slices: list[float] = []

    def poll(self, slice_s: float) -> Any:
        self.slices.append(slice_s)
        if self.ready_at is not None and self.clock.t + slice_s >= self.ready_at:
            self.clock.t = max(self.clock.t, self.ready_at)
            return self.value
        self.clock.t += slice_s
        raise TimeoutError


class Calls:
    """Records the calls of ``alive``/``on_idle``, optionally raising at the n-th one."""

    def __init__(self, name: str, log: list[str], fail_at: int | None = None) -> None:
        self.name, self.log, self.fail_at, self.n = name, log, fail_at, 0

    def __call__(self) -> None:
        self.n += 1
        self.log.append(f"{self.name}{self.n}")
        if self.n == self.fail_at:
            raise ParameterServerLost("gone")


def test_an_answer_in_the_first_slice_checks_nothing():
    clock, log = Clock(), []
    fut = Answer(clock, after=0.25)
    got = wait_sliced(fut.poll, what="a pull", timeout=10, alive=Calls("alive", log),
                      on_idle=Calls("idle", log), clock=clock)
    assert (got, fut.slices, log, clock.t) == ("answer", [SLICE], [], 1000.25)


def test_between_slices_alive_then_housekeeping_until_the_answer():
    clock, log = Clock(), []
    fut = Answer(clock, after=2.5)
    got = wait_sliced(fut.poll, what="a pull", alive=Calls("alive", log), on_idle=Calls("idle", log),
                      clock=clock)
    assert (got, fut.slices, log) == ("answer", [1.0, 1.0, 1.0], ["alive1", "idle1", "alive2", "idle2"])


def test_the_deadline_cuts_the_last_slice_and_names_the_call_and_the_fix():
    clock, log = Clock(), []
    fut = Answer(clock, after=None)
    with pytest.raises(ServerError) as err:
        wait_sliced(fut.poll, what="metrics()", timeout=2.5, alive=Calls("alive", log),
                    on_idle=Calls("idle", log), clock=clock)
    assert str(err.value) == ("the parameter server did not answer metrics() within 2.5 s; "
                              "raise Trainer(timeout=...) if it is overloaded")
    assert fut.slices == [1.0, 1.0, 0.5] and clock.t == 1002.5
    # liveness is looked at before giving up; no housekeeping after the last slice
    assert log == ["alive1", "idle1", "alive2", "idle2", "alive3"]


def test_a_slice_never_shrinks_below_the_minimum():
    clock = Clock()
    fut = Answer(clock, after=None)
    with pytest.raises(ServerError, match=r"within 1\.004 s"):
        wait_sliced(fut.poll, what="a push", timeout=1.004, clock=clock)
    assert fut.slices == [1.0, MIN_SLICE]


def test_a_lost_peer_ends_the_wait_at_once_without_housekeeping():
    clock, log = Clock(), []
    fut = Answer(clock, after=None)
    with pytest.raises(ParameterServerLost, match="gone"):
        wait_sliced(fut.poll, what="a pull", timeout=60, alive=Calls("alive", log, fail_at=2),
                    on_idle=Calls("idle", log), clock=clock)
    assert (fut.slices, log) == ([1.0, 1.0], ["alive1", "idle1", "alive2"])


@pytest.mark.parametrize("timeout_error", [TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError])
def test_every_timeout_class_means_not_yet_and_other_errors_go_through(timeout_error):
    polls = []

    def poll(slice_s: float) -> str:
        polls.append(slice_s)
        if len(polls) == 1:
            raise timeout_error
        raise ValueError("the call itself failed")

    with pytest.raises(ValueError, match="the call itself failed"):
        wait_sliced(poll, what="a pull", clock=Clock())
    assert polls == [1.0, 1.0]


# ---------------------------------------------------------------------- the users, on fakes
class FakeClient:
    """Scheduler info whose worker list loses the PS after ``alive_for`` looks."""

    def __init__(self, ps: str, alive_for: int) -> None:
        self.ps, self.alive_for, self.looks = ps, alive_for, 0

    def scheduler_info(self, n_workers: int = 0) -> dict[str, Any]:
        self.looks += 1
        return {"workers": {self.ps: {}} if self.looks <= self.alive_for else {}}


class NeverFuture:
    """A Dask future that never answers; it returns at once (no sleeping) and counts the calls."""

    def __init__(self) -> None:
        self.timeouts: list[Any] = []

    def result(self, timeout: Any = None) -> Any:
        self.timeouts.append(timeout)
        assert len(self.timeouts) < 100, "the wait never ended"
        raise TimeoutError


class FakePS:
    def __init__(self) -> None:
        self.fut = NeverFuture()

    def metrics(self) -> NeverFuture:
        return self.fut


def test_session_call_raises_parameter_server_lost_naming_the_call():
    ps, client = FakePS(), FakeClient("tcp://ps:1", alive_for=2)
    sess = Session(client, ps, "tcp://ps:1", "plugin", "run")
    with pytest.raises(ParameterServerLost) as err:
        sess.call("metrics", timeout=600)
    assert str(err.value) == "the parameter server's worker tcp://ps:1 left the cluster during metrics()"
    assert (len(ps.fut.timeouts), client.looks) == (3, 3)  # noticed at the first look after it left


def test_actor_server_call_gives_up_when_the_run_is_torn_down():
    closed = threading.Event()
    fut = NeverFuture()

    class Teardown(NeverFuture):
        def result(self, timeout: Any = None) -> Any:
            fut.timeouts.append(timeout)
            if len(fut.timeouts) == 2:
                closed.set()  # the plugin is torn down while the second slice waits
            raise TimeoutError

    with pytest.raises(ServerError) as err:
        ActorServer(None, timeout=600, closed=closed).call("a pull", Teardown())
    assert str(err.value) == ("a pull was abandoned: this training's parameter server was replaced "
                              "or the training ended")
    assert fut.timeouts == [timedelta(seconds=SLICE)] * 2  # actor futures take a timedelta
