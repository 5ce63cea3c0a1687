"""Running a sweep's plan: members as subprocesses, at most ``jobs`` at a time, recorded in ``sweep.json``.

The runner is handed ``cli``, the argv that starts mmbal's command line (the CLI passes its own
interpreter and module); a member is ``cli + ["run", preset, ...]`` or ``cli + ["resume", dir]``.
With ``jobs > 1`` each member gets ``OMP_NUM_THREADS = cpus // jobs`` unless the variable is set.
Members run in their own session, so a terminal Ctrl-C (or a SIGTERM) reaches only the sweep, which
starts no new member and forwards exactly one SIGINT to each running one: it writes a checkpoint
and stops (exit 130), like ``mmbal run`` on Ctrl-C; a member still starting up stops without one.
A second Ctrl-C forwards another SIGINT (stop now). The directory is locked while a sweep runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import RunLocked, UsageError
from ..faults import fault_point
from ..store import RunLock, read_status, read_summary
from ..store.write_errors import failed_write, sweep_write_failed
from .attempts import Task
from .layout import LOGS_DIR, member_log, sweep_dir
from .plan import Plan
from .record import add_attempt, now, read_previous, sweep_record, write_record

_STARTED_RE = re.compile(r"^(?:run|resuming) ([0-9a-z]{8})  (.+)$", re.MULTILINE)


@dataclass
class Outcome:
    """How one launched member ended: exit code, its run and (when finished) its summary."""

    task: Task
    returncode: int
    run_dir: Path | None
    run_id: str | None
    state: str
    seconds: float
    log: Path
    summary: dict | None = None
    last_line: str = ""


@dataclass
class SweepResult:
    outcomes: list[Outcome]
    interrupted: bool

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.state != "finished"]


def member_command(plan: Plan, task: Task, cli: Sequence[str]) -> list[str]:
    """The argv that runs (or resumes) one member as an ordinary ``mmbal`` process started by ``cli``."""
    if task.action == "resume":
        return [*cli, "resume", str(task.attempt.run_dir)]
    cmd = [*cli, "run", str(plan.preset), "--runs-dir", str(plan.runs_dir), "--name", task.member.run_name]
    for item in task.member.overrides:
        cmd += ["--set", item]
    if plan.device:
        cmd += ["--device", plan.device]
    return cmd


def member_env(jobs: int) -> dict[str, str]:
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


@dataclass
class _Live:
    task: Task
    proc: subprocess.Popen
    log: Path
    log_start: int
    started: float


class SweepRunner:
    """Runs a plan's members as subprocesses started by ``cli``, ``jobs`` at a time.

    ``on_event(kind, task, outcome_or_None)`` is told ``"start"`` and ``"end"`` for each member
    and ``"stopping"`` once when an interrupt is being forwarded.
    """

    def __init__(self, plan: Plan, cli: Sequence[str], jobs: int = 1, on_event: Callable | None = None,
                 poll_s: float = 0.1):
        if jobs < 1:
            raise UsageError(f"--jobs: expected at least 1, got {jobs}")
        self.plan, self.cli, self.jobs, self.poll_s = plan, list(cli), jobs, poll_s
        self.on_event = on_event or (lambda kind, task, outcome: None)
        self.home = sweep_dir(plan.runs_dir, plan.name)
        self.record: dict = {}
        self._live: list[_Live] = []
        self._interrupts = 0

    def run(self) -> SweepResult:
        """Run the members; a failed write of the sweep's own files (sweep.json, a log) stops the sweep
        with a StorageError after the running members were asked to checkpoint and stop."""
        lock = RunLock(self.home)
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except RunLocked:
            raise RunLocked(f"sweep '{self.plan.name}' is already running in another process "
                            f"({self.home}); wait for it to end or stop it first") from None
        except OSError as exc:
            raise self._storage_error(exc, 0) from None
        try:
            return self._run_locked()
        except OSError as exc:
            stopped = self._stop_members()
            raise self._storage_error(exc, stopped) from None
        finally:
            lock.release()

    def _storage_error(self, exc: OSError, stopped: int) -> BaseException:
        error = failed_write(exc, self.plan.runs_dir)
        return exc if error is None else sweep_write_failed(error, self.home, stopped)

    def _stop_members(self) -> int:
        """SIGINT every running member (each writes a checkpoint and stops) and wait for them."""
        live, self._live = self._live, []
        for item in live:
            _forward_sigint(item.proc)
        for item in live:
            item.proc.wait()
        return len(live)

    def _run_locked(self) -> SweepResult:
        self.record = sweep_record(self.plan, read_previous(self.home))
        write_record(self.home, self.record)
        (self.home / LOGS_DIR).mkdir(exist_ok=True)
        queue, outcomes = list(self.plan.todo()), []
        self._live, self._interrupts = [], 0
        previous = _set_handlers(self._on_signal)
        try:
            while self._live or (queue and not self._interrupts):
                while queue and len(self._live) < self.jobs and not self._interrupts:
                    self._launch(queue.pop(0))
                time.sleep(self.poll_s)
                for item in [x for x in self._live if x.proc.poll() is not None]:
                    self._live.remove(item)
                    outcomes.append(self._finish(item))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return SweepResult(outcomes, interrupted=self._interrupts > 0)

    def _on_signal(self, signum, frame) -> None:
        """SIGINT/SIGTERM: forward one SIGINT to every running member and start no new one."""
        self._interrupts += 1
        if self._interrupts == 1:
            self.on_event("stopping", None, None)
        for item in self._live:
            _forward_sigint(item.proc)

    def _launch(self, task: Task) -> _Live:
        log = member_log(self.home, task.member.run_name)
        cmd = member_command(self.plan, task, self.cli)
        fault_point("sweep-log", log)
        with open(log, "ab") as f:
            start = f.tell()
            f.write(f"== {now()} {' '.join(cmd)}\n".encode())
            f.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                    env=member_env(self.jobs), start_new_session=True)
        item = _Live(task, proc, log, start, time.perf_counter())
        self._live.append(item)
        if self._interrupts:  # a signal arrived while this member was being started
            _forward_sigint(proc)
        self.on_event("start", task, None)
        return item

    def _finish(self, item: _Live) -> Outcome:
        text = _read_from(item.log, item.log_start)
        match = _STARTED_RE.search(text)
        run_dir = Path(match.group(2)) if match else None
        run_id = match.group(1) if match else None
        code = item.proc.returncode
        stopped = code in (130, -signal.SIGINT) and self._interrupts > 0
        state = read_status(run_dir)["effective_state"] if run_dir else ("interrupted" if stopped else "failed")
        if code != 0 and state == "finished":
            state = "failed"
        summary = None
        if run_dir is not None:
            try:
                summary = read_summary(run_dir)
            except ValueError:
                summary = None
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("== ")] or ["(no output)"]
        outcome = Outcome(item.task, item.proc.returncode, run_dir, run_id, state,
                          time.perf_counter() - item.started, item.log, summary, lines[-1])
        if run_id:
            add_attempt(self.record, item.task.member, run_id)
            write_record(self.home, self.record)
        self.on_event("end", item.task, outcome)
        return outcome


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", errors="replace")


def _forward_sigint(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass


def _set_handlers(handler) -> dict:
    """Handle SIGINT and SIGTERM with ``handler``; returns the previous handlers.

    Handling SIGINT (rather than inheriting it) also matters for the members: a SIGINT ignored
    by the sweep (a background job of a non-interactive shell) would be inherited as ignored by
    every member, which could then never be asked to stop; a handled signal is reset to the
    default at exec. Outside the main thread signals cannot be set and nothing is installed.
    """
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:
            break
    return previous
