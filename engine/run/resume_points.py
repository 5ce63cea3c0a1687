"""Where a resumed run starts: the newest intact checkpoint, the best weights, and what a crash left.

``last.pt`` and ``previous.pt`` are the last two "last" checkpoints; a damaged one is set aside and
the other used, and a run that died before its first checkpoint trains again from step 0.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ResumeRefused
from ..store import read_status, read_summary
from ..train.checkpoint import CheckpointDamaged, load_checkpoint
from .. import recovery


CHECKPOINTS = "checkpoints"


def best_checkpoint(run_dir: Path, device: torch.device, state: dict, warnings: list[str]) -> dict | None:
    """The best-on-val weights, if they are intact and not newer than the resume point."""
    path = run_dir / CHECKPOINTS / "best.pt"
    try:
        best = load_checkpoint(path, map_location=device)
    except FileNotFoundError:
        return None
    except CheckpointDamaged as exc:
        warnings.append(f"checkpoint {exc}; the best weights will be re-selected from here on")
        state["best"] = {"value": None, "epoch": -1, "step": -1, "metrics": {}}
        return None
    if best["step"] > state["position"]["step"]:  # resuming from previous.pt: best.pt is from the lost epoch
        state["best"] = {"value": None, "epoch": -1, "step": -1, "metrics": {}}
        warnings.append("checkpoints/best.pt is newer than the checkpoint resumed from; the best weights will be "
                        "re-selected from here on")
        return None
    return best


def newest_good_checkpoint(run_dir: Path, device: torch.device) -> tuple[dict | None, list[str], list[Path]]:
    """``last.pt``, or ``previous.pt`` when the newest one is damaged or missing; with warnings and the
    damaged files passed over. None when there is no checkpoint at all (the run died before its first
    one): the resume then starts again from step 0. Every checkpoint damaged refuses the resume."""
    warnings, damaged, paths = [], [], []
    for name in ("last.pt", "previous.pt"):
        path = run_dir / CHECKPOINTS / name
        try:
            state = load_checkpoint(path, map_location=device)
        except FileNotFoundError:
            continue
        except CheckpointDamaged as exc:
            damaged.append(str(exc))
            paths.append(path)
            warnings.append(f"checkpoint {exc}; falling back to the previous one (the damaged file is kept as "
                            f"{CHECKPOINTS}/{name}{recovery.DAMAGED_SUFFIX})")
            continue
        state["loaded_from"] = name
        return state, warnings, paths
    if damaged:
        raise ResumeRefused(f"{run_dir} cannot be resumed: every checkpoint is damaged:\n  " + "\n  ".join(damaged)
                            + f"\nMove them out of {run_dir / CHECKPOINTS} and `mmbal resume` trains the run again "
                            "from step 0 in its directory, or start a new run with `mmbal run`.")
    return None, warnings, paths


def tidy_after_crash(run_dir: Path, state: dict | None, damaged: list[Path]) -> list[str]:
    """Before a resume trains: remove temporary files of dead writers, set damaged checkpoints aside,
    and say what else is wrong (see :mod:`engine.recovery`); a restart from step 0 also drops a
    ``best.pt`` of the attempt that died (it is selected again). Returns warnings."""
    warnings = recovery.file_warnings(run_dir, has_checkpoint=state is not None)
    for path in damaged:
        recovery.set_aside(path)
    removed = recovery.remove_dead_temps(run_dir)
    if removed:
        warnings.append(f"removed {len(removed)} temporary file(s) left by a process that died while writing: "
                        + ", ".join(removed))
    if state is None:
        (run_dir / CHECKPOINTS).mkdir(exist_ok=True)
        (run_dir / CHECKPOINTS / "best.pt").unlink(missing_ok=True)
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
