"""A run stopped by a failed write (disk full, permission denied): the status ends ``failed`` with
the reason, and the error says which file, what is safe and what to do (:mod:`engine.store.write_errors`).

What a resume does after such a stop, or after a crash, is :mod:`engine.run.recovery`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import MmbalError, StorageError
from ..store import Heartbeat, write_status
from ..store.paths import STATUS_JSON
from ..store.write_errors import failed_write, run_write_failed
from ..train.trainer import Trainer
from .recorder import RunRecorder


@dataclass
class LiveRun:
    """What a failing run has built so far: enough to say where it stopped and to mark it failed."""

    start: dict
    resumed_from: dict | None
    heartbeat: Heartbeat | None = None
    trainer: Trainer | None = None
    recorder: RunRecorder | None = None

    def position(self) -> dict:
        pos = self.trainer.pos if self.trainer is not None else None
        return {"epoch": pos.epoch, "step": pos.step} if pos else dict(self.start)

    def saved(self) -> dict | None:
        return (self.recorder.saved if self.recorder is not None else None) or self.resumed_from


def mark_failed(run_dir: Path, live: LiveRun, message: str) -> bool:
    """End the status as ``failed`` with ``message``; False when status.json cannot be written either."""
    pos = live.position()
    try:
        if live.heartbeat is not None:
            live.heartbeat.stop("failed", step=pos["step"], epoch=pos["epoch"], message=message)
        else:
            write_status(run_dir, "failed", step=pos["step"], epoch=pos["epoch"], message=message)
    except OSError:
        return False
    return True


def stop_quietly(heartbeat: Heartbeat, state: str, **fields) -> None:
    """Final status while another error is on its way: a failing write must not replace that error."""
    try:
        heartbeat.stop(state, **fields)
    except OSError:
        pass


@contextmanager
def write_failures(run_dir: Path, run_id: str, preset: str | None):
    """A failed write before training (the lock's record, a resume's run.json) as a StorageError.

    ``preset`` is given for a new run (whose status then ends ``failed``), None for a resume (whose
    status is left as it was: nothing was resumed).
    """
    try:
        yield
    except Exception as exc:
        error = None if isinstance(exc, MmbalError) else failed_write(exc, run_dir)
        if error is None:
            raise
        outcome = "stopped before training began" if preset is not None else "was not resumed"
        failure = run_write_failed(error, run_dir, run_id, preset, outcome=outcome)
        if preset is not None:
            mark_failed(run_dir, LiveRun({"epoch": 0, "step": 0}, None), str(failure))
        raise failure from None


def training_write_failure(exc: BaseException, run_dir: Path, run_info: dict, live: LiveRun) -> StorageError | None:
    """``exc`` as the error of a run stopped in training by a failed write of one of its files, with
    the status ended ``failed``; None when ``exc`` is not such a failure."""
    error = None if isinstance(exc, MmbalError) else failed_write(exc, run_dir)
    if error is None:
        return None
    failure = run_write_failed(error, run_dir, run_info["run_id"], run_info.get("preset"), live.position(),
                               live.saved())
    if not mark_failed(run_dir, live, str(failure)):
        failure = StorageError(f"{failure} ({STATUS_JSON} could not be updated either: it shows the run as "
                               f"stale once its heartbeat is old.)")
    return failure
