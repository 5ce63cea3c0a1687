"""After a crash: what ``mmbal resume`` finds and tidies in the run's directory, and where it starts.

A run that died (killed, crashed, the machine went down) is resumed from the newest intact
checkpoint (``last.pt``, else ``previous.pt``: :func:`engine.store.newest_good_checkpoint`); a run
that died before its first checkpoint trains again from step 0 in its directory. Before training
continues, the resume tidies (:func:`tidy_after_crash`):

* Temporary files: a process killed in the middle of an atomic write leaves its
  ``.<name>.tmp-<pid>`` sibling (:func:`engine.store.paths.temp_path_for`) behind; the target
  itself is intact. A checkpoint's temporary file is as large as a checkpoint, so every kill
  during a save would otherwise leak one. Those of processes that no longer exist are removed
  (the resume holds the run's lock, so no other writer of this run is alive anyway).
* A damaged checkpoint that resume fell back past is renamed to ``<name>.damaged`` (kept for
  inspection, never loaded). Left as ``last.pt``, the next save would keep it as ``previous.pt``,
  over the good checkpoint the run resumed from: until the new ``last.pt`` is in place no intact
  checkpoint would exist, and a second crash there would leave the run unresumable.
* Damaged files a resume rewrites (``status.json``, ``summary.json``) and bad lines of
  ``metrics.jsonl`` (skipped by every reader) are reported as warnings, not tracebacks.

The best weights (``best.pt``) are used only when intact and not newer than the resume point
(:func:`best_checkpoint`). A failed write that stops a run is :mod:`engine.run.failures`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..store import CheckpointDamaged, RunPaths, load_checkpoint, read_metrics, read_status, read_summary
from ..store.jsonl import WINDOW_BYTES
from ..store.paths import SUMMARY_JSON, damaged_path
from ..store.status import pid_alive


def _no_best() -> dict:
    """A record of the best that nothing has been selected into yet."""
    return {"value": None, "epoch": -1, "step": -1, "metrics": {}}


def best_checkpoint(run_dir: Path, device: torch.device, state: dict, warnings: list[str]) -> dict | None:
    """The best-on-val weights, if they are intact and not newer than the resume point; otherwise
    ``state``'s record of the best is reset (the best is selected again from here on)."""
    paths = RunPaths(run_dir)
    try:
        best = load_checkpoint(paths.best, map_location=device)
    except FileNotFoundError:
        return None
    except CheckpointDamaged as exc:
        warnings.append(f"checkpoint {exc}; the best weights will be re-selected from here on")
        state["best"] = _no_best()
        return None
    if best["step"] > state["position"]["step"]:  # resuming from previous.pt: best.pt is from the lost epoch
        state["best"] = _no_best()
        warnings.append(f"{paths.relative(paths.best)} is newer than the checkpoint resumed from; the best weights "
                        "will be re-selected from here on")
        return None
    return best


def tidy_after_crash(run_dir: Path, state: dict | None, damaged: list[Path]) -> list[str]:
    """Before a resume trains: remove temporary files of dead writers, set damaged checkpoints aside,
    and say what else is wrong; a restart from step 0 also drops a ``best.pt`` of the attempt that
    died (it is selected again). Returns warnings."""
    paths = RunPaths(run_dir)
    warnings = file_warnings(run_dir, has_checkpoint=state is not None)
    for path in damaged:
        set_aside(path)
    removed = remove_dead_temps(run_dir)
    if removed:
        warnings.append(f"removed {len(removed)} temporary file(s) left by a process that died while writing: "
                        + ", ".join(removed))
    if state is None:
        paths.checkpoints.mkdir(exist_ok=True)
        paths.best.unlink(missing_ok=True)
        warnings.append(f"{run_dir} has no checkpoint yet (the run stopped before its first epoch ended): "
                        "training starts again from step 0 in the same directory; what the earlier attempt "
                        "logged is superseded")
    return warnings


def recorded_finished(run_dir: Path) -> bool:
    """Whether the run's end is on record: status.json and summary.json both say ``finished``.

    A run whose last write failed after training ended (summary or status) is not, so resuming it
    re-does the end (test metrics, summary, status) instead of refusing.
    """
    try:
        summary = read_summary(run_dir) or {}
    except ValueError:
        summary = {}
    return read_status(run_dir).get("state") == "finished" and summary.get("status") == "finished"


def remove_dead_temps(run_dir: str | os.PathLike) -> list[str]:
    """Remove temporary files of writers that no longer exist from ``run_dir`` and its checkpoints;
    returns their paths relative to ``run_dir``."""
    paths = RunPaths(run_dir)
    removed = []
    for path, pid in paths.temporary_files():
        if pid_alive(pid):
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed.append(paths.relative(path))
    return sorted(removed)


def set_aside(path: str | os.PathLike) -> Path:
    """Rename a damaged checkpoint to ``<name>.damaged`` (replacing an older one) and return the new path."""
    target = damaged_path(path)
    os.replace(path, target)
    return target


def file_warnings(run_dir: str | os.PathLike, has_checkpoint: bool) -> list[str]:
    """Problems of the files a resume reads or rewrites, one sentence each.

    An unreadable or missing ``status.json``, an unreadable ``summary.json`` (or a missing one
    although a checkpoint exists: one is written with every checkpoint) and every line of
    ``metrics.jsonl`` that readers skip (in its header and last 4 MiB: a long log is not read whole).
    """
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
    path = RunPaths(run_dir).metrics
    if has_checkpoint or path.exists():  # no log and no checkpoint: killed before it was opened
        warnings.extend(read_metrics(path, WINDOW_BYTES).warnings)  # bounded: a long log is not read whole
    return warnings
