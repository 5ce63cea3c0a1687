"""Modal dialogs: the keyboard help (``?``) and the question asked when quitting with training attached."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

KEYS = (
    ("Everywhere", (("?", "this help"), ("q / ctrl+c", "quit"), ("esc", "back / close"))),
    ("Dashboard", (
        ("1 .. 8", "chart tab: Acc Loss Coef MI Shapley Grad Method Events"),
        ("[ / ]", "previous / next tab (←/→ when the tabs have focus)"),
        ("x / s", "x axis step or epoch / accuracy of the val or train split"),
        ("r / a", "runs screen / advices (mmbal advise, its halving live)"),
    )),
    ("Lists", (("↑/↓ enter", "open a run, an advice, or an advice candidate's run"),
               ("space / c", "mark runs / compare the marked runs"))),
    ("Compare", (("m / M", "next / previous metric"), ("x", "step or epoch"))),
    ("Marks", (("◀", "weakest modality (lowest val accuracy, else train)"),
               ("c H S", "checkpoint, head added (AUG), stage (MCR)"),
               ("R I *", "resume, interrupted, other event"))),
)


def help_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for section, rows in KEYS:
        table.add_row(Text(section, style="underline"), "")
        for key, what in rows:
            table.add_row(Text(key), Text(what))
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box", classes="dialog"):
            yield Static(Text.assemble(("mmbal watch: keys", "bold"), ("   (esc closes)", "dim")))
            yield Static(help_table())


class QuitScreen(ModalScreen[str]):
    """Asks what happens to the training process: dismissed with ``stop``, ``leave`` or ``cancel``."""

    BINDINGS = [
        Binding("s", "choose('stop')", "Stop training"),
        Binding("l", "choose('leave')", "Leave running"),
        Binding("escape,c", "choose('cancel')", "Cancel"),
        Binding("left", "app.focus_previous", show=False),
        Binding("right", "app.focus_next", show=False),
    ]

    def __init__(self, run_name: str):
        super().__init__()
        self.run_name = run_name

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-box", classes="dialog"):
            yield Static(Text.assemble("Training of ", (self.run_name, "bold"), " is still running."))
            yield Static(Text("Stop it (it writes a checkpoint first; `mmbal resume` continues it) or leave it "
                              "running in the background?", style="dim"))
            with Horizontal(id="quit-buttons"):
                yield Button(Text("Stop training [s]"), id="stop", variant="error")
                yield Button(Text("Leave running [l]"), id="leave", variant="primary")
                yield Button(Text("Cancel [esc]"), id="cancel")

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)
