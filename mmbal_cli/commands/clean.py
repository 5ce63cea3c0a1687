"""``mmbal rm`` (delete runs) and ``mmbal gc`` (delete finished runs' resume checkpoints, keeping best.pt)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ..options import RunsDirOpt
from ..output import fail, out_console
from .show import human_size


def _confirm(question: str, yes: bool) -> bool:
    from engine.errors import UsageError
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{question} Not a terminal to ask on: pass --yes to confirm")
    return typer.confirm(question, default=False)


def register(app: typer.Typer) -> None:
    @app.command("rm", rich_help_panel="Runs")
    def rm(run_refs: Annotated[list[str], typer.Argument(metavar="RUN...", help="Runs: id, id prefix, name, "
                                                                                "directory or 'latest'.")],
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
           runs_dir: RunsDirOpt = None) -> None:
        """Delete runs and everything in their directories (a running run is refused)."""
        from engine.errors import MmbalError
        from engine.store import default_runs_dir, resolve_run
        from engine.store.cleanup import remove_run, tree_size
        try:
            root = default_runs_dir(runs_dir)
            dirs = list(dict.fromkeys(resolve_run(root, ref) for ref in run_refs))
            size = sum(tree_size(d) for d in dirs)
            names = ", ".join(d.name for d in dirs)
            if not _confirm(f"Delete {len(dirs)} run(s) ({human_size(size)}): {names}?", yes):
                raise typer.Exit(1)
            freed = 0
            for d in dirs:
                freed += remove_run(d)
                out_console.print(f"removed {d}", markup=False, highlight=False)
        except MmbalError as exc:
            fail(exc)
        out_console.print(f"freed {human_size(freed)}", markup=False, highlight=False)

    @app.command("gc", rich_help_panel="Runs")
    def gc(keep_best: Annotated[bool, typer.Option("--keep-best", help="Delete finished runs' last.pt and "
                                                                       "previous.pt, keeping best.pt, metrics and "
                                                                       "summary (they can no longer be resumed).")] = False,
           dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be deleted.")] = False,
           filters: Annotated[Optional[list[str]], typer.Option(
               "--filter", help="Only runs matching FIELD=PATTERN, as `mmbal ls --filter` (repeatable).",
               show_default=False)] = None,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
           runs_dir: RunsDirOpt = None) -> None:
        """Free disk space: the resume checkpoints of finished runs (best.pt is kept)."""
        from engine.errors import MmbalError, UsageError
        from engine.store import default_runs_dir, list_runs
        from engine.store.cleanup import collect_run, collectable, resume_checkpoints

        from .ls import _matches, _parse_filters
        try:
            if not keep_best:
                raise UsageError("mmbal gc: say what to delete: --keep-best deletes finished runs' last.pt and "
                                 "previous.pt and keeps best.pt (`mmbal rm RUN` deletes whole runs)")
            wanted = _parse_filters(list(filters or []))
            root = default_runs_dir(runs_dir)
            runs = [r for r in list_runs(root) if _matches(r, wanted) and collectable(r.path)]
            sizes = {r.path: sum(p.stat().st_size for p in resume_checkpoints(r.path)) for r in runs}
            total = sum(sizes.values())
            for r in runs:
                out_console.print(f"{'would free' if dry_run else 'frees'} {human_size(sizes[r.path]):>10}  "
                                  f"{r.path.name}", markup=False, highlight=False)
            if not runs:
                out_console.print(f"nothing to collect in {root}: no finished run with resume checkpoints",
                                  markup=False, highlight=False)
                return
            if dry_run:
                out_console.print(f"would free {human_size(total)} from {len(runs)} run(s)", markup=False)
                return
            if not _confirm(f"Delete the resume checkpoints of {len(runs)} run(s) ({human_size(total)})? They "
                            f"can no longer be resumed.", yes):
                raise typer.Exit(1)
            freed = sum(collect_run(r.path) for r in runs)
        except MmbalError as exc:
            fail(exc)
        out_console.print(f"freed {human_size(freed)} from {len(runs)} run(s)", markup=False, highlight=False)
