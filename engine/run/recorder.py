"""The trainer's :class:`~engine.train.trainer.Recorder`s: what training writes to the run directory.

:class:`RunRecorder` (rank 0) writes the run's record: metrics and events to ``metrics.jsonl``, the
heartbeat, checkpoints and ``summary.json``; it also passes progress on to the front end's
:class:`~engine.run.reporting.ProgressReporter`. :class:`FollowerRecorder` is the recorder of the other
ranks of a multi-process run, which write nothing.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..store import Heartbeat, MetricsWriter, RunPaths, save_run_checkpoint, write_checkpoint, write_summary
from ..store.paths import BEST, LAST, MONITORS
from .kept import RunKept
from .reporting import ProgressReporter
from .signals import checkpoint_write


class RunRecorder:
    """The trainer's :class:`~engine.train.trainer.Recorder` over a run directory (rank 0)."""

    def __init__(self, run_dir: Path, writer: MetricsWriter, heartbeat: Heartbeat, reporter: ProgressReporter,
                 epochs: int, summary_base: dict):
        self.run_dir = run_dir
        self.paths = RunPaths(run_dir)
        self.writer = writer
        self.heartbeat = heartbeat
        self.reporter = reporter
        self.epochs = epochs
        self.summary_base = summary_base
        self.kept = RunKept(run_dir)
        self.latest: dict[str, float] = {}
        self.saved: dict | None = None  # the newest "last" checkpoint known intact: name, epoch, step
        self.best_state: dict | None = None  # the selected state last written to (or resumed from) best.pt
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
        """Write ``checkpoints/<kind>.pt`` (``last`` or ``best``) after the log is on disk up to the offset
        it records; a new ``last`` is logged, and the summary and heartbeat follow it. Rotation,
        checksum and atomicity: :mod:`engine.store.checkpoints`."""
        state["metrics_offset"] = self.writer.offset()
        self.writer.flush_to_disk()
        if kind == LAST:
            self.restore_best()
        with checkpoint_write(kind):  # a second Ctrl-C or SIGTERM waits for the write (engine.run.signals)
            path = save_run_checkpoint(self.paths, state, kind)
        if kind == BEST:
            self.best_state = state
        if kind == LAST:
            pos = state["position"]
            self.saved = {"name": path.name, "epoch": pos["epoch"], "step": pos["step"]}
            self.heartbeat.update(step=pos["step"], epoch=pos["epoch"])
            self.writer.event("checkpoint", pos["step"], path=self.paths.relative(path), epoch=pos["epoch"])
            self.write_summary("running", pos, state["best"])

    def save_monitors(self, state: dict) -> None:
        """Write ``checkpoints/monitors.pt``: the monitors' state, apart from ``last.pt`` (atomic, checksummed)."""
        with checkpoint_write(MONITORS):
            write_checkpoint(self.paths.monitors, state)

    def restore_best(self) -> None:
        """Write ``best.pt`` again from the selected state in memory when it has gone missing (deleted
        while the run trains), so that a run never ends without the checkpoint it selected; the
        rewrite is logged as a warning. Called before each "last" checkpoint and before the end."""
        if self.best_state is None or self.paths.best.exists():
            return
        with checkpoint_write(BEST):
            save_run_checkpoint(self.paths, self.best_state, BEST)
        self.event("warning", self.best_state["step"],
                   message=f"{self.paths.relative(self.paths.best)} was missing (deleted during the run?); written "
                           f"again from the state selected at epoch {self.best_state['epoch'] + 1}")
        self.warn(f"{self.paths.relative(self.paths.best)} was missing; written again from the selected state")

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


class FollowerRecorder:
    """The recorder of ranks other than 0 (followers, :mod:`engine.run.ranks`): it records nothing,
    since only rank 0 writes the run directory; kept models are read from it."""

    def __init__(self, kept: RunKept | None = None):
        self.kept = kept

    def metrics(self, step, epoch, split, values): pass
    def event(self, name, step, **fields): pass
    def save_checkpoint(self, state, kind): pass
    def save_monitors(self, state): pass
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
