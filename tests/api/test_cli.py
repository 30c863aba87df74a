"""The psdist command line, run as a user would (a real subprocess and a real cluster)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PSDIST = [sys.executable, "-m", "psdist.cli"]


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*PSDIST, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_help_explains_the_config():
    out = run("train", "--help")
    assert out.returncode == 0
    assert "module:function" in out.stdout and "psdist generate jet-images" in out.stdout


def test_train_save_resume(blob_data, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model: psdist.hep.models:mlp\n"
        f"model_args: {{inputs: 20, hidden: 32, classes: 4}}\n"
        f"data: {{path: {blob_data.path}}}\n"
        f"optimizer: {{name: sgd, lr: 0.05, momentum: 0.9}}\n"
        f"epochs: 2\nbatch_size: 64\nworkers: 2\nmax_staleness: 4\n"
    )
    out = run("train", str(cfg), "--save", str(tmp_path / "run.ckpt"), "--history", str(tmp_path / "h.json"), "-q")
    assert out.returncode == 0, out.stderr
    assert "val_accuracy" in out.stdout.splitlines()[0]
    history = json.loads((tmp_path / "h.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[-1]["val_accuracy"] >= 0.9

    out = run("train", str(cfg), "--resume", str(tmp_path / "run.ckpt"), "--epochs", "1",
              "--history", str(tmp_path / "h2.json"), "-q")
    assert out.returncode == 0, out.stderr
    assert "resuming" in out.stderr
    # the YAML sets batch_size, optimizer and max_staleness as the checkpoint stores them: no refusal
    assert f"training settings from {tmp_path / 'run.ckpt'} (the YAML's agree" in out.stderr
    resumed = json.loads((tmp_path / "h2.json").read_text())
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    assert resumed[-1]["version"] > history[-1]["version"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: psdist.hep.models:mlp\ndata: x.zarr\nepochz: 3\n", "unknown config key 'epochz' (did you mean 'epochs'?)"),
        ("model: psdist.hep.models:mlp\ndata: x.zarr\nalgorithm: {push_every: 0}\n",
         "algorithm.push_every: 0 must be an integer >= 1; e.g. push_every: 1"),
        ("model: psdist.hep.models:nope\ndata: x.zarr\n", "has no attribute 'nope'"),
        ("model: psdist.hep.models:mlp\ndata: missing.zarr\n", "does not exist"),
        ("model: psdist.hep.models:mlp\ndata: x.zarr\noptimizer: {name: sgd, lr: -1}\n", "lr=-1"),
    ],
)
def test_bad_config_says_what_is_wrong(tmp_path, text, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    out = run("train", str(cfg))
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_bad_flag_is_named(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: psdist.hep.models:mlp\ndata: x.zarr\n")
    out = run("train", str(cfg), "--workers", "0")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"psdist: error: {cfg}: --workers: 0 must be an integer >= 1 or null (one per GPU of devices=, else 2); e.g. --workers 2" in out.stderr
