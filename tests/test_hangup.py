"""Hang-ups and signals (RELIABILITY.md section 9).

* A real ``mmbal run`` / ``mmbal sweep`` on a pseudo-terminal that is its controlling terminal; the
  test closes the terminal's master side, which is what a dropped SSH connection does: the kernel
  hangs the terminal up, sends SIGHUP, and every later write to it fails (EIO).
* A second SIGTERM that arrives while a checkpoint is being written (a real signal, raised from
  inside the write) waits for the write.
* ``best.pt`` deleted while a run trains is written again.
"""

import errno
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.run import NullReporter, start_run
from engine.store import read_metrics
from engine.store.checkpoints import load_checkpoint
from runtools import tiny_preset

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP") or sys.platform == "win32",
                                reason="needs POSIX terminals and SIGHUP")

# 3,000 rows: 66 steps per epoch; 200 epochs is far more than a test waits for.
SLOW = tiny_preset('name = "joint"', name="slow", epochs=200, data={"synthetic": {"n_samples": 3000}},
                   train={"threads": 1})


# -- a process on its own terminal --------------------------------------------------------------------
class OnTerminal:
    """``argv`` started as the controlling process of a new pseudo-terminal (its stdin, stdout and
    stderr), like a login shell's foreground job; :meth:`hang_up` closes the terminal's master side."""

    def __init__(self, argv: list[str], env: dict):
        import pty
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT,
                                     preexec_fn=_controlling_terminal)
        os.close(slave)
        self.output = b""

    def drain(self, seconds: float = 0.05) -> None:
        """Read what the process wrote (a terminal nobody reads fills up and blocks the writer)."""
        ready, _, _ = select.select([self.master], [], [], seconds)
        if ready:
            try:
                self.output += os.read(self.master, 65536)
            except OSError:
                pass

    def wait_for(self, condition, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while not condition():
            assert self.proc.poll() is None, f"ended early ({self.proc.returncode}): {self.text()}"
            assert time.time() < deadline, f"timed out: {self.text()}"
            self.drain()

    def text(self) -> str:
        """The end of what the process wrote to its terminal."""
        return self.output.decode("utf-8", errors="replace")[-3000:]

    def hang_up(self, timeout: float = 120) -> int:
        os.close(self.master)
        return self.proc.wait(timeout=timeout)


def _controlling_terminal() -> None:
    """A new session with the terminal as its controlling terminal, and the signal dispositions of a login
    shell's foreground job: a harness started with ``nohup`` or in the background (SIGHUP or SIGINT ignored,
    inherited across exec) must not make the run ignore the hang-up under test."""
    import fcntl
    import termios
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def _run_dir(runs: Path, name: str) -> Path | None:
    """The run directory of the run named ``name`` (``<time>_<name>_<id>``), once it exists."""
    found = [d for d in runs.glob("2*") if d.name.split("_")[1] == name] if runs.exists() else []
    return found[0] if found else None


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "MMBAL_RUNS_DIR": str(tmp_path / "runs"), "TERM": "xterm", "COLUMNS": "100"}


def _events(run_dir: Path, name: str) -> list[dict]:
    return read_metrics(run_dir / "metrics.jsonl").events(name)


# -- 2. a dropped SSH session -------------------------------------------------------------------------
def test_hang_up_of_a_foreground_run_checkpoints_and_exits_129(tmp_path):
    """Before: killed by SIGHUP (no checkpoint since the last epoch's, status.json left 'running')."""
    preset = tmp_path / "slow.toml"
    preset.write_text(SLOW)
    term = OnTerminal([sys.executable, "-m", "mmbal_cli", "run", str(preset)], _env(tmp_path))
    run_dir = None

    def trained_past_first_checkpoint() -> bool:
        nonlocal run_dir
        run_dir = run_dir or _run_dir(tmp_path / "runs", "slow-joint")
        if run_dir is None or not (run_dir / "checkpoints" / "last.pt").exists():
            return False
        return _status(run_dir).get("step", 0) > 66 + 10

    term.wait_for(trained_past_first_checkpoint)
    seen_step = _status(run_dir)["step"]
    code = term.hang_up()
    status = _status(run_dir)
    assert code == 129, f"{status}\n{term.text()}"
    assert status["state"] == "interrupted" and not status.get("message")
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    stopped = _events(run_dir, "interrupted")
    assert [e["signal"] for e in stopped] == ["SIGHUP"]
    assert last["position"]["step"] == stopped[0]["step"] >= seen_step > 66  # a checkpoint at the stop, not the epoch's
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    env = _env(tmp_path)
    epochs = last["position"]["epoch"] + 1
    done = subprocess.run([sys.executable, "-m", "mmbal_cli", "resume", run_dir.name, "--set",
                           f"train.epochs={epochs}"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _status(run_dir)["state"] == "finished"


def test_nohup_keeps_a_run_alive_through_a_hang_up(tmp_path):
    """SIGHUP ignored at start (``nohup``) stays ignored: the run trains on after the hang-up."""
    preset = tmp_path / "slow.toml"
    preset.write_text(SLOW)
    log = tmp_path / "nohup.out"
    argv = ["nohup", sys.executable, "-m", "mmbal_cli", "run", str(preset)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=_env(tmp_path), cwd=ROOT)
        try:
            deadline = time.time() + 120
            while (_run_dir(tmp_path / "runs", "slow-joint") is None
                   or _status(_run_dir(tmp_path / "runs", "slow-joint")).get("step", 0) < 5):
                assert proc.poll() is None and time.time() < deadline, log.read_text()
                time.sleep(0.05)
            run_dir = _run_dir(tmp_path / "runs", "slow-joint")
            proc.send_signal(signal.SIGHUP)
            time.sleep(1.5)
            assert proc.poll() is None, log.read_text()
            assert _status(run_dir)["state"] == "running"
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=120) == 130, log.read_text()
    assert [e["signal"] for e in _events(run_dir, "interrupted")] == ["SIGINT"]


SWEEP = tiny_preset('name = "joint"', name="sw", epochs=200, data={"synthetic": {"n_samples": 3000}},
                    train={"threads": 1})


def test_hang_up_of_a_sweep_stops_its_member_cleanly_and_records_the_queue(tmp_path):
    """Before: the sweep died silently (exit by SIGHUP), its member trained on orphaned and the queued
    members never started. Now: the member checkpoints and is interrupted, sweep.json says what was
    stopped and never started, the sweep exits 129, and the same command again resumes it."""
    preset = tmp_path / "sw.toml"
    preset.write_text(SWEEP)
    runs = tmp_path / "runs"
    argv = [sys.executable, "-m", "mmbal_cli", "sweep", str(preset), "--seeds", "0-2", "--runs-dir", str(runs)]
    term = OnTerminal(argv, _env(tmp_path))
    first = None

    def member_has_a_checkpoint() -> bool:
        nonlocal first
        first = first or _run_dir(runs, "sw-joint-s0")
        return first is not None and (first / "checkpoints" / "last.pt").exists()

    term.wait_for(member_has_a_checkpoint)
    code = term.hang_up()
    assert code == 129, term.text()
    assert _status(first)["state"] == "interrupted"
    assert [e["signal"] for e in _events(first, "interrupted")] == ["SIGINT"]  # forwarded as Ctrl-C
    assert _run_dir(runs, "sw-joint-s1") is None and _run_dir(runs, "sw-joint-s2") is None
    record = json.loads((runs / "sweeps" / "sw" / "sweep.json").read_text())
    assert record["stopped"]["signal"] == "SIGHUP"
    assert record["stopped"]["stopped"] == ["sw-joint-s0"]
    assert record["stopped"]["not_started"] == ["sw-joint-s1", "sw-joint-s2"]
    plan = subprocess.run([*argv, "--dry-run"], capture_output=True, text=True, env=_env(tmp_path), cwd=ROOT,
                          timeout=120)
    assert plan.returncode == 0, plan.stderr
    def planned(name: str) -> str:
        return next(ln for ln in plan.stdout.splitlines() if f" {name} " in ln and not ln.lstrip().startswith("$"))
    assert "to resume" in planned("sw-joint-s0"), plan.stdout
    assert "to start" in planned("sw-joint-s1") and "to start" in planned("sw-joint-s2"), plan.stdout


# -- 9. a second SIGTERM while a checkpoint is written ------------------------------------------------
class SignalAt(NullReporter):
    """Sends SIGTERM to this process after optimiser step ``step``, or with the validation scores of
    epoch ``epoch`` (before that epoch's checkpoints are written)."""

    def __init__(self, step: int | None = None, epoch: int | None = None):
        self.step, self.at_epoch = step, epoch

    def progress(self, pos, n_batches, epochs, values):
        if pos.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)

    def epoch(self, epoch, epochs, values):
        if epoch == self.at_epoch:
            os.kill(os.getpid(), signal.SIGTERM)


def signal_during_write(monkeypatch, name: str, after: int = 0):
    """From the ``after``-th on, the writes of checkpoint ``name`` (``last.pt``, ``best.pt``) get a
    SIGTERM once, from inside ``torch.save`` while it writes the file; returns the list of writes signalled."""
    real = torch.save
    seen, signalled = [], []

    class Writing:
        def __init__(self, f):
            self.f, self.sent = f, False

        def write(self, data):
            if not self.sent:
                self.sent = True
                signalled.append(1)
                os.kill(os.getpid(), signal.SIGTERM)
            return self.f.write(data)

        def __getattr__(self, attr):
            return getattr(self.f, attr)

    def save(obj, f, *args, **kwargs):
        if Path(str(getattr(f, "name", ""))).name.startswith(f".{name}.tmp-"):  # the atomic write's temporary file
            seen.append(1)
            if len(seen) > after and not signalled:
                return real(obj, Writing(f), *args, **kwargs)
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    return signalled


def test_second_sigterm_while_the_stop_checkpoint_is_written_waits_for_it(tmp_path, monkeypatch):
    """Before: the second signal cut the write off and the run ended 'failed' with a torch error
    (or a KeyboardInterrupt). Now the checkpoint is completed and the run is 'interrupted' at it."""
    preset = tmp_path / "p.toml"
    preset.write_text(tiny_preset('name = "joint"', epochs=3, monitor={"enabled": False}))
    signalled = signal_during_write(monkeypatch, "last.pt", after=1)
    result = start_run(preset, runs_dir=tmp_path / "runs", reporter=SignalAt(9))
    assert signalled == [1]
    assert result.state == "interrupted" and result.stopped_by == "SIGTERM"
    run_dir = result.run_dir
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")  # complete: its checksum matches
    assert [e["step"] for e in _events(run_dir, "interrupted")] == [last["position"]["step"]]
    assert last["position"]["step"] >= 9 and last["position"]["batch"] > 0  # the stop's checkpoint, not epoch 1's
    assert _status(run_dir)["state"] == "interrupted" and not _status(run_dir).get("message")
    assert not list((run_dir / "checkpoints").glob(".*"))  # no temporary file left


def test_second_sigterm_while_best_is_written_stops_after_the_write(tmp_path, monkeypatch):
    """A second signal during the end-of-epoch ``best.pt`` write: best.pt is complete, then the run stops."""
    preset = tmp_path / "p.toml"
    preset.write_text(tiny_preset('name = "joint"', epochs=3, monitor={"enabled": False}))
    signalled = signal_during_write(monkeypatch, "best.pt")
    with pytest.raises(KeyboardInterrupt):
        start_run(preset, runs_dir=tmp_path / "runs", reporter=SignalAt(epoch=1))  # the first in epoch 1's validation
    assert signalled == [1]
    run_dir = next((tmp_path / "runs").glob("2*"))
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["epoch"] == 0
    status = _status(run_dir)
    assert status["state"] == "interrupted" and "without a checkpoint" in status["message"]


# -- 10. best.pt deleted during a run -----------------------------------------------------------------
class DeleteBestAt(NullReporter):
    def __init__(self, run_dir_of, step: int):
        self.run_dir_of, self.step, self.deleted = run_dir_of, step, False

    def progress(self, pos, n_batches, epochs, values):
        if pos.step == self.step:
            best = self.run_dir_of() / "checkpoints" / "best.pt"
            assert best.exists()
            best.unlink()
            self.deleted = True


def test_best_deleted_during_a_run_is_written_again(tmp_path):
    """Before: best.pt, selected in epoch 1 and never bettered, was gone for good and the run ended
    'finished' without one. Now it is written again (the same bytes of weights) with a warning."""
    # a learning rate so small that no later epoch betters the first: best.pt is written once
    text = tiny_preset('name = "joint"', epochs=3, lr=1e-12, monitor={"enabled": False})
    (tmp_path / "p.toml").write_text(text)
    reference = start_run(tmp_path / "p.toml", runs_dir=tmp_path / "ref")
    ref_best = load_checkpoint(reference.run_dir / "checkpoints" / "best.pt")
    assert ref_best["epoch"] == 0
    runs = tmp_path / "runs"
    deleter = DeleteBestAt(lambda: next(runs.glob("2*")), step=9)
    result = start_run(tmp_path / "p.toml", runs_dir=runs, reporter=deleter)
    assert deleter.deleted and result.state == "finished"
    best = load_checkpoint(result.run_dir / "checkpoints" / "best.pt")
    assert best["epoch"] == 0 and best["step"] == ref_best["step"]
    assert best["model"].keys() == ref_best["model"].keys()
    assert all(torch.equal(best["model"][k], ref_best["model"][k]) for k in best["model"])
    assert result.summary["test"] == reference.summary["test"]
    warnings = [e["message"] for e in _events(result.run_dir, "warning")]
    assert any("best.pt was missing" in w for w in warnings), warnings


def test_a_write_to_a_hung_up_terminal_before_the_handler_runs_does_not_raise():
    """The kernel fails writes (EIO) as soon as the terminal is gone, before Python runs the SIGHUP handler:
    under load an epoch line printed in between ended a run with exit 1 (CI). The wrapped stream drops
    the text and points the descriptor at /dev/null; other errors stay errors."""
    import io
    import pty

    from engine.terminal import HangupSafeStream

    master, slave = pty.openpty()
    raw = io.TextIOWrapper(io.FileIO(slave, "w", closefd=True), line_buffering=True)
    stream = HangupSafeStream(raw)
    stream.write("before the hang-up\n")
    os.close(master)                                   # what a dropped SSH connection does
    with pytest.raises(OSError) as plain:
        raw.write("x\n")                               # unwrapped: EIO
    assert plain.value.errno == errno.EIO
    assert stream.write("epoch 3/9  val  fused 0.61\n") == len("epoch 3/9  val  fused 0.61\n")
    stream.flush()
    assert os.readlink(f"/proc/self/fd/{slave}") == "/dev/null"
    stream.write("after\n")                            # goes to /dev/null from now on
    raw.close()

    broken = HangupSafeStream(io.TextIOWrapper(io.BytesIO()))
    broken._stream.close()
    with pytest.raises(ValueError):                    # not a lost terminal: the stream's own error
        broken.write("x")
