"""A Textual widget around :func:`mmbal_cli.tui.chart.render_chart`, redrawn at its current size."""

from __future__ import annotations

from rich.console import Group, RenderableType
from textual.widget import Widget

from ..chart import ChartData, render_chart


class LineChart(Widget):
    """Shows a :class:`ChartData`; :meth:`show` replaces it (the widget re-renders at its size)."""

    DEFAULT_CSS = """
    LineChart { height: 1fr; min-height: 5; }
    """

    def __init__(self, data: ChartData | None = None, **kwargs):
        super().__init__(**kwargs)
        self.data = data or ChartData()

    def show(self, data: ChartData) -> None:
        self.data = data
        self.refresh()

    def render(self) -> RenderableType:
        width, height = self.content_size.width, self.content_size.height
        if width < 12 or height < 4:
            return ""
        return Group(*render_chart(self.data, width, height))
