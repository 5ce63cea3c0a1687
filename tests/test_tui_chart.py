"""The braille line chart: dot placement, decimation that keeps spikes, gaps, markers, legend."""

import pytest

from mmbal_cli.tui.chart import (
    ChartData,
    Marker,
    Series,
    _Canvas,
    _columns,
    caption_lines,
    data_ranges,
    legend,
    render_chart,
)
from mmbal_cli.tui.formatting import fmt_number

BRAILLE = range(0x2800, 0x2900)


def _label_width(lines):
    return lines[0].plain.index("┤")


def _plot_rows(lines, label_w):
    """The plot cells of each plot row (label column and axis glyph stripped)."""
    return [line.plain[label_w + 1:] for line in lines]


def test_canvas_sets_the_braille_bit_of_each_dot():
    canvas = _Canvas(2, 1)
    canvas.dot(0, 0, "red")   # top-left dot of cell 0: bit 0x01
    canvas.dot(1, 3, "red")   # bottom-right dot of cell 0: bit 0x80
    canvas.dot(2, 1, "blue")  # second row, left column of cell 1: bit 0x02
    assert canvas.bits == [[0x81, 0x02]]
    assert canvas.styles == [["red", "blue"]]
    canvas.dot(9, 9, "x")  # outside: ignored
    assert canvas.bits == [[0x81, 0x02]]


def test_columns_reduce_to_min_max_first_last_and_break_at_gaps():
    points = [(0, 5.0), (0.1, 1.0), (0.2, 9.0), (0.3, 4.0), (1, None), (2, 3.0)]
    cols = _columns(points, to_px=lambda x: int(x), to_py=lambda y: int(y))
    assert cols == [(0, 5, 1, 9, 4), None, (2, 3, 3, 3, 3)]


def test_rising_line_goes_from_bottom_left_to_top_right():
    data = ChartData([Series("a", [(0, 0.0), (10, 1.0)])])
    lines = render_chart(data, width=30, height=10, with_legend=False)
    assert len(lines) == 10
    assert all(line.cell_len <= 30 for line in lines)
    label_w = _label_width(lines)
    plot = _plot_rows(lines[:8], label_w)
    assert ord(plot[-1][0]) in BRAILLE and plot[0][0] == " "      # starts bottom left
    assert ord(plot[0][-1]) in BRAILLE and plot[-1][-1] == " "    # ends top right
    assert lines[0].plain.startswith(" 1.040┤")                   # y range padded by 4 %
    assert lines[8].plain.lstrip().startswith("└")
    assert lines[9].plain.split() == ["0", "step", "10"]


def test_a_single_spike_among_many_points_survives_decimation():
    points = [(float(i), 0.0) for i in range(2000)]
    points[1234] = (1234.0, 1.0)
    lines = render_chart(ChartData([Series("a", points)]), width=40, height=8, with_legend=False)
    top = lines[0].plain
    assert any(ord(ch) in BRAILLE for ch in top), "the spike must reach the top row"


def test_none_values_leave_a_gap():
    points = [(float(i), 1.0 if i % 2 else 0.0) for i in range(10)] + [(float(i), None) for i in range(10, 30)]
    points += [(float(i), 0.5) for i in range(30, 40)]
    lines = render_chart(ChartData([Series("a", points)]), width=44, height=8, with_legend=False)
    label_w = _label_width(lines)
    plot = _plot_rows(lines[:6], label_w)
    middle = [row[len(row) // 2] for row in plot]
    assert middle == [" "] * 6


def test_markers_sit_on_the_axis_and_rules_only_in_empty_cells():
    data = ChartData([Series("a", [(0, 0.0), (100, 0.0)])],
                     markers=[Marker(50, "R", rule=True, priority=5), Marker(50, "c", priority=1),
                              Marker(100, "c"), Marker(500, "H", rule=True)])
    lines = render_chart(data, width=40, height=8, with_legend=False)
    label_w = _label_width(lines)
    axis = lines[-2].plain[label_w + 1:]
    assert axis.count("R") == 1 and axis.count("c") == 1 and "H" not in axis  # H is outside the x range
    col = axis.index("R")
    assert axis.endswith("c")
    rows = _plot_rows(lines[:-2], label_w)
    assert all(row[col] in ("┆",) or ord(row[col]) in BRAILLE for row in rows)
    assert sum(row[col] == "┆" for row in rows) >= len(rows) - 1


def test_legend_lists_latest_values_and_marker_meanings_wrapped():
    series = [Series("fused", [(0, 0.5), (1, 0.874)]), Series("audio", [(0, 0.2), (1, None)])]
    lines = legend(series, width=24, marks=[("R", "resume")])
    text = [line.plain for line in lines]
    assert text == ["■ fused 0.874", "■ audio 0.200  R resume"]


def test_y_padding_stays_inside_the_bounds():
    series = [Series("acc", [(0, 0.5), (1, 1.0)])]
    assert data_ranges(series)[1] == pytest.approx((0.48, 1.02))
    assert data_ranges(series, (0.0, 1.0))[1] == pytest.approx((0.48, 1.0))
    outside = data_ranges([Series("x", [(0, 2.0), (1, 3.0)])], (0.0, 1.0))[1]
    assert outside == pytest.approx((1.96, 3.04))  # data outside the bounds: padded as usual


def test_empty_chart_shows_its_message():
    lines = render_chart(ChartData([], empty_message="no mi/<m> values"), width=40, height=6)
    assert lines[0].plain == "no mi/<m> values" and len(lines) == 6
    assert data_ranges([Series("a", [(0, None)])]) is None


def test_fmt_number():
    assert fmt_number(None) == "-"
    assert fmt_number(float("nan")) == "-"
    assert fmt_number(0.87412) == "0.874"
    assert fmt_number(0.0) == "0.000"
    assert fmt_number(1.5e-4) == "1.5e-4"
    assert fmt_number(123.456) == "123.5"
    assert fmt_number(-2.5e6) == "-2.5e6"
    # never wider than the panel's 7-character columns, negative values included
    assert fmt_number(-9.6e-5) == "-9.6e-5" and fmt_number(-12345.6) == "-1.2e4" and fmt_number(-1.04e-12) == "-1e-12"
    for value in (-9.6e-5, -1e-12, -1.2e-100, -99999.9, -12345.678, 1e300, -1e300, -0.0009999, 99.9996, -99.9996):
        assert len(fmt_number(value)) <= 7, (value, fmt_number(value))


def test_caption_wraps_at_words_and_the_last_allowed_line_ends_with_an_ellipsis():
    text = "score/<m>: permutation importance of each modality over the unpermuted accuracy"
    two = [line.plain for line in caption_lines(text, 40, 2)]
    assert two == ["score/<m>: permutation importance of", "each modality over the unpermuted accur…"]
    assert [line.plain for line in caption_lines(text, 100, 2)] == [text]
    assert caption_lines("", 40, 2) == [] and caption_lines(text, 40, 0) == []


def test_caption_goes_above_the_legend_in_two_lines_only_when_the_chart_is_tall():
    data = ChartData([Series("score/a", [(0, 0.0), (10, 1.0)])], caption="what it means " * 6)
    tall = render_chart(data, width=40, height=12)
    assert len(tall) == 12 and tall[0].plain.startswith("what it means") and tall[1].plain.endswith("…")
    assert tall[2].plain.startswith("■ score/a")
    short = render_chart(data, width=40, height=8)
    assert len(short) == 8 and short[0].plain.endswith("…") and short[1].plain.startswith("■ score/a")
    assert render_chart(data, width=40, height=5)[0].plain.startswith("■ score/a")  # no room: legend only


def _flat_series_rows(patterns):
    """Three flat series far apart: which plot cells each one's row has drawn."""
    series = [Series(name, [(x, y) for x in range(50)]) for name, y in (("a", 0.9), ("b", 0.5), ("c", 0.1))]
    lines = render_chart(ChartData(series=series, y_bounds=(0.0, 1.0)), 60, 16, with_legend=False,
                         patterns=patterns)
    rows = _plot_rows(lines[:-2], lines[0].plain.index("┤"))
    drawn = [[ord(ch) in BRAILLE for ch in row] for row in rows]
    return [row for row in drawn if any(row)]


def test_without_colour_the_lines_differ_in_pattern_not_only_in_shade(monkeypatch):
    solid, dashed, dotted = _flat_series_rows(patterns=True)
    assert all(solid)
    gaps = [i for i, on in enumerate(dashed) if not on]
    assert gaps and len(gaps) < len(dashed) / 2          # dashes: mostly drawn, with gaps
    assert sum(dotted) < sum(dashed) < len(solid)          # dots: sparser still
    assert all(all(row) for row in _flat_series_rows(patterns=False))
    monkeypatch.setenv("NO_COLOR", "1")
    assert _flat_series_rows(patterns=None)[1] == dashed   # NO_COLOR turns the patterns on by default


def test_without_colour_the_legend_draws_each_line_pattern():
    series = [Series(name, [(0, 0.5)]) for name in ("fused", "audio", "video")]
    keys = [entry.split()[0] for entry in legend(series, 80, patterns=True)[0].plain.split("  ")]
    assert keys == ["━━", "╍╍", "┈┈"]
    assert legend(series, 80)[0].plain.startswith("■ fused")


def test_markers_too_dense_to_tell_apart_are_left_off_axis_and_legend():
    # a checkpoint every epoch of 400 crowds a 40-column axis; the one resume and the sparse stages stay
    markers = [Marker(float(e), "c", priority=1) for e in range(1, 401)]
    markers += [Marker(200.0, "R", rule=True, priority=5), Marker(100.0, "*", priority=2), Marker(300.0, "*", priority=2)]
    data = ChartData([Series("a", [(0, 0.0), (400, 1.0)])], markers=markers,
                     marker_legend=[("R", "resume"), ("*", "other event"), ("c", "checkpoint")])
    lines = render_chart(data, width=48, height=10)
    axis = lines[-2].plain.split("└")[1]
    assert "c" not in axis and axis.count("R") == 1 and axis.count("*") == 2
    text = "\n".join(line.plain for line in lines[:-2])
    assert "R resume" in text and "* other event" in text and "checkpoint" not in text
    # the same checkpoints a few to the axis (a run of 4 epochs) are drawn, with their legend entry
    few = ChartData([Series("a", [(0, 0.0), (4, 1.0)])], markers=[Marker(float(e), "c", priority=1) for e in range(1, 5)],
                    marker_legend=[("c", "checkpoint")])
    lines = render_chart(few, width=48, height=10)
    assert lines[-2].plain.split("└")[1].count("c") == 4
    assert any("c checkpoint" in line.plain for line in lines)
