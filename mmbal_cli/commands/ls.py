"""``mmbal ls``: the runs in the runs directory (name, state, age, epochs, the selected validation score),
sorted and filtered, as a table that fits 80 columns or as JSON."""

from __future__ import annotations

import fnmatch
import json
import time
from typing import Annotated, Optional

import typer

from ..options import RunsDirOpt
from ..output import fail, out_console, print_heading
from ..run_cells import age, epochs_text, score_text

SORTS = ("created", "name", "state", "score")
FILTER_FIELDS = ("name", "method", "dataset", "state", "id", "tag")


def _parse_filters(items: list[str]) -> list[tuple[str, str]]:
    from engine.errors import UsageError
    from engine.registry import did_you_mean
    filters = []
    for item in items:
        field, sep, pattern = item.partition("=")
        if not sep:
            field, pattern = "name", item
        field = field.strip()
        if field not in FILTER_FIELDS:
            raise UsageError(f"--filter: '{field}' is not a field to filter on{did_you_mean(field, FILTER_FIELDS)}; "
                             f"use FIELD=PATTERN with FIELD one of {', '.join(FILTER_FIELDS)} (PATTERN may use * "
                             f"and ?), or a plain pattern for the name")
        filters.append((field, pattern.strip()))
    return filters


def _matches(run, filters: list[tuple[str, str]]) -> bool:
    values = {"name": [run.name], "method": [run.method or ""], "dataset": [run.dataset or ""],
              "state": [run.state], "id": [run.run_id], "tag": list(run.tags)}
    for field, pattern in filters:
        wanted = pattern if any(ch in pattern for ch in "*?[") or field == "tag" else f"*{pattern}*"
        if not any(fnmatch.fnmatchcase(v.lower(), wanted.lower()) for v in values[field]):
            return False
    return True


def _sorted(runs: list, key: str) -> list:
    if key == "name":
        return sorted(runs, key=lambda r: (r.name, r.path.name))
    if key == "state":
        return sorted(runs, key=lambda r: r.state)
    if key == "score":   # best first (the selection metric's direction), runs without one last
        def score(r):
            if not r.selected:
                return (1, 0.0)
            lower_is_better = "/loss/" in f"/{r.selected['metric']}/"
            value = float(r.selected["value"])
            return (0, value if lower_is_better else -value)
        return sorted(runs, key=score)
    return runs   # created: newest first, as listed


def register(app: typer.Typer) -> None:
    @app.command("ls", rich_help_panel="Runs")
    def ls(runs_dir: RunsDirOpt = None,
           sort: Annotated[str, typer.Option("--sort", help="created (newest first) | name | state | score "
                                                            "(best selected validation score first)")] = "created",
           filters: Annotated[Optional[list[str]], typer.Option(
               "--filter", help="Only runs whose FIELD matches PATTERN: name, method, dataset, state, id or tag "
                                "(state=finished, method=ogm*, tag=paper; a plain PATTERN matches the name; "
                                "repeatable).",
               show_default=False)] = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
        """The runs: name, state, age, epochs done of planned, and the selected validation score."""
        from rich.table import Table
        from rich.text import Text

        from engine.errors import MmbalError, UsageError
        from engine.registry import did_you_mean
        from engine.store import default_runs_dir, list_runs, usable_runs_dir
        try:
            if sort not in SORTS:
                raise UsageError(f"--sort: '{sort}' is not one of {', '.join(SORTS)}{did_you_mean(sort, SORTS)}")
            wanted = _parse_filters(list(filters or []))
            root = usable_runs_dir(default_runs_dir(runs_dir))
        except MmbalError as exc:
            fail(exc)
        every = list_runs(root)
        runs = _sorted([r for r in every if _matches(r, wanted)], sort)
        if as_json:
            print(json.dumps([{**vars(r), "path": str(r.path)} for r in runs], indent=2))
            return
        if not runs:
            hint = f" ({len(every)} without the filter)" if every else \
                "; start one with `mmbal run presets/quickstart.toml`"
            out_console.print(f"no runs in {root}{hint}", markup=False, highlight=False)
            return
        print_heading(str(root))
        table = Table(pad_edge=False, box=None, header_style="bold")
        table.add_column("id", no_wrap=True)
        table.add_column("name", overflow="fold", ratio=1)
        table.add_column("state", overflow="fold", max_width=40)
        table.add_column("age", justify="right", no_wrap=True)
        table.add_column("epochs", justify="right", no_wrap=True)
        table.add_column("best val", justify="right", no_wrap=True)
        now = time.time()
        for r in runs:
            state = r.state if not r.error else f"{r.state} ({r.error})"
            name = (r.name or r.path.name) + (f" [{', '.join(r.tags)}]" if r.tags else "")
            table.add_row(r.run_id or "?", Text(name), Text(state), age(r.created, now), epochs_text(r),
                          score_text(r.selected))
        out_console.print(table)
        if len(runs) < len(every):
            out_console.print(f"{len(runs)} of {len(every)} runs", style="dim")
