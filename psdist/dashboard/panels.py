"""The text panel and the worker table of the psdist page (see :mod:`psdist.dashboard.components`)."""

from __future__ import annotations

import html
import math
from typing import Any

from bokeh.models import ColumnDataSource, DataTable, Div, NumberFormatter, StringFormatter, TableColumn

from psdist.dashboard.components import Component, set_data
from psdist.dashboard.state import RunState

__all__ = ["StatusPanel", "WorkerTable"]


def _fmt(v: Any, digits: int = 4) -> str:
    """Text for the status table: short floats, ``name(k=v, ...)`` for rule/optimizer configs."""
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.{digits}g}"
    if v is None:
        return "–"
    if isinstance(v, dict):
        if "name" in v:
            args = ", ".join(f"{k}={_fmt(x)}" for k, x in v.items() if k != "name" and not isinstance(x, dict))
            return f"{html.escape(str(v['name']))}({args})" if args else html.escape(str(v["name"]))
        return "; ".join(f"{html.escape(str(k))}: {_fmt(x)}" for k, x in v.items())
    return html.escape(str(v))


class StatusPanel(Component):
    """Run name, state, version, lr in force and the server's counters, as text.

    The same figures are in the one-row source ``psdist-summary`` (for scripts and tests).
    """

    SUMMARY = ("run", "status", "version", "lr", "applied", "rejected", "samples_applied",
               "pushes_nonfinite", "nonfinite_batches", "bad_chunks")

    def __init__(self) -> None:
        super().__init__()
        self.source = ColumnDataSource({k: [] for k in self.SUMMARY}, name="psdist-summary")
        # tagged on, so the source is part of the document (and reachable by name) unplotted
        self.root = Div(text=self._html(None), name="psdist-status", sizing_mode="stretch_width", tags=[self.source])

    @staticmethod
    def _html(run: RunState | None) -> str:
        if run is None:
            return "<h3>psdist</h3><p>No training has reported yet: this page follows every psdist training " \
                   "on this cluster and shows one as soon as it publishes.</p>"
        state = run.status if run.end_reason is None else f"{run.status}: {run.end_reason}"
        epoch = f"{run.epoch}" + (f" of {run.epochs_planned}" if run.epochs_planned else "")
        if run.chunks is not None:
            epoch += f", chunk {run.chunks[0]} of {run.chunks[1]}"
        facts = [
            ("state", state), ("epoch", epoch), ("server version", run.version), ("lr in force", run.lr),
            ("pushes applied", run.applied), ("pushes rejected", run.rejected_total),
            ("samples applied", run.samples_applied), ("staleness mean / max",
                                                       f"{_fmt(run.staleness_mean, 3)} / {run.staleness_max}"),
            ("workers training", len(run.active)),
            ("NaN/Inf", f"{run.nonfinite_batches} minibatches skipped, {run.nonfinite} pushes rejected"),
            ("bad chunks skipped", run.bad_chunks),
        ]
        if run.bad:
            facts.append(("last bad chunk", run.bad[-1]))
        if run.rejected:
            facts.append(("rejected by reason", ", ".join(f"{k}: {v}" for k, v in sorted(run.rejected.items()))))
        shown = {"parameter_server": "parameter server", "training_workers": "training slots",
                 "overlap": "push in flight (+1 round of staleness)"}
        for key in ("parameter_server", "training_workers", "rule", "optimizers", "batch_size", "push_every",
                    "max_staleness", "overlap", "devices", "precision", "data"):
            if key in run.config:
                facts.append((shown.get(key, key), run.config[key]))
        alarm = {"NaN/Inf", "bad chunks skipped", "last bad chunk"} if run.bad_data else set()
        cells = "".join(f"<tr{' class=psdist-alarm style=color:#c62828' if k in alarm else ''}>"
                        f"<th style='text-align:left;padding-right:1em;vertical-align:top'>"
                        f"{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in facts)
        return f"<h3>{html.escape(run.title)}</h3><table class='psdist-status'>{cells}</table>"

    def update(self, run: RunState | None) -> None:
        if not self.stale(run):
            return
        self.root.text = self._html(run)
        if run is None:
            set_data(self.source, {k: [] for k in self.SUMMARY})
            return
        lr = run.lr if run.lr is not None else math.nan
        values = (run.run, run.status, run.version, lr, run.applied, run.rejected_total, run.samples_applied,
                  run.nonfinite, run.nonfinite_batches, run.bad_chunks)
        set_data(self.source, {k: [v] for k, v in zip(self.SUMMARY, values, strict=True)})


class WorkerTable(Component):
    """One row per worker: host, device, chunks done, pushes, NaN/bad data, samples/s, last push age, state."""

    COLUMNS = (
        ("name", "name", None), ("worker", "address", None), ("host", "host", None), ("device", "device", None),
        ("threads", "threads", "0"), ("state", "state", None), ("chunks", "chunks", "0"),
        ("pushes", "pushes", "0"), ("applied", "applied", "0"), ("rejected", "rejected", "0"),
        ("nonfinite", "NaN pushes", "0"), ("nonfinite_batches", "NaN batches", "0"),
        ("bad_chunks", "bad chunks", "0"),
        ("samples_per_s", "samples/s", "0.0"), ("last_loss", "last loss", "0.0000"),
        ("last_push_age", "last push (s ago)", "0.0"),
    )

    def __init__(self) -> None:
        super().__init__()
        self.source = ColumnDataSource({k: [] for k, _, _ in self.COLUMNS}, name="psdist-workers")
        columns = [
            TableColumn(field=k, title=title, formatter=StringFormatter() if fmt is None
                        else NumberFormatter(format=fmt, nan_format="–", null_format="–"))
            for k, title, fmt in self.COLUMNS
        ]
        self.root = DataTable(source=self.source, columns=columns, index_position=None, height=180,
                              sizing_mode="stretch_width", name="psdist-worker-table")
        self._redraws = 0

    def update(self, run: RunState | None, now: float | None = None) -> None:
        # every tick, not only on new messages: the age of the last push grows by itself
        rows = run.worker_rows(now) if run is not None else []
        if set_data(self.source, {k: [r.get(k) for r in rows] for k, _, _ in self.COLUMNS}):
            # BokehJS (3.9) redraws a table on new data only when its row count changes (the
            # view's indices stay equal otherwise); any change to the table model redraws it
            self._redraws += 1
            self.root.tags = [self._redraws]
