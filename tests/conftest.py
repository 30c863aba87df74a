"""Shared fixtures: a real multi-process LocalCluster and small learnable Zarr datasets."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import psdist

TESTS = os.path.dirname(os.path.abspath(__file__))
# tests/ mirrors the packages (tests/core, tests/cluster, ...). Worker processes must import task
# functions defined in test modules (pickled by reference, by module name): every test folder is
# on their path, and on ours (a module imports its neighbours' helpers, e.g. test_handle's).
_FOLDERS = [TESTS, *sorted(
    os.path.join(TESTS, d) for d in os.listdir(TESTS)
    if os.path.isdir(os.path.join(TESTS, d)) and d.isidentifier() and d not in ("golden", "__pycache__")
)]
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (*_FOLDERS, os.environ.get("PYTHONPATH")) if p)
for _folder in reversed(_FOLDERS):
    if _folder not in sys.path:
        sys.path.insert(0, _folder)


def blobs(n: int, d: int = 20, k: int = 4, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """k Gaussian clusters in d dimensions: learnable to ~99 % by a small MLP."""
    rng = np.random.default_rng(1234)  # the same centres for train and validation
    centres = rng.normal(0, 1.0, (k, d))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = centres[y] + spread * rng.normal(0, 1, (n, d))
    return x.astype(np.float32), y.astype(np.int64)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on distributed's in-process ``gen_cluster`` run first.

    Its clean-up clears Dask's registry of default clients (and checks that no worker process
    is alive); after the session's cluster fixture has started, that would strand the fixture's
    client and fail the leak check. Order inside each group is kept.
    """
    items.sort(key=lambda item: 0 if item.get_closest_marker("in_process_cluster") else 1)


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one intra-op thread is fastest and immune to a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def blob_data(tmp_path_factory: pytest.TempPathFactory) -> psdist.ZarrDataset:
    """4096 training rows in 8 chunks of 512, 1024 validation rows in 2 chunks."""
    x, y = blobs(4096, seed=1)
    xv, yv = blobs(1024, seed=2)
    path = tmp_path_factory.mktemp("data") / "blobs.zarr"
    return psdist.write_zarr(path, x, y, xv, yv, chunk_rows=512)


@pytest.fixture(scope="session")
def client():
    """A LocalCluster of 3 worker processes (1 thread each): one for the PS, two for data."""
    from psdist.cluster import embedded_cluster

    cluster, client = embedded_cluster(workers=2, threads_per_worker=1, dashboard_address=None)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(autouse=True)
def server_states(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every :class:`~psdist.core.server.ServerState` a test makes in this process passes
    ``validate_state()`` when the test ends (the invariants of the pure state machine, checked
    after every scripted scenario). A test that corrupts a state on purpose removes it from the
    yielded list.
    """
    from psdist.core.server import ServerState

    made: list[ServerState] = []
    original = ServerState.__init__

    def init(self: ServerState, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(ServerState, "__init__", init)
    yield made
    for state in made:
        state.validate_state()
