"""What ``mmbal resume`` finds and tidies in the directory of a run that died (killed, crashed, the
machine went down), before training continues.

* Temporary files: a process killed in the middle of an atomic write leaves its
  ``.<name>.tmp-<pid>`` sibling (:func:`engine.store.atomic.temp_path_for`) behind; the target
  itself is intact. A checkpoint's temporary file is as large as a checkpoint, so every kill
  during a save would otherwise leak one. Those of processes that no longer exist are removed
  (the resume holds the run's lock, so no other writer of this run is alive anyway).
* A damaged checkpoint that resume fell back past is renamed to ``<name>.damaged`` (kept for
  inspection, never loaded). Left as ``last.pt``, the next save would keep it as ``previous.pt``,
  over the good checkpoint the run resumed from: until the new ``last.pt`` is in place no intact
  checkpoint would exist, and a second crash there would leave the run unresumable.
* Damaged files a resume rewrites (``status.json``, ``summary.json``) and bad lines of
  ``metrics.jsonl`` (skipped by every reader) are reported as warnings, not tracebacks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .store.jsonl import WINDOW_BYTES
from .store import METRICS_JSONL, SUMMARY_JSON, read_metrics, read_status, read_summary
from .store.status import pid_alive

CHECKPOINTS = "checkpoints"
DAMAGED_SUFFIX = ".damaged"
_TEMP = re.compile(r"^\..+\.tmp-(?P<pid>\d+)$")


def remove_dead_temps(run_dir: str | os.PathLike) -> list[str]:
    """Remove temporary files of writers that no longer exist from ``run_dir`` and its checkpoints;
    returns their paths relative to ``run_dir``."""
    run_dir = Path(run_dir)
    removed = []
    for folder in (run_dir, run_dir / CHECKPOINTS):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            match = _TEMP.match(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False) or pid_alive(int(match["pid"])):
                continue
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed.append(os.path.relpath(entry.path, run_dir))
    return sorted(removed)


def set_aside(path: str | os.PathLike) -> Path:
    """Rename a damaged checkpoint to ``<name>.damaged`` (replacing an older one) and return the new path."""
    path = Path(path)
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    os.replace(path, target)
    return target


def file_warnings(run_dir: str | os.PathLike, has_checkpoint: bool) -> list[str]:
    """Problems of the files a resume reads or rewrites, one sentence each.

    An unreadable or missing ``status.json``, an unreadable ``summary.json`` (or a missing one
    although a checkpoint exists: one is written with every checkpoint) and every line of
    ``metrics.jsonl`` that readers skip (in its header and last 4 MiB: a long log is not read whole).
    """
    run_dir = Path(run_dir)
    warnings = []
    status = read_status(run_dir)
    if status["effective_state"] == "unknown":
        warnings.append(f"{status.get('reason')}; the resume writes it again")
    try:
        summary = read_summary(run_dir)
    except (OSError, ValueError) as exc:
        warnings.append(f"{exc}; the resume writes it again (at the next checkpoint or at the end)")
    else:
        if summary is None and has_checkpoint:
            warnings.append(f"{SUMMARY_JSON} is missing; the resume writes it again (at the next checkpoint "
                            "or at the end)")
    path = run_dir / METRICS_JSONL
    if has_checkpoint or path.exists():  # no log and no checkpoint: killed before it was opened
        warnings.extend(read_metrics(path, WINDOW_BYTES).warnings)  # bounded: a long log is not read whole
    return warnings
