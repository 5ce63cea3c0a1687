"""Removing runs (``mmbal rm``) and their resume checkpoints (``mmbal gc --keep-best``).

Both take the run's lock first, so a running run (or one another process holds) is never touched,
and both only ever remove files a run directory is known to hold: the whole directory for ``rm``
(renamed aside first, so a crash midway leaves nothing that looks like a run), ``checkpoints/last.pt``
and ``previous.pt`` for ``gc``, which records what it removed in ``meta.json`` so that a later
``mmbal resume`` is refused with the reason rather than starting again from step 0.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .lock import RunLock
from .meta import change_meta
from .paths import RunPaths
from .status import read_status


def tree_size(path: str | os.PathLike) -> int:
    """Bytes of the files under ``path`` (links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def remove_run(run_dir: str | os.PathLike) -> int:
    """Delete the run directory (refused with :class:`~engine.errors.RunLocked` while a process holds
    it); returns the bytes freed."""
    run_dir = Path(run_dir)
    size = tree_size(run_dir)
    with RunLock(run_dir):
        aside = run_dir.with_name(f".{run_dir.name}.removing")
        os.rename(run_dir, aside)   # one step: the run is gone from listings at once
    shutil.rmtree(aside)
    return size


def resume_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    paths = RunPaths(run_dir)
    return [p for p in (*paths.resume_candidates, paths.monitors) if p.exists()]


def collectable(run_dir: str | os.PathLike) -> bool:
    """A finished run with resume checkpoints and a selected ``best.pt`` to keep."""
    return (read_status(run_dir)["effective_state"] == "finished" and bool(resume_checkpoints(run_dir))
            and RunPaths(run_dir).best.exists())


def collect_run(run_dir: str | os.PathLike) -> int:
    """Remove a finished run's ``last.pt``, ``previous.pt`` and ``monitors.pt`` (keeping ``best.pt``, the metrics and
    the summary), recorded in ``meta.json``; returns the bytes freed."""
    paths = RunPaths(run_dir)
    with RunLock(run_dir):
        files = resume_checkpoints(run_dir)
        size = sum(p.stat().st_size for p in files)
        change_meta(run_dir, gc={"removed": [paths.relative(p) for p in files], "bytes": size})
        for p in files:
            p.unlink()
    return size
