"""What a run reports while it trains: the front end's :class:`Reporter` and the run directory's recorder."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import torch

from ..store import Heartbeat, MetricsWriter, atomic_write_with, write_summary
from ..train.checkpoint import with_checksum
from ..train.trainer import Position
from .kept import RunKept
from .resume_points import CHECKPOINTS


class Reporter(Protocol):
    """What a front end (the CLI's progress display) is told while a run trains."""

    def start(self, info: dict) -> None: ...
    def progress(self, pos: Position, n_batches: int, epochs: int, values: dict[str, float] | None) -> None: ...
    def epoch(self, epoch: int, epochs: int, values: dict[str, float]) -> None: ...
    def end(self, summary: dict) -> None: ...


class NullReporter:
    def start(self, info): pass
    def progress(self, pos, n_batches, epochs, values): pass
    def epoch(self, epoch, epochs, values): pass
    def end(self, summary): pass


@dataclass
class RunResult:
    run_dir: Path
    run_id: str
    state: str  # finished | interrupted
    summary: dict


class RunRecorder:
    """The trainer's :class:`~engine.train.trainer.Recorder` over a run directory."""

    def __init__(self, run_dir: Path, writer: MetricsWriter, heartbeat: Heartbeat, reporter: Reporter,
                 epochs: int, summary_base: dict):
        self.run_dir = run_dir
        self.writer = writer
        self.heartbeat = heartbeat
        self.reporter = reporter
        self.epochs = epochs
        self.summary_base = summary_base
        self.kept = RunKept(run_dir)
        self.latest: dict[str, float] = {}
        self.saved: dict | None = None  # the newest "last" checkpoint known intact: name, epoch, step
        self.epoch_seconds = 0.0  # summed, not listed: a recorder's memory does not grow with the run
        self.epochs_timed = 0
        self._epoch_started = time.perf_counter()

    def metrics(self, step, epoch, split, values):
        if not values:
            return
        self.writer.metrics(step, epoch, split, values, seg=self.summary_base["segments"] - 1)
        self.latest.update(values)
        if split == "val":
            now = time.perf_counter()
            self.epoch_seconds += now - self._epoch_started
            self.epochs_timed += 1
            self._epoch_started = now
            self.reporter.epoch(int(epoch), self.epochs, values)

    def event(self, name, step, **fields):
        self.writer.event(name, step, **fields)

    def save_checkpoint(self, state, kind):
        """Atomically write ``checkpoints/<kind>.pt`` with a checksum; the last two "last" ones are kept
        (``last.pt`` and ``previous.pt``) so a damaged newest file still leaves a good one. The old
        ``last.pt`` becomes ``previous.pt`` only once the new one is complete on disk, so a failed
        write (disk full) leaves both as they were."""
        state["metrics_offset"] = self.writer.offset()
        with_checksum(state)
        path = self.run_dir / CHECKPOINTS / f"{kind}.pt"
        self.writer.flush_to_disk()
        keep = path.with_name("previous.pt") if kind == "last" else None
        atomic_write_with(path, lambda f: torch.save(state, f), keep_previous=keep)
        if kind == "last":
            pos = state["position"]
            self.saved = {"name": path.name, "epoch": pos["epoch"], "step": pos["step"]}
            self.heartbeat.update(step=pos["step"], epoch=pos["epoch"])
            self.writer.event("checkpoint", pos["step"], path=f"{CHECKPOINTS}/{kind}.pt", epoch=pos["epoch"])
            self.write_summary("running", pos, state["best"])

    def warn(self, message: str) -> None:
        """A warning during training (e.g. train.compile fell back to eager) for the front end."""
        if hasattr(self.reporter, "warn"):
            self.reporter.warn(message)

    def progress(self, pos, n_batches, values):
        if self.heartbeat.last_error is not None:  # status.json could not be refreshed: stop like any failed write
            raise self.heartbeat.last_error
        self.heartbeat.update(step=pos.step, epoch=pos.epoch)
        self.reporter.progress(pos, n_batches, self.epochs, values)

    def write_summary(self, status: str, pos: dict, best: dict, test: dict | None = None) -> dict:
        summary = dict(self.summary_base)
        summary.update(status=status, steps=pos["step"], epochs=pos["epoch"],
                       updated=now(), final=dict(self.latest),
                       best={**best.get("metrics", {}), **(test or {})},
                       selected={"metric": summary["select_metric"], "value": best.get("value"),
                                 "epoch": best.get("epoch"), "step": best.get("step")},
                       time_per_epoch_s=(self.epoch_seconds / self.epochs_timed) if self.epochs_timed else None,
                       peak_memory_bytes=peak_memory())
        if test is not None:
            summary["test"] = dict(test)
        write_summary(self.run_dir, summary)
        return summary


class NullRecorder:
    """The recorder of ranks other than 0: only rank 0 writes the run directory (kept models are read
    from it)."""

    def __init__(self, kept: RunKept | None = None):
        self.kept = kept

    def metrics(self, step, epoch, split, values): pass
    def event(self, name, step, **fields): pass
    def save_checkpoint(self, state, kind): pass
    def progress(self, position, n_batches, values): pass


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def peak_memory() -> int | None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    try:
        import resource
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return None
