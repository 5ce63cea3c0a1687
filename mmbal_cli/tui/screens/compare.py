"""The compare view: one metric of two or more runs overlaid, with each run's last and best value.

The x axis defaults to epochs, which line up across runs with different batch sizes; ``x``
switches to steps. ``m`` / ``M`` step through the metrics the runs log (``val/acc/fused`` first).
Runs that are still training keep updating, read the same way as the dashboard's.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..chart import PALETTE, ChartData, Series
from ..formatting import fmt_number
from ..model import RunModel
from ..reader import Delta, RunReader
from ..widgets import LineChart, fit_widths

PREFERRED = ("val/acc/fused", "val/f1/fused", "val/loss/fused", "train/loss/method", "train/acc/fused")


class CompareRead(Message):
    def __init__(self, deltas: list[Delta | None]):
        super().__init__()
        self.deltas = deltas


def metric_order(keys: set[str]) -> list[str]:
    """Preferred metrics first, then the rest grouped by their prefix."""
    first = [k for k in PREFERRED if k in keys]
    return first + sorted(keys - set(first), key=lambda k: (k.split("/")[0] not in ("val", "train", "test"), k))


def best_of(metric: str, values: list[float]) -> float | None:
    if not values:
        return None
    return min(values) if "/loss/" in metric or metric.startswith("loss") else max(values)


def compare_chart(models: list[RunModel], metric: str, x_axis: str) -> ChartData:
    """``metric`` of every run, one colour per run (the legend names runs by name and id)."""
    series = []
    for i, model in enumerate(models):
        points = model.points(metric, None, x_axis)
        if points:
            series.append(Series(f"{model.name} ({model.run_id})", points, PALETTE[i % len(PALETTE)]))
    bounds = (0.0, 1.0) if "/acc/" in metric or "/f1/" in metric else None
    return ChartData(series, [], x_axis, f"none of these runs logs {metric}", y_bounds=bounds)


class CompareScreen(Screen):
    BINDINGS = [
        Binding("m", "cycle_metric(1)", "Next metric"),
        Binding("M", "cycle_metric(-1)", "Prev metric"),
        Binding("x", "toggle_x", "Step/epoch"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, run_dirs: list[Path], interval: float = 1.0):
        super().__init__()
        self.readers = [RunReader(d) for d in run_dirs]
        self.models = [RunModel(d) for d in run_dirs]
        self.interval = interval
        self.metric = PREFERRED[0]
        self.x_axis = "epoch"
        self._reading = False

    def compose(self) -> ComposeResult:
        yield Static(id="compare-title")
        yield LineChart(id="compare-chart")
        yield DataTable(id="compare-table", cursor_type="none")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label in ("run", "method", "state", "last", "best", "at"):
            table.add_column(label, key=label)
        self.set_interval(self.interval, self.poll)
        self.poll()

    def poll(self) -> None:
        if not self._reading:
            self._reading = True
            self._read()

    @work(thread=True, group="compare-read", exit_on_error=False)
    def _read(self) -> None:
        deltas: list[Delta | None] = []
        for reader in self.readers:
            try:
                deltas.append(reader.read())
            except Exception:  # noqa: BLE001 - that run keeps its previous values
                deltas.append(None)
        self.post_message(CompareRead(deltas))

    @on(CompareRead)
    def _apply(self, message: CompareRead) -> None:
        self._reading = False
        changed = False
        for model, delta in zip(self.models, message.deltas):
            if delta is not None:
                changed = model.apply(delta) or changed
        if changed:
            self.refresh_view()

    def metrics(self) -> list[str]:
        return metric_order({k for model in self.models for k in model.keys()})

    def refresh_view(self) -> None:
        metrics = self.metrics()
        if metrics and self.metric not in metrics:
            self.metric = metrics[0]
        self.query_one("#compare-title", Static).update(Text.assemble(
            ("compare ", "dim"), (self.metric, "bold"), (f"  by {self.x_axis}", "dim"),
            (f"   ({len(metrics)} metrics: m next, M previous, x step/epoch, esc back)", "dim")))
        self.query_one(LineChart).show(compare_chart(self.models, self.metric, self.x_axis))
        table = self.query_one(DataTable)
        table.clear()
        for i, model in enumerate(self.models):
            points = [(x, y) for x, y in model.points(self.metric, None, self.x_axis) if y is not None]
            best = best_of(self.metric, [y for _, y in points])
            at = next((x for x, y in points if y == best), None)
            name = Text.assemble(("■ ", PALETTE[i % len(PALETTE)]), f"{model.name} ({model.run_id})")
            last = points[-1][1] if points else None
            table.add_row(name, Text(model.method), Text(model.state), fmt_number(last), fmt_number(best),
                          "" if at is None else f"{self.x_axis} {at:g}")
        fit_widths(table)

    def action_cycle_metric(self, delta: int) -> None:
        metrics = self.metrics()
        if not metrics:
            return
        index = metrics.index(self.metric) if self.metric in metrics else 0
        self.metric = metrics[(index + delta) % len(metrics)]
        self.refresh_view()

    def action_toggle_x(self) -> None:
        self.x_axis = "epoch" if self.x_axis == "step" else "step"
        self.refresh_view()
