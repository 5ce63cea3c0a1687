"""``mmbal watch --once``: the dashboard's content as one Rich renderable, printed and done.

For scripts, logs and ``watch -n 5``: identity and state, progress, the per-modality panel with
what its ``coef`` means for the run's method, the method's ``score/`` and ``method/`` values with
what each means (from the method's registration, as the dashboard's captions), the accuracy chart,
test accuracy when there is one, notices and the events so far. It reads the run
through the same :class:`~mmbal_cli.tui.model.RunModel` as the live dashboard.
"""

from __future__ import annotations

from collections import Counter

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .chart import render_chart
from .model import RunModel
from .text import (
    coef_legend,
    identity_text,
    live_table,
    notice_text,
    panel_cells,
    panel_headers,
    position_text,
    test_text,
    times_text,
)

CHART_HEIGHT = 12


def _progress(model: RunModel, width: int) -> RenderableType:
    line = Table.grid(padding=(0, 2))
    line.add_column()
    line.add_column(width=max(min(width - 70, 30), 10))
    line.add_column()
    progress = model.progress
    bar = ProgressBar(total=1.0, completed=progress or 0.0) if progress is not None else Text("")
    pct = Text(f"{progress * 100:3.0f}%  ") if progress is not None else Text("")
    line.add_row(position_text(model), bar, pct + times_text(model))
    return line


def _panel(model: RunModel) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1))
    for i, header in enumerate(panel_headers()):
        table.add_column(header, justify="left" if i == 0 else "right", header_style="dim")
    for row in model.modality_rows():
        table.add_row(*panel_cells(row))
    return table


def _events(model: RunModel) -> Text | None:
    rows = [r for r in model.event_rows() if not r.superseded]
    if not rows:
        return None
    counts = Counter(r.name for r in rows)
    text = Text("events  ", style="dim")
    text.append("  ".join(f"{name} x{n}" if n > 1 else name for name, n in counts.items()))
    special = [r for r in rows if r.name not in ("checkpoint", "finished")]
    for r in special[-6:]:
        text.append(f"\n  step {r.step}  {r.name}" + (f"  {r.details}" if r.details else ""))
    return text


def render_snapshot(model: RunModel, width: int = 100) -> Group:
    """Everything ``--once`` prints, laid out for ``width`` columns."""
    parts: list[RenderableType] = [identity_text(model), _progress(model, width)]
    parts.extend(notice_text(n) for n in model.notices())
    parts.append(Text())
    parts.append(_panel(model))
    parts.extend(coef_legend(model, width, max_lines=3))
    test = test_text(model)
    if test is not None:
        parts.append(test)
    live = live_table(model)
    if live is not None:
        parts.append(Text())
        parts.append(Text(f"method {model.method}: its values and what they mean", style="bold"))
        parts.append(live)
    chart = model.chart("acc")
    if chart.series:
        parts.append(Text())
        split = model.accuracy_split()
        parts.append(Text(f"{split} accuracy by step", style="bold"))
        chart.caption = ""  # the dashboard's caption names its `s` key, which a snapshot does not have
        parts.extend(render_chart(chart, min(width, 100), CHART_HEIGHT))
    events = _events(model)
    if events is not None:
        parts.append(Text())
        parts.append(events)
    return Group(*parts)
