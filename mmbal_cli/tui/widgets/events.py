"""The Events tab: events and resumes in file order, then the notices and skipped lines."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from ..formatting import fmt_number
from ..model import RunModel
from ..text import notice_text


class EventsTable(DataTable):
    """Newest last; superseded events (after a resume went back) are dimmed and say so."""

    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._shown: tuple | None = None
        self._model: RunModel | None = None

    FIXED = 7 + 6 + 3 + 12 + 5 * 2 + 2  # the first four columns, every column's padding, a scrollbar

    def _columns(self) -> None:
        self.clear(columns=True)
        self.add_column("step", key="step", width=7)
        self.add_column("epoch", key="epoch", width=6)
        self.add_column("seg", key="seg", width=3)
        self.add_column("event", key="event", width=12)
        self.add_column("details", key="details", width=max(self.size.width - self.FIXED, 20))

    def on_resize(self) -> None:
        if self._model is not None:
            self.show(self._model)

    def show(self, model: RunModel) -> None:
        self._model = model
        events, notices, warnings = model.event_rows(), model.notices(), model.warnings
        key = (id(model), model.version, self.size.width)
        if key == self._shown:
            return
        self._shown = key
        self._columns()
        for notice in notices:
            self.add_row("", "", "", Text(notice.level), notice_text(notice), height=None)
        for warning in warnings[:-1]:
            self.add_row("", "", "", Text("warning"), Text(warning), height=None)
        for row in events:
            style = "dim" if row.superseded else ""
            details = row.details + (" (superseded by a resume)" if row.superseded else "")
            epoch = fmt_number(row.epoch) if row.epoch is not None else ""
            if row.epoch is not None and float(row.epoch).is_integer():
                epoch = str(int(row.epoch))
            self.add_row(Text(str(row.step if row.step is not None else ""), style=style), Text(epoch, style=style),
                         Text(str(row.seg if row.seg is not None else ""), style=style),
                         Text(row.name, style=style or "bold"), Text(details, style=style))
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)
