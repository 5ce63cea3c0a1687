"""``mmbal methods``: every registered balancing method, as a table, JSON or the README's Markdown."""

from __future__ import annotations

from typing import Annotated

import typer

from ..output import fail, out_console


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Reference")
    def methods(fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | md (the README's table)")]
                = "table",
                as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False) -> None:
        """Every balancing method: what it does, its paper, the optimiser and per-step cost of that paper's
        training, its options, and what each live quantity (coef/<m>, score/<m>, method/...) means."""
        from engine.errors import UsageError
        from engine.registry import did_you_mean

        from ..methods_listing import FORMATS, method_rows, to_json, to_markdown, to_renderable, to_text
        try:
            if fmt not in FORMATS:
                raise UsageError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}{did_you_mean(fmt, FORMATS)}")
            if as_json and fmt not in ("table", "json"):
                raise UsageError(f"--json means --format json; it cannot be combined with --format {fmt}")
        except UsageError as exc:
            fail(exc)
        fmt = "json" if as_json else fmt
        rows = method_rows()
        if fmt == "table" and out_console.is_terminal:
            out_console.print(to_renderable(rows))
        elif fmt == "table":
            typer.echo(to_text(rows, out_console.width), nl=False)
        else:
            typer.echo({"json": to_json, "md": to_markdown}[fmt](rows), nl=False)
