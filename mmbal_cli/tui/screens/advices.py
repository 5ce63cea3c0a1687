"""The advices screen: the advices of the runs directory (``<runs-dir>/advice/*``); Enter opens one."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..advice_model import AdviceModel
from ..advice_reader import AdviceRead, advice_home, advice_names, read_record
from ..widgets import fit_widths


def advice_summary(home: Path) -> tuple[str, str]:
    """(where the advice is, its recommendation or a problem) from its record alone."""
    record, problem = read_record(home)
    model = AdviceModel(home)
    model.apply(AdviceRead(record, problem))
    if record is None:
        return "-", f"advice.json {problem}"
    rec = model.recommendation()
    return model.current_stage(), rec[0] if rec else ""


class AdvicesScreen(Screen):
    """Refreshed every ``interval`` seconds; dismissed with the chosen advice's directory."""

    BINDINGS = [
        Binding("enter", "open", "Open"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, runs_dir: Path, interval: float = 2.0):
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.interval = interval
        self.names: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("advices in ", "dim"), str(self.runs_dir / "advice"),
                                   ("   enter open · esc back", "dim")), id="advices-title")
        yield DataTable(id="advices", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label in ("advice", "now", "recommends"):
            table.add_column(label, key=label)
        self.reload()
        self.set_interval(self.interval, self.reload)
        table.focus()

    def reload(self) -> None:
        table = self.query_one(DataTable)
        keep = self._selected()
        self.names = advice_names(self.runs_dir)
        table.clear()
        for name in self.names:
            now, recommends = advice_summary(advice_home(self.runs_dir, name))
            table.add_row(Text(name), Text(now), Text(recommends), key=name)
        if not self.names:
            table.add_row(Text(f"no advices in {self.runs_dir} (mmbal advise PRESET starts one)", style="dim"), "", "")
        fit_widths(table)
        if keep in self.names:
            table.move_cursor(row=self.names.index(keep))

    def _selected(self) -> str | None:
        row = self.query_one(DataTable).cursor_row
        return self.names[row] if 0 <= row < len(self.names) else None

    def action_open(self) -> None:
        name = self._selected()
        if name is not None:
            self.dismiss(advice_home(self.runs_dir, name))

    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_open()
