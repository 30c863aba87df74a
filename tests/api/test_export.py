"""Weights out: trainer.state_dict() is a plain state_dict; export() a safetensors file any PyTorch
program loads without psdist."""

from __future__ import annotations

import functools
import subprocess
import sys
from typing import Any

import pytest
import torch

import psdist
from psdist.hep.models import mlp

MLP_BN = functools.partial(mlp, inputs=20, hidden=32, classes=4, batchnorm=True)

# a fresh interpreter where `import psdist` fails: the file must load with torch + safetensors alone
LOAD_WITHOUT_PSDIST = """
import sys
sys.modules["psdist"] = None  # any import of psdist now raises ImportError
import torch
from safetensors.torch import load_file
layers = []
for width in (20, 32):
    layers += [torch.nn.Linear(width, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU()]
model = torch.nn.Sequential(*layers, torch.nn.Linear(32, 4))
model.load_state_dict(load_file(sys.argv[1]))
model.eval()
x = torch.load(sys.argv[2])
torch.save(model(x), sys.argv[3])
"""


def test_export_loads_anywhere_without_psdist(client: Any, blob_data: Any, tmp_path: Any) -> None:
    trainer = psdist.Trainer(MLP_BN, torch.nn.functional.cross_entropy, blob_data,
                             psdist.optim.AdamW(lr=3e-3, weight_decay=0.01), batch_size=64, client=client, seed=1)
    history = trainer.fit(epochs=1)
    assert history[-1]["val_accuracy"] > 0.9  # it trained

    state = trainer.state_dict()
    model = trainer.model()
    assert list(state) == list(model.state_dict())  # a plain state_dict: the model's own keys
    assert state["1.num_batches_tracked"].dtype == torch.int64 and int(state["1.num_batches_tracked"]) > 0
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value), key

    path = trainer.export(str(tmp_path / "model.safetensors"))
    x = torch.randn(16, 20)
    torch.save(x, tmp_path / "x.pt")
    proc = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_PSDIST, path, str(tmp_path / "x.pt"),
                           str(tmp_path / "y.pt")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), model(x), rtol=0, atol=0)


def test_export_names_the_model_of_several_and_the_suffix(tmp_path: Any) -> None:
    from psdist.export import export_safetensors, plain_state_dict

    models = {"generator": torch.nn.Linear(2, 2), "discriminator": torch.nn.Linear(2, 1)}
    with pytest.raises(psdist.ModelError, match=r"several models .*trainer.state_dict\('generator'\)"):
        plain_state_dict(models, None)
    tied = torch.nn.Linear(2, 2)
    models["generator"].weight = tied.weight  # shared storage: safetensors refuses it unless copied
    state = plain_state_dict({"m": torch.nn.Sequential(models["generator"], tied)}, None)
    export_safetensors(state, tmp_path / "tied.safetensors", {"model": "m"})
    with pytest.raises(psdist.ConfigError, match=r"should end in .safetensors"):
        export_safetensors(state, tmp_path / "model.pt", {})
