"""``mmbal methods``: every registered balancing method, as a table, JSON or the README's Markdown."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..output import fail, out_console


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Reference")
    def methods(names: Annotated[Optional[list[str]], typer.Argument(
                    metavar="[METHOD]...", show_default=False,
                    help="Only these methods (names, or comma-separated: ogm_ge,mcr); default every one.")] = None,
                fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | md (the README's table)")]
                = "table",
                as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False) -> None:
        """Every balancing method: what it does, its paper, the optimiser and per-step cost of that paper's
        training, its options, and what each live quantity (coef/<m>, score/<m>, method/...) means."""
        from engine.errors import UsageError
        from engine.registry import did_you_mean

        from ..methods_listing import FORMATS, method_rows, to_json, to_markdown, to_renderable, to_text
        rows = method_rows()
        try:
            if fmt not in FORMATS:
                raise UsageError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}{did_you_mean(fmt, FORMATS)}")
            if as_json and fmt not in ("table", "json"):
                raise UsageError(f"--json means --format json; it cannot be combined with --format {fmt}")
            rows = chosen(rows, [n.strip() for item in names or [] for n in item.split(",") if n.strip()])
        except UsageError as exc:
            fail(exc)
        fmt = "json" if as_json else fmt
        if fmt == "table" and out_console.is_terminal:
            out_console.print(to_renderable(rows))
        elif fmt == "table":
            typer.echo(to_text(rows, out_console.width), nl=False)
        else:
            typer.echo({"json": to_json, "md": to_markdown}[fmt](rows), nl=False)


def chosen(rows: list[dict], names: list[str]) -> list[dict]:
    """The rows of ``names`` in the order given (all rows when none); an unknown name is a usage error."""
    from engine.errors import UsageError
    from engine.registry import did_you_mean
    if not names:
        return rows
    by_name = {row["name"]: row for row in rows}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UsageError(f"unknown method '{unknown[0]}'{did_you_mean(unknown[0], list(by_name))}; known: "
                         f"{', '.join(sorted(by_name))}")
    return [by_name[n] for n in dict.fromkeys(names)]
