"""Column widths of a ``DataTable`` measured as soon as it is filled, not on its next idle event."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable


def cell_width(cell: object) -> int:
    """Terminal cells that ``cell`` takes on one line (strings are markup, as DataTable reads them)."""
    text = cell if isinstance(cell, Text) else Text.from_markup(cell) if isinstance(cell, str) else Text(str(cell))
    return max((line.cell_len for line in text.split(allow_blank=True)), default=0)


def fit_widths(table: DataTable, squeeze: str | None = None, least: int = 12) -> None:
    """Size every auto-width column of ``table`` to its widest cell or label, now.

    DataTable measures rows added since its last idle event when its message queue next runs
    empty; a screen drawn before that shows the columns at their labels' widths with the cells
    cut (``fini``, ``0.90``: seen with textual 2.0 on a busy CI machine). Its measured widths
    also never shrink after ``clear()`` (textual issue #3449), so a long cell that has gone
    kept its column wide. Call this after filling the table.

    ``squeeze`` names a column that is narrowed (to ``least`` cells at most) when the table is
    wider than its visible width, so that the columns after it stay in view; its cells should be
    ``Text`` with ``overflow="ellipsis"`` to end with ``…`` where cut.
    """
    for column in table.columns.values():
        if column.auto_width or column.key == squeeze:
            widths = [cell_width(cell) for cell in table.get_column(column.key)]
            column.content_width = max([column.label.cell_len, *widths])
            column.auto_width = True
    if squeeze is not None and squeeze in table.columns:
        _squeeze(table, table.columns[squeeze], least)
    table.refresh()


def _squeeze(table: DataTable, column, least: int) -> None:
    visible = table.scrollable_content_region.width
    over = sum(c.get_render_width(table) for c in table.columns.values()) - visible
    if visible > 0 and over > 0:  # 0 before the first layout: the next fill (or a resize) squeezes
        column.auto_width = False  # DataTable's own measurement must not widen it again
        column.width = max(least, column.content_width - over)
