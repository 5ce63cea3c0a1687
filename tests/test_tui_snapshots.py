"""Text snapshots of the dashboard at 80x24 (SSH minimum, compact layout) and 120x40 on fixture runs.

The expected screens are plain text in ``tests/fixtures/tui_snapshots/`` (what ``tmux capture-pane
-p`` would show), compared line by line so that a failure prints a readable diff; colours are not
compared. The clock is frozen, so elapsed times and heartbeat ages are fixed. After an intended
change of the layout, rewrite them with ``MMBAL_UPDATE_SNAPSHOTS=1 pytest tests/test_tui_snapshots.py``
and review the diff.
"""

import asyncio
import difflib
import os
import time
from pathlib import Path

import pytest

from mmbal_cli.tui.app import DashboardApp
from mmbal_cli.tui.screens import CompareScreen
from mmbal_cli.tui.testing import stable

FIXTURES = Path(__file__).parent / "fixtures" / "runs"
SNAPSHOTS = Path(__file__).parent / "fixtures" / "tui_snapshots"
AUG = FIXTURES / "20250301-101500_avdigits-aug_k3f9a2x1"
MCR = FIXTURES / "20250302-090000_quick-mcr_p7q2m4zz"
JOINT = FIXTURES / "20250228-170000_nutrimouse-joint_a0b1c2d3"
FROZEN = 1740823200.0 + 86400 + 40.5 + 7200  # two hours after the MCR fixture's last heartbeat

CASES = {
    "aug_120x40": (AUG, (120, 40), []),
    "aug_80x24": (AUG, (80, 24), []),
    "aug_mi_80x24": (AUG, (80, 24), ["4"]),
    "aug_events_120x40": (AUG, (120, 40), ["8"]),
    "mcr_stale_torn_80x24": (MCR, (80, 24), []),
    "mcr_method_120x40": (MCR, (120, 40), ["7"]),
    "mcr_method_80x24": (MCR, (80, 24), ["7"]),
    "joint_no_monitors_120x40": (JOINT, (120, 40), ["4"]),
    "runs_120x40": (AUG, (120, 40), ["r"]),
    "compare_120x40": (AUG, (120, 40), ["r", "space", "up", "space", "c"]),
    "help_80x24": (AUG, (80, 24), ["question_mark"]),
}


async def _settle(pilot, app):
    """Wait until every run shown is read and the screen stopped changing (also on a busy machine)."""
    deadline = time.monotonic() + 30
    while not app.dashboard.model.loaded or (
            isinstance(app.screen, CompareScreen) and not all(m.loaded for m in app.screen.models)):
        assert time.monotonic() < deadline
        await pilot.pause(0.05)
    await stable(pilot, app)


def screen(run_dir: Path, size: tuple[int, int], keys: list[str]) -> str:
    async def scenario():
        app = DashboardApp(run_dir, FIXTURES, clock=lambda: FROZEN)
        async with app.run_test(size=size) as pilot:
            await _settle(pilot, app)
            for key in keys:
                await pilot.press(key)
                await pilot.pause(0.05)
            await _settle(pilot, app)
            return app.export_text().replace(str(FIXTURES), "<fixtures>")  # wherever the checkout is

    return asyncio.run(scenario())


@pytest.mark.parametrize("name", list(CASES))
def test_screen_matches_snapshot(name):
    run_dir, size, keys = CASES[name]
    actual = screen(run_dir, size, keys)
    lines = actual.splitlines()
    assert len(lines) <= size[1] and all(len(line) <= size[0] for line in lines)
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("MMBAL_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(parents=True, exist_ok=True)
        path.write_text(actual + "\n", encoding="utf-8")
    expected = path.read_text(encoding="utf-8").rstrip("\n")
    diff = "\n".join(difflib.unified_diff(expected.splitlines(), lines, "expected", "actual", lineterm=""))
    assert actual == expected, f"{name} differs from {path}:\n{diff}"


@pytest.mark.parametrize("name", ["runs_120x40", "compare_120x40"])
def test_tables_are_sized_when_filled_not_when_idle(name, monkeypatch):
    """DataTable measures new rows on its next idle event; a screen drawn first had its columns at
    the labels' widths (``finis``, ``0.90``: textual 2.0 on a busy CI machine). With that measurement
    switched off, the screens still match their snapshots."""
    from textual.widgets import DataTable

    async def never_idle(self, event):
        return None

    monkeypatch.setattr(DataTable, "_on_idle", never_idle)
    run_dir, size, keys = CASES[name]
    expected = (SNAPSHOTS / f"{name}.txt").read_text(encoding="utf-8").rstrip("\n")
    assert screen(run_dir, size, keys) == expected
