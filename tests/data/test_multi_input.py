"""Several named inputs and targets (issue 17): dtypes kept, rows aligned through shuffling and
minibatches, list and dict forms, validation twins, and every bad input refused before a cluster."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import psdist
from psdist.checks import dry_run
from psdist.core.server import ServerState
from psdist.data.dataset import ZarrDataset
from psdist.data.write import write_zarr
from psdist.errors import ConfigError, DataError, ModelError
from psdist.optim import SGD
from psdist.replica import Replica
from psdist.replica.binding import flatten
from psdist.replica.loop import evaluate_rows, train_rows
from psdist.rules import Downpour
from psdist.steps import Step, SupervisedStep

N, P = 512, 6

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    """Particles of two classes, each row's arrays tied together through its index ``ids``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int64)
    counts = rng.integers(2, P + 1, n)
    mask = np.arange(P)[None, :] < counts[:, None]
    feats = (rng.normal(0, 1, (n, P, 3)) + 1.5 * y[:, None, None]).astype(np.float32)
    feats[~mask] = 0.0
    points = rng.normal(0, 1, (n, P, 2)).astype(np.float32) * mask[..., None]
    return {"points": points, "feats": feats, "mask": mask, "ids": np.arange(n, dtype=np.int32),
            "label": y, "energy": (10.0 + 5.0 * y + rng.normal(0, 0.1, n)).astype(np.float32)}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    train, val = _arrays(N, 1), _arrays(256, 2)
    extra = {**train, **{f"{k}_val": v for k, v in val.items()}}  # every array under its own name
    path = tmp_path_factory.mktemp("multi") / "jets.zarr"
    write_zarr(path, train["feats"], train["label"], chunk_rows=128, extra=extra)
    return str(path)


class PointNet(torch.nn.Module):
    """forward(points, feats, mask): a masked mean of per-particle features."""

    def __init__(self) -> None:
        super().__init__()
        self.phi = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16))
        self.head = torch.nn.Linear(16, 2)

    def forward(self, points: torch.Tensor, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        assert mask.dtype == torch.bool  # the mask arrives as a mask, not as floats
        h = self.phi(torch.cat([points, feats], dim=-1)) * mask.unsqueeze(-1)
        return self.head(h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1))


class TwoHeads(PointNet):
    """Class logits and an energy estimate: a tuple of outputs for a tuple of targets."""

    def __init__(self) -> None:
        super().__init__()
        self.energy = torch.nn.Linear(16, 1)

    def forward(self, points: torch.Tensor, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = (self.phi(torch.cat([points, feats], dim=-1)) * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return self.head(h), self.energy(h).squeeze(-1)


def two_losses(out: tuple[torch.Tensor, torch.Tensor], y: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(out[0], y[0]) + 0.01 * F.mse_loss(out[1], y[1])


def _server(replica: Replica) -> ServerState:
    w = np.concatenate([flatten(replica.models[g.name], g.spec) for g in replica.layout.groups])
    return ServerState(replica.layout, w, {g.name: SGD(lr=0.1, momentum=0.9) for g in replica.layout.groups},
                       clock=lambda: 0.0)


def test_each_array_keeps_its_dtype(store):
    data = ZarrDataset(store, inputs=["points", "feats", "mask", "ids"], targets=["label", "energy"])
    info = data.describe()
    assert [c.index for c in info.val] == [4, 5] and info.train_rows == N  # the <name>_val twins
    x, y = data.read(info.train[1])
    assert [a.dtype for a in x] == [np.float32, np.float32, np.bool_, np.int32]
    assert [a.dtype for a in y] == [np.int64, np.float32]
    assert x[3].tolist() == list(range(128, 256))
    xv, yv = data.read_validation()
    assert xv[0].shape == (256, P, 2) and yv[1].dtype == np.float32
    assert info.dtype("mask") == "bool" and not info.single_target


class Witness(Step):
    """Checks in every minibatch that each row's arrays belong together (through ``ids``)."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.model_step = SupervisedStep(F.cross_entropy)

    def __call__(self, replica, x, y):
        ids = x["ids"].long()
        assert x["mask"].dtype == torch.bool and x["ids"].dtype == torch.int32
        assert torch.equal(y["energy_row"], ids.float())  # the target rows moved with the inputs
        assert torch.equal(x["count"], x["mask"].sum(1))
        self.seen += ids.tolist()
        out = replica.module(x["points"], x["feats"], x["mask"])
        loss = F.cross_entropy(out, y["label"])
        replica.backward(loss)
        return float(loss.detach())


def test_rows_stay_aligned_through_shuffling_and_minibatches(store, tmp_path):
    arrays = _arrays(N, 1)
    counts = arrays["mask"].sum(1).astype(np.int64)
    extra = {k: v for k, v in arrays.items() if k not in ("feats", "label")}
    extra |= {"count": counts, "energy_row": arrays["ids"].astype(np.float32)}
    path = write_zarr(tmp_path / "aligned.zarr", arrays["feats"], arrays["label"], chunk_rows=N, extra=extra).path
    data = ZarrDataset(path, inputs={"points": "points", "feats": "x", "mask": "mask", "ids": "ids", "count": "count"},
                       targets={"label": "y", "energy_row": "energy_row"}, val_fraction=0)
    (chunk,) = data.describe().train
    x, y = data.read(chunk)
    replica = Replica("w0", {"model": PointNet()})
    step = Witness()
    res = train_rows(replica, _server(replica), Downpour().worker_side(), step, x, y, batch_size=50, push_every=1, seed=3)
    assert sorted(step.seen) == list(range(N)) and step.seen != list(range(N))  # every row once, shuffled
    assert res.samples == N


@pytest.mark.parametrize("form", ["list", "dict"])
def test_list_and_dict_inputs_train_and_evaluate(store, form):
    inputs = ["points", "feats", "mask"] if form == "list" else {"mask": "mask", "feats": "feats", "points": "points"}
    data = ZarrDataset(store, inputs=inputs, targets="label")
    info = data.describe()
    step = SupervisedStep(F.cross_entropy)
    dry_run(step, data, {"model": PointNet()}, info)  # its own model: a replica binds the tensors it is given
    replica = Replica("w0", {"model": PointNet()})
    server = _server(replica)
    for epoch in range(4):
        for c in info.train:
            x, y = data.read(c)
            train_rows(replica, server, Downpour().worker_side(), step, x, y, batch_size=32, push_every=1,
                       seed=epoch * 10 + c.index)
    x, y = data.read(info.val[0])
    res = evaluate_rows(replica, server, step.evaluate, x, y, batch_size=64)
    assert psdist.metrics.accuracy(res.targets, res.outputs) >= 0.9


def test_two_targets_reach_the_loss_and_the_metrics_as_a_tuple(store):
    data = ZarrDataset(store, inputs=["points", "feats", "mask"], targets=["label", "energy"])
    info = data.describe()
    step = SupervisedStep(two_losses)
    dry_run(step, data, {"model": TwoHeads()}, info)
    replica = Replica("w0", {"model": TwoHeads()})
    x, y = data.read(info.val[0])
    res = evaluate_rows(replica, _server(replica), step.evaluate, x, y, batch_size=64)
    assert isinstance(res.outputs, tuple) and res.outputs[0].shape == (128, 2) and res.outputs[1].shape == (128,)
    assert isinstance(res.targets, tuple) and res.targets[1].dtype == np.float32


def test_a_nan_in_one_float_input_skips_only_its_minibatch(tmp_path):
    arrays = _arrays(256, 5)
    arrays["points"][7, 0, 0] = np.nan
    extra = {k: v for k, v in arrays.items() if k not in ("feats", "label")}
    path = write_zarr(tmp_path / "nan.zarr", arrays["feats"], arrays["label"], chunk_rows=256, extra=extra).path
    data = ZarrDataset(path, inputs=["points", "x", "mask"], val_fraction=0)
    x, y = data.read(data.describe().train[0])
    replica = Replica("w0", {"model": PointNet()})
    res = train_rows(replica, _server(replica), Downpour().worker_side(), SupervisedStep(F.cross_entropy), x, y,
                     batch_size=32, push_every=1, seed=0)
    assert (res.nonfinite_batches, res.nonfinite_inputs, res.batches) == (1, 1, 8)
    assert data.scan().nonfinite == {0: 1}


# ----------------------------------------------------------------------------- bad input
def test_an_input_that_is_not_in_the_store_lists_the_arrays(store):
    with pytest.raises(DataError, match=r"has no array 'pts' \(it has \[.*'feats'.*'mask'.*\]\)"):
        ZarrDataset(store, inputs=["pts", "mask"]).describe()


def test_arrays_of_different_lengths_are_refused(tmp_path):
    arrays = _arrays(100, 0)
    path = write_zarr(tmp_path / "short.zarr", arrays["feats"], arrays["label"],
                      extra={"mask": arrays["mask"][:90]}).path
    with pytest.raises(DataError, match=r"as many rows each, but they have \{'x': 100, 'mask': 90, 'y': 100\}"):
        ZarrDataset(path, inputs=["x", "mask"]).describe()


def test_a_forward_that_cannot_take_the_inputs_shows_its_signature_and_the_call(store):
    data = ZarrDataset(store, inputs=["points", "feats"], targets="label")
    model = PointNet()
    with pytest.raises(ModelError, match=r"forward\(points: 'torch.Tensor', feats: 'torch.Tensor', mask: 'torch.Tensor'\)"
                                         r".* cannot take the inputs: psdist calls model\(points, feats\) \(PointNet: "
                                         r"missing a required argument: 'mask'\)"):
        dry_run(SupervisedStep(F.cross_entropy), data, {"model": model}, data.describe())
    data = ZarrDataset(store, inputs={"points": "points", "features": "feats", "mask": "mask"}, targets="label")
    with pytest.raises(ModelError, match=r"psdist calls model\(points=points, features=feats, mask=mask\)"):
        dry_run(SupervisedStep(F.cross_entropy), data, {"model": model}, data.describe())


def test_trainer_refuses_bad_inputs_before_any_cluster(store):
    trainer = psdist.Trainer(PointNet, F.cross_entropy, ZarrDataset(store, inputs=["points", "feats"], targets="label"),
                             workers=1)
    with pytest.raises(ModelError, match="cannot take the inputs"):
        trainer.fit(epochs=1)
    assert trainer.dashboard_link is None  # no cluster was started


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"inputs": ["a", "a"]}, "names 'a' twice"),
    ({"inputs": []}, "names no array"),
    ({"inputs": {"not an arg": "a"}}, "is not a Python identifier"),
    ({"inputs": 3}, "must be an array name, a list of names or a dict"),
    ({"inputs": ["a"], "x": "b"}, "give inputs= or x=, not both"),
    ({"targets": [""]}, "is not an array name"),
])
def test_bad_fields_are_refused_where_they_are_written(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ZarrDataset("any.zarr", **kwargs)


def test_some_validation_twins_but_not_all_is_an_error(tmp_path):
    a = _arrays(256, 0)
    path = write_zarr(tmp_path / "half.zarr", a["feats"], a["label"], chunk_rows=128,
                      extra={"mask": a["mask"], "mask_val": a["mask"][:64], "x_val": a["feats"][:64]}).path
    with pytest.raises(DataError, match=r"has validation arrays \['x_val', 'mask_val'\] but not \['y_val'\]"):
        ZarrDataset(path, inputs=["x", "mask"], targets="y").describe()


def test_label_checks_run_per_classification_target(tmp_path):
    a, v = _arrays(256, 0), _arrays(128, 1)
    v["label"][:] = 1  # the validation labels hold one class
    extra = {"mask": a["mask"], "energy": a["energy"], "x_val": v["feats"], "y_val": v["label"],
             "mask_val": v["mask"], "energy_val": v["energy"]}
    path = write_zarr(tmp_path / "one.zarr", a["feats"], a["label"], chunk_rows=128, extra=extra).path
    data = ZarrDataset(path, inputs={"feats": "x", "mask": "mask"}, targets=["y", "energy"])

    class Masked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.lin((feats * mask.unsqueeze(-1)).sum(1))
            return h, h[:, 0]

    with pytest.raises(DataError, match=r"validation labels of .* hold one class \(1\)"):
        dry_run(SupervisedStep(two_losses), data, {"model": Masked()}, data.describe())


def test_the_yaml_names_the_arrays(store, tmp_path):
    from psdist.config import load_config

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model: test_multi_input:PointNet\ndata: {{path: {store}, inputs: [points, feats, mask], "
                   "targets: label}\n")
    data = load_config(str(cfg)).dataset()
    assert data.input_fields.names == ("points", "feats", "mask") and data.target_fields.single
    assert functools.reduce(lambda a, b: a and b, (n in ("points", "feats", "mask") for n in data.input_fields.names))


class JetWithEvent(torch.nn.Module):
    """forward(x, x_flat, mask): what `psdist convert root` writes for jagged + flat branches."""

    def __init__(self) -> None:
        super().__init__()
        self.phi = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16 + 1, 2)

    def forward(self, x: torch.Tensor, x_flat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = (self.phi(x) * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.head(torch.cat([h, x_flat], dim=1))


@pytest.mark.slow
def test_converted_root_file_trains_from_a_yaml_that_names_the_arrays(tmp_path):
    """`psdist convert root` (jagged particles + a flat branch) -> a YAML naming x, x_flat, mask
    -> `psdist train`: no repacking; the model gets the three arrays, each in its own dtype."""
    import json
    import subprocess
    import sys

    ak = pytest.importorskip("awkward")
    uproot = pytest.importorskip("uproot")
    rng = np.random.default_rng(0)
    n = 2048
    label = np.arange(n) % 2 == 0
    counts = rng.integers(0, 8, n)
    pt = [list(rng.exponential(2.0 + 3.0 * s, c)) for s, c in zip(label, counts, strict=True)]
    eta = [list(rng.normal(0, 1, c)) for c in counts]
    with uproot.recreate(tmp_path / "jets.root") as f:
        branches = {"part_pt": ak.Array(pt), "part_eta": ak.Array(eta), "jet_n": counts.astype(np.float32),
                    "is_signal": label}
        f.mktree("Events", {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in branches.items()})
        f["Events"].extend(branches)

    def psdist_cli(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "-m", "psdist.cli", *args], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return out

    store = tmp_path / "jets.zarr"
    out = psdist_cli("convert", "root", str(store), f"{tmp_path / 'jets.root'}", "--tree", "Events",
                     "--jagged", "part_pt", "part_eta", "--max-particles", "8", "--flat", "jet_n",
                     "--label", "is_signal", "--chunk-rows", "512", "--interleave")
    assert "inputs: [x, mask, x_flat], targets: y" in out.stdout  # the converter says how to train on all
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model: test_multi_input:JetWithEvent\ndata: {{path: {store}, inputs: [x, x_flat, mask], "
                   "targets: y, val_fraction: 0.25}\noptimizer: {name: adam, lr: 0.01}\nepochs: 4\n"
                   "batch_size: 64\nworkers: 2\n")
    psdist_cli("train", str(cfg), "--history", str(tmp_path / "h.json"), "-q")
    history = json.loads((tmp_path / "h.json").read_text())
    assert history[-1]["val_accuracy"] >= 0.7  # softer pT for background: learnable from the particles
