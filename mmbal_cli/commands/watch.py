"""``mmbal watch [RUN]``: the live dashboard of a running or finished run (``--once``: one plain snapshot);
``mmbal watch --advice NAME``: the advice screen of an ``mmbal advise`` (its halving as it happens).

It only reads the run directory, so it can be started, closed and restarted at any time without
disturbing training. Textual is imported only when the dashboard is actually shown.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..options import RunsDirOpt
from ..output import err_console, fail, out_console


# How long `watch NAME` waits for a run of that name to be announced when there is none yet.
START_GRACE_S = 5.0


def _just_started(root, run_ref: str, grace: float = 0.0):
    """A run that `mmbal run` is starting under this reference (its data still loading): wait for its
    directory and return it, rather than attaching to an older run of that name or the previous latest.
    ``grace``: seconds to wait for the announcement itself (a name that matches no run yet)."""
    from engine.store.layout import runs_named
    from engine.store.starting import being_started, wait_for_announcement, wait_until_started
    info = being_started(root, run_ref)
    if info is None and grace > 0:
        err_console.print(f"no run '{run_ref}' in {root} yet; waiting up to {grace:.0f} s in case `mmbal run` "
                          "is starting it...", highlight=False, markup=False)
        info = wait_for_announcement(root, run_ref, grace)
    if info is None:
        return None
    what = f"run '{info['name']}'" if info.get("name") else "the run"
    err_console.print(f"waiting for {what} that process {info['pid']} is starting...", highlight=False, markup=False)
    before = set(runs_named(root, run_ref)) if run_ref != "latest" else set()
    wait_until_started(root, info)
    if run_ref == "latest":
        return None   # the new run is now the latest (or, if its start failed, the previous one)
    named = runs_named(root, run_ref)
    new = [p for p in named if p not in before]   # not by name order: two runs may start in one second
    return (new or named or [None])[0]


def _once_or_plain(once: bool) -> bool:
    """``--once``, also when stdin or stdout is not a terminal (then said on stderr)."""
    if not once and not (sys.stdout.isatty() and sys.stdin.isatty()):
        err_console.print("not a terminal: printing one snapshot (as with --once)", highlight=False)
        return True
    return once


def advice_home(root: Path, name: str) -> Path:
    """The directory of advice ``name`` in runs directory ``root``; :class:`RunNotFound` (exit 3) listing the
    known advices when there is none of that name."""
    from engine.errors import RunNotFound
    from ..tui.advice_reader import advice_home as home_of, advice_names
    known = advice_names(root)
    if name in known:
        return home_of(root, name)
    listed = (f"the advices there: {', '.join(known)}" if known
              else "there is none yet (`mmbal advise PRESET` starts one)")
    raise RunNotFound(f"no advice '{name}' in {root}; {listed}")


def _print_snapshot(snapshot, width: int) -> None:
    """``--once``'s snapshot at ``width`` columns; into a file or pipe without the padding Rich leaves at
    the ends of lines."""
    if out_console.is_terminal:
        out_console.print(snapshot, width=width)
        return
    with out_console.capture() as captured:
        out_console.print(snapshot, width=width)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def _watch_advice(root: Path, name: str, once: bool, mouse: bool, interval: float) -> None:
    """``--advice NAME``: the advice screen, or with ``once`` its plain snapshot."""
    from engine.errors import RunNotFound
    try:
        home = advice_home(root, name)
    except RunNotFound as exc:
        fail(exc)
    if _once_or_plain(once):
        from ..tui.advice_model import AdviceModel
        from ..tui.advice_reader import AdviceReader
        from ..tui.advice_text import render_advice_snapshot
        model = AdviceModel(home)
        model.apply(AdviceReader(home, root).read())
        width = min(out_console.width, 120)
        _print_snapshot(render_advice_snapshot(model, width), width)
        return
    from ..tui.app import DashboardApp
    DashboardApp(None, root, interval=interval, advice=home).run(mouse=mouse)


def register(app: typer.Typer) -> None:
    @app.command("watch", rich_help_panel="Runs")
    def watch(
        run_ref: Annotated[Optional[str], typer.Argument(
            metavar="[RUN]", help="Run id, id prefix, name, directory or 'latest' (the default).", show_default=False)]
        = None,
        runs_dir: RunsDirOpt = None,
        once: Annotated[bool, typer.Option("--once", help="Print one plain snapshot and exit (scripts, logs).")] = False,
        mouse: Annotated[bool, typer.Option("--mouse/--no-mouse", help="Mouse support (off helps some SSH/tmux setups).")]
        = True,
        interval: Annotated[float, typer.Option(help="Seconds between reads of the run's files.", min=0.1, max=60.0)]
        = 0.5,
        advice: Annotated[Optional[str], typer.Option(
            "--advice", help="Show this advice (mmbal advise --name NAME): its diagnosis and halving as it happens.",
            show_default=False)] = None,
    ) -> None:
        """The live dashboard of a run (default: the latest): progress, per-modality panel, charts, events.

        Keys: ? help, 1-8 chart tabs, x step/epoch, r runs (mark with space, c compare), a advices, q quit.
        """
        from engine.errors import RunNotFound, UsageError
        from engine.store import default_runs_dir, resolve_run

        root = default_runs_dir(runs_dir)
        if advice is not None and run_ref is not None:
            fail(UsageError(f"give a RUN ('{run_ref}') or --advice, not both"))
        if advice is not None:
            _watch_advice(root, advice, once, mouse, interval)
            return
        run_ref = run_ref or "latest"
        try:
            run_dir = _just_started(root, run_ref) or resolve_run(root, run_ref)
        except RunNotFound as exc:
            from engine.store.names import run_name_problem
            if run_ref == "latest" or "/" in run_ref or run_name_problem(run_ref) or Path(run_ref).exists():
                fail(exc)
            try:   # a run started a moment ago on a busy machine may not have announced itself yet
                run_dir = _just_started(root, run_ref, grace=START_GRACE_S) or resolve_run(root, run_ref)
            except RunNotFound as again:
                fail(again)
        once = _once_or_plain(once)
        if once:
            from ..tui.model import RunModel
            from ..tui.snapshot import render_snapshot
            width = min(out_console.width, 120)   # piped: 120 columns, as laid out (not the pipe's 200)
            _print_snapshot(render_snapshot(RunModel(run_dir).load(), width=width), width)
            return
        from ..tui.app import DashboardApp
        DashboardApp(run_dir, root, interval=interval).run(mouse=mouse)
