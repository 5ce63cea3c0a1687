"""The runs screen: the runs directory as ``mmbal ls`` lists it (epochs done of planned, the selected
validation score, age); open one, or mark several to compare."""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from engine.store import list_runs

from ...run_cells import age, epochs_text, score_text
from ..text import STATE_STYLES
from ..widgets import fit_widths
from .compare import CompareScreen

MARK = "✓"


class RunsScreen(Screen):
    """Refreshed every ``interval`` seconds; the cursor stays on the same run."""

    BINDINGS = [
        Binding("enter", "open", "Open"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare marked"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, runs_dir: Path, current: Path | None = None, interval: float = 2.0):
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.current = Path(current).resolve() if current else None
        self.interval = interval
        self.marked: list[Path] = []
        self.paths: list[Path] = []

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("runs in ", "dim"), str(self.runs_dir),
                                   ("   enter open · space mark · c compare marked · esc back", "dim")),
                     id="runs-title")
        yield DataTable(id="runs", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label in (" ", "id", "name", "method", "state", "epochs", "best val", "dataset", "age"):
            table.add_column(label, key=label)
        self.reload()
        self.set_interval(self.interval, self.reload)
        table.focus()

    def on_resize(self) -> None:
        self.call_after_refresh(self.reload)  # once laid out, the table's width squeezes the name column

    def reload(self) -> None:
        table = self.query_one(DataTable)
        keep = self.paths[table.cursor_row] if self.paths and 0 <= table.cursor_row < len(self.paths) else self.current
        runs = list_runs(self.runs_dir)
        now = getattr(self.app, "clock", time.time)()
        self.paths = [r.path.resolve() for r in runs]
        table.clear()
        for run in runs:
            path = run.path.resolve()
            mark = MARK if path in self.marked else ("▶" if path == self.current else " ")
            state = Text(run.state, style=STATE_STYLES.get(run.state, ""))
            if run.error:
                state.append(f" ({run.error})", style="dim")
            cells = (Text(run.run_id), Text(run.name, overflow="ellipsis", no_wrap=True), Text(run.method or ""),
                     state, Text(epochs_text(run), justify="right"), Text(score_text(run.selected), justify="right"),
                     Text(run.dataset or ""))   # Text: names are not markup; the score before what fits less
            table.add_row(mark, *cells, Text(age(run.created, now), justify="right"), key=str(path))
        if not runs:
            table.add_row("", "", Text(f"no runs in {self.runs_dir}", style="dim"), *[""] * 6)
        fit_widths(table, squeeze="name", least=24)
        if keep in self.paths:
            table.move_cursor(row=self.paths.index(keep))

    def _selected(self) -> Path | None:
        row = self.query_one(DataTable).cursor_row
        return self.paths[row] if 0 <= row < len(self.paths) else None

    def action_open(self) -> None:
        path = self._selected()
        if path is not None:
            self.dismiss(path)

    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_open()

    def action_mark(self) -> None:
        path = self._selected()
        if path is None:
            return
        if path in self.marked:
            self.marked.remove(path)
        else:
            self.marked.append(path)
        self.reload()

    def action_compare(self) -> None:
        chosen = list(self.marked)
        if len(chosen) < 2:
            self.notify("mark two or more runs with space first", severity="warning", timeout=3)
            return
        self.app.push_screen(CompareScreen(chosen))
