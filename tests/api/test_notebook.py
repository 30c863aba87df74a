"""The example notebook, executed by a real Jupyter kernel (nbclient + ipykernel), fast settings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "jet_tagging.ipynb"


@pytest.mark.slow
def test_jet_tagging_notebook_runs_and_reaches_its_metric(tmp_path, monkeypatch):
    monkeypatch.setenv("PSDIST_NOTEBOOK_FAST", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    texts = {i: "".join(o.get("data", {}).get("text/plain", "") for o in c.outputs if o.output_type == "execute_result")
             for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    summary = ast.literal_eval(next(t for t in texts.values() if t.startswith("{'val_accuracy'")))
    assert summary["epochs"] == 4
    # toy q/g jets, 10k jets, 4 epochs: AUC 0.85-0.88 and gluon rejection ~20 at 50 % quark
    # efficiency (chance: 0.5 and 2). Accuracy at the fixed 0.5 cut swings with the output bias of
    # the last asynchronous updates: 0.74-0.79 here, 0.58 in one CI run whose AUC was 0.85; the
    # ranking metrics say what was learned, the accuracy only that it beats chance
    assert summary["auc"] >= 0.8 and summary["gluon_rejection_at_50"] >= 5, summary
    assert summary["val_accuracy"] >= 0.55, summary
    assert summary["lr_now"] == pytest.approx(5e-4)  # set_lr reached the running server
    handle_repr = next(t for t in texts.values() if t.startswith("<TrainingHandle"))
    assert "psdist training jet_cnn" in handle_repr
    html = [o["data"]["text/html"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "execute_result" and "text/html" in o.get("data", {})]
    assert any("live dashboard" in h and "/psdist" in h for h in html)  # the handle links the page
    pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 2  # history and ROC plots
