"""``DashboardApp``: the Textual application behind ``mmbal watch`` and ``mmbal run --tui``.

It only reads the run directory, so it can be started, closed and restarted at any time without
touching training. With ``advice`` (an advice's directory, ``<runs-dir>/advice/<name>``) and no run it
opens on the advice screen instead (``mmbal watch --advice NAME``); a candidate's run opens on a
dashboard screen above it. With ``training`` (a :class:`~mmbal_cli.tui.launch.TrainingProcess`) quitting
asks whether to stop the training process or leave it running; :meth:`App.run` then returns
``"stop"`` or ``"leave"`` (``None`` when there was nothing to ask).
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import Callable, Protocol

from rich.console import Console
from textual.app import App
from textual.binding import Binding

from .screens import AdviceScreen, AdvicesScreen, DashboardScreen, HelpScreen, QuitScreen, RunsScreen

TERMINAL_CHECK_S = 5.0


class Training(Protocol):
    """What the dashboard needs to know about a training process it was started with."""

    def running(self) -> bool: ...


class DashboardApp(App[str | None]):
    CSS_PATH = "dashboard.tcss"
    TITLE = "mmbal watch"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(self, run_dir: str | Path | None, runs_dir: str | Path, *, training: Training | None = None,
                 interval: float = 0.5, clock: Callable[[], float] = time.time, advice: str | Path | None = None):
        super().__init__()
        if run_dir is None and advice is None:
            raise ValueError("DashboardApp needs a run directory or an advice")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.advice = Path(advice) if advice is not None else None
        self.runs_dir = Path(runs_dir)
        self.training = training
        self.interval = interval
        self.clock = clock

    def get_default_screen(self) -> DashboardScreen | AdviceScreen:
        if self.run_dir is None:
            return AdviceScreen(self.advice, self.runs_dir, self.interval)
        return DashboardScreen(self.run_dir, self.interval, self.clock)

    @property
    def dashboard(self) -> DashboardScreen:
        """The run dashboard nearest the top of the screen stack (under any list or dialog)."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, DashboardScreen):
                return screen
        raise LookupError("no run dashboard is open")

    def on_mount(self) -> None:
        if not self.is_headless:
            self.set_interval(TERMINAL_CHECK_S, self._check_terminal)

    def _check_terminal(self) -> None:
        """Exit when the terminal went away (an SSH drop), instead of spinning on a dead TTY."""
        stdin = sys.__stdin__
        if stdin is None or stdin.closed or not stdin.isatty():
            self.exit(None)

    def export_text(self) -> str:
        """The current screen as plain text (what ``tmux capture-pane -p`` shows; tests, docs)."""
        width, height = self.size
        console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system=None,
                          record=True, legacy_windows=False, safe_box=False)
        console.print(self.screen._compositor.render_update(full=True, screen_stack=self._background_screens))
        return "\n".join(line.rstrip() for line in console.export_text().splitlines())

    # -- actions --------------------------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_show_runs(self) -> None:
        if isinstance(self.screen, RunsScreen):
            return
        self.push_screen(RunsScreen(self.runs_dir, self.dashboard.model.run_dir), self._open_run)

    def _open_run(self, path: Path | None) -> None:
        if path is not None:
            self.dashboard.attach(path)

    def action_show_advices(self) -> None:
        if not isinstance(self.screen, AdvicesScreen):
            self.push_screen(AdvicesScreen(self.runs_dir), self._open_advice)

    def _open_advice(self, home: Path | None) -> None:
        """The chosen advice on the advice screen below the list, else on a new one."""
        if home is None:
            return
        if isinstance(self.screen, AdviceScreen):
            self.screen.attach(home)
        else:
            self.push_screen(AdviceScreen(home, self.runs_dir, self.interval))

    def open_run_screen(self, run_dir: Path) -> None:
        """A run on a dashboard screen above the current one (esc goes back)."""
        self.push_screen(DashboardScreen(run_dir, self.interval, self.clock))

    async def action_quit(self) -> None:
        if isinstance(self.screen, QuitScreen):
            return
        if self.training is not None and self.training.running():
            self.push_screen(QuitScreen(self.dashboard.model.name), self._quit_answer)
        else:
            self.exit(None)

    def _quit_answer(self, choice: str | None) -> None:
        if choice in ("stop", "leave"):
            self.exit(choice)
