"""``mmbal compare``: run summaries side by side (a Rich table, JSON, CSV or Markdown), optionally a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..options import RunsDirOpt
from ..output import err_console, fail, out_console, print_error

FORMATS = ("table", "json", "csv", "md")


def _split(items: list[str] | None) -> list[str]:
    return [p.strip() for item in items or [] for p in item.split(",") if p.strip()]


def _group_by(value: str | None, sweep: str | None, baseline: str | None) -> list[str] | None:
    if value is None:
        return ["method"] if (sweep or baseline) else None
    keys = _split([value])
    return None if keys in ([], ["none"]) else keys


def _records(runs_dir, refs: list[str], sweep: str | None):
    from engine.analysis.load import load_runs, load_sweep
    from engine.errors import UsageError
    if not refs and not sweep:
        raise UsageError("give the runs to compare (ids, id prefixes, names, directories or 'latest') or "
                         "--sweep NAME; `mmbal ls` lists the runs")
    records = load_sweep(runs_dir, sweep) if sweep else []
    seen = {r.path for r in records if r.path is not None}
    return records + [r for r in load_runs(runs_dir, refs) if r.path not in seen]


def _print_table(comp, title: str) -> None:
    from rich.table import Table
    from rich.text import Text

    from engine.analysis.render import display_grid, notes
    headers, grid = display_grid(comp, multiline=True)
    n_left = len(headers) - len(comp.columns)
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(headers):
        if i >= n_left:
            table.add_column(h, justify="right", no_wrap=True)
        elif h == "state":
            table.add_column(h, overflow="fold", min_width=8, max_width=48)
        else:
            table.add_column(h, overflow="fold", min_width=min(len(h), 24))
    for cells in grid:
        table.add_row(*(Text(t, style="bold green" if best else "") for t, best in cells))
    out_console.print(table)
    for line in notes(comp):
        out_console.print(line, style="dim", markup=False)
    if comp.all_keys != comp.config_keys:
        _print_config(comp)


def _print_config(comp) -> None:
    """``--all-config``: every config key as a row, one column per compared row."""
    from rich.table import Table
    from rich.text import Text

    from engine.analysis.render import config_grid
    headers, grid = config_grid(comp)
    table = Table(title_justify="left")
    for h in headers:
        table.add_column(h, overflow="fold")
    for cells in grid:
        table.add_row(*(Text(t) for t in cells))
    out_console.print(table)


def register(app: typer.Typer) -> None:
    @app.command("compare", rich_help_panel="Runs")
    def compare(
        runs: Annotated[Optional[list[str]], typer.Argument(
            metavar="RUN...", help="Runs: id, id prefix, name, directory or 'latest'.", show_default=False)] = None,
        sweep: Annotated[Optional[str], typer.Option(
            "--sweep", help="Compare the members of this sweep (see `mmbal sweep`).", show_default=False)] = None,
        group_by: Annotated[Optional[str], typer.Option(
            "--group-by", help="Config keys to group by, e.g. method or method,model.fusion; 'none' for one row "
                               "per run. Default: method with --sweep or --baseline, else none.",
            show_default=False)] = None,
        fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | csv | md")] = "table",
        sort: Annotated[Optional[str], typer.Option(
            "--sort", help="Sort best-first by a metric (test/acc/fused or its header 'acc'), or by 'name' or a "
                           "config key.", show_default=False)] = None,
        metrics: Annotated[Optional[list[str]], typer.Option(
            "--metrics", "-m", help="Metric columns instead of the defaults: keys or patterns, comma-separated "
                                    "or repeated (test/acc/*,val/f1/fused).", show_default=False)] = None,
        baseline: Annotated[Optional[str], typer.Option(
            "--baseline", help="Row to compare against (e.g. joint): differences and a paired t-test over seeds.",
            show_default=False)] = None,
        all_config: Annotated[bool, typer.Option(
            "--all-config", help="Show every config key, not only those that differ.")] = False,
        plot: Annotated[Optional[Path], typer.Option(
            "--plot", help="Also draw accuracy curves and final per-modality accuracy bars to FILE.png|svg|pdf "
                           "(needs matplotlib: pip install 'mmbal\\[plot]').", show_default=False)] = None,
        runs_dir: RunsDirOpt = None,
    ) -> None:
        """Run summaries side by side: per run, or per group with mean ± std over seeds and a baseline test."""
        from engine.analysis.build import build_comparison
        from engine.analysis.render import notes, to_csv, to_json, to_markdown
        from engine.errors import MmbalError, UsageError
        from engine.registry import did_you_mean
        from engine.store import default_runs_dir
        try:
            if fmt not in FORMATS:
                raise UsageError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}{did_you_mean(fmt, FORMATS)}")
            if plot is not None:
                from engine.analysis.plot import check_plot_target
                check_plot_target(plot)
            root = default_runs_dir(runs_dir)
            records = _records(root, list(runs or []), sweep)
            comp = build_comparison(records, group_by=_group_by(group_by, sweep, baseline),
                                    metrics=_split(metrics) or None, sort=sort, baseline=baseline,
                                    all_config=all_config)
        except MmbalError as exc:
            fail(exc)
        for warning in comp.warnings:
            err_console.print(f"warning: {warning}", markup=False)
        if fmt == "table":
            _print_table(comp, f"sweep {sweep}" if sweep else str(root))
        else:
            text = {"json": to_json, "csv": to_csv, "md": to_markdown}[fmt](comp)
            typer.echo(text, nl=False)
            if fmt == "csv":
                for line in notes(comp):
                    if line.startswith("not included"):
                        err_console.print(line, markup=False)
        if plot is not None:
            from engine.analysis.plot import plot_comparison, skipped_lines
            for warning in skipped_lines(comp):
                err_console.print(f"warning: {warning}", markup=False, soft_wrap=True)
            try:
                plot_comparison(comp, plot)
            except MmbalError as exc:
                fail(exc)
            except OSError as exc:
                print_error(f"{plot}: cannot write the plot: {exc.strerror or exc}")
                raise typer.Exit(1)
            err_console.print(f"wrote {plot}", markup=False)
