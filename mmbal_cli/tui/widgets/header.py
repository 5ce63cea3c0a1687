"""The run header: identity, state, epoch and step with a progress bar, elapsed time and time left;
once the run has them, the test accuracies of its selected checkpoint."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import ProgressBar, Static

from ..model import RunModel
from ..text import identity_text, position_text, test_text, times_text


class RunHeader(Vertical):
    """Two lines; the progress bar is hidden while the total number of steps is unknown."""

    DEFAULT_CSS = """
    RunHeader { height: auto; }
    RunHeader #identity { height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    RunHeader #position-line { height: 1; }
    RunHeader #test { height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    RunHeader #position { width: auto; }
    RunHeader #times { width: auto; margin-left: 2; }
    RunHeader ProgressBar { width: 1fr; margin-left: 2; }
    RunHeader ProgressBar.-unknown { display: none; }
    RunHeader ProgressBar Bar { width: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="identity")
        with Horizontal(id="position-line"):
            yield Static(id="position")
            yield ProgressBar(total=1.0, show_eta=False, id="progress")
            yield Static(id="times")
        yield Static(id="test")

    def show(self, model: RunModel) -> None:
        self.query_one("#identity", Static).update(identity_text(model))
        self.query_one("#position", Static).update(position_text(model))
        self.query_one("#times", Static).update(times_text(model))
        test = test_text(model)   # a finished run's test scores of the selected checkpoint
        line = self.query_one("#test", Static)
        line.update(test if test is not None else "")
        line.display = test is not None
        bar = self.query_one(ProgressBar)
        progress = model.progress
        bar.set_class(progress is None, "-unknown")
        if progress is not None:
            bar.update(total=1.0, progress=progress)
