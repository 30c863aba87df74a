"""The plots of the psdist page, in distributed's dashboard component pattern.

Each component owns its ``ColumnDataSource``\\ s and a Bokeh ``root`` model, and refreshes them
from a :class:`~psdist.dashboard.state.RunState` in :meth:`Component.update` (``None``: no run,
empty plots). Every source and figure carries a stable ``name`` (``psdist-...``), so a test or
a browser can find it with ``Document.get_model_by_name``. Nothing here needs a running server.
The text panel and the worker table are in :mod:`psdist.dashboard.panels`.
"""

from __future__ import annotations

from typing import Any

from bokeh.layouts import column
from bokeh.models import ColumnDataSource, RadioButtonGroup, Range1d
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from psdist.dashboard.state import RunState

__all__ = [
    "Component",
    "LossPlot",
    "LrPlot",
    "MetricsPlot",
    "PushRatePlot",
    "StalenessPlot",
    "WorkerRatePlot",
    "set_data",
]

TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
PLOT = {"height": 260, "sizing_mode": "stretch_width", "tools": TOOLS, "toolbar_location": "above"}
TIME_LABEL = "time since start (s)"


def _figure(name: str, title: str, x_label: str, y_label: str, **kwargs: Any) -> Any:
    fig = figure(name=name, title=title, x_axis_label=x_label, y_axis_label=y_label, **{**PLOT, **kwargs})
    return fig


def _legend(fig: Any) -> None:
    fig.legend.location = "top_right"
    fig.legend.click_policy = "hide"
    fig.legend.label_text_font_size = "8pt"
    fig.legend.background_fill_alpha = 0.6


def set_data(source: ColumnDataSource, data: dict[str, list[Any]]) -> bool:
    """Replace a source's data unless it is unchanged (saves a websocket message); changed?"""
    if dict(source.data) != data:
        source.data = data
        return True
    return False


class Component:
    """A piece of the page: sources, a ``root`` model, and :meth:`update` from a run."""

    root: Any

    def __init__(self) -> None:
        self._seen: tuple[str, int] | None = None

    def stale(self, run: RunState | None) -> bool:
        """Whether ``run`` changed since the last refresh (and mark it seen)."""
        key = (run.run, run.seq) if run is not None else ("", -1)
        if key == self._seen:
            return False
        self._seen = key
        return True

    def refresh(self) -> None:
        """Forget what was shown, so the next :meth:`update` redraws."""
        self._seen = None

    def update(self, run: RunState | None) -> None:
        raise NotImplementedError


class LossPlot(Component):
    """Training loss (between server snapshots, per chunk, per epoch) and validation loss.

    Against the server version or the time since start (the radio buttons above the plot).
    """

    AXES = ("version", "t")

    def __init__(self) -> None:
        super().__init__()
        self.x = "version"
        self.loss = ColumnDataSource({"x": [], "version": [], "t": [], "loss": []}, name="psdist-loss")
        self.chunks = ColumnDataSource({"x": [], "version": [], "t": [], "loss": [], "epoch": []},
                                       name="psdist-chunk-loss")
        self.epochs = ColumnDataSource(
            {"x": [], "epoch": [], "version": [], "t": [], "train_loss": [], "val_loss": []}, name="psdist-epochs"
        )
        fig = self.figure = _figure("psdist-loss-figure", "loss", "server version", "loss")
        fig.line("x", "loss", source=self.loss, color=Category10_10[0], legend_label="train (applied pushes)")
        fig.scatter("x", "loss", source=self.chunks, color=Category10_10[0], alpha=0.4, size=4,
                    legend_label="train (chunks)")
        fig.scatter("x", "train_loss", source=self.epochs, color=Category10_10[0], size=9, marker="square",
                    legend_label="train (epoch)")
        fig.line("x", "val_loss", source=self.epochs, color=Category10_10[1], line_width=2, legend_label="validation")
        fig.scatter("x", "val_loss", source=self.epochs, color=Category10_10[1], size=9, legend_label="validation")
        _legend(fig)
        self.axis = RadioButtonGroup(labels=["vs version", "vs time"], active=0, name="psdist-loss-axis")
        self.axis.on_change("active", self._on_axis)
        self.root = column(self.axis, fig, sizing_mode="stretch_width")

    def _on_axis(self, attr: str, old: Any, new: Any) -> None:
        self.set_axis(self.AXES[int(new)])

    def set_axis(self, x: str) -> None:
        """Plot against ``"version"`` or ``"t"`` (seconds since start)."""
        self.x = x
        self.figure.xaxis.axis_label = "server version" if x == "version" else TIME_LABEL
        self.refresh()

    def update(self, run: RunState | None) -> None:
        if not self.stale(run):
            return
        for source, series in ((self.loss, run and run.loss), (self.chunks, run and run.chunk_loss),
                               (self.epochs, run and run.epochs)):
            if series:
                data = series.data()
                data["x"] = list(data[self.x])
            else:
                data = {k: [] for k in source.data}
            set_data(source, data)


class MetricsPlot(Component):
    """The validation metrics of the epoch records (``val_<metric>``) against the epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.source = ColumnDataSource({"xs": [], "ys": [], "metric": [], "color": []}, name="psdist-metrics")
        self.points = ColumnDataSource({"epoch": [], "value": [], "metric": [], "color": []},
                                       name="psdist-metric-points")
        fig = self.root = _figure("psdist-metrics-figure", "validation metrics", "epoch", "value")
        fig.multi_line("xs", "ys", source=self.source, line_color="color", line_width=2, legend_field="metric")
        fig.scatter("epoch", "value", source=self.points, color="color", size=7)
        _legend(fig)
        fig.legend.location = "bottom_right"

    def update(self, run: RunState | None) -> None:
        if not self.stale(run):
            return
        lines: dict[str, list[Any]] = {"xs": [], "ys": [], "metric": [], "color": []}
        points: dict[str, list[Any]] = {"epoch": [], "value": [], "metric": [], "color": []}
        for i, name in enumerate(run.metric_names() if run is not None else []):
            xs, ys = run.metric_series(name)  # type: ignore[union-attr]
            color = Category10_10[(i + 2) % 10]
            lines["xs"].append(xs)
            lines["ys"].append(ys)
            lines["metric"].append(name[4:])
            lines["color"].append(color)
            points["epoch"] += xs
            points["value"] += ys
            points["metric"] += [name[4:]] * len(xs)
            points["color"] += [color] * len(xs)
        set_data(self.source, lines)
        set_data(self.points, points)


class PushRatePlot(Component):
    """Pushes per second applied and rejected by the server."""

    def __init__(self) -> None:
        super().__init__()
        self.source = ColumnDataSource({"t": [], "applied": [], "rejected": []}, name="psdist-pushes")
        fig = self.root = _figure("psdist-pushes-figure", "pushes / s", TIME_LABEL, "pushes / s")
        fig.line("t", "applied", source=self.source, color=Category10_10[2], line_width=2, legend_label="applied")
        fig.line("t", "rejected", source=self.source, color=Category10_10[3], line_width=2, legend_label="rejected")
        _legend(fig)

    def update(self, run: RunState | None) -> None:
        if self.stale(run):
            set_data(self.source, run.pushes.data() if run is not None else {k: [] for k in self.source.data})


class WorkerRatePlot(Component):
    """Samples per second of each worker (applied samples, from the server's worker table)."""

    def __init__(self) -> None:
        super().__init__()
        self.source = ColumnDataSource({"xs": [], "ys": [], "worker": [], "color": []}, name="psdist-worker-rates")
        fig = self.root = _figure("psdist-worker-rates-figure", "samples / s per worker", TIME_LABEL, "samples / s")
        fig.multi_line("xs", "ys", source=self.source, line_color="color", line_width=2, legend_field="worker")
        _legend(fig)

    def update(self, run: RunState | None) -> None:
        if not self.stale(run):
            return
        data: dict[str, list[Any]] = {"xs": [], "ys": [], "worker": [], "color": []}
        if run is not None:
            for i, w in enumerate(sorted(run.worker_rates)):
                d = run.worker_rates[w].data()
                name = run.workers.get(w, {}).get("name") or w
                data["xs"].append(d["t"])
                data["ys"].append(d["samples_per_s"])
                data["worker"].append(str(name))
                data["color"].append(Category10_10[i % 10])
        set_data(self.source, data)


class StalenessPlot(Component):
    """The server's staleness histogram: pushes received at each staleness τ."""

    def __init__(self) -> None:
        super().__init__()
        self.source = ColumnDataSource({"tau": [], "count": []}, name="psdist-staleness")
        fig = self.root = _figure("psdist-staleness-figure", "staleness", "staleness τ (versions)", "pushes",
                                  height=200, x_range=Range1d(-0.5, 4.5))
        fig.vbar(x="tau", top="count", width=0.8, source=self.source, color=Category10_10[4])
        fig.y_range.start = 0

    def update(self, run: RunState | None) -> None:
        if self.stale(run):
            hist = run.staleness_hist if run is not None else []
            set_data(self.source, {"tau": list(range(len(hist))), "count": list(hist)})
            end = max(4.5, len(hist) - 0.5)  # at least τ = 0..4 shown, so one bar is not a wall
            if self.root.x_range.end != end:
                self.root.x_range.end = end


class LrPlot(Component):
    """The learning rate in force against the server version (a step line)."""

    def __init__(self) -> None:
        super().__init__()
        self.source = ColumnDataSource({"version": [], "t": [], "lr": []}, name="psdist-lr")
        fig = self.root = _figure("psdist-lr-figure", "learning rate in force", "server version", "lr", height=200)
        fig.step("version", "lr", source=self.source, mode="after", color=Category10_10[5], line_width=2)
        fig.scatter("version", "lr", source=self.source, color=Category10_10[5], size=5)

    def update(self, run: RunState | None) -> None:
        if not self.stale(run):
            return
        data = run.lr_series.data() if run is not None else {k: [] for k in self.source.data}
        if run is not None and data["lr"]:  # carry the rate in force to the current version
            data = {k: [*v, v[-1]] for k, v in data.items()}
            data["version"][-1] = run.version
        set_data(self.source, data)
