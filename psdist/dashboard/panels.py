"""The text panel and the tables of the psdist page (see :mod:`psdist.dashboard.components`).

The worker table is always there; the shard table (one row per parameter-server shard: its
place, size, push rate and bytes in) only while the shown run's server is sharded.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from bokeh.layouts import column
from bokeh.models import ColumnDataSource, DataTable, Div, NumberFormatter, StringFormatter, TableColumn

from psdist.dashboard.components import Component, set_data
from psdist.dashboard.state import RunState

__all__ = ["ShardTable", "StatusPanel", "WorkerTable"]


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
               "pushes_nonfinite", "nonfinite_batches", "bad_chunks", "shards")

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
            *([("server shards", run.shard_count)] if run.sharded else []),
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
                  run.nonfinite, run.nonfinite_batches, run.bad_chunks, run.shard_count)
        set_data(self.source, {k: [v] for k, v in zip(self.SUMMARY, values, strict=True)})


class _Table(Component):
    """A ``DataTable`` of :attr:`COLUMNS` (field, title, number format or ``None`` for text) over one source.

    Parameters
    ----------
    source
        Name of the source (``psdist-...``).
    table
        Name of the table model.
    height
        Its height in pixels.
    """

    COLUMNS: tuple[tuple[str, str, str | None], ...] = ()

    def __init__(self, source: str, table: str, height: int) -> None:
        super().__init__()
        self.source = ColumnDataSource({k: [] for k, _, _ in self.COLUMNS}, name=source)
        columns = [
            TableColumn(field=k, title=title, formatter=StringFormatter() if fmt is None
                        else NumberFormatter(format=fmt, nan_format="–", null_format="–"))
            for k, title, fmt in self.COLUMNS
        ]
        self.table = DataTable(source=self.source, columns=columns, index_position=None, height=height,
                               sizing_mode="stretch_width", name=table)
        self._redraws = 0

    def show(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Put ``rows`` in the table (nothing is sent when they are unchanged)."""
        if set_data(self.source, {k: [r.get(k) for r in rows] for k, _, _ in self.COLUMNS}):
            # BokehJS (3.9) redraws a table on new data only when its row count changes (the
            # view's indices stay equal otherwise); any change to the table model redraws it
            self._redraws += 1
            self.table.tags = [self._redraws]


class WorkerTable(_Table):
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
        super().__init__("psdist-workers", "psdist-worker-table", height=180)
        self.root = self.table

    def update(self, run: RunState | None, now: float | None = None) -> None:
        # every tick, not only on new messages: the age of the last push grows by itself
        self.show(run.worker_rows(now) if run is not None else [])


class ShardTable(_Table):
    """One row per parameter-server shard: address, size, version, pushes/s, MB/s in, totals, staleness.

    Shown only while the run's server has more than one shard; a single server's load is the
    push-rate plot and the status panel already.
    """

    COLUMNS = (
        ("shard", "shard", "0"), ("worker", "address", None), ("size", "values", "0,0"),
        ("version", "version", "0"), ("pushes_per_s", "pushes/s", "0.0"), ("mb_per_s", "MB/s in", "0.00"),
        ("applied", "applied", "0"), ("rejected", "rejected", "0"), ("staleness_mean", "staleness mean", "0.00"),
    )

    def __init__(self) -> None:
        super().__init__("psdist-shards", "psdist-shard-table", height=150)
        title = Div(text="<b>parameter-server shards</b> (each shard's own counters and clock)",
                    name="psdist-shards-title")
        self.root = column(title, self.table, visible=False, sizing_mode="stretch_width", name="psdist-shards-panel")

    def update(self, run: RunState | None) -> None:
        if not self.stale(run):
            return
        sharded = run is not None and run.sharded
        self.show([s.row() for s in run.shards] if run is not None and sharded else [])
        if self.root.visible != sharded:
            self.root.visible = sharded
