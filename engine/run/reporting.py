"""What a run tells its caller: progress while it trains (a :class:`ProgressReporter`, the front end)
and the outcome (:class:`RunResult`).

Not to be confused with the trainer's :class:`~engine.train.trainer.Recorder` (:mod:`engine.run.recorder`),
which writes the run's record (metrics, events, checkpoints) to the run directory: a reporter only
shows the user how the run goes and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..train.trainer import Position


class ProgressReporter(Protocol):
    """What a front end (the CLI's progress display) is told while a run trains. It may also have
    ``warn(message)`` (warnings of a resume or of training) and ``stop()`` (called by the CLI)."""

    def start(self, info: dict) -> None: ...
    def progress(self, pos: Position, n_batches: int, epochs: int, values: dict[str, float] | None) -> None: ...
    def epoch(self, epoch: int, epochs: int, values: dict[str, float]) -> None: ...
    def end(self, summary: dict) -> None: ...


class NullReporter:
    """A :class:`ProgressReporter` that shows nothing (ranks other than 0, tests, scripts)."""

    def start(self, info): pass
    def progress(self, pos, n_batches, epochs, values): pass
    def epoch(self, epoch, epochs, values): pass
    def end(self, summary): pass


@dataclass
class RunResult:
    """How ``start_run`` / ``resume_run`` ended."""

    run_dir: Path
    run_id: str
    state: str  # finished | interrupted
    summary: dict
    stopped_by: str | None = None  # an interrupted run's signal: SIGINT | SIGTERM | SIGHUP
