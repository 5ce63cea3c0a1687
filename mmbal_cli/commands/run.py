"""``mmbal run`` and ``mmbal resume``: train in this process, or in N processes (``--nproc``), or
beside the live dashboard (``run --tui``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..options import NprocOpt, RunsDirOpt, SetOpt
from ..output import fail, make_reporter, print_error


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Training")
    def run(preset: Annotated[Path, typer.Argument(help="Preset TOML file.", show_default=False)],
            set_: SetOpt = None, runs_dir: RunsDirOpt = None,
            name: Annotated[Optional[str], typer.Option(help="Run name (default: preset name + method).")] = None,
            device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N (overrides train.device).")] = None,
            tui: Annotated[bool, typer.Option("--tui/--no-tui", help="Train in the background with the live dashboard "
                                                                     "attached (quitting asks whether to stop training).")] = False,
            nproc: NprocOpt = None,
            ) -> None:
        """Start a new run from a preset; prints the run id and directory first."""
        from engine.errors import MmbalError, UsageError
        from engine.run import start_run

        from ..nproc import check_run, run_args, start_processes
        if nproc is not None and nproc > 1:
            try:
                if tui:
                    raise UsageError("--tui cannot be combined with --nproc; start the run with --nproc and follow it "
                                     "with `mmbal watch` in another terminal")
                check_run(preset, set_ or [], device, nproc)
            except MmbalError as exc:
                fail(exc)
            raise typer.Exit(start_processes(run_args(preset, set_ or [], runs_dir, name, device), nproc))
        if tui:
            from ..tui.launch import build_run_argv, run_with_dashboard
            raise typer.Exit(run_with_dashboard(build_run_argv(preset, set_ or [], name, device), runs_dir))
        with _starting(runs_dir, name):
            _train_here(lambda reporter, main: start_run(preset, set_ or [], runs_dir, name=name, device=device,
                                                         reporter=reporter, on_created=_announce if main else None))

    @app.command(rich_help_panel="Training")
    def resume(run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, id prefix, name, directory or 'latest'.")],
               set_: SetOpt = None, runs_dir: RunsDirOpt = None, nproc: NprocOpt = None,
               allow_data_change: Annotated[bool, typer.Option(
                   "--allow-data-change", help="Continue although the data changed since the run started "
                                               "(refused otherwise, exit 3); recorded in run.json and "
                                               "metrics.jsonl.")] = False) -> None:
        """Continue a stopped, crashed or finished run from its last checkpoint (with any number of processes)."""
        from engine.errors import MmbalError
        from engine.run import resume_run

        from ..nproc import check_resume, resume_args, start_processes
        if nproc is not None and nproc > 1:
            try:
                run_dir = check_resume(run_ref, runs_dir, nproc)
            except MmbalError as exc:
                fail(exc)
            allow = ["--allow-data-change"] if allow_data_change else []
            raise typer.Exit(start_processes(resume_args(run_dir, set_ or [], runs_dir) + allow, nproc))
        _train_here(lambda reporter, main: resume_run(
            run_ref, set_ or [], runs_dir, reporter=reporter, allow_data_change=allow_data_change,
            on_found=lambda d, info: print(f"resuming {info['run_id']}  {d}", flush=True)))


def _starting(runs_dir, name: str | None):
    """Announce the start in the runs directory at once, before torch is imported and the data read
    (seconds), so that `mmbal watch` started right after waits for this run (start_run then names it)."""
    import contextlib

    from engine.errors import MmbalError
    from engine.store.layout import default_runs_dir
    from engine.store.starting import announce_start
    try:
        return announce_start(default_runs_dir(runs_dir), name)
    except MmbalError:
        return contextlib.nullcontext()


def _announce(run_dir, run_id, info) -> None:
    print(f"run {run_id}  {run_dir}", flush=True)


def _train_here(train) -> None:
    """``train(reporter, main)`` in this process (one rank of a multi-process run, or the only one):
    errors, Ctrl-C and the end of the run are reported by the main rank only."""
    from engine.errors import MmbalError
    from engine.run import NullReporter
    from engine.terminal import survive_hangups

    from ..nproc import ranks
    # a write to a terminal hung up before the SIGHUP handler ran, or to a pipe whose reader went away
    # (`mmbal run p.toml | head`), does not fail the run: it stops after a checkpoint (exit 129 or 141)
    survive_hangups(pipes=True)
    with ranks() as main:
        reporter = make_reporter() if main else NullReporter()
        try:
            result = train(reporter, main)
        except MmbalError as exc:
            fail(exc, quiet=not main)
        except KeyboardInterrupt:
            _stop(reporter)
            if main:
                print_error("interrupted: stopped without writing a checkpoint now; `mmbal resume` continues from "
                            "the last one, if any (one is written at the end of each epoch)")
            raise typer.Exit(130)
        finally:
            _stop(reporter)
        _finish(result, quiet=not main)


def _stop(reporter) -> None:
    stop = getattr(reporter, "stop", None)
    if stop:
        stop()


def _finish(result, quiet: bool = False) -> None:
    if result.state == "interrupted":
        from engine.terminal import exit_code
        code = exit_code(result.stopped_by)  # 129 after a hang-up (SSH connection lost), 141 a closed pipe, else 130
        if quiet:
            raise typer.Exit(code)
        why = {"SIGHUP": "hang-up (SIGHUP)", "SIGPIPE": "output closed (the pipe's reader went away)"}.get(
            result.stopped_by, "interrupted")
        print(f"{why}: checkpoint written; continue with `mmbal resume {result.run_id}`", file=sys.stderr)
        raise typer.Exit(code)
