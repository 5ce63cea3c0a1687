"""``mmbal ls``: the runs in the runs directory, as a table or JSON."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..options import RunsDirOpt
from ..output import fail, out_console


def register(app: typer.Typer) -> None:
    @app.command("ls", rich_help_panel="Runs")
    def ls(runs_dir: RunsDirOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
        """The runs in the runs directory, newest first, with their state."""
        from rich.table import Table

        from engine.errors import UsageError
        from engine.store import default_runs_dir, list_runs, usable_runs_dir
        try:
            root = usable_runs_dir(default_runs_dir(runs_dir))
        except UsageError as exc:
            fail(exc)
        runs = list_runs(root)
        if as_json:
            print(json.dumps([{**vars(r), "path": str(r.path)} for r in runs], indent=2))
            return
        if not runs:
            out_console.print(f"no runs in {root}")
            return
        table = Table(title=str(root), title_justify="left")
        for col in ("id", "name", "method", "dataset", "state", "epoch", "step", "created"):
            table.add_column(col)
        for r in runs:
            state = r.state if not r.error else f"{r.state} ({r.error})"
            table.add_row(r.run_id or "?", r.name or r.path.name, r.method or "", r.dataset or "", state,
                          str(r.epoch if r.epoch is not None else ""), str(r.step if r.step is not None else ""),
                          (r.created or "").replace("T", " ")[:19])
        out_console.print(table)
