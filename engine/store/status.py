"""``status.json``: a run's state and heartbeat, and how readers judge whether it is alive.

The writer replaces the file atomically (:mod:`engine.store.atomic`); a :class:`Heartbeat`
thread refreshes its timestamp every ``interval`` seconds. Readers never trust a stored
``"running"`` on its own: :func:`read_status` adds ``effective_state``, which is ``"running"``
only while the heartbeat is fresh (younger than 3 intervals) and the writing process still exists
(checked when it ran on this host). This avoids Aim's runs stuck "In Progress" after a crash.
A heartbeat more than :data:`FUTURE_TOLERANCE` (5 minutes) in the future says nothing about
liveness (the writer's clock differs from this host's, or the run was copied from a machine whose
clock runs ahead): it gives ``"unknown"`` with a reason saying so and ``clock_ahead`` (seconds),
instead of ``"running"`` for as long as the clocks differ.
The fields and states are listed in ``docs/run-directory.md``.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from engine.store.atomic import atomic_write_json, read_json
from engine.store.paths import STATUS_JSON, RunPaths

HEARTBEAT_INTERVAL = 5.0
STALE_AFTER_INTERVALS = 3
FUTURE_TOLERANCE = 300.0  # seconds a heartbeat may be ahead of this host's clock (NTP-synced hosts differ by far less)
FINAL_STATES = ("finished", "failed", "interrupted")

_STATUS_LOCK = threading.Lock()


def _previous_fields(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


def write_status(run_dir: str | os.PathLike, state: str, *, site: str = STATUS_JSON, **fields: Any) -> dict[str, Any]:
    """Atomically rewrite ``run_dir/status.json`` and return what was written.

    Fields of the previous file (step, epoch, started, message, ...) are kept unless given
    again; a field passed as ``None`` is removed. ``state``, ``heartbeat`` (``time.time()``),
    ``pid`` and ``host`` always describe the calling process. ``site`` names the write for
    :mod:`engine.faults`. A failed write raises ``OSError`` naming the file and leaves the old one.
    """
    path = RunPaths(run_dir).status
    with _STATUS_LOCK:
        status = _previous_fields(path)
        status.pop("effective_state", None)
        status.update(fields)
        status.update(state=state, heartbeat=time.time(), pid=os.getpid(), host=socket.gethostname())
        status = {k: v for k, v in status.items() if v is not None}
        atomic_write_json(path, status, site=site)
    return status


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (signal 0 probes without sending). A zombie (a
    killed process its parent has not reaped yet) is not alive: it will never write again."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """True when /proc says the process has exited but is not reaped (Linux; elsewhere False)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].startswith("Z")


def _unknown(reason: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    out = dict(status or {})
    out.update(effective_state="unknown", reason=reason)
    out.setdefault("state", "unknown")
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _liveness(status: dict[str, Any], now: float) -> tuple[str, str | None]:
    """(effective state, reason) for a status whose stored state is not final."""
    state = str(status["state"])
    interval = status.get("heartbeat_interval", HEARTBEAT_INTERVAL)
    if not _is_number(interval) or interval <= 0:
        interval = HEARTBEAT_INTERVAL
    pid, host = status.get("pid"), status.get("host")
    same_host = host == socket.gethostname()
    if same_host and isinstance(pid, int) and not pid_alive(pid):
        return "failed", f"process {pid} is gone"
    age = now - status["heartbeat"]
    if age < -FUTURE_TOLERANCE:
        return "unknown", _clock_ahead_reason(-age, pid, host, same_host)
    if age < STALE_AFTER_INTERVALS * interval:
        return state, None
    where = "this host" if same_host else f"host {host}"
    return "stale", f"last heartbeat {age:.0f} s ago (process {pid} on {where})"


def _clock_ahead_reason(ahead: float, pid: Any, host: Any, same_host: bool) -> str:
    """Why a heartbeat from the future cannot tell whether the run is alive."""
    writer = f"process {pid} on this host" if same_host else f"process {pid} on host {host}"
    return (f"the last heartbeat is {_duration(ahead)} in the future ({writer}): its clock differs from this "
            f"host's, so whether the run is alive is unknown; `mmbal resume` continues it if it is not running")


def _duration(seconds: float) -> str:
    """``42 s``, ``17 min``, ``3.5 h``, ``12 days``: a clock difference in words."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def read_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The stored status plus ``effective_state`` (and ``reason`` when it differs). Never raises.

    ``effective_state`` is the stored state when it is final (finished, failed, interrupted).
    Otherwise (running, or any other live state the trainer writes) it is that state only while
    the heartbeat is younger than 3 x ``heartbeat_interval`` and the process is alive or on
    another host; a vanished process on this host gives ``"failed"``, an old heartbeat
    ``"stale"``, one more than :data:`FUTURE_TOLERANCE` in the future ``"unknown"`` (with
    ``clock_ahead``, the seconds it is ahead). A missing or unreadable file gives ``"unknown"``.
    """
    path = RunPaths(run_dir).status
    try:
        status = read_json(path)
    except FileNotFoundError:
        return _unknown(f"{STATUS_JSON} is missing")
    except (OSError, ValueError) as e:
        return _unknown(f"{STATUS_JSON} unreadable: {e}")
    if not isinstance(status.get("state"), str) or not status["state"]:
        return _unknown(f"{STATUS_JSON} has no 'state'", status)
    if status["state"] in FINAL_STATES:
        return {**status, "effective_state": status["state"]}
    if not _is_number(status.get("heartbeat")):
        return _unknown(f"{STATUS_JSON} has no valid 'heartbeat'", status)
    now = time.time()
    effective, reason = _liveness(status, now)
    out = {**status, "effective_state": effective}
    if reason is not None:
        out["reason"] = reason
    if effective == "unknown":
        out["clock_ahead"] = round(status["heartbeat"] - now, 1)
    return out


class Heartbeat:
    """Keeps ``status.json`` fresh from a daemon thread while a run is alive.

    Construction writes the initial status synchronously (``state`` plus ``fields`` plus
    ``heartbeat_interval``; a ``message`` left by an earlier process is cleared) and starts the
    thread. :meth:`update` only records values (cheap
    enough to call every step); the thread writes them at its next tick. :meth:`stop` ends the
    thread and writes the final state synchronously. As a context manager it stops with
    ``"finished"`` on a clean exit, ``"interrupted"`` on KeyboardInterrupt and ``"failed"``
    (with the exception as ``message``) otherwise, unless :meth:`stop` was already called.
    A failed write in the thread (full disk, vanished directory) is kept in ``last_error`` and
    retried at the next tick instead of killing the thread; a run checks ``last_error`` at every
    step and stops on it like on any other failed write (:mod:`engine.store.write_errors`).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        interval: float = HEARTBEAT_INTERVAL,
        state: str = "running",
        *,
        start: bool = True,
        **fields: Any,
    ):
        if not interval > 0:
            raise ValueError(f"heartbeat interval must be positive, got {interval}")
        self.run_dir = Path(run_dir)
        self.interval = float(interval)
        self.state = state
        self.last_error: BaseException | None = None
        self._fields: dict[str, Any] = {"message": None, **fields, "heartbeat_interval": self.interval}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        if start:
            self.start()

    def start(self) -> "Heartbeat":
        """Write the status now and start refreshing it (idempotent)."""
        if self._thread is not None:
            return self
        self._write()
        self._thread = threading.Thread(target=self._loop, name="mmbal-heartbeat", daemon=True)
        self._thread.start()
        return self

    def update(self, **fields: Any) -> None:
        """Remember new field values (step, epoch, ...); written at the next tick."""
        with self._lock:
            self._fields.update(fields)

    def _write(self, site: str = STATUS_JSON) -> None:
        with self._lock:
            state, fields = self.state, dict(self._fields)
        write_status(self.run_dir, state, site=site, **fields)

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self._write(site="heartbeat")
                self.last_error = None
            except Exception as e:  # noqa: BLE001 - keep beating; the run itself decides its fate
                self.last_error = e

    def stop(self, final_state: str, **fields: Any) -> dict[str, Any]:
        """Stop the thread, then write ``final_state`` with ``fields`` synchronously."""
        if final_state not in FINAL_STATES:
            raise ValueError(f"final state must be one of {', '.join(FINAL_STATES)}, got '{final_state}'")
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            self._fields.update(fields)
            self.state = final_state
            self._stopped = True
            merged = dict(self._fields)
        return write_status(self.run_dir, final_state, **merged)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._stopped:
            return
        if exc_type is None:
            self.stop("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.stop("interrupted")
        else:
            self.stop("failed", message=f"{exc_type.__name__}: {exc}")
