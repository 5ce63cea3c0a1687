"""``mmbal run --tui``: train in a child process and attach the dashboard to its run directory.

The child is ``python -m mmbal_cli run ARGV`` in its own session (``start_new_session``), so the
dashboard's terminal, a closed SSH connection or a crash of the dashboard never signal it. Its
output goes to a log file in the runs directory until the child announces its run with the line
``run <id>  <dir>``; the log is then renamed to ``<dir>/stdout.log`` (the child keeps writing to
the same open file). If the child exits before announcing a run (a preset or data error), its
output is shown and its exit code returned. Quitting the dashboard while training runs asks
whether to stop it, which sends SIGINT so that the trainer writes a checkpoint and exits 130
(``mmbal resume`` continues it), or to leave it running in the background.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from engine.store import default_runs_dir

RUN_LINE = re.compile(r"^run (\S+)  (.+)$")
STDOUT_LOG = "stdout.log"
TAIL_LINES = 6


def build_run_argv(preset: str | os.PathLike, overrides: Sequence[str] = (), name: str | None = None,
                   device: str | None = None) -> list[str]:
    """The arguments of ``mmbal run`` (without ``--tui``) for the child process."""
    argv = [str(preset)]
    for item in overrides:
        argv += ["--set", item]
    if name:
        argv += ["--name", name]
    if device:
        argv += ["--device", device]
    return argv


def run_command(argv: Sequence[str]) -> list[str]:
    """The child's command line: this Python running ``mmbal run ARGV``."""
    return [sys.executable, "-m", "mmbal_cli", "run", *argv]


class TrainingProcess:
    """The training child: started by :meth:`start`, asked to stop with SIGINT by :meth:`stop`."""

    def __init__(self, process: subprocess.Popen, log_path: Path):
        self.process = process
        self.log_path = log_path

    @classmethod
    def start(cls, argv: Sequence[str], runs_dir: Path) -> "TrainingProcess":
        runs_dir.mkdir(parents=True, exist_ok=True)
        log_path = runs_dir / f".mmbal-run-{os.getpid()}-{time.time_ns()}.log"
        env = {**os.environ, "MMBAL_RUNS_DIR": str(runs_dir), "PYTHONUNBUFFERED": "1"}
        with open(log_path, "wb") as log:
            process = subprocess.Popen(run_command(argv), stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, env=env, start_new_session=True)
        return cls(process, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGINT: the trainer checkpoints at the next batch and exits (a second one stops at once)."""
        if self.running():
            os.kill(self.process.pid, signal.SIGINT)

    def wait(self) -> int:
        return self.process.wait()

    def announced_run(self) -> Path | None:
        """The run directory from the child's first output line, once it has printed it."""
        try:
            with open(self.log_path, "rb") as log:
                first = log.readline()
        except OSError:
            return None
        if not first.endswith(b"\n"):
            return None
        match = RUN_LINE.match(first.decode("utf-8", "replace").rstrip("\n"))
        return Path(match.group(2)) if match else None

    def wait_for_run(self, poll: float = 0.1) -> Path | None:
        """Block until the child announces its run directory (None if it exits first)."""
        while True:
            run_dir = self.announced_run()
            if run_dir is not None and run_dir.is_dir():
                return run_dir
            if not self.running():
                return self.announced_run()
            time.sleep(poll)

    def move_log(self, run_dir: Path) -> None:
        """Rename the log to ``run_dir/stdout.log``; the child keeps appending to it."""
        target = run_dir / STDOUT_LOG
        os.replace(self.log_path, target)
        self.log_path = target

    def output_tail(self, lines: int = TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _stop_and_wait(training: TrainingProcess) -> int:
    training.stop()
    print(f"stopping training (pid {training.pid}): it writes a checkpoint first; Ctrl-C again stops it at once",
          file=sys.stderr, flush=True)
    try:
        return training.wait()
    except KeyboardInterrupt:
        training.stop()
        return training.wait()


def _failed_before_run(training: TrainingProcess) -> int:
    code = training.wait()
    output = training.output_tail(lines=40)
    if output:
        print(output, file=sys.stderr)
    try:
        training.log_path.unlink()
    except OSError:
        pass
    return code


def run_with_dashboard(argv: list[str], runs_dir: str | os.PathLike | None) -> int:
    """Train ``mmbal run ARGV`` in a child process with the dashboard attached; the exit code.

    Returns the child's exit code when it ended (0 finished, 130 stopped after a checkpoint, 2
    or 3 for a refused preset), or 0 when the user left it running in the background.
    """
    from .app import DashboardApp

    root = default_runs_dir(runs_dir)
    training = TrainingProcess.start(argv, root)
    print("starting training: checking the preset and loading the data ...", file=sys.stderr, flush=True)
    try:
        run_dir = training.wait_for_run()
    except KeyboardInterrupt:
        training.stop()
        return training.wait()
    if run_dir is None:
        return _failed_before_run(training)
    training.move_log(run_dir)
    try:
        choice = DashboardApp(run_dir, root, training=training).run()
    except BaseException:
        if training.running():
            print(f"the dashboard stopped; training continues in the background (pid {training.pid})", file=sys.stderr)
        raise
    if choice == "stop":
        code = _stop_and_wait(training)
        print(training.output_tail(2), file=sys.stderr)
        return code
    if training.running():
        ref = run_dir.name.rsplit("_", 1)[-1] if root == default_runs_dir(None) else str(run_dir)
        print(f"training continues in the background (pid {training.pid}): `mmbal watch {ref}` shows it again, "
              f"`kill -INT {training.pid}` stops it after a checkpoint; output in {training.log_path}",
              file=sys.stderr)
        return 0
    code = training.wait()
    print(training.output_tail(), file=sys.stderr)
    return code
