"""A worker's first calls to a parameter server give up when its run's plugin is torn down."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
import torch.nn.functional as F

import psdist.cluster.worker as worker_mod
from psdist.core.rules import Downpour
from psdist.errors import ServerError
from psdist.hep.models import mlp
from psdist.replica.steps import SupervisedStep


class Never:
    """An actor call to a dead worker: its future never resolves (one slice at a time)."""

    def result(self, timeout: Any) -> Any:
        time.sleep(timeout.total_seconds() if hasattr(timeout, "total_seconds") else timeout)
        raise TimeoutError


class DeadActor:
    def plane_endpoint(self) -> Never:
        return Never()

    def register(self, worker: str, info: dict[str, Any]) -> Never:
        return Never()


def plugin(data: Any) -> worker_mod.RunPlugin:
    run = worker_mod.RunPlugin("t", mlp, SupervisedStep(F.cross_entropy), Downpour(), data, "ps", False)
    run._worker = SimpleNamespace(address="tcp://w:1", name="w", state=SimpleNamespace(total_resources={}, nthreads=1))
    return run


@pytest.mark.parametrize("call", ["handle", "replica"])
def test_a_call_to_a_dead_server_ends_when_the_plugin_is_torn_down(blob_data: Any, call: str) -> None:
    run = plugin(blob_data)
    threading.Timer(0.3, run.closed.set).start()  # the new server's plugin replaces this one
    t0 = time.monotonic()
    with pytest.raises(ServerError, match="was abandoned: this training's parameter server was replaced"):
        getattr(run, call)(DeadActor(), 30.0)
    assert time.monotonic() - t0 < 10  # about a slice after the teardown, not the 30 s timeout
