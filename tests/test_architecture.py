"""The layers hold: the core loads without torch or Dask, and the import contracts catch a break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def test_core_loads_neither_torch_nor_dask():
    loaded = _modules_after("import psdist.core.server, psdist.core.inprocess, psdist.core.rules")
    assert "psdist.core.server" in loaded
    assert not {"torch", "distributed", "dask", "zarr", "bokeh"} & loaded


def test_import_psdist_is_lazy():
    loaded = _modules_after("import psdist")
    assert "torch" not in loaded and "distributed" not in loaded
    loaded = _modules_after("import psdist; psdist.Trainer")
    assert "torch" in loaded and "psdist.trainer" in loaded


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([exe, "--no-cache", str(tree / "pyproject.toml")], capture_output=True, text=True,
                          cwd=tree, env=env)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package and its contracts, to break on purpose."""
    tree = tmp_path_factory.mktemp("arch")
    shutil.copytree(ROOT / "psdist", tree / "psdist", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_contracts_hold(tree):
    result = _lint(tree)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "6 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("core/finite.py", "import torch  # noqa", "The core is numpy only"),
    ("replica/loop.py", "import psdist.cluster.worker  # noqa", "API > dashboard|sim|hep > cluster"),
    ("core/layout.py", "import psdist.core.server  # noqa", "No import circles"),
    ("optim/bound.py", "import psdist.replica.replica  # noqa", "data|replica|plane > optim > core"),
    ("optim/spec.py", "import distributed  # noqa", "The server optimizers are torch on numpy vectors"),
])
def test_a_deliberate_violation_breaks_a_contract(tree, module, line, broken):
    path = tree / "psdist" / module
    original = path.read_text()
    try:
        path.write_text(original + "\n" + line + "\n")
        result = _lint(tree)
    finally:
        path.write_text(original)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout[-3000:]
