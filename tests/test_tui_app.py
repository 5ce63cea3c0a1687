"""The dashboard under Textual's Pilot: keyboard navigation, the runs, compare and help screens."""

from pathlib import Path

from textual.widgets import TabbedContent

from mmbal_cli.tui.testing import settled as loaded
from mmbal_cli.tui.testing import shows
from mmbal_cli.tui.screens import CompareScreen, DashboardScreen, HelpScreen, RunsScreen
from mmbal_cli.tui.widgets import EventsTable

from tuitools import drive

FIXTURES = Path(__file__).parent / "fixtures" / "runs"
AUG = FIXTURES / "20250301-101500_avdigits-aug_k3f9a2x1"
JOINT = FIXTURES / "20250228-170000_nutrimouse-joint_a0b1c2d3"


def test_keyboard_navigation_between_tabs_and_axes():
    async def scenario(pilot, app):
        tabs = app.dashboard.query_one(TabbedContent)
        assert tabs.active == "tab-acc"
        await pilot.press("4")
        assert tabs.active == "tab-mi"
        await shows(pilot, app, "mi/audio;image")
        await pilot.press("right_square_bracket")
        assert tabs.active == "tab-shapley"
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert tabs.active == "tab-coef"
        await pilot.press("7")
        await shows(pilot, app, "method/loss_image")
        await pilot.press("8")
        await shows(pilot, app, "superseded by a resume")
        # 1 notice; 6 checkpoints, head_added, interrupted (superseded), resume, finished
        assert app.dashboard.query_one(EventsTable).row_count == 11
        assert "superseded by a resume" in app.export_text()
        await pilot.press("1", "x")
        await shows(pilot, app, "  epoch  ")
        assert app.dashboard.x_axis == "epoch" and "epoch" in app.export_text().splitlines()[-2]
        assert "val accuracy (s: show train)" in app.export_text()
        await pilot.press("s")
        await pilot.pause(0.05)
        assert app.dashboard.split == "train"
        await shows(pilot, app, "train accuracy (s: show val)")
        assert "test acc" in app.export_text().splitlines()[2]   # a finished run: its test scores in the header

    drive(scenario, AUG, FIXTURES, size=(120, 40))


def test_help_runs_screen_and_switching_runs():
    async def scenario(pilot, app):
        await pilot.press("question_mark")
        text = await shows(pilot, app, "compare the marked runs")
        assert isinstance(app.screen, HelpScreen) and "weakest modality" in text
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("r")
        text = await shows(pilot, app, "quick-mcr")
        assert isinstance(app.screen, RunsScreen)
        assert "quick-mcr" in text and "stale" in text and "nutrimouse-joint" in text
        # newest first: quick-mcr, avdigits-aug (current), nutrimouse-joint
        await pilot.press("down", "enter")
        await pilot.pause(0.1)
        assert isinstance(app.screen, DashboardScreen)
        assert app.dashboard.model.run_dir == JOINT.resolve()
        await loaded(pilot, app)
        assert "nutrimouse-joint" in (await shows(pilot, app, "a0b1c2d3")).splitlines()[0]
        await pilot.press("7")  # a joint run has no method quantities: the tab says so
        await shows(pilot, app, "this method logs no method/... or score/... values")

    drive(scenario, AUG, FIXTURES, size=(120, 40))


def test_compare_marked_runs():
    async def scenario(pilot, app):
        await pilot.press("r")
        await pilot.pause(0.1)
        await pilot.press("c")
        assert isinstance(app.screen, RunsScreen)  # nothing marked yet: a hint, no compare
        await pilot.press("space", "down", "space", "c")
        await pilot.pause(0.1)
        assert isinstance(app.screen, CompareScreen)
        while not all(m.loaded for m in app.screen.models):
            await pilot.pause(0.05)
        text = await shows(pilot, app, "nutrimouse-joint (a0b1c2d3)")
        # the cursor starts on the watched run: avdigits-aug and the one below it are marked
        assert "compare val/acc/fused" in text and "nutrimouse-joint (a0b1c2d3)" in text
        assert "avdigits-aug (k3f9a2x1)" in text and "quick-mcr" not in text
        assert app.screen.metric == "val/acc/fused"
        await pilot.press("m")
        assert app.screen.metric == "val/f1/fused"
        await pilot.press("M", "M")
        assert app.screen.metric == app.screen.metrics()[-1]
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, DashboardScreen)

    drive(scenario, AUG, FIXTURES, size=(120, 40))


def test_six_modalities_and_fused_all_show_in_the_compact_panel_at_80x24(tmp_path):
    from engine.run import NullReporter, start_run
    from runtools import tiny_preset
    names = ["m1", "m2", "m3", "m4", "m5", "m6"]
    preset = tmp_path / "six.toml"
    preset.write_text(tiny_preset(epochs=1, data={"synthetic": {"modalities": names, "dims": [4] * 6,
                                                                "unique": [1.0] * 6, "noise": [0.5] * 6}}))
    run = start_run(preset, runs_dir=tmp_path / "runs", reporter=NullReporter())

    async def scenario(pilot, app):
        rows = [line.split()[0] for line in app.export_text().splitlines()[2:12] if line.strip()]
        assert [r for r in rows if r in (*names, "fused")] == [*names, "fused"]
        await pilot.resize_terminal(120, 40)   # the full layout: the stylesheet's cap again
        await pilot.pause(0.1)
        assert app.dashboard.query_one("#modalities").styles.max_height.value == 12

    drive(scenario, run.run_dir, tmp_path / "runs", size=(80, 24))


def test_table_columns_fit_their_cells_at_once_and_shrink_when_long_cells_go():
    """fit_widths sizes auto-width columns from the cells now (not on DataTable's next idle event),
    to the widest cell or label, also narrower than before after a clear()."""
    import asyncio

    from rich.text import Text
    from textual.app import App
    from textual.widgets import DataTable

    from mmbal_cli.tui.widgets import fit_widths

    async def scenario():
        app = App()
        async with app.run_test(size=(80, 10)):
            table = DataTable()
            await app.mount(table)
            table.add_column("name", key="name")
            table.add_column("n", key="n", width=3)
            table.add_row(Text("a-rather-long-run-name"), "1")
            fit_widths(table)  # no await between: no idle event could have measured the row
            long = (table.columns["name"].content_width, table.columns["n"].get_render_width(table))
            table.clear()
            table.add_row("[b]short[/b]", "2")
            fit_widths(table)
            return long, table.columns["name"].content_width

    (long, fixed), short = asyncio.run(scenario())
    assert long == len("a-rather-long-run-name") and fixed == 3 + 2  # a fixed width is left alone
    assert short == len("short")  # markup is not counted


def test_runs_screen_cuts_a_long_name_with_an_ellipsis_to_keep_the_last_column_in_view(tmp_path):
    """At 100 columns the runs of a long name (advice members) pushed the last column (``created``, now
    ``age``) off the screen; the name column now gives way (down to 24 cells, ``…`` where cut) and
    follows a resize. The row shows epochs done of planned and the selected validation score, as ls."""
    import re
    import json
    import shutil

    runs = tmp_path / "runs"
    runs.mkdir()
    long_name = "bc-advice-r5-unimodal-modality=worst-s2"
    for fixture in (AUG, JOINT):
        shutil.copytree(fixture, runs / fixture.name)
    info_path = runs / JOINT.name / "run.json"
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "name": long_name}))

    async def scenario(pilot, app):
        await pilot.press("r")
        text = await shows(pilot, app, "age")
        line = next(row for row in text.splitlines() if "a0b1c2d3" in row)
        assert "bc-advice-r5-unimodal-m" in line and "… " in line and long_name not in line and len(line) <= 100
        assert re.search(r"finished +3 +- +nutrimouse +\d+w *$", line), line
        aug = next(row for row in text.splitlines() if "k3f9a2x1" in row)
        assert re.search(r"finished +6 +0\.8748 +avdigits +\d+w *$", aug), aug
        await pilot.resize_terminal(160, 40)
        text = await shows(pilot, app, long_name)
        assert re.search(r"nutrimouse +\d+w *$", next(row for row in text.splitlines() if long_name in row))

    drive(scenario, runs / AUG.name, runs, size=(100, 40))
