"""``mmbal compare``: run summaries side by side (a Rich table, JSON, CSV or Markdown), optionally a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..options import RunsDirOpt
from ..output import err_console, fail, out_console, print_error, print_heading

FORMATS = ("table", "json", "csv", "md", "latex")


def _split(items: list[str] | None) -> list[str]:
    return [p.strip() for item in items or [] for p in item.split(",") if p.strip()]


def _group_by(value: str | None, sweep: str | None, baseline: str | None) -> list[str] | None:
    if value is None:
        return ["method"] if (sweep or baseline) else None
    keys = _split([value])
    return None if keys in ([], ["none"]) else keys


def _tagged(runs_dir, tags: list[str]) -> list[str]:
    """The directories of the runs carrying every tag in ``tags`` (``mmbal tag``)."""
    from engine.errors import RunNotFound
    from engine.store import run_dirs
    from engine.store.meta import read_meta
    found = [str(p) for p in run_dirs(runs_dir) if set(tags) <= set(read_meta(p)["tags"])]
    if not found:
        raise RunNotFound(f"--tag: no run in {runs_dir} is tagged {' and '.join(tags)} (`mmbal tag RUN TAG` tags "
                          f"one; `mmbal ls` lists tags)")
    return found


def _records(runs_dir, refs: list[str], sweep: str | None, tags: list[str] = ()):
    from engine.analysis.load import load_runs, load_sweep
    from engine.errors import UsageError
    refs = list(refs) + (_tagged(runs_dir, list(tags)) if tags else [])
    if not refs and not sweep:
        raise UsageError("give the runs to compare (ids, id prefixes, names, directories or 'latest'), "
                         "--sweep NAME or --tag TAG; `mmbal ls` lists the runs")
    records = load_sweep(runs_dir, sweep) if sweep else []
    seen = {r.path for r in records if r.path is not None}
    return records + [r for r in load_runs(runs_dir, refs) if r.path not in seen]


def _shown_columns(comp, headers: list[str], grid, columns: str) -> tuple[list[int], list[str]]:
    """The column indices to print and, when some were left out to fit the terminal, their headers."""
    from engine.analysis.render import column_rank, fit_columns
    from engine.errors import UsageError
    from engine.registry import did_you_mean
    if columns == "all":
        return list(range(len(headers))), []
    if columns != "auto":
        wanted = _split([columns])
        unknown = [w for w in wanted if w not in headers]
        if unknown:
            raise UsageError(f"--columns: no column {', '.join(repr(u) for u in unknown)}"
                             f"{did_you_mean(unknown[0], headers)}; the columns are: {', '.join(headers)} "
                             f"(or 'auto', 'all')")
        return [0] + [i for i, h in enumerate(headers) if h in wanted and i != 0], []
    # piped, the console is 200 wide (whole cells rather than an 80-column squeeze), and fitted to that
    kept = fit_columns(comp, headers, grid, out_console.width)
    ranks = column_rank(comp, headers)
    return kept, [headers[i] for i in sorted(set(range(len(headers))) - set(kept), key=lambda i: (ranks[i], i))]


LEFT_OUT_NAMED = 12   # the left-out columns named in the note, the most important first; the rest counted


def left_out_note(left_out: list[str], width: int) -> str:
    named = ", ".join(left_out[:LEFT_OUT_NAMED])
    more = f" and {len(left_out) - LEFT_OUT_NAMED} more" if len(left_out) > LEFT_OUT_NAMED else ""
    return (f"left out to fit {width} columns: {named}{more}; `--columns all` shows every column, "
            f"`--columns acc,f1,...` chooses them, `--format md` writes them all")


def _print_table(comp, title: str, columns: str = "auto") -> None:
    from rich.table import Table
    from rich.text import Text

    from engine.analysis.render import STATE_MAX_WIDTH, display_grid, notes
    headers, grid = display_grid(comp, multiline=True)
    kept, left_out = _shown_columns(comp, headers, grid, columns)
    n_left = len(headers) - len(comp.columns)
    if title:
        print_heading(title)
    table = Table()
    for i in kept:
        h = headers[i]
        if i >= n_left:
            table.add_column(h, justify="right", no_wrap=True)
        elif h == "state":
            table.add_column(h, overflow="fold", min_width=8, max_width=STATE_MAX_WIDTH)
        else:
            table.add_column(h, no_wrap=True)
    for cells in grid:
        table.add_row(*(Text(cells[i][0], style="bold green" if cells[i][1] else "") for i in kept))
    out_console.print(table)
    for line in notes(comp):
        out_console.print(line, style="dim", markup=False)
    if left_out:
        out_console.print(left_out_note(left_out, out_console.width), style="dim", markup=False)
    if comp.all_keys != comp.config_keys:
        _print_config(comp)


def _print_config(comp) -> None:
    """``--all-config``: every config key as a row, one column per compared row."""
    from rich.table import Table
    from rich.text import Text

    from engine.analysis.render import config_grid
    headers, grid = config_grid(comp)
    table = Table()
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
        fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | csv | md | latex")] = "table",
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
        tags: Annotated[Optional[list[str]], typer.Option(
            "--tag", help="Also compare the runs tagged TAG (`mmbal tag`); repeated: runs with every tag.",
            show_default=False)] = None,
        columns: Annotated[str, typer.Option(
            "--columns", help="Table columns: auto (those that fit the terminal, the most telling first), all, "
                              "or headers, comma-separated (method,seeds,acc,acc:b,imbalance).")] = "auto",
        runs_dir: RunsDirOpt = None,
    ) -> None:
        """Run summaries side by side: per run, or per group with mean ± std over seeds and a baseline test."""
        from engine.analysis.build import build_comparison
        from engine.analysis.render import notes, to_csv, to_json, to_latex, to_markdown
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
            records = _records(root, list(runs or []), sweep, _split(tags))
            comp = build_comparison(records, group_by=_group_by(group_by, sweep, baseline),
                                    metrics=_split(metrics) or None, sort=sort, baseline=baseline,
                                    all_config=all_config)
        except MmbalError as exc:
            fail(exc)
        for warning in comp.warnings:
            err_console.print(f"warning: {warning}", markup=False)
        if fmt == "table":
            try:
                _print_table(comp, f"sweep {sweep}" if sweep else str(root), columns)
            except MmbalError as exc:
                fail(exc)
        else:
            text = {"json": to_json, "csv": to_csv, "md": to_markdown, "latex": to_latex}[fmt](comp)
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
