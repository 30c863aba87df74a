"""A real browser on the psdist page during a real training: headless Chromium driven by Playwright.

The page must load in the browser (Bokeh's JavaScript, the websocket to the scheduler), and its
plot data must change while the training runs. A screenshot is kept in ``$PSDIST_ARTIFACTS``
(default ``test-artifacts/`` at the repository root).
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import pytest
import torch

import psdist
import psdist.dashboard
from psdist.cluster import embedded_cluster
from psdist.dashboard.panels import WorkerTable
from psdist.hep.models import mlp

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PSDIST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("PSDIST_ARTIFACTS") or ROOT / "test-artifacts")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PSDIST_CHROMIUM)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

# What the page shows, read from its Bokeh document in the browser (and the table's drawn cells,
# found through the shadow roots Bokeh renders widgets in).
LOOK = """() => {
  const deep = (root, sel, out) => {
    root.querySelectorAll(sel).forEach((e) => out.push(e));
    root.querySelectorAll('*').forEach((e) => { if (e.shadowRoot) deep(e.shadowRoot, sel, out); });
    return out;
  };
  const doc = Bokeh.documents[0];
  const data = (name) => doc.get_model_by_name(name).data;
  const summary = data('psdist-summary');
  const pushes = data('psdist-pushes');
  return {
    run: summary.run.length ? summary.run[0] : null,
    version: summary.version.length ? Number(summary.version[0]) : -1,
    pushes_t: Array.from(pushes.t), pushes_applied: Array.from(pushes.applied),
    staleness: Array.from(data('psdist-staleness').count),
    devices: Array.from(data('psdist-workers').device),
    table_pushes: data('psdist-workers').pushes.length ? Number(data('psdist-workers').pushes[0]) : -1,
    table: deep(document, '.slick-row', []).map((r) => r.innerText.split('\\n')),
    lr: summary.lr.length ? Number(summary.lr[0]) : null,
  };
}"""
PUSHES = [k for k, _, _ in WorkerTable.COLUMNS].index("pushes")
READY = "() => window.Bokeh !== undefined && Bokeh.documents.length > 0 && Bokeh.documents[0].roots().length > 0"


def test_page_in_a_browser_follows_a_live_training(tmp_path):
    from conftest import blobs

    x, y = blobs(2048, seed=1)
    xv, yv = blobs(256, seed=2)
    data = psdist.write_zarr(tmp_path / "blobs.zarr", x, y, xv, yv, chunk_rows=512)
    cluster, client = embedded_cluster(workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0")
    handle = None
    try:
        trainer = psdist.Trainer(
            functools.partial(mlp, inputs=20, hidden=32, classes=4), torch.nn.functional.cross_entropy, data,
            psdist.optim.SGD(lr=0.1), client=client, batch_size=32, workers=1,
        )
        handle = trainer.fit(epochs=500, block=False)  # ended by handle.stop() below
        assert handle.wait_started(timeout=60)
        url = handle.dashboard_url
        assert url is not None and url.endswith(f"/psdist?run={trainer.run_id}")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1300})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(url, wait_until="load", timeout=30_000)
                page.wait_for_function(READY, timeout=30_000)
                # first look: the training has reported and pushes are being counted
                page.wait_for_function(f"() => {{ const l = ({LOOK})(); return l.version > 0 && l.pushes_t.length > 0 "
                                       "&& l.table.length > 0 && l.table_pushes > 0; }", timeout=45_000, polling=100)
                first = page.evaluate(LOOK)
                # a learning rate set by hand reaches the page; synchronised on counters, not sleeps
                handle.set_lr(0.05)
                page.wait_for_function(
                    f"() => {{ const l = ({LOOK})(); return l.version > {first['version']} "
                    f"&& l.pushes_t.length > {len(first['pushes_t'])} && l.lr == 0.05 "
                    f"&& l.table_pushes > {first['table_pushes']} "
                    f"&& l.table[0][{PUSHES}] == String(l.table_pushes); }}",  # the drawn cell follows
                    timeout=45_000, polling=100,
                )
                second = page.evaluate(LOOK)
                page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            finally:
                browser.close()
        handle.stop(timeout=60)
        assert not errors, errors

        assert first["run"] == second["run"] == trainer.run_id
        assert second["version"] > first["version"] > 0
        assert second["pushes_t"] != first["pushes_t"] and second["pushes_t"][-1] > first["pushes_t"][-1]
        assert max(second["pushes_applied"]) > 0
        assert sum(second["staleness"]) > sum(first["staleness"]) > 0
        # both workers of the 2-process cluster given as client= train (the PS shares one), each registered
        assert second["devices"] == ["cpu", "cpu"]
        row = dict(zip([k for k, _, _ in WorkerTable.COLUMNS], second["table"][0], strict=False))
        assert row["device"] == "cpu" and row["state"] in ("training", "idle")  # drawn, not only in the data
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    finally:
        if handle is not None and handle.running():
            handle.stop(timeout=60)
        client.close()
        cluster.close()
