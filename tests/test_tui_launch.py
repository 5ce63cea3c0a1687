"""``run_with_dashboard``: training in a child process, its log, and what quitting the dashboard does.

The dashboard is replaced by a stub whose ``run()`` returns the user's choice. Most tests use a
small stand-in child (it announces a run like ``mmbal run`` and exits 130 on SIGINT); one test runs
the real ``mmbal run`` on the quickstart preset to check that "stop" leaves a checkpoint.
"""

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from mmbal_cli.tui import app as tui_app
from mmbal_cli.tui import launch
from mmbal_cli.tui.launch import TrainingProcess, build_run_argv, run_with_dashboard

PRESET = Path(__file__).resolve().parents[1] / "presets" / "quickstart.toml"
FAKE_RUN = r"""
import os, pathlib, signal, sys, time
mode = sys.argv[1]
if mode == "fail":
    print("error: preset bad.toml: [method] name: unknown method 'nope'", file=sys.stderr, flush=True)
    sys.exit(2)
run = pathlib.Path(os.environ["MMBAL_RUNS_DIR"]) / "20250101-000000_fake_abcd1234"
run.mkdir(parents=True)
(run / "metrics.jsonl").write_text('{"kind":"metrics","step":1,"m":{}}\n')
signal.signal(signal.SIGINT, lambda *a: (print("interrupted: checkpoint written", flush=True), sys.exit(130)))
print(f"run abcd1234  {run}", flush=True)
print("training fake", flush=True)
if mode == "finish":
    print("test: acc/fused 0.9", flush=True)
    sys.exit(0)
while True:
    time.sleep(0.02)
"""


class StubDashboard:
    """Stands in for DashboardApp: waits until the run logged a metrics row, then returns ``choice``."""

    choice: str | None = None
    seen: list = []

    def __init__(self, run_dir, runs_dir, *, training=None, **_):
        self.run_dir, self.training = Path(run_dir), training
        StubDashboard.seen.append(self)
        # a hung child must fail the test, not hang it: kill it after a generous time
        self.watchdog = threading.Timer(120, lambda: training.running() and training.process.kill())
        self.watchdog.daemon = True
        self.watchdog.start()

    def run(self):
        deadline = time.monotonic() + 60
        while b'"kind":"metrics"' not in _read(self.run_dir / "metrics.jsonl"):
            assert time.monotonic() < deadline, "no metrics were logged"
            time.sleep(0.05)
        if self.choice is None:  # quit after training ended by itself
            self.training.wait()
        return self.choice


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


@pytest.fixture()
def stub(monkeypatch):
    StubDashboard.seen = []
    monkeypatch.setattr(tui_app, "DashboardApp", StubDashboard)
    yield StubDashboard
    for dash in StubDashboard.seen:
        dash.watchdog.cancel()
        if dash.training.running():
            dash.training.process.kill()
            dash.training.wait()


@pytest.fixture()
def fake_child(monkeypatch):
    monkeypatch.setattr(launch, "run_command", lambda argv: [sys.executable, "-c", FAKE_RUN, *argv])


def test_build_run_argv():
    assert build_run_argv("p.toml", ["train.epochs=3", "seed=1"], name="x", device="cpu") == [
        "p.toml", "--set", "train.epochs=3", "--set", "seed=1", "--name", "x", "--device", "cpu"]
    assert build_run_argv(Path("p.toml")) == ["p.toml"]
    assert launch.run_command(["p.toml"])[1:] == ["-m", "mmbal_cli", "run", "p.toml"]


def test_leave_keeps_training_in_its_own_session(tmp_path, stub, fake_child, capsys):
    stub.choice = "leave"
    assert run_with_dashboard(["loop"], tmp_path / "runs") == 0
    (dash,) = stub.seen
    assert dash.training.running()
    assert os.getsid(dash.training.pid) == dash.training.pid  # the terminal's signals do not reach it
    assert dash.run_dir == tmp_path / "runs" / "20250101-000000_fake_abcd1234"
    assert "training continues in the background" in capsys.readouterr().err
    assert (dash.run_dir / "stdout.log").read_text().startswith("run abcd1234  ")
    assert not list((tmp_path / "runs").glob(".mmbal-run-*"))  # the log moved into the run


def test_stop_sends_sigint_and_returns_the_child_code(tmp_path, stub, fake_child, capsys):
    stub.choice = "stop"
    assert run_with_dashboard(["loop"], tmp_path / "runs") == 130
    (dash,) = stub.seen
    assert not dash.training.running()
    assert "interrupted: checkpoint written" in (dash.run_dir / "stdout.log").read_text()
    assert "stopping training" in capsys.readouterr().err


def test_training_that_finished_returns_its_code_and_shows_the_result(tmp_path, stub, fake_child, capsys):
    stub.choice = None
    assert run_with_dashboard(["finish"], tmp_path / "runs") == 0
    assert "test: acc/fused 0.9" in capsys.readouterr().err


def test_failure_before_any_run_is_shown_with_its_exit_code(tmp_path, stub, fake_child, capsys):
    assert run_with_dashboard(["fail"], tmp_path / "runs") == 2
    assert stub.seen == []
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert list((tmp_path / "runs").iterdir()) == []  # no run directory and no stray log


def test_announced_run_needs_a_complete_first_line(tmp_path):
    log = tmp_path / "log"
    training = TrainingProcess(process=None, log_path=log)
    log.write_bytes(b"run abcd1234  /x/y")
    assert training.announced_run() is None
    log.write_bytes(b"run abcd1234  /x/y z\nepoch 1\n")
    assert training.announced_run() == Path("/x/y z")
    log.write_bytes(b"error: something\n")
    assert training.announced_run() is None


def test_stop_real_training_writes_a_checkpoint(tmp_path, stub):
    """The real ``mmbal run`` child: "stop" interrupts it after a checkpoint (exit 130, resumable)."""
    stub.choice = "stop"
    code = run_with_dashboard([str(PRESET), "--set", "train.epochs=400"], tmp_path / "runs")
    (dash,) = stub.seen
    assert code == 130
    assert json.loads((dash.run_dir / "status.json").read_text())["state"] == "interrupted"
    assert (dash.run_dir / "checkpoints" / "last.pt").exists()
    run_id = json.loads((dash.run_dir / "run.json").read_text())["run_id"]
    log = (dash.run_dir / "stdout.log").read_text()
    assert log.startswith(f"run {run_id}  {dash.run_dir}\n")
    assert f"continue with `mmbal resume {run_id}`" in log
