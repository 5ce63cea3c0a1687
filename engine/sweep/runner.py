"""Running a sweep's plan: members as subprocesses, at most ``jobs`` at a time, recorded in ``sweep.json``.

The runner is handed ``cli``, the argv that starts mmbal's command line (the CLI passes its own
interpreter and module); a member is ``cli + ["run", preset, ...]`` or ``cli + ["resume", dir]``.
With ``jobs > 1`` each member gets ``OMP_NUM_THREADS = cpus // jobs`` unless the variable is set.
With ``gpus`` (``mmbal sweep --gpus 0,1``) the ``jobs`` slots are dealt to the GPUs round-robin
(slot ``i`` runs on ``gpus[i % len(gpus)]``) and a member started in a slot sees only that GPU
(``CUDA_VISIBLE_DEVICES``), where it is ``cuda:0``. With a ``launcher`` each member is started by it
instead (``launcher.start(cmd, log, name, env=...)`` returns what ``poll``/``send_signal``/``wait``
like a subprocess): a cluster job (:class:`engine.sweep.launchers.SubmititLauncher`, ``--launcher
slurm``) or a process forked from a server that imported mmbal once (the CLI's ``ForkLauncher``, for
local members off the GPU); everything else (the queue, the record, the stop, the resume) is the same.
Members run in their own session, so a terminal Ctrl-C (or a SIGTERM) reaches only the sweep, which
starts no new member and forwards exactly one SIGINT to each running one: it writes a checkpoint
and stops (exit 130), like ``mmbal run`` on Ctrl-C; a member still starting up stops without one.
A second Ctrl-C forwards another SIGINT (stop now). The directory is locked while a sweep runs.

A hang-up (SIGHUP: the SSH connection or the terminal closed) stops the sweep the same way: the
running members write a checkpoint and end ``interrupted``, no queued member starts, and
``sweep.json`` records the stop (``stopped``: the signal, the members stopped and those never
started); the CLI exits 129. Running the same ``mmbal sweep`` command again resumes the stopped
members from their checkpoints and starts the rest. A repeated SIGHUP (the shell and then the kernel
send one each) never escalates to "stop now", and standard output and error that were the lost
terminal are pointed at ``/dev/null`` so that the sweep can finish its bookkeeping. A sweep meant to
outlive the connection runs under ``tmux``/``screen`` or ``nohup`` (a SIGHUP ignored at start stays
ignored, here and in every member).
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
from ..terminal import SIGHUP, detach_from_hung_up_terminal, hangup_ignored, terminal_fds
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
    stopped_by: str | None = None  # the signal that stopped the sweep: SIGINT | SIGTERM | SIGHUP

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


def member_env(jobs: int, gpu: str | None = None) -> dict[str, str]:
    """The environment of a member: this process's, with ``OMP_NUM_THREADS`` shared out among ``jobs``
    and, when the member is placed on a GPU, ``CUDA_VISIBLE_DEVICES`` naming only that one."""
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def slot_gpu(gpus: Sequence[str], slot: int) -> str | None:
    """The GPU of run slot ``slot``: the slots are dealt to ``gpus`` round-robin (None without GPUs)."""
    return gpus[slot % len(gpus)] if gpus else None


@dataclass
class _Live:
    task: Task
    proc: subprocess.Popen
    log: Path
    log_start: int
    started: float
    slot: int = 0
    gpu: str | None = None


class SweepRunner:
    """Runs a plan's members as subprocesses started by ``cli``, ``jobs`` at a time.

    ``on_event(kind, task, outcome_or_None)`` is told ``"start"`` (with the member's GPU or ``None``)
    and ``"end"`` (with its :class:`Outcome`) for each member
    and ``"stopping"`` once when an interrupt is being forwarded (then with ``None`` and the
    signal's name: ``on_event("stopping", None, "SIGHUP")``).
    """

    def __init__(self, plan: Plan, cli: Sequence[str], jobs: int = 1, on_event: Callable | None = None,
                 poll_s: float = 0.1, gpus: Sequence[str] = (), launcher=None):
        if jobs < 1:
            raise UsageError(f"--jobs: expected at least 1, got {jobs}")
        self.plan, self.cli, self.jobs, self.poll_s = plan, list(cli), jobs, poll_s
        self.gpus, self.launcher = list(gpus), launcher
        self.on_event = on_event or (lambda kind, task, outcome: None)
        self.home = sweep_dir(plan.runs_dir, plan.name)
        self.record: dict = {}
        self._live: list[_Live] = []
        self._interrupts = 0
        self._stopped_by: str | None = None
        self._terminal: list[int] = []

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
        self._live, self._interrupts, self._stopped_by = [], 0, None
        self._terminal = terminal_fds()
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
                # after a hang-up, the SIGHUP sent again when the shell exits must not kill the bookkeeping
                signal.signal(sig, signal.SIG_IGN if sig == SIGHUP and self._stopped_by == "SIGHUP" else handler)
        if self._interrupts:
            self._record_stop(outcomes, queue)
        return SweepResult(outcomes, interrupted=self._interrupts > 0, stopped_by=self._stopped_by)

    def _record_stop(self, outcomes: list[Outcome], queue: list[Task]) -> None:
        """``sweep.json``'s ``stopped``: when and by what signal the sweep stopped, the members it
        stopped and those it never started (a re-run of the sweep replaces the record)."""
        self.record["stopped"] = {
            "at": now(), "signal": self._stopped_by,
            "stopped": [o.task.member.run_name for o in outcomes if o.state == "interrupted"],
            "not_started": [t.member.run_name for t in queue],
            "continue": "run the same `mmbal sweep` command again: stopped members resume from their last "
                        "checkpoint, the others start"}
        write_record(self.home, self.record)

    def _on_signal(self, signum, frame) -> None:
        """SIGINT/SIGTERM/SIGHUP: forward one SIGINT to every running member and start no new one; a
        further SIGINT/SIGTERM forwards another (stop now), a further SIGHUP does nothing."""
        name = signal.Signals(signum).name
        if name == "SIGHUP":
            detach_from_hung_up_terminal(self._terminal)
            if self._interrupts:
                return
        self._interrupts += 1
        if self._interrupts == 1:
            self._stopped_by = name
            self.on_event("stopping", None, name)
        for item in self._live:
            _forward_sigint(item.proc)

    def _launch(self, task: Task) -> _Live:
        log = member_log(self.home, task.member.run_name)
        cmd = member_command(self.plan, task, self.cli)
        slot = min(set(range(self.jobs)) - {x.slot for x in self._live})
        gpu = slot_gpu(self.gpus, slot)
        fault_point("sweep-log", log)
        with open(log, "ab") as f:
            start = f.tell()
            placed = f"CUDA_VISIBLE_DEVICES={gpu} " if gpu is not None else ""
            f.write(f"== {now()} {placed}{' '.join(cmd)}\n".encode())
            f.flush()
            if self.launcher is None:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                        env=member_env(self.jobs, gpu), start_new_session=True)
        if self.launcher is not None:
            proc = self.launcher.start(cmd, log, task.member.run_name, env=member_env(self.jobs, gpu))
        item = _Live(task, proc, log, start, time.perf_counter(), slot, gpu)
        self._live.append(item)
        if self._interrupts:  # a signal arrived while this member was being started
            _forward_sigint(proc)
        self.on_event("start", task, gpu)
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
    """Handle SIGINT, SIGTERM and SIGHUP with ``handler``; returns the previous handlers. A SIGHUP
    ignored at start (``nohup mmbal sweep ...``) stays ignored.

    Handling SIGINT (rather than inheriting it) also matters for the members: a SIGINT ignored
    by the sweep (a background job of a non-interactive shell) would be inherited as ignored by
    every member, which could then never be asked to stop; a handled signal is reset to the
    default at exec. Outside the main thread signals cannot be set and nothing is installed.
    """
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM, *([SIGHUP] if SIGHUP is not None else [])):
        try:
            if sig == SIGHUP and hangup_ignored():
                continue
            previous[sig] = signal.signal(sig, handler)
        except ValueError:
            break
    return previous
