"""Issue 12, item 8: ``psdist train --resume`` with a YAML whose training settings changed.

One real checkpoint (a 1-epoch run of the CLI on a tiny Zarr store: 1 worker, 4 chunks of 128
rows, batch 64, so 8 pushes per epoch) is resumed with YAMLs that differ from it. A changed
setting must be refused with the list of differences (nothing trained), or applied with
``--override``; a key the YAML leaves out is no difference.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import blobs

import psdist
from psdist.cli import main
from psdist.run.checkpoint import read_checkpoint

#: the settings of the checkpointed run (the YAML of the fixture)
BASE = {
    "optimizer": "{name: sgd, lr: 0.05, momentum: 0.9}",
    "batch_size": "64",
    "max_staleness": "4",
    "seed": "3",
}


def write_yaml(path: Path, data: Path, **settings: str | None) -> Path:
    """A 1-epoch, 1-worker config on ``data``; ``settings`` replace BASE's (None: leave the key out)."""
    lines = [
        "model: psdist.hep.models:mlp",
        "model_args: {inputs: 20, hidden: 8, classes: 4}",
        f"data: {{path: {data}}}",
        "epochs: 1",
        "workers: 1",
        "threads_per_worker: 1",
    ]
    lines += [f"{k}: {v}" for k, v in {**BASE, **settings}.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data store, checkpoint) of one real epoch trained by the CLI with BASE's settings."""
    root = tmp_path_factory.mktemp("item08")
    x, y = blobs(512, seed=1)
    xv, yv = blobs(128, seed=2)
    data = Path(psdist.write_zarr(root / "blobs.zarr", x, y, xv, yv, chunk_rows=128).path)
    ckpt = root / "run.ckpt"
    assert main(["train", str(write_yaml(root / "cfg.yaml", data)), "--save", str(ckpt), "-q"]) == 0
    return data, ckpt


def test_item08_resume_refuses_changed_yaml(trained, tmp_path, capsys):
    data, ckpt = trained
    before = digest(ckpt)
    cfg = write_yaml(tmp_path / "changed.yaml", data, batch_size="32",
                     optimizer="{name: sgd, lr: 0.1, momentum: 0.9}", rule="{name: ssp, bound: 2}")
    capsys.readouterr()
    assert main(["train", str(cfg), "--resume", str(ckpt), "--save", str(ckpt), "-q"]) == 2
    err = capsys.readouterr().err
    # every difference, one per line, with both values; and both ways out
    assert "  batch_size: checkpoint=64 yaml=32\n" in err
    assert "  rule.name: checkpoint=Downpour yaml=SSP\n" in err
    assert "  optimizer.lr: checkpoint=0.05 yaml=0.1\n" in err
    assert f"{cfg} sets 3 training setting(s) to other values than {ckpt} stores:\n" in err
    assert "add --override" in err and "set these keys back" in err
    assert "resuming" not in err and digest(ckpt) == before  # refused before training anything


def test_item08_resume_override_applies_the_yaml(trained, tmp_path, capsys):
    data, ckpt = trained
    out = tmp_path / "after.ckpt"
    cfg = write_yaml(tmp_path / "changed.yaml", data, batch_size="32",
                     optimizer="{name: sgd, lr: 0.1, momentum: 0.9}")
    capsys.readouterr()
    assert main(["train", str(cfg), "--resume", str(ckpt), "--override", "--epochs", "1",
                 "--save", str(out), "--history", str(tmp_path / "h.json"), "-q"]) == 0
    err = capsys.readouterr().err
    # the differences in the order of psdist.settings: optimizer, batch_size, seed, rule, ...
    assert ("--override: the YAML's training settings replace the checkpoint's (precedence: command "
            "line > YAML > checkpoint): optimizer.lr: checkpoint=0.05 yaml=0.1; batch_size: "
            "checkpoint=64 yaml=32\n") in err
    history = json.loads((tmp_path / "h.json").read_text())
    # 512 training rows: 8 pushes of 64 in the checkpointed epoch, 16 of 32 in the resumed one
    assert [r["epoch"] for r in history] == [1, 2]
    assert [r["pushes_applied"] + r["pushes_rejected"] for r in history] == [8, 16]
    meta, arrays = read_checkpoint(out)
    assert meta["trainer"]["batch_size"] == 32 and meta["trainer"]["max_staleness"] == 4
    opt = meta["server"]["optimizers"]["model"]
    assert opt["config"]["lr"] == 0.1 and opt["config"]["momentum"] == 0.9
    assert opt["state"]["param_groups"][0]["lr"] == 0.1  # the rate in force on the server, not the stored 0.05
    assert opt["state"]["steps"] == 8 + 16  # same optimizer type: its state went on
    momentum = [a for k, a in arrays.items() if k.startswith("optim/model/") and k.endswith("/momentum_buffer")]
    assert momentum and all(np.all(np.isfinite(a)) for a in momentum)


def test_item08_resume_override_refuses_another_optimizer_type(trained, tmp_path, capsys):
    data, ckpt = trained
    cfg = write_yaml(tmp_path / "adam.yaml", data, optimizer="{name: adam, lr: 0.001}")
    capsys.readouterr()
    assert main(["train", str(cfg), "--resume", str(ckpt), "--override", "-q"]) == 2
    err = capsys.readouterr().err
    assert "--override cannot change the optimizer's type" in err
    assert "  optimizer.name: checkpoint=sgd yaml=adam\n" in err


def test_item08_resume_keys_the_yaml_leaves_out_come_from_the_checkpoint(trained, tmp_path):
    from psdist.config import load_config, resume_settings

    data, ckpt = trained
    meta = read_checkpoint(ckpt)[0]
    cfg = load_config(str(write_yaml(tmp_path / "short.yaml", data, optimizer=None, batch_size=None,
                                     max_staleness=None, seed=None)))
    settings = resume_settings(cfg, meta)
    assert settings.changes == [] and settings.kwargs == {} and settings.lrs == {}
    # a rule option resolved when training starts (EASGD's alpha) is no difference either
    meta["trainer"]["rule"] = {"name": "EASGD", "alpha": 0.45, "beta": 0.9, "period": 10}
    cfg = load_config(str(write_yaml(tmp_path / "easgd.yaml", data, rule="{name: easgd}")))
    assert resume_settings(cfg, meta).changes == []
    # a key the YAML sets is compared as written: "auto" and null (no bound) are values too
    cfg = load_config(str(write_yaml(tmp_path / "auto.yaml", data, max_staleness="auto")))
    assert [str(c) for c in resume_settings(cfg, meta, override=True).changes] == [
        "max_staleness: checkpoint=4 yaml=auto"]
    cfg = load_config(str(write_yaml(tmp_path / "null.yaml", data, max_staleness="null")))
    assert [str(c) for c in resume_settings(cfg, meta, override=True).changes] == [
        "max_staleness: checkpoint=4 yaml=null"]
    cfg = load_config(str(write_yaml(tmp_path / "easgd5.yaml", data, rule="{name: easgd, period: 5}")))
    with pytest.raises(psdist.ConfigError, match=re.escape(":\n  rule.period: checkpoint=10 yaml=5\n")):
        resume_settings(cfg, meta)


def test_item08_override_without_resume_is_refused(trained, tmp_path, capsys):
    data, _ = trained
    capsys.readouterr()
    assert main(["train", str(write_yaml(tmp_path / "cfg.yaml", data)), "--override", "-q"]) == 2
    assert "give it with --resume CKPT" in capsys.readouterr().err


def test_item12_yaml_without_max_staleness_gets_the_trainer_default(trained, tmp_path):
    """A config that does not set max_staleness must not turn the Trainer's bound off (None)."""
    from psdist.config import load_config

    data, _ = trained
    cfg = load_config(str(write_yaml(tmp_path / "cfg.yaml", data, max_staleness=None)))
    trainer = psdist.Trainer(cfg.model_fn(), cfg.loss_fn(), cfg.dataset(), **cfg.trainer_kwargs())
    assert trainer.settings.algorithm.max_staleness == "auto"
    cfg = load_config(str(write_yaml(tmp_path / "off.yaml", data, max_staleness="null")))
    trainer = psdist.Trainer(cfg.model_fn(), cfg.loss_fn(), cfg.dataset(), **cfg.trainer_kwargs())
    assert trainer.settings.algorithm.max_staleness is None  # written out, null still means no bound
