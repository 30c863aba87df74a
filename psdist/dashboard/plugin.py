"""The scheduler plugin that keeps the feed and serves the page at ``/psdist`` in the Dask dashboard.

How the page gets into a running dashboard
------------------------------------------
A scheduler started with a dashboard serves HTTP through ``scheduler.http_application``, a
``distributed.http.routing.RoutingApplication``: it answers from its own routes, else asks each
application in its list ``applications`` in turn. Distributed itself puts the dashboard there
(``distributed.dashboard.scheduler.connect``): one Bokeh server application
(``BokehTornado``, built by ``distributed.dashboard.core.BokehApplication``) appended with
``add_application``, then ``initialize``-d on the event loop and ``start``-ed. The plugin does
exactly the same with a second, one-page Bokeh application at ``<prefix>/psdist``, at any time
while the scheduler runs: requests are routed per request, so the page answers from then on.
It reuses distributed's own factory (dashboard config: websocket origins, keep-alive, resources)
and the prefix of the dashboard already there, and takes its application out again when the
plugin closes. The scheduler stops every application of the list when it closes.

Nothing is served when the scheduler runs without a dashboard (``dashboard_address=None``);
the feed is still kept, so :func:`install` answers ``None`` and no link is printed.
"""

from __future__ import annotations

import functools
import logging
from typing import Any
from urllib.parse import quote, urlsplit

from distributed.diagnostics.plugin import SchedulerPlugin

from psdist.dashboard.state import Runs
from psdist.run.events import TOPIC

__all__ = ["PATH", "DashboardPlugin", "install", "page_url", "served_path"]

logger = logging.getLogger(__name__)

#: The page's path below the dashboard's prefix.
PATH = "/psdist"


class DashboardPlugin(SchedulerPlugin):
    """Keeps the psdist feed per run and serves the page ``/psdist`` in the dashboard.

    Parameters
    ----------
    max_runs
        Trainings kept (the oldest ended one goes first).
    maxlen
        Most points per plotted series of a run.
    interval_ms
        How often an open page refreshes.
    """

    name = "psdist-dashboard"
    idempotent = True  # a second install keeps the first plugin and its history

    def __init__(self, max_runs: int = 20, maxlen: int = 2000, interval_ms: int = 500) -> None:
        self.max_runs = max_runs
        self.maxlen = maxlen
        self.interval_ms = interval_ms
        self.runs = Runs(max_runs, maxlen)
        self.scheduler: Any = None
        self.app: Any = None  # our BokehTornado, once added
        self.path: str | None = None  # where it answers, e.g. "/psdist"

    def __getstate__(self) -> dict[str, Any]:  # the client ships only the settings
        return {"max_runs": self.max_runs, "maxlen": self.maxlen, "interval_ms": self.interval_ms}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        # what was published before the plugin came (the scheduler keeps recent events)
        try:
            for _, msg in scheduler.get_events(TOPIC):
                self.runs.consume(msg)
        except Exception:
            logger.debug("psdist dashboard: no earlier events to replay", exc_info=True)
        try:
            self.app, self.path = add_page(scheduler, functools.partial(_page, self))
        except Exception:  # the feed still works; only the page is missing
            logger.warning("psdist dashboard: could not add the page to the dashboard", exc_info=True)
            self.app, self.path = None, None

    def log_event(self, topic: str, msg: Any) -> None:
        if topic == TOPIC:
            self.runs.consume(msg)

    async def close(self) -> None:
        if self.app is not None and self.scheduler is not None:
            remove_page(self.scheduler, self.app)
        self.app = self.path = None


def _page(plugin: DashboardPlugin, scheduler: Any, extra: dict[str, Any], doc: Any) -> None:
    """Bokeh document function of one browser session (``BokehApplication`` calling convention)."""
    from psdist.dashboard.page import document

    document(plugin.runs, doc, interval_ms=plugin.interval_ms)


def _dashboards(scheduler: Any) -> list[Any]:
    """The Bokeh server applications in the scheduler's HTTP routing (distributed's and ours)."""
    from bokeh.server.server import BokehTornado

    routing = getattr(scheduler, "http_application", None)
    return [a for a in getattr(routing, "applications", []) if isinstance(a, BokehTornado)]


def add_page(scheduler: Any, doc_fn: Any) -> tuple[Any, str | None]:
    """Serve ``doc_fn`` at ``<dashboard prefix>/psdist`` on a running scheduler.

    Must run on the scheduler's event loop (plugin ``start``, a preload's ``dask_setup``).

    Returns
    -------
    (app, path)
        The added Bokeh application and its path, or ``(None, None)`` without a dashboard.
    """
    from distributed.dashboard.core import BokehApplication
    from tornado.ioloop import IOLoop

    existing = _dashboards(scheduler)
    theirs = [a for a in existing if not getattr(a, "_psdist_page", False)]
    if not theirs:
        logger.info("psdist dashboard: the scheduler runs no dashboard; the page is not served")
        return None, None
    for old in existing:  # a page left by an earlier plugin instance
        if getattr(old, "_psdist_page", False):
            remove_page(scheduler, old)
    prefix = theirs[0].prefix or ""  # "" or "/something"
    app = BokehApplication({PATH: doc_fn}, scheduler, prefix=prefix or "/")
    app._psdist_page = True
    scheduler.http_application.add_application(app)
    app.initialize(IOLoop.current())
    app.start()
    _add_menu_entry(scheduler)
    path = f"{prefix}{PATH}"
    logger.info("psdist dashboard: page served at %s", path)
    return app, path


def remove_page(scheduler: Any, app: Any) -> None:
    """Take the page's application out of the scheduler's routing and stop it."""
    apps = scheduler.http_application.applications
    if app in apps:
        apps.remove(app)
    try:
        app.stop()
    except Exception:
        logger.debug("psdist dashboard: stopping the page failed", exc_info=True)


def _add_menu_entry(scheduler: Any) -> None:
    """List the page under the dashboard's "More..." menu (best effort; distributed internals)."""
    try:
        from distributed.dashboard.scheduler import template_variables

        plots = template_variables(scheduler)["plots"]
        if not any(p.get("url") == PATH.strip("/") for p in plots):
            plots.append({"url": PATH.strip("/"), "name": "psdist training"})
    except Exception:
        logger.debug("psdist dashboard: no menu entry", exc_info=True)


def served_path(dask_scheduler: Any) -> str | None:
    """Where the page answers on this scheduler (``client.run_on_scheduler`` helper)."""
    plugin = dask_scheduler.plugins.get(DashboardPlugin.name)
    return getattr(plugin, "path", None)


def _join(link: str, path: str) -> str:
    """The page's URL from the client's ``dashboard_link`` (``.../status``) and its path."""
    base = link[: -len("/status")] if link.endswith("/status") else link.rstrip("/")
    prefix = path[: -len(PATH)]
    if prefix and not urlsplit(base).path.rstrip("/").endswith(prefix):
        base += prefix
    return base + PATH


def install(client: Any) -> str | None:
    """Register the dashboard plugin on the client's scheduler (once) and return the page URL.

    Idempotent: the plugin of an earlier call (or of ``--preload psdist.dashboard``) stays, with
    the history it holds. Never raises: a scheduler that cannot import psdist, or runs no
    dashboard, gives ``None`` (logged).

    Parameters
    ----------
    client
        A connected ``distributed.Client``.

    Returns
    -------
    str or None
        ``<dashboard>/psdist`` (no run selected: follows the newest training), or ``None``.
    """
    try:
        client.register_plugin(DashboardPlugin(), name=DashboardPlugin.name)
        path = client.run_on_scheduler(served_path)
        link = client.dashboard_link
    except Exception as e:
        logger.warning("psdist dashboard: not installed on the scheduler (%s: %s)", type(e).__name__, e)
        return None
    if not path or not link:
        return None
    return _join(str(link), str(path))


def page_url(client: Any, run_id: str) -> str | None:
    """The page of one training, ``<dashboard>/psdist?run=<run_id>``; installs the plugin if needed.

    ``None`` when the cluster has no dashboard (or the plugin could not be installed).
    """
    base = install(client)
    return f"{base}?run={quote(str(run_id), safe='')}" if base else None
