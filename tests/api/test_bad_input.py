"""Bad input gets a psdist error naming the value and the fix — before any cluster starts."""

from __future__ import annotations

import functools
import threading

import numpy as np
import pytest
import torch
import zarr

import psdist
from psdist.hep.models import mlp
from psdist.replica.binding import spec_of

CE = torch.nn.functional.cross_entropy
MLP = functools.partial(mlp, inputs=20, hidden=8, classes=4)


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch):
    """Any attempt to start a cluster fails the test: errors must come first."""

    def forbidden(*a, **k):
        pytest.fail("a cluster was started before the bad input was reported")

    monkeypatch.setattr("psdist.cluster.session.embedded_cluster", forbidden)


@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), float("inf")])
def test_bad_learning_rate(lr):
    with pytest.raises(psdist.ConfigError, match=r"lr=.*positive"):
        psdist.optim.SGD(lr=lr)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"max_staleness": -1}, r"max_staleness=-1 must be an integer >= 0"),
        ({"push_every": 0}, r"push_every=0"),
        ({"batch_size": 0}, r"batch_size=0"),
        ({"workers": 0}, r"workers=0"),
        ({"timeout": -5}, r"timeout=-5"),
    ],
)
def test_bad_trainer_settings(blob_data, kwargs, pattern):
    with pytest.raises(psdist.ConfigError, match=pattern):
        psdist.Trainer(MLP, CE, blob_data, **kwargs)


def test_missing_data_path(tmp_path):
    t = psdist.Trainer(MLP, CE, psdist.ZarrDataset(tmp_path / "nope.zarr"))
    with pytest.raises(psdist.DataError, match=r"nope.zarr.*does not exist.*write_zarr"):
        t.fit(epochs=1)


def test_length_mismatch(tmp_path):
    g = zarr.open_group(tmp_path / "bad.zarr", mode="w")
    g.create_array("x", data=np.zeros((100, 20), np.float32), chunks=(50, 20))
    g.create_array("y", data=np.zeros(90, np.int64), chunks=(50,))
    t = psdist.Trainer(MLP, CE, tmp_path / "bad.zarr")
    with pytest.raises(psdist.DataError, match=r"'x' has 100 rows but 'y' has 90"):
        t.fit(epochs=1)


def test_model_output_does_not_fit_labels(blob_data):
    three_classes = functools.partial(mlp, inputs=20, hidden=8, classes=3)  # labels go up to 3
    t = psdist.Trainer(three_classes, CE, blob_data)
    with pytest.raises(psdist.ModelError, match=r"(do not fit the data|labels go up to 3).*model outputs \(64, 3\)"):
        t.fit(epochs=1)


def test_model_input_does_not_fit_rows(blob_data):
    wrong_inputs = functools.partial(mlp, inputs=7)
    with pytest.raises(psdist.ModelError, match=r"rows of shape \(64, 20\)"):
        psdist.Trainer(wrong_inputs, CE, blob_data).fit(epochs=1)


def test_unpicklable_model_fn(blob_data):
    lock = threading.Lock()

    def make():
        with lock:
            return MLP()

    with pytest.raises(psdist.ModelError, match=r"model_fn cannot be pickled.*module level"):
        psdist.Trainer(make, CE, blob_data)


def test_model_fn_must_return_a_module(blob_data):
    with pytest.raises(psdist.ModelError, match=r"returned int"):
        psdist.Trainer(int, CE, blob_data).fit(epochs=1)


def test_epochs_must_be_positive(blob_data):
    with pytest.raises(psdist.ConfigError, match=r"epochs=0"):
        psdist.Trainer(MLP, CE, blob_data).fit(epochs=0)


def test_checkpoint_of_another_architecture_is_refused(blob_data, tmp_path):
    from psdist.core.layout import Layout
    from psdist.core.server import ServerState
    from psdist.replica.binding import flatten
    from psdist.run.checkpoint import write_checkpoint

    other = functools.partial(mlp, inputs=20, hidden=16, classes=4)
    m = other()
    spec = spec_of(m)
    state = ServerState(Layout.of({"model": spec}), flatten(m, spec), {"model": psdist.optim.SGD(lr=0.1)})
    scalars, arrays = state.state_dict()
    write_checkpoint(tmp_path / "o.ckpt", {"epoch": 1, "history": [], "server": scalars, "trainer": {
        "batch_size": 32, "push_every": 1, "max_staleness": None, "seed": 0,
        "rule": {"name": "Downpour"}}, "early_stopping": None}, arrays)
    with pytest.raises(psdist.CheckpointError, match=r"tensor '0.weight' is float32\[8, 20\] in the model but float32\[16, 20\]"):
        psdist.Trainer.load(tmp_path / "o.ckpt", MLP, CE, blob_data)
