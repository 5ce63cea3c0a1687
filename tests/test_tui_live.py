"""The dashboard under Textual's Pilot: live updates while a writer appends, quitting, damaged runs."""

import shutil
import time
from pathlib import Path

from mmbal_cli.tui.testing import live_run, shows
from mmbal_cli.tui.screens import DashboardScreen, QuitScreen

from tuitools import drive

FIXTURES = Path(__file__).parent / "fixtures" / "runs"
AUG = FIXTURES / "20250301-101500_avdigits-aug_k3f9a2x1"
MCR = FIXTURES / "20250302-090000_quick-mcr_p7q2m4zz"
JOINT = FIXTURES / "20250228-170000_nutrimouse-joint_a0b1c2d3"


def test_appended_values_appear_within_a_second(tmp_path):
    run_dir, writer = live_run(tmp_path / "runs")

    async def scenario(pilot, app):
        assert "running" in app.export_text() and "step 0/?" in app.export_text()
        delays = []
        for step, acc in ((10, 0.6123), (20, 0.7345), (30, 0.8567)):
            writer.metrics(step, step / 20, "train", {"train/acc/audio": acc, "train/acc/image": 0.25})
            start = time.monotonic()
            while f"{acc:.3f}" not in app.export_text():
                assert time.monotonic() - start < 2.0, app.export_text()
                await pilot.pause(0.05)
            delays.append(time.monotonic() - start)
        writer.metrics(40, 2, "val", {"val/acc/audio": 0.5, "val/acc/image": 0.9})
        while "step 40/60" not in app.export_text():
            await pilot.pause(0.05)
        text = app.export_text()
        assert "audio ◀ weakest" in text  # the val accuracy now decides the weakest modality
        assert max(delays) < 1.0, delays

    drive(scenario, run_dir, run_dir.parent, interval=0.5, size=(100, 30))
    writer.close()


class FakeTraining:
    def __init__(self, running=True):
        self.is_running = running

    def running(self):
        return self.is_running


def test_quitting_with_training_asks_cancel_then_leave():
    async def scenario(pilot, app):
        await pilot.press("q")
        text = await shows(pilot, app, "Stop training [s]")
        assert isinstance(app.screen, QuitScreen)
        assert "Stop training [s]" in text and "Leave running [l]" in text and "Cancel [esc]" in text
        await pilot.press("escape")
        await pilot.pause(0.05)
        assert isinstance(app.screen, DashboardScreen) and app.is_running  # cancelled: still watching
        await pilot.press("q")
        await shows(pilot, app, "Leave running [l]")
        await pilot.press("l")
        await pilot.pause(0.05)

    assert drive(scenario, JOINT, FIXTURES, training=FakeTraining(), size=(80, 24)) == "leave"


def test_stop_training_with_the_keyboard_only():
    async def scenario(pilot, app):
        await pilot.press("ctrl+c")
        await shows(pilot, app, "Leave running [l]")
        assert app.focused.id == "leave"  # the safe choice has the focus
        await pilot.press("left", "enter")  # to "Stop training", press it
        await pilot.pause(0.05)

    assert drive(scenario, JOINT, FIXTURES, training=FakeTraining(), size=(80, 24)) == "stop"


def test_quit_without_training_exits_at_once():
    seen = []

    async def scenario(pilot, app):
        await pilot.press("q")
        await pilot.pause(0.05)
        seen.append(app.is_running)

    assert drive(scenario, JOINT, FIXTURES, training=FakeTraining(running=False), size=(80, 24)) is None
    assert seen == [False]


def _damaged_text(run_dir: Path, size=(100, 30)) -> str:
    shown = []

    async def scenario(pilot, app):
        shown.append(app.export_text())

    drive(scenario, run_dir, run_dir.parent, clock=lambda: 1740909640.0 + 7200, size=size)
    return shown[0]


def test_damaged_runs_are_shown_not_fatal(tmp_path):
    text = _damaged_text(MCR)
    assert "stale  epoch 3/4" in text and "✖ stale: no heartbeat for 2h00m" in text
    assert "▲ metrics.jsonl ends with an incomplete line (68 bytes" in text

    missing = tmp_path / "missing" / JOINT.name
    shutil.copytree(JOINT, missing)
    (missing / "metrics.jsonl").unlink()
    (missing / "status.json").write_text("{broken")
    text = _damaged_text(missing)
    assert "unknown  epoch -/3" in text
    assert "state unknown: status.json unreadable" in text and "metrics.jsonl does not exist yet" in text

    unreadable = tmp_path / "unreadable" / AUG.name
    shutil.copytree(AUG, unreadable)
    (unreadable / "metrics.jsonl").unlink()
    (unreadable / "metrics.jsonl").mkdir()
    (unreadable / "run.json").write_text("[]")
    text = _damaged_text(unreadable, size=(80, 24))
    assert "metrics.jsonl unreadable: Is a directory" in text and "run.json unreadable" in text
