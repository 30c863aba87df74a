"""The psdist page: a run selector above the components, refreshed by a periodic callback.

:func:`document` builds it into a Bokeh ``Document`` for a :class:`~psdist.dashboard.state.Runs`;
the scheduler plugin calls it for every browser session of ``/psdist``. The page shows the run
named by the ``run`` query argument (``/psdist?run=<id>``), or, without one, follows the newest
running training (and switches when another starts). Several trainings on one cluster each get
their own view: one browser tab per ``?run=``, or the selector.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import Div, Select

from psdist.dashboard.components import (
    Component,
    LossPlot,
    LrPlot,
    MetricsPlot,
    PushRatePlot,
    StalenessPlot,
    WorkerRatePlot,
)
from psdist.dashboard.panels import ShardTable, StatusPanel, WorkerTable
from psdist.dashboard.state import Runs, RunState

__all__ = ["FOLLOW", "RunPage", "document", "requested_run"]

logger = logging.getLogger(__name__)

#: The selector's value for "follow the newest running training".
FOLLOW = ""


class RunPage:
    """Every component of the page for one :class:`Runs`, and which run it shows.

    Parameters
    ----------
    runs
        The trainings seen on the feed.
    run
        The run to show; ``None`` follows the newest running one. A run not seen yet is
        shown as soon as its first message arrives.
    """

    def __init__(self, runs: Runs, run: str | None = None) -> None:
        self.runs = runs
        self.selected = run or None
        self.select = Select(title="training", value=FOLLOW, options=[(FOLLOW, "newest training")],
                             name="psdist-run-select", width=420)
        self.select.on_change("value", self._on_select)
        self.status = StatusPanel()
        self.loss = LossPlot()
        self.metrics = MetricsPlot()
        self.pushes = PushRatePlot()
        self.rates = WorkerRatePlot()
        self.staleness = StalenessPlot()
        self.lr = LrPlot()
        self.workers = WorkerTable()
        self.shards = ShardTable()
        self.components: list[Component] = [
            self.status, self.loss, self.metrics, self.pushes, self.rates, self.staleness, self.lr, self.workers,
            self.shards,
        ]
        header = Div(text="<b>psdist</b> — parameter-server training monitor", name="psdist-header")
        wide = {"sizing_mode": "stretch_width"}
        self.root = column(
            row(header, self.select, **wide),
            row(self.status.root, column(self.staleness.root, self.lr.root, **wide), **wide),
            row(self.loss.root, self.metrics.root, **wide),
            row(self.pushes.root, self.rates.root, **wide),
            self.workers.root,
            self.shards.root,  # below the workers: hidden unless the server is sharded
            name="psdist-page",
            **wide,
        )

    def _on_select(self, attr: str, old: Any, new: Any) -> None:
        self.selected = new or None
        self.update()

    def current(self) -> RunState | None:
        """The run shown now (``None`` while the asked-for run has not reported)."""
        if self.selected is not None:
            return self.runs.get(self.selected)
        return self.runs.latest()

    def _options(self) -> list[tuple[str, str]]:
        options = [(FOLLOW, "newest training")]
        for run_id, state in self.runs.runs.items():
            options.append((run_id, f"{state.title} [{state.status}]"))
        if self.selected is not None and self.selected not in self.runs:
            options.append((self.selected, f"{self.selected} [waiting for it to report]"))
        return options

    def update(self) -> None:
        """Refresh the selector and every component from the current run."""
        options = self._options()
        if self.select.options != options:
            self.select.options = options
        value = self.selected or FOLLOW
        if self.select.value != value:
            self.select.value = value
        run = self.current()
        for c in self.components:
            c.update(run)


def requested_run(doc: Document) -> str | None:
    """The ``run`` query argument of the browser session that ``doc`` serves, if any."""
    ctx = getattr(doc, "session_context", None)
    request = getattr(ctx, "request", None) if ctx is not None else None
    args = getattr(request, "arguments", None) or {}
    values = args.get("run") or []
    if not values:
        return None
    v = values[0]
    return (v.decode() if isinstance(v, bytes) else str(v)) or None


def _tick(ref: weakref.ReferenceType[RunPage]) -> None:
    page = ref()
    if page is not None:
        try:
            page.update()
        except Exception:
            logger.warning("psdist dashboard: page update failed", exc_info=True)


def document(runs: Runs, doc: Document, run: str | None = None, interval_ms: int = 500) -> RunPage:
    """Build the page for ``runs`` into ``doc`` and refresh it every ``interval_ms``.

    Parameters
    ----------
    runs
        The trainings seen on the feed (read on the server's event loop, where the feed is
        also consumed, so no lock is needed).
    doc
        The Bokeh document of one browser session.
    run
        The run to show; default: the ``run`` query argument, else follow the newest.
    interval_ms
        Refresh period.

    Returns
    -------
    RunPage
        The page (kept alive by the document, not by the callback: no reference cycle).
    """
    page = RunPage(runs, run if run is not None else requested_run(doc))
    page.update()
    doc.title = "psdist"
    doc.add_root(page.root)
    ref = weakref.ref(page)
    doc.add_periodic_callback(lambda: _tick(ref), interval_ms)
    # the document holds the page; the callback holds only a weak reference to it
    doc.psdist_page = page
    return page
