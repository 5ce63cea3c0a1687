"""The files of a run directory, named in one place: :class:`RunPaths`.

Every module that reads or writes a run's files asks a ``RunPaths`` for the path instead of
spelling the name::

    <run_dir>/run.json  preset.toml  config.json  metrics.jsonl  status.json  summary.json  .lock
    <run_dir>/checkpoints/last.pt  previous.pt  best.pt  kept/<name>.pt

Temporary and set-aside names are spelled here too: an atomic write goes through
``.<name>.tmp-<pid>`` beside its target (:func:`temp_path_for`), and a damaged checkpoint a resume
passed over is kept as ``<name>.damaged``. The names are those of every earlier version, so old
run directories stay readable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

RUN_JSON = "run.json"
PRESET_TOML = "preset.toml"
CONFIG_JSON = "config.json"
METRICS_JSONL = "metrics.jsonl"
STATUS_JSON = "status.json"
SUMMARY_JSON = "summary.json"
META_JSON = "meta.json"   # the user's tags and notes, and what `mmbal gc` removed (never written by training)
LOCK_FILE = ".lock"
CHECKPOINTS_DIR = "checkpoints"
KEPT_DIR = "kept"
CHECKPOINT_SUFFIX = ".pt"
LAST = "last"          # the newest checkpoint
PREVIOUS = "previous"  # the one before it, kept so that a damaged newest file still leaves a good one
BEST = "best"          # the weights selected on validation
MONITORS = "monitors"  # the monitors' state when monitor.max_overhead keeps it out of last.pt (engine.monitor.overhead)
DAMAGED_SUFFIX = ".damaged"
RUN_FILES = (RUN_JSON, PRESET_TOML, CONFIG_JSON, METRICS_JSONL, STATUS_JSON, SUMMARY_JSON, CHECKPOINTS_DIR)

_TEMP_NAME = re.compile(r"^\..+\.tmp-(?P<pid>\d+)$")


def temp_path_for(path: str | os.PathLike) -> Path:
    """``dir/.<name>.tmp-<pid>``: the temporary sibling an atomic write goes through."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def temp_writer_pid(name: str) -> int | None:
    """The pid of the writer of a temporary file named ``name`` (see :func:`temp_path_for`), else None."""
    match = _TEMP_NAME.match(name)
    return int(match["pid"]) if match else None


def damaged_path(path: str | os.PathLike) -> Path:
    """``<name>.damaged``: where a damaged checkpoint is set aside (kept for inspection, never loaded)."""
    path = Path(path)
    return path.with_name(path.name + DAMAGED_SUFFIX)


@dataclass(frozen=True, init=False)
class RunPaths:
    """The paths of the files of the run directory ``root``."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def run_json(self) -> Path:
        """The run's identity: id, name, method, dataset, versions, resumes."""
        return self.root / RUN_JSON

    @property
    def preset_toml(self) -> Path:
        """The preset as given (its text, verbatim)."""
        return self.root / PRESET_TOML

    @property
    def config_json(self) -> Path:
        """The resolved configuration (the locked keys a resume compares)."""
        return self.root / CONFIG_JSON

    @property
    def metrics(self) -> Path:
        """The append-only metrics log (:mod:`engine.store.jsonl`)."""
        return self.root / METRICS_JSONL

    @property
    def status(self) -> Path:
        """State and heartbeat (:mod:`engine.store.status`)."""
        return self.root / STATUS_JSON

    @property
    def summary(self) -> Path:
        """Results, replaced at each checkpoint and at the end (:mod:`engine.store.runs`)."""
        return self.root / SUMMARY_JSON

    @property
    def meta(self) -> Path:
        """Tags and notes the user gave the run, and checkpoints ``mmbal gc`` removed (:mod:`engine.store.meta`)."""
        return self.root / META_JSON

    @property
    def lock(self) -> Path:
        """The one-writer lock (:mod:`engine.store.lock`)."""
        return self.root / LOCK_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    def checkpoint(self, kind: str) -> Path:
        """``checkpoints/<kind>.pt`` for ``kind`` in ``last``, ``previous``, ``best``."""
        return self.checkpoints / f"{kind}{CHECKPOINT_SUFFIX}"

    @property
    def last(self) -> Path:
        return self.checkpoint(LAST)

    @property
    def previous(self) -> Path:
        return self.checkpoint(PREVIOUS)

    @property
    def best(self) -> Path:
        return self.checkpoint(BEST)

    @property
    def monitors(self) -> Path:
        """The monitors' state, written apart from ``last.pt`` under ``monitor.max_overhead``."""
        return self.checkpoint(MONITORS)

    @property
    def resume_candidates(self) -> tuple[Path, Path]:
        """The checkpoints a resume may start from, newest first: ``last.pt``, ``previous.pt``."""
        return self.last, self.previous

    @property
    def kept_dir(self) -> Path:
        """Models kept by a method's stages (:mod:`engine.run.kept`)."""
        return self.checkpoints / KEPT_DIR

    def kept(self, name: str) -> Path:
        return self.kept_dir / f"{name}{CHECKPOINT_SUFFIX}"

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to the run directory, with ``/`` (``checkpoints/last.pt``)."""
        return Path(path).relative_to(self.root).as_posix()

    def temporary_files(self) -> list[tuple[Path, int]]:
        """Temporary files of atomic writes in the run directory and its checkpoints, with their writers' pids."""
        found = []
        for folder in (self.root, self.checkpoints):
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                pid = temp_writer_pid(entry.name)
                if pid is not None and entry.is_file(follow_symlinks=False):
                    found.append((Path(entry.path), pid))
        return found
