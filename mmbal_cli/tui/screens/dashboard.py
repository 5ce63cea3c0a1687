"""The main screen: header, notices, per-modality panel (with what its ``coef`` means for the run's
method) and chart tabs of one run, kept live; the Method tab captions each chart with what its
``score/`` or ``method/`` quantity means (the method's registration, read with the run).

Reading: a timer (``interval`` seconds, 0.5 by default, so new values show
within a second) starts a thread worker that reads only what was appended; the worker posts the
result back as a message and the UI applies it. At most one read is in flight, so a slow disk
(sshfs, NFS) delays updates instead of piling up threads. Only the visible chart is redrawn.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane, Tabs

from ..chart_series import CHART_TABS
from ..meanings import method_info, method_name
from ..model import RunModel
from ..reader import Delta, RunReader
from ..run_notices import Notice
from ..widgets import CoefLegend, EventsTable, LineChart, ModalityPanel, NoticeBar, RunHeader

TAB_IDS = [f"tab-{kind}" for kind, _ in CHART_TABS] + ["tab-events"]
COMPACT_WIDTH, COMPACT_HEIGHT = 100, 30
COMPACT_CHART_ROWS = 14   # header, coef legend, tabs, footer and a chart of about 10 rows


def compact_panel_height(height: int) -> int:
    """The compact panel's cap: the terminal's rows less what the rest needs, between 6 and 12."""
    return max(6, min(12, height - COMPACT_CHART_ROWS))


class RunRead(Message):
    """A worker finished reading ``reader``'s run: ``delta`` or the exception it raised."""

    def __init__(self, reader: RunReader, delta: Delta | Exception):
        super().__init__()
        self.reader = reader
        self.delta = delta


class DashboardScreen(Screen):
    """One run, live. :meth:`attach` switches to another run."""

    BINDINGS = [
        Binding("r", "app.show_runs", "Runs"),
        Binding("a", "app.show_advices", "Advices", show=False),
        Binding("escape", "back", "Back", show=False),
        Binding("x", "toggle_x", "Step/epoch"),
        Binding("s", "toggle_split", "Train/val"),
        Binding("left_square_bracket", "cycle_tab(-1)", "Prev tab", show=False),
        Binding("right_square_bracket", "cycle_tab(1)", "Next tab", show=False),
        *(Binding(str(i + 1), f"show_tab({i})", show=False) for i in range(len(TAB_IDS))),
    ]

    def __init__(self, run_dir: str | Path, interval: float = 0.5, clock: Callable[[], float] = time.time):
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.x_axis = "step"
        self.split: str | None = None
        self._reading = False
        self._method_keys: tuple[str, ...] | None = None  # the method charts shown (None: none yet)
        self.reader = RunReader(run_dir)
        self.model = RunModel(run_dir, clock)

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        yield NoticeBar(id="notices")
        yield ModalityPanel(id="modalities")
        yield CoefLegend(id="coef-legend")
        with TabbedContent(id="charts"):
            for kind, label in CHART_TABS:
                with TabPane(label, id=f"tab-{kind}"):
                    if kind == "method":
                        yield VerticalScroll(id="method-charts")
                    else:
                        yield LineChart(id=f"chart-{kind}")
            with TabPane("Events", id="tab-events"):
                yield EventsTable(id="events")
        yield Footer()

    def on_mount(self) -> None:
        self._layout_for(self.size.width, self.size.height)
        self.set_interval(self.interval, self.poll)
        self.poll()

    def on_resize(self, event) -> None:
        self._layout_for(event.size.width, event.size.height)

    def _layout_for(self, width: int, height: int) -> None:
        compact = width < COMPACT_WIDTH or height < COMPACT_HEIGHT
        changed = compact != self.has_class("compact")
        self.set_class(compact, "compact")
        if self.is_mounted:
            self.query_one(NoticeBar).show(limit=2 if compact else 4)
            # compact: the panel takes what the chart can spare (its ~10 rows kept), so that six modalities
            # and fused still show at 80x24; the full layout's cap is the stylesheet's
            self.query_one(ModalityPanel).styles.max_height = compact_panel_height(height) if compact else None
            if changed and self.model.loaded:
                self.query_one(ModalityPanel).show(self.model, compact=compact)
                self.query_one(CoefLegend).show(self.model, compact=compact)

    # -- reading --------------------------------------------------------------------------------
    def attach(self, run_dir: str | Path) -> None:
        """Show another run (reads from scratch; a read in flight for the old one is dropped)."""
        self.reader = RunReader(run_dir)
        self.model = RunModel(run_dir, self.clock)
        self._method_keys = None
        self.split = None
        self.poll()

    def poll(self) -> None:
        if not self._reading:
            self._reading = True
            self._read(self.reader)

    @work(thread=True, group="read", exit_on_error=False)
    def _read(self, reader: RunReader) -> None:
        try:
            delta: Delta | Exception = reader.read()
            name = method_name(delta.info, delta.config)
            if name:
                method_info(name)  # the first look-up imports the methods (and torch): here, not in the UI
        except Exception as exc:  # noqa: BLE001 - shown as a notice; the next poll tries again
            delta = exc
        self.post_message(RunRead(reader, delta))

    @on(RunRead)
    def _apply(self, message: RunRead) -> None:
        self._reading = False
        if message.reader is not self.reader:
            return
        if isinstance(message.delta, Exception):
            self.query_one(NoticeBar).show([Notice("error", f"reading {self.model.run_dir} failed: {message.delta}")])
            return
        if self.model.apply(message.delta):
            self.refresh_view()
        else:
            self.query_one(RunHeader).show(self.model)  # the elapsed time goes on

    # -- showing --------------------------------------------------------------------------------
    def refresh_view(self) -> None:
        """Redraw everything but the hidden chart tabs from the model."""
        model = self.model
        self.query_one(RunHeader).show(model)
        self.query_one(NoticeBar).show(model.notices())
        self.query_one(ModalityPanel).show(model, compact=self.has_class("compact"))
        self.query_one(CoefLegend).show(model, compact=self.has_class("compact"))
        self.app.sub_title = f"{model.name} ({model.state})"
        self._refresh_active_tab()

    def _refresh_active_tab(self) -> None:
        active = self.query_one(TabbedContent).active
        kind = active.removeprefix("tab-")
        if kind == "events":
            self.query_one(EventsTable).show(self.model)
        elif kind == "method":
            self._refresh_method_charts()
        elif kind:
            self.query_one(f"#chart-{kind}", LineChart).show(self.model.chart(kind, self.x_axis, self.split))

    def _refresh_method_charts(self) -> None:
        charts = self.model.method_charts(self.x_axis)
        keys = tuple(c.series[0].name for c in charts if c.series)
        box = self.query_one("#method-charts", VerticalScroll)
        if keys != self._method_keys:
            self._method_keys = keys
            box.remove_children()
            if not charts:
                box.mount(Static("this method logs no method/... or score/... values", classes="empty"))
            else:
                box.mount_all(LineChart(c, classes="method-chart") for c in charts)
            return
        for widget, data in zip(box.query(LineChart), charts):
            widget.show(data)

    @on(TabbedContent.TabActivated)
    def _tab_changed(self) -> None:
        """Redraw the new tab; the events table takes the focus so that ↑/↓ scroll it."""
        tabs = self.query_one(TabbedContent)
        if tabs.active == "tab-events":
            self.query_one(EventsTable).focus()
        elif isinstance(self.focused, EventsTable):
            tabs.query_one(Tabs).focus()
        if self.model.loaded:
            self._refresh_active_tab()

    # -- actions --------------------------------------------------------------------------------
    def action_back(self) -> None:
        """Back to the screen this run was opened from (an advice); nothing on the first screen."""
        if self.app.screen_stack[0] is not self:
            self.app.pop_screen()

    def action_toggle_x(self) -> None:
        self.x_axis = "epoch" if self.x_axis == "step" else "step"
        self.notify(f"x axis: {self.x_axis}", timeout=1.5)
        self._refresh_active_tab()

    def action_toggle_split(self) -> None:
        current = self.split or self.model.accuracy_split()
        self.split = "train" if current == "val" else "val"
        self.notify(f"accuracy chart: {self.split} split", timeout=1.5)
        self._refresh_active_tab()

    def action_show_tab(self, index: int) -> None:
        if 0 <= index < len(TAB_IDS):
            self.query_one(TabbedContent).active = TAB_IDS[index]

    def action_cycle_tab(self, delta: int) -> None:
        tabs = self.query_one(TabbedContent)
        index = TAB_IDS.index(tabs.active) if tabs.active in TAB_IDS else 0
        tabs.active = TAB_IDS[(index + delta) % len(TAB_IDS)]
