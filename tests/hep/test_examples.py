"""Every HEP example end to end at tiny size, on the shared cluster, reaching a stated figure."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

import psdist
from psdist.hep import jetimages, showers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples"))

import calo_gan
import calorimeter
import events
import jet_images
import particle_jets
import taggers

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def client():
    """Two workers that both train, the server sharing one: the 2 asynchronous workers these
    examples' figures were measured with (the session's shared cluster trains on 3)."""
    from psdist.cluster.embedded import embedded_cluster

    cluster, client = embedded_cluster(workers=1, threads_per_worker=1, dashboard_address=None)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def shower_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("showers") / "s.zarr"
    showers.write_dataset(path, 1536, 384, chunk_rows=256)
    return path


@pytest.fixture(scope="module")
def shower_data(shower_path):
    """Two targets: the class and the energy arrays (what examples/calorimeter.py reads)."""
    return calorimeter.dataset(shower_path)


@pytest.fixture(scope="module")
def top_jets(tmp_path_factory):
    """400 + 400 top/QCD jets (plus 100 + 100 for validation) with points, x and mask: ~4 s."""
    pytest.importorskip("fastjet")
    pytest.importorskip("pythia8mc")
    from psdist.hep import pythia

    path = tmp_path_factory.mktemp("tqcd") / "tqcd.zarr"
    pythia.write_jets(path, "tqcd", 400, 100, mpi=False, chunk_rows=200)
    return path


def test_jet_image_cnn(client, tmp_path):
    data = jetimages.write_dataset(tmp_path / "j.zarr", jets=6144, val_jets=2048)
    last = jet_images.run(data, epochs=4, client=client).history.last
    assert last["val_auc"] >= 0.80


@pytest.mark.slow
@pytest.mark.parametrize("model", ["pfn", "jedi"])
def test_particle_list_taggers_on_pythia_jets(client, tmp_path_factory, model):
    pytest.importorskip("pythia8mc")
    path = tmp_path_factory.getbasetemp() / "wqcd.zarr"
    if not path.exists():
        from psdist.hep import pythia

        pythia.write_jets(path, "wqcd", 600, 200, mpi=False, chunk_rows=256)
    # a moderate rate: stale updates at 3e-3 sometimes stall the interaction network
    last = particle_jets.run(psdist.ZarrDataset(path), model, epochs=12, client=client, lr=1e-3)
    assert last["val_auc"] >= 0.70  # W vs QCD from constituents alone; chance is 0.5 (plain PyTorch: 0.84)


@pytest.mark.slow
def test_event_topology(client, tmp_path):
    pytest.importorskip("pythia8mc")
    from psdist.hep import pythia

    data = pythia.write_events(tmp_path / "ev.zarr", 300, 100, mpi=False, chunk_rows=256)
    last = events.run(data, epochs=6, client=client)
    assert last["val_accuracy"] >= 0.6  # 4 classes: chance is 0.25


def test_calorimeter_type_and_energy(client, shower_data):
    last = calorimeter.run(shower_data, epochs=4, client=client)
    # 3 classes (chance 1/3): pions are easy, e-/γ differ only by their start depth; 2 async
    # workers land between 0.60 and 0.80 from run to run (scheduling), hence the margin
    assert last["val_type_accuracy"] >= 0.55
    assert last["val_type_auc"] >= 0.7
    # energy: 0.12 single-process, 0.18-0.30 with 2 async workers (0.30 on a loaded CI machine);
    # predicting the mean energy scores ~0.8 (uniform 10-100 GeV): half of that is learned
    energies = zarr.open_group(str(shower_data.path), mode="r")["energy_val"][:]
    r = (energies.mean() - energies) / energies
    trivial = float(np.diff(np.percentile(r, [16, 84]))[0] / 2)
    assert trivial > 0.7 and last["val_resolution"] <= 0.5 * trivial


def test_particlenet_reads_three_inputs(client, top_jets):
    """examples/taggers.py: model(points, x, mask) through the workers and the plain loop."""
    last = taggers.run(taggers.dataset(top_jets), "particlenet", epochs=4, client=client)
    # top vs QCD, chance 0.5: 0.847-0.851 in 5 runs (8 000 W/QCD jets, 20 epochs: docs/taggers.md)
    assert last["val_auc"] >= 0.75
    assert last["val_rej50"] > 3


def test_particle_transformer_from_its_yaml(client, top_jets, tmp_path):
    """examples/particle_transformer.yaml as `psdist train` reads it (the data path replaced)."""
    from psdist.config import load_config
    from psdist.trainer import Trainer

    raw = yaml.safe_load((EXAMPLES / "particle_transformer.yaml").read_text())
    assert raw["data"]["inputs"] == ["points", "x", "mask"] and raw["data"]["targets"] == "y"
    raw["data"]["path"] = str(top_jets)
    (tmp_path / "part.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(str(tmp_path / "part.yaml"))
    trainer = Trainer(data=cfg.dataset(), **cfg.settings().replace(client=client).to_kwargs())
    last = trainer.fit(4).last
    assert last["val_auc"] >= 0.75  # 0.862-0.870 in 5 runs of examples/taggers.py --model part


@pytest.mark.slow
def test_calo_gan_moves_toward_real_showers(client, shower_path):
    # the GAN conditions on the packed (class, energy) target
    data = psdist.ZarrDataset(shower_path, y="target", y_val="target_val")
    result = calo_gan.run(data, epochs=4, client=client)
    assert min(result["shape_distance"][-2:]) < 0.7 * result["initial_shape_distance"]
    assert {"train_d_loss", "train_g_loss"} <= set(result["last"])
