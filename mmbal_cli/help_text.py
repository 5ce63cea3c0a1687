"""Command descriptions as the terminal should wrap them.

Typer's rich help keeps the line breaks of every paragraph after the first, so a docstring wrapped
at 100 or 120 characters in the source showed as ragged lines on an 80-column terminal
(``pred_<m> and prob_<m>;`` alone at the end of one). Each paragraph is joined into one line here
and Rich wraps it to the terminal; lines that start a list item (``- ``) or are indented keep their
breaks.
"""

from __future__ import annotations

import inspect


def flowing(doc: str) -> str:
    """``doc`` with each paragraph's lines joined by spaces, except list items and indented lines."""
    paragraphs = []
    for paragraph in inspect.cleandoc(doc).split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line.startswith(("- ", " ")):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def flow_help(app) -> None:
    """Give every command of ``app`` (and of its groups) its docstring, flowing, as its help."""
    for info in app.registered_commands:
        doc = info.help or inspect.getdoc(info.callback)
        if doc:
            info.help = flowing(doc)
    for group in app.registered_groups:
        flow_help(group.typer_instance)
