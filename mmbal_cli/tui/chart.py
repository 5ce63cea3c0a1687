"""A small braille line chart rendered as Rich ``Text`` lines (used by the dashboard and ``--once``).

No plotting library is needed: each terminal cell holds a 2x4 braille dot grid (U+2800..U+28FF), so
a W x H cell plot has 2W x 4H points. Long series are reduced per pixel column to their min, max,
first and last value before drawing (a deterministic min/max decimation, so a spike is never lost,
unlike TensorBoard's reservoir sampling). A ``None`` value (non-finite in the
log) breaks the line. Event markers go on the x axis (and, for the important ones, as a faint
vertical rule through empty cells), except a kind too frequent to tell apart (a checkpoint every
epoch of a long run: :func:`sparse_markers`); the legend names each line with its latest value, so the
chart stays readable without colour (``NO_COLOR``). An optional caption above the legend says what
the plotted quantity means (a method's ``score/<m>``, for one).

Without colour (``NO_COLOR`` set, https://no-color.org) the lines differ in pattern as well: the
first solid, the next dashed, dotted and dash-dotted (:data:`PATTERNS`), each legend entry drawn
with its line's pattern, so three series are not three shades of grey.
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass, field
from typing import Sequence

from rich.text import Text

from .formatting import fmt_number

Point = tuple[float, float | None]

PALETTE = ("#4ec9b0", "#e5c07b", "#61afef", "#e06c75", "#c678dd", "#98c379", "#d19a66", "#56b6c2")
# (legend sample, which pixel columns of a period are drawn): solid, dashed, dotted, dash-dot
PATTERNS = (("━━", None), ("╍╍", (6, {0, 1, 2, 3})), ("┈┈", (4, {0})), ("━╸", (8, {0, 1, 2, 3, 5})))
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # [row in cell][column in cell]


@dataclass
class Series:
    """One line: ``points`` are ``(x, y)`` sorted by x, ``y`` None for a gap."""

    name: str
    points: list[Point]
    style: str = ""

    def last_value(self) -> float | None:
        return next((y for _, y in reversed(self.points) if y is not None), None)


@dataclass(frozen=True)
class Marker:
    """An event at ``x``: ``symbol`` drawn on the x axis; ``rule`` adds a faint vertical line."""

    x: float
    symbol: str
    rule: bool = False
    priority: int = 0


@dataclass
class ChartData:
    """What one chart shows; ``x_label`` names the x axis (step or epoch); ``caption`` (optional)
    what the plotted quantity means, drawn above the legend."""

    series: list[Series] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    x_label: str = "step"
    empty_message: str = "no data yet"
    marker_legend: list[tuple[str, str]] = field(default_factory=list)
    y_bounds: tuple[float, float] | None = None  # the padding never crosses these (accuracy: 0..1)
    caption: str = ""


def _finite_range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.05 or 0.5
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.04
    return lo - pad, hi + pad


def data_ranges(series: Sequence[Series], y_bounds: tuple[float, float] | None = None
                ) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The x and y ranges covering every finite point, or None when there is none; the y padding
    stays inside ``y_bounds`` when the data do."""
    xs = [x for s in series for x, y in s.points if y is not None]
    ys = [y for s in series for _, y in s.points if y is not None]
    if not xs:
        return None
    x0, x1 = min(xs), max(xs)
    if x1 <= x0:   # one x value: whole steps or epochs either side of it, not 24.50 .. 25.50
        pad = 1.0 if float(x0).is_integer() else 0.5
        x0, x1 = x0 - pad, x1 + pad
    y0, y1 = _finite_range(ys)
    if y_bounds is not None:
        if min(ys) >= y_bounds[0]:
            y0 = max(y0, y_bounds[0])
        if max(ys) <= y_bounds[1]:
            y1 = min(y1, y_bounds[1])
        if y1 <= y0:  # every value on a bound
            y0, y1 = _finite_range(ys)
    return (x0, x1), (y0, y1)


def monochrome() -> bool:
    """Whether the user asked for no colour (``NO_COLOR`` present and not empty, as no-color.org says)."""
    return bool(os.environ.get("NO_COLOR"))


class _Canvas:
    """Braille dots per cell plus the style of the series that drew last in each cell; ``pattern``
    (period, drawn columns) leaves out the pixel columns of a dashed or dotted line."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.bits = [[0] * width for _ in range(height)]
        self.styles: list[list[str]] = [[""] * width for _ in range(height)]
        self.pattern: tuple[int, set[int]] | None = None

    def dot(self, px: int, py: int, style: str) -> None:
        cx, cy = px >> 1, py >> 2
        if self.pattern is not None and px % self.pattern[0] not in self.pattern[1]:
            return
        if 0 <= cx < self.width and 0 <= cy < self.height:
            self.bits[cy][cx] |= _DOTS[py & 3][px & 1]
            self.styles[cy][cx] = style

    def vline(self, px: int, y_a: int, y_b: int, style: str) -> None:
        for py in range(min(y_a, y_b), max(y_a, y_b) + 1):
            self.dot(px, py, style)

    def line(self, a: tuple[int, int], b: tuple[int, int], style: str) -> None:
        (x0, y0), (x1, y1) = a, b
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.dot(x0, y0, style)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy


def _columns(points: list[Point], to_px, to_py):
    """Per pixel column: (px, first_py, min_py, max_py, last_py); None entries mark gaps."""
    out: list[tuple[int, int, int, int, int] | None] = []
    current: list[int] | None = None
    for x, y in points:
        if y is None or not math.isfinite(y):
            if current is not None:
                out.append(tuple(current))
                current = None
            out.append(None)
            continue
        px, py = to_px(x), to_py(y)
        if current is not None and current[0] == px:
            current[2], current[3], current[4] = min(current[2], py), max(current[3], py), py
        else:
            if current is not None:
                out.append(tuple(current))
            current = [px, py, py, py, py]
    if current is not None:
        out.append(tuple(current))
    return out


def _draw_series(canvas: _Canvas, points: list[Point], style: str, to_px, to_py) -> None:
    previous = None
    for col in _columns(points, to_px, to_py):
        if col is None:
            previous = None
            continue
        px, first, lo, hi, last = col
        if previous is not None:
            canvas.line(previous, (px, first), style)
        canvas.vline(px, lo, hi, style)
        previous = (px, last)


def legend(series: Sequence[Series], width: int, marks: Sequence[tuple[str, str]] = (),
           patterns: bool = False) -> list[Text]:
    """Lines of ``■ name value`` entries (``━━ name``, ``╍╍ name``... with ``patterns``), then
    ``R resume``-style marker keys, wrapped to ``width``."""
    lines: list[Text] = []
    line = Text()
    keys = [PATTERNS[i % len(PATTERNS)][0] if patterns else "■" for i in range(len(series))]
    entries = [Text.assemble((f"{key} ", s.style), (s.name, "bold"), f" {fmt_number(s.last_value())}")
               for key, s in zip(keys, series)]
    entries += [Text.assemble((symbol, "bold"), (f" {meaning}", "dim")) for symbol, meaning in marks]
    for entry in entries:
        if line.cell_len and line.cell_len + 2 + entry.cell_len > width:
            lines.append(line)
            line = Text()
        if line.cell_len:
            line.append("  ")
        line.append_text(entry)
    if line.cell_len:
        lines.append(line)
    return lines


def caption_lines(caption: str, width: int, max_lines: int) -> list[Text]:
    """``caption`` wrapped at words to ``width``, at most ``max_lines`` lines, the last cut with "…"."""
    if not caption or max_lines <= 0:
        return []
    lines = textwrap.wrap(caption, width) or [""]
    if len(lines) > max_lines:
        rest = " ".join(lines[max_lines - 1:])
        lines = lines[:max_lines - 1] + [rest[:width - 1].rstrip() + "…"]
    return [Text(line, style="italic") for line in lines]


def render_chart(data: ChartData, width: int, height: int, with_legend: bool = True,
                 patterns: bool | None = None) -> list[Text]:
    """The chart as ``height`` lines of at most ``width`` cells (caption, legend, plot, axis, x
    labels); the caption takes two lines when the chart has ten or more, else one. ``patterns``
    (default: :func:`monochrome`) draws the lines solid, dashed, dotted... as well as in colour."""
    width, height = max(width, 12), max(height, 4)
    patterns = monochrome() if patterns is None else patterns
    ranges = data_ranges(data.series, data.y_bounds)
    if ranges is None:
        return ([Text(data.empty_message, style="dim")] + [Text()] * height)[:height]
    (x0, x1), (y0, y1) = ranges
    labels = [fmt_number(y1), fmt_number((y0 + y1) / 2), fmt_number(y0)]
    label_w = max(len(t) for t in labels)
    plot_w = width - label_w - 1
    inside = sparse_markers([m for m in data.markers if x0 <= m.x <= x1], x0, x1, plot_w)
    drawn = {m.symbol for m in inside}
    top = caption_lines(data.caption, width, 2 if height >= 10 else 1) if with_legend and height >= 6 else []
    top += legend(data.series, width, [(s, t) for s, t in data.marker_legend if s in drawn],
                  patterns)[: max(height - 4 - len(top), 0)] if with_legend else []
    plot_h = max(height - len(top) - 2, 1)
    canvas = _Canvas(plot_w, plot_h)
    pw, ph = plot_w * 2, plot_h * 4

    def to_px(x: float) -> int:
        return min(pw - 1, max(0, round((x - x0) / (x1 - x0) * (pw - 1))))

    def to_py(y: float) -> int:
        return min(ph - 1, max(0, round((y1 - y) / (y1 - y0) * (ph - 1))))

    for i, s in enumerate(data.series):
        canvas.pattern = PATTERNS[i % len(PATTERNS)][1] if patterns else None
        _draw_series(canvas, s.points, s.style, to_px, to_py)
    axis = _axis_row(inside, plot_w, lambda x: to_px(x) >> 1)
    rules = {to_px(m.x) >> 1 for m in inside if m.rule}
    lines = list(top)
    for row in range(plot_h):
        label = labels[0] if row == 0 else labels[2] if row == plot_h - 1 else (
            labels[1] if plot_h >= 5 and row == plot_h // 2 else "")
        line = Text(label.rjust(label_w) + "┤" if label else " " * label_w + "│", style="dim")
        for col in range(plot_w):
            bits = canvas.bits[row][col]
            if bits:
                line.append(chr(0x2800 + bits), canvas.styles[row][col])
            elif col in rules:
                line.append("┆", "dim")
            else:
                line.append(" ")
        lines.append(line)
    lines.append(Text(" " * label_w + "└", style="dim") + axis)
    lines.append(_x_labels(x0, x1, data.x_label, label_w, plot_w))
    return lines[:height]


DENSE_MARKER_SPACING = 6   # columns: a symbol marked more often than this apart on average is left off


def sparse_markers(markers: Sequence[Marker], x0: float, x1: float, plot_w: int) -> list[Marker]:
    """``markers`` without the symbols that would crowd the axis: a symbol without a rule whose markers
    fall in more than one column in :data:`DENSE_MARKER_SPACING` (a checkpoint every epoch of a long
    run) marks nearly every column and says nothing there, so it is left off the axis and the legend
    (the Events tab still lists each one). Symbols with a rule (resume, stage) are always drawn."""
    span = (x1 - x0) or 1.0
    columns: dict[str, set[int]] = {}
    for m in markers:
        if not m.rule:
            columns.setdefault(m.symbol, set()).add(round((m.x - x0) / span * (plot_w - 1)))
    crowded = {s for s, cols in columns.items() if len(cols) * DENSE_MARKER_SPACING > plot_w}
    return [m for m in markers if m.symbol not in crowded]


def _axis_row(markers: Sequence[Marker], plot_w: int, to_col) -> Text:
    cells: list[tuple[int, Marker] | None] = [None] * plot_w
    for m in markers:
        col = to_col(m.x)
        if 0 <= col < plot_w and (cells[col] is None or m.priority >= cells[col][0]):
            cells[col] = (m.priority, m)
    row = Text()
    for cell in cells:
        if cell is None:
            row.append("─", "dim")
        else:
            row.append(cell[1].symbol, "bold" if cell[1].rule else "dim")
    return row


def _fmt_x(x: float) -> str:
    return str(int(round(x))) if abs(x - round(x)) < 1e-9 or abs(x) >= 100 else f"{x:.2f}"


def _x_labels(x0: float, x1: float, name: str, label_w: int, plot_w: int) -> Text:
    left, right = _fmt_x(x0), _fmt_x(x1)
    middle = name
    gap = plot_w - len(left) - len(right)
    if gap < len(middle) + 2:
        middle = ""
    pad_left = max((gap - len(middle)) // 2, 1)
    pad_right = max(gap - len(middle) - pad_left, 1)
    return Text(" " * (label_w + 1) + left + " " * pad_left + middle + " " * pad_right + right, style="dim")
