"""Disk full and read-only: a failed write at every write site stops the run cleanly, and resume recovers.

Each case injects an ``OSError`` (ENOSPC or EACCES) at one site through :mod:`engine.faults` and
drives the real command line in-process (``CliRunner``). It then checks what a user relies on:
exit code 1 with one message naming the file and the reason (no traceback), no temporary file
and no half-written file under a final name (every JSON parses, ``metrics.jsonl`` has no torn
line, every checkpoint loads with a valid checksum), the last good checkpoint intact, the status
``failed`` with the reason, and finally that ``mmbal resume`` (or, when the run directory could
not even be made, a new ``mmbal run``) completes the run with exactly the weights and metrics of an
uninterrupted run.

Faults during training are armed when the run reaches step 8 (epoch 1; the first checkpoint was
written at step 7), so the case means "the first write of this site after the first checkpoint"
whatever the number of earlier writes. ``faults.hits()`` proves each fault really fired. Two
further tests use a real read-only directory (skipped as root, where chmod denies nothing) and
a real full file system (a tiny tmpfs; skipped where mounting is not permitted).
"""

import contextlib
import functools
import importlib
import json
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import engine.run.lifecycle
from engine import faults
from engine.run import NullReporter, start_run
from engine.store import Heartbeat, load_checkpoint, read_metrics
from mmbal_cli.app import app

from runtools import metric_rows, same_tensors, tiny_preset

CLI = importlib.import_module("mmbal_cli.commands.run")  # the module of `run`/`resume`, which makes the reporter
runner = CliRunner()
EPOCHS = 2  # 7 steps per epoch: checkpoints at steps 7 and 14
ARM_AT_STEP = 8
REASON = {"ENOSPC": "the disk is full (ENOSPC)", "EACCES": "permission denied (EACCES)"}
ERRNOS = tuple(REASON)
# site -> the file the message must name
TRAIN_SITES = {"last.pt": "last.pt", "best.pt": "best.pt", "checkpoint_rename": "last.pt",
               "summary.json": "summary.json", "metrics.jsonl": "metrics.jsonl", "metrics.fsync": "metrics.jsonl",
               "status.json": "status.json", "heartbeat": "status.json"}
CREATE_SITES = {"run.json": "run.json", "preset.toml": "preset.toml", "config.json": "config.json",
                "status.json": "status.json", "run-dir": "_disk-joint_"}
EARLY_SITES = {".lock:1": ".lock", "status.json:2": "status.json", "metrics.jsonl:1": "metrics.jsonl"}
RESUME_SITES = {".lock": ".lock", "run.json": "run.json", "config.json": "config.json"}


# -- helpers ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("preset") / "disk.toml"
    path.write_text(tiny_preset('name = "joint"', name="disk", epochs=EPOCHS))
    return path


@pytest.fixture(scope="module")
def straight(preset, tmp_path_factory, one_thread):
    """The same run without any fault: what every recovered run must equal."""
    result = start_run(preset, runs_dir=tmp_path_factory.mktemp("straight") / "runs")
    return result.run_dir


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def only_run(runs: Path) -> Path:
    dirs = [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def run_id(run_dir: Path) -> str:
    return run_dir.name.rsplit("_", 1)[-1]


class ArmAt(NullReporter):
    """Arms ``spec`` once training reaches ``step``; for the heartbeat, waits until a tick failed."""

    def __init__(self, spec: str, stack: contextlib.ExitStack, step: int = ARM_AT_STEP, wait_for: str | None = None):
        self.spec, self.stack, self.step, self.wait_for = spec, stack, step, wait_for

    def progress(self, pos, n_batches, epochs, values):
        if pos.step != self.step:
            return
        self.stack.enter_context(faults.inject(self.spec))
        deadline = time.monotonic() + 10
        while self.wait_for and not faults.hits().get(self.wait_for) and time.monotonic() < deadline:
            time.sleep(0.01)


def assert_failed_cleanly(res, file_name: str, err: str):
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), res.exception  # a handled error, not a traceback
    assert "Traceback" not in res.output
    assert "cannot write" in res.output and file_name in res.output and REASON[err] in res.output, res.output


def assert_no_partial_files(root: Path):
    """No temporary file; every file under its final name is whole (parses, loads, checksum holds)."""
    for path in root.rglob("*"):
        assert ".tmp-" not in path.name and not path.name.endswith(".creating"), path
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".toml":
            tomllib.loads(path.read_text())
        elif path.suffix == ".pt":
            load_checkpoint(path)  # raises CheckpointDamaged on a truncated file or a bad checksum
        elif path.name == "metrics.jsonl":
            data = path.read_bytes()
            assert data == b"" or data.endswith(b"\n"), f"torn last line in {path}"
            log = read_metrics(path)
            assert not log.warnings and not log.torn_tail, log.warnings


def weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def assert_same_as_straight(run_dir: Path, straight: Path):
    status = json.loads((run_dir / "status.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert status["state"] == "finished" and summary["status"] == "finished"
    assert same_tensors(weights(straight), weights(run_dir))
    assert [r for r in metric_rows(run_dir) if r[1] != "test"] == [r for r in metric_rows(straight) if r[1] != "test"]
    assert summary["test"] == json.loads((straight / "summary.json").read_text())["test"]
    assert_no_partial_files(run_dir)


def assert_resume_completes(run_dir: Path, runs: Path, straight: Path):
    """``mmbal resume`` of the stopped run succeeds and ends as the uninterrupted run."""
    resumed = invoke("resume", run_id(run_dir), "--runs-dir", runs)
    assert resumed.exit_code == 0, resumed.output
    assert_same_as_straight(run_dir, straight)


def assert_failed_then_resumed(run_dir: Path, runs: Path, err: str, straight: Path):
    """The run's status is "failed" with the error's reason; then it resumes to the uninterrupted run."""
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and REASON[err] in status["message"]
    assert_resume_completes(run_dir, runs, straight)


def fail_in_training(monkeypatch, preset, runs, site: str, err: str):
    """``mmbal run`` with ``site`` failing with ``err`` from step 8 on; returns (result, fired)."""
    onwards = "+" if site == "heartbeat" else ""  # a disk that stays full: every later tick fails too
    if site == "heartbeat":
        monkeypatch.setattr(engine.run.lifecycle, "Heartbeat", functools.partial(Heartbeat, interval=0.02))
    with contextlib.ExitStack() as stack:
        reporter = ArmAt(f"{site}:1{onwards}:{err}", stack, wait_for=site if site == "heartbeat" else None)
        monkeypatch.setattr(CLI, "make_reporter", lambda: reporter)
        res = invoke("run", preset, "--runs-dir", runs)
        fired = faults.hits().get(site, 0)
    monkeypatch.undo()
    return res, fired


# -- faults during training: resume continues exactly ----------------------------------------------
@pytest.mark.parametrize("err", ERRNOS)
@pytest.mark.parametrize("site", list(TRAIN_SITES))
def test_write_failure_during_training_stops_cleanly_and_resume_completes(
        site, err, preset, straight, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    res, fired = fail_in_training(monkeypatch, preset, runs, site, err)
    assert fired >= 1, f"the fault at {site} never fired"
    assert_failed_cleanly(res, TRAIN_SITES[site], err)
    run_dir = only_run(runs)
    assert_no_partial_files(runs)
    # the last good checkpoint is intact under its own name, and the message says so
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["position"]["step"] in (7, 14)
    if site in ("last.pt", "checkpoint_rename", "best.pt", "metrics.fsync"):
        assert state["position"] == {"epoch": 1, "batch": 0, "step": 7}
    assert str(run_dir / "checkpoints" / "last.pt") in res.output
    assert f"mmbal resume {run_id(run_dir)}" in res.output and "stopped at epoch" in res.output
    assert_failed_then_resumed(run_dir, runs, err, straight)


# -- faults while a new run's directory is made: nothing is left behind ---------------------------
@pytest.mark.parametrize("err", ERRNOS)
@pytest.mark.parametrize("site", list(CREATE_SITES))
def test_write_failure_while_creating_the_run_directory_leaves_nothing(site, err, preset, straight, tmp_path):
    runs = tmp_path / "runs"
    with faults.inject(f"{site}:1:{err}"):
        res = invoke("run", preset, "--runs-dir", runs)
        assert faults.hits().get(site) == 1
    assert_failed_cleanly(res, CREATE_SITES[site], err)
    assert "cannot create the run directory" in res.output and "Nothing was kept" in res.output
    assert list(runs.iterdir()) == []  # not even a hidden .creating directory

    again = invoke("run", preset, "--runs-dir", runs)
    assert again.exit_code == 0, again.output
    assert_same_as_straight(only_run(runs), straight)


# -- faults before the first checkpoint: resume trains the run again from step 0 ---------------------
@pytest.mark.parametrize("err", ERRNOS)
@pytest.mark.parametrize("spec", list(EARLY_SITES))
def test_write_failure_before_the_first_checkpoint(spec, err, preset, straight, tmp_path):
    runs = tmp_path / "runs"
    site = spec.split(":")[0]
    with faults.inject(f"{spec}:{err}"):
        res = invoke("run", preset, "--runs-dir", runs)
        assert faults.hits().get(site, 0) >= int(spec.split(":")[1])
    assert_failed_cleanly(res, EARLY_SITES[spec], err)
    run_dir = only_run(runs)
    assert "no checkpoint yet" in res.output and f"`mmbal resume {run_id(run_dir)}` trains it again" in res.output
    assert_no_partial_files(runs)
    assert not list((run_dir / "checkpoints").iterdir())
    assert_failed_then_resumed(run_dir, runs, err, straight)


# -- faults while a resume prepares the run: it is left as it was ----------------------------------
@pytest.mark.parametrize("err", ERRNOS)
@pytest.mark.parametrize("site", list(RESUME_SITES))
def test_write_failure_while_resuming_leaves_the_run_resumable(site, err, preset, straight, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    fail_in_training(monkeypatch, preset, runs, "last.pt", "ENOSPC")
    run_dir = only_run(runs)
    with faults.inject(f"{site}:1:{err}"):
        res = invoke("resume", run_id(run_dir), "--runs-dir", runs)
        assert faults.hits().get(site) == 1
    assert_failed_cleanly(res, RESUME_SITES[site], err)
    assert "was not resumed" in res.output and f"mmbal resume {run_id(run_dir)}" in res.output
    assert_no_partial_files(runs)
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["position"]["step"] == 7

    assert_resume_completes(run_dir, runs, straight)


# -- what sweep and compare write ------------------------------------------------------------------
@pytest.mark.parametrize("err", ERRNOS)
@pytest.mark.parametrize("site, file_name", [("sweep.json", "sweep.json"), ("sweep-log", "disk-joint-s3.log")])
def test_sweep_write_failure_stops_the_sweep_cleanly(site, file_name, err, preset, tmp_path):
    runs = tmp_path / "runs"
    with faults.inject(f"{site}:1:{err}"):
        res = invoke("sweep", preset, "--runs-dir", runs)
        assert faults.hits().get(site) == 1
    assert_failed_cleanly(res, file_name, err)
    assert "run the same `mmbal sweep` command again" in res.output
    assert_no_partial_files(runs)
    assert [p.name for p in runs.iterdir()] == ["sweeps"]  # no member was started


@pytest.mark.parametrize("err", ERRNOS)
def test_compare_plot_write_failure_leaves_no_file(err, straight, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plot.png"
    with faults.inject(f"plot:1:{err}"):
        res = invoke("compare", straight, "--plot", out)
        assert faults.hits().get("plot") == 1
    assert res.exit_code == 1 and str(out) in res.output and "Traceback" not in res.output, res.output
    assert list(tmp_path.iterdir()) == []  # neither the image nor its temporary file


# -- the metrics log itself: a short write then ENOSPC leaves no torn line ---------------------------
def test_failed_append_is_cut_back_so_the_next_record_is_not_glued_to_it(tmp_path):
    from engine.store import MetricsWriter
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as writer:
        writer.header("abc")
        with faults.inject("metrics.jsonl:1:ENOSPC"), pytest.raises(OSError) as info:
            writer.metrics(1, 0.1, "train", {"train/loss/method": 1.0})
        assert info.value.filename == str(path)
        writer.metrics(2, 0.2, "train", {"train/loss/method": 0.5})
    log = read_metrics(path)
    assert not log.warnings and [r["step"] for r in log.metric_rows()] == [2]


# -- real file systems ---------------------------------------------------------------------------
class ChmodAt(NullReporter):
    """Makes the run directory read-only once training reaches ``step`` (a real EACCES)."""

    def __init__(self, runs: Path, step: int = ARM_AT_STEP):
        self.runs, self.step = runs, step

    def progress(self, pos, n_batches, epochs, values):
        if pos.step == self.step:
            run_dir = only_run(self.runs)
            for d in (run_dir / "checkpoints", run_dir):
                d.chmod(0o555)


def modes_are_enforced(tmp: Path) -> bool:
    """Whether a read-only directory really refuses a new file (not for root, or with CAP_DAC_OVERRIDE)."""
    probe = tmp / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        (probe / "x").touch()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o755)
    return False


def test_read_only_run_directory_for_real(preset, straight, tmp_path, monkeypatch):
    if not modes_are_enforced(tmp_path):
        pytest.skip("file modes deny nothing to this user (root)")
    runs = tmp_path / "runs"
    monkeypatch.setattr(CLI, "make_reporter", lambda: ChmodAt(runs))
    res = invoke("run", preset, "--runs-dir", runs)
    monkeypatch.undo()
    run_dir = only_run(runs)
    try:
        assert_failed_cleanly(res, "best.pt", "EACCES")
        assert "status.json could not be updated either" in res.output
        assert_no_partial_files(runs)
        assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["position"]["step"] == 7
    finally:
        for d in (run_dir, run_dir / "checkpoints"):
            d.chmod(0o755)
    assert_resume_completes(run_dir, runs, straight)


@pytest.fixture()
def tiny_fs(tmp_path):
    """A 2 MiB tmpfs (needs the right to mount; skipped otherwise), unmounted afterwards."""
    mount = tmp_path / "fs"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot run mount here")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10)


class FillAt(NullReporter):
    """Fills the file system once training reaches ``step`` (a real ENOSPC for every later write)."""

    def __init__(self, filler: Path, step: int = ARM_AT_STEP):
        self.filler, self.step = filler, step

    def progress(self, pos, n_batches, epochs, values):
        if pos.step != self.step:
            return
        with open(self.filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass


def test_disk_really_full(preset, straight, tiny_fs, monkeypatch):
    runs, filler = tiny_fs / "runs", tiny_fs / "filler"
    monkeypatch.setattr(CLI, "make_reporter", lambda: FillAt(filler))
    res = invoke("run", preset, "--runs-dir", runs)
    monkeypatch.undo()
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert REASON["ENOSPC"] in res.output and "Traceback" not in res.output, res.output
    run_dir = only_run(runs)
    assert_no_partial_files(runs)
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["position"]["step"] == 7
    filler.unlink()
    assert_resume_completes(run_dir, runs, straight)
