"""What ``mmbal methods`` prints, in its three formats, from the method registry alone.

Every fact comes from a method's registration (:class:`engine.methods.MethodInfo` and its options
dataclass): name, one-line help, paper, the optimiser its paper used, the per-step cost, the
options and the live quantities with their meaning. ``table`` is for a terminal (Rich renderables
built from ``Text``, so that no help string is ever read as Rich markup: ``[modalities]`` stays
text), ``json`` for scripts, ``md`` the table of the README (between its ``methods`` markers).
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "json", "md")
NO_PAPER = "(mmbal baseline)"


def method_rows() -> list[dict[str, Any]]:
    """One dict per registered method, in registration order (the JSON output)."""
    from engine.methods import METHODS
    from engine.schema import describe

    rows = []
    for entry in METHODS.entries():
        info = entry.info
        rows.append({
            "name": entry.name,
            "help": entry.help,
            "paper": info.paper,
            "optimizer": info.optimizer,
            "cost": info.cost,
            "params": [{"name": n, "type": t, "default": d, "help": h} for n, t, d, h in describe(entry.config)],
            "live": [{"name": pattern, "meaning": meaning} for pattern, meaning in info.live.items()],
            "tune": {option: list(values) for option, values in info.tune.items()},
        })
    return rows


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, default=str) + "\n"


def _md_cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """The methods as one Markdown table: name, what it does, paper, optimiser, cost per step."""
    lines = ["| method | what it does | paper | optimiser | cost per step |", "|---|---|---|---|---|"]
    for row in rows:
        cells = [f"`{row['name']}`", _md_cell(row["help"]), _md_cell(row["paper"] or NO_PAPER),
                 _md_cell(row["optimizer"]), _md_cell(row["cost"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _facts(row: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(ratio=1, overflow="fold")
    grid.add_row(Text("paper"), Text(row["paper"] or NO_PAPER))
    grid.add_row(Text("optimiser"), Text(row["optimizer"]))
    grid.add_row(Text("cost/step"), Text(row["cost"]))
    if row.get("tune"):
        tried = "; ".join(f"{option} {', '.join(map(repr, values))}" for option, values in row["tune"].items())
        grid.add_row(Text("sensitive"), Text(f"{tried} (what `mmbal advise` tries besides the defaults)"))
    return grid


def _options(row: dict[str, Any]) -> list[RenderableType]:
    """Each option as ``name  type  default ...`` with its help wrapped below it (no columns that a
    narrow terminal could squeeze)."""
    if not row["params"]:
        return [Text("options    none", style="dim")]
    out: list[RenderableType] = [Text("options", style="dim")]
    for p in row["params"]:
        out.append(Padding(Text.assemble((p["name"], "bold"), "  ", (p["type"], "cyan"), "  ",
                                         ("default ", "dim"), repr(p["default"])), (0, 0, 0, 2), expand=False))
        if p["help"]:
            out.append(Padding(Text(p["help"]), (0, 0, 0, 6), expand=False))
    return out


def _live(row: dict[str, Any]) -> list[RenderableType]:
    if not row["live"]:
        return [Text("live       none", style="dim")]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True, min_width=max(len(q["name"]) for q in row["live"]))
    grid.add_column(ratio=1, min_width=24, overflow="fold")
    for q in row["live"]:
        grid.add_row(Text(q["name"], style="bold"), Text(q["meaning"]))
    return [Text("live quantities (<m>: each modality)", style="dim"), Padding(grid, (0, 0, 0, 2), expand=False)]


def to_renderable(rows: list[dict[str, Any]]) -> Group:
    """The terminal listing: per method its name and help, facts, options and live quantities."""
    parts: list[RenderableType] = []
    for i, row in enumerate(rows):
        if i:
            parts.append(Text())
        heading = Table.grid(padding=(0, 2))
        heading.add_column(no_wrap=True)
        heading.add_column(ratio=1)
        heading.add_row(Text(row["name"], style="bold magenta"), Text(row["help"]))
        body = [_facts(row), *_options(row), *_live(row)]
        parts.extend([heading, Padding(Group(*body), (0, 0, 0, 2), expand=False)])
    return Group(*parts)


def to_text(rows: list[dict[str, Any]], width: int) -> str:
    """The terminal listing as plain text laid out for ``width`` columns (for a pipe or a file:
    no colours, no trailing blanks)."""
    from rich.console import Console

    console = Console(width=width, color_system=None, highlight=False, force_terminal=False)
    with console.capture() as capture:
        console.print(to_renderable(rows))
    return "\n".join(line.rstrip() for line in capture.get().splitlines()) + "\n"
