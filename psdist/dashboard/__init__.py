"""Live monitoring: a psdist page in the Dask dashboard, at ``<dashboard>/psdist``.

Every training publishes its feed (:mod:`psdist.run.events`) as Dask events; the scheduler plugin
:class:`DashboardPlugin` folds them into per-run histories (:mod:`psdist.dashboard.state`) and
serves a Bokeh page (:mod:`psdist.dashboard.page`, :mod:`psdist.dashboard.components`) inside
the dashboard the scheduler already runs.

>>> url = psdist.dashboard.page_url(client, run_id)      # doctest: +SKIP

A scheduler started by hand gets the plugin from the start with
``dask scheduler --preload psdist.dashboard``.
"""

from __future__ import annotations

from typing import Any

from psdist.dashboard.plugin import PATH, DashboardPlugin, install, page_url
from psdist.dashboard.state import Runs, RunState

__all__ = ["PATH", "DashboardPlugin", "RunState", "Runs", "dask_setup", "install", "page_url"]


async def dask_setup(scheduler: Any) -> None:
    """Preload hook: ``dask scheduler --preload psdist.dashboard`` installs the plugin."""
    await scheduler.register_scheduler_plugin(DashboardPlugin(), name=DashboardPlugin.name, idempotent=True)
