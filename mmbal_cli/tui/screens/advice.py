"""The advice screen: one ``mmbal advise`` as it happens: the diagnosis, the halving round by round
(each candidate's validation mean ± std and state) and the recommendation, kept live.

Reading works as on the dashboard: a timer starts a thread worker (at most one in flight) that reads
``advice.json`` and the advice's runs (:class:`~mmbal_cli.tui.advice_reader.AdviceReader`) and posts
the read back; the view is redrawn only when something changed. Enter on a candidate opens its run
on a dashboard screen (esc comes back); ``a`` lists the advices of the runs directory.
"""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from ..advice_model import AdviceModel
from ..advice_reader import AdviceRead, AdviceReader
from ..advice_text import columns_text, diagnosis_part, halving_lines, label_width, result_part, title_text
from ..run_notices import Notice
from ..widgets import NoticeBar


class AdviceReadDone(Message):
    """A worker finished reading ``reader``'s advice: the read or the exception it raised."""

    def __init__(self, reader: AdviceReader, read: AdviceRead | Exception):
        super().__init__()
        self.reader = reader
        self.read = read


class HalvingList(OptionList):
    """The stages' rows; while ``following``, a change of height keeps the highlighted row in view."""

    following = False

    def on_resize(self) -> None:
        if self.following and self.highlighted is not None:
            self.scroll_to_highlight()


class AdviceScreen(Screen):
    """One advice, live; :meth:`attach` switches to another."""

    BINDINGS = [
        Binding("a", "app.show_advices", "Advices"),
        Binding("escape", "back", "Back", show=False),
    ]

    def __init__(self, home: str | Path, runs_dir: str | Path, interval: float = 1.0):
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.interval = interval
        self._reading = False
        self._followed: int | None = None   # the row the cursor was put on to follow the advice
        self.reader = AdviceReader(home, self.runs_dir)
        self.model = AdviceModel(home)

    def compose(self) -> ComposeResult:
        yield Static(id="advice-title")
        yield NoticeBar(limit=2, id="advice-notices")
        yield Static(id="advice-diagnosis")
        yield Static(id="advice-columns")
        yield HalvingList(id="halving")
        yield Static(id="advice-result")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#advice-title", Static).update(f"advice {self.model.name}: reading ...")
        self.set_interval(self.interval, self.poll)
        self.poll()
        self.query_one(OptionList).focus()

    def on_resize(self) -> None:
        if self.model.loaded:   # the candidate column follows the width
            self.refresh_view()

    # -- reading --------------------------------------------------------------------------------
    def attach(self, home: str | Path) -> None:
        """Show another advice (read from scratch; a read in flight for the old one is dropped)."""
        self.reader = AdviceReader(home, self.runs_dir)
        self.model = AdviceModel(home)
        self.poll()

    def poll(self) -> None:
        if not self._reading:
            self._reading = True
            self._read(self.reader)

    @work(thread=True, group="advice-read", exit_on_error=False)
    def _read(self, reader: AdviceReader) -> None:
        try:
            read: AdviceRead | Exception = reader.read()
        except Exception as exc:  # noqa: BLE001 - shown as a notice; the next poll tries again
            read = exc
        self.post_message(AdviceReadDone(reader, read))

    @on(AdviceReadDone)
    def _apply(self, message: AdviceReadDone) -> None:
        self._reading = False
        if message.reader is not self.reader:
            return
        if isinstance(message.read, Exception):
            self.query_one(NoticeBar).show([Notice("error", f"reading {self.model.home} failed: {message.read}")])
            return
        if self.model.apply(message.read):
            self.refresh_view()

    # -- showing --------------------------------------------------------------------------------
    def refresh_view(self) -> None:
        """Redraw from the model; the cursor stays on the same run."""
        model = self.model
        self.query_one("#advice-title", Static).update(title_text(model))
        self.query_one(NoticeBar).show(model.notices())
        self.query_one("#advice-diagnosis", Static).update(diagnosis_part(model))
        self.query_one("#advice-result", Static).update(result_part(model))
        self.app.sub_title = f"advice {model.name} ({model.current_stage()})"
        columns = max(self.size.width - 2, 40)   # the halving's padding
        lines = halving_lines(model, columns)
        self.query_one("#advice-columns", Static).update(
            columns_text(label_width(model.stages(), columns)) if lines else "")
        self._fill(lines)

    def _fill(self, lines) -> None:
        halving = self.query_one(OptionList)
        following = halving.highlighted in (None, 0, self._followed)
        halving.following = following
        kept = halving.highlighted_option.id if halving.highlighted_option is not None else None
        halving.clear_options()
        ids = set()
        for i, (text, row) in enumerate(lines):
            run_id = str(row.run) if row is not None and row.run is not None else None
            option_id = run_id if run_id is not None and run_id not in ids else f"line-{i}"
            ids.add(option_id)
            halving.add_option(Option(text, id=option_id, disabled=row is None))
        if following:   # until the user moves the cursor it follows the advice: the last row with a run
            rows = [i for i, (_, row) in enumerate(lines) if row is not None]
            if rows:
                halving.highlighted = self._followed = rows[-1]
                self.call_after_refresh(halving.scroll_to_highlight)
        elif kept is not None and kept in ids:
            halving.highlighted = halving.get_option_index(kept)

    # -- actions --------------------------------------------------------------------------------
    @on(OptionList.OptionSelected)
    def _open_run(self, event: OptionList.OptionSelected) -> None:
        """Enter on a candidate: its run (the running seed's, else the first seed's) on a dashboard screen."""
        option_id = event.option.id or ""
        if option_id.startswith("line-"):
            self.notify("no run of this candidate yet", severity="warning", timeout=3)
            return
        self.app.open_run_screen(Path(option_id))

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
