"""``mmbal tag`` and ``mmbal note``: what the user says about a run after the fact (``meta.json``),
for ``ls --filter tag=...``, ``compare --tag`` and ``show``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..options import RunsDirOpt
from ..output import fail, out_console


def _run_dir(runs_dir, ref):
    from engine.store import default_runs_dir, resolve_run
    return resolve_run(default_runs_dir(runs_dir), ref)


def register(app: typer.Typer) -> None:
    @app.command("tag", rich_help_panel="Runs")
    def tag(run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, id prefix, name, directory or 'latest'.")],
            tags: Annotated[Optional[list[str]], typer.Argument(metavar="TAG...", help="Tags to add.",
                                                                show_default=False)] = None,
            remove: Annotated[Optional[list[str]], typer.Option("--remove", help="A tag to remove (repeatable).",
                                                                show_default=False)] = None,
            runs_dir: RunsDirOpt = None) -> None:
        """Add tags to a run (or --remove them); with no tag, print its tags."""
        from engine.errors import MmbalError
        from engine.store.meta import change_meta, read_meta
        try:
            run_dir = _run_dir(runs_dir, run_ref)
            meta = change_meta(run_dir, add_tags=list(tags or []), remove_tags=list(remove or [])) \
                if tags or remove else read_meta(run_dir)
        except MmbalError as exc:
            fail(exc)
        out_console.print(f"{run_dir.name}: {', '.join(meta['tags']) or '(no tags)'}", markup=False, highlight=False)

    @app.command("note", rich_help_panel="Runs")
    def note(run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, id prefix, name, directory or 'latest'.")],
             text: Annotated[str, typer.Argument(help="The note (quote it).", show_default=False)],
             runs_dir: RunsDirOpt = None) -> None:
        """Add a dated note to a run (shown by `mmbal show`)."""
        from engine.errors import MmbalError
        from engine.store.meta import change_meta
        try:
            run_dir = _run_dir(runs_dir, run_ref)
            meta = change_meta(run_dir, note=text)
        except MmbalError as exc:
            fail(exc)
        out_console.print(f"{run_dir.name}: {len(meta['notes'])} note(s)", markup=False, highlight=False)
