"""A member's attempts (the runs of its name, newest first) and what the sweep does about them.

A finished attempt with the same config -> skip. A running one (live heartbeat) or a stale one
-> left alone and reported. An interrupted or failed attempt with a checkpoint -> resumed (exact,
like any resume). Otherwise (no attempt, one that died before its first checkpoint, or one whose
config differs because ``--set`` changed) -> a new run under the same name; older attempts stay
on disk and compare uses the newest finished one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..config_text import flatten
from ..store import RunPaths, list_runs, read_json, read_status
from .members import Member

# Keys that may differ between attempts of one member without making them different experiments.
IGNORED_CONFIG_KEYS = ("base_dir", "train.device", "train.threads")


@dataclass(frozen=True)
class Attempt:
    """An existing run of a member: its directory, effective state and whether its config matches."""

    run_dir: Path
    run_id: str
    state: str
    same_config: bool
    has_checkpoint: bool
    reason: str | None = None


@dataclass(frozen=True)
class Task:
    """What the sweep does about one member: skip | running | stale | resume | start."""

    member: Member
    action: str
    attempt: Attempt | None = None
    note: str = ""


def config_differences(a: dict, b: dict) -> list[str]:
    """``key: old -> new`` for every flattened key both configs have with different values.

    Keys only one side has are not differences: a newer mmbal adds options with their defaults
    (or drops old ones), and a run finished before the upgrade is still the same experiment.
    :data:`IGNORED_CONFIG_KEYS` (where it ran) never count.
    """
    fa, fb = flatten(a), flatten(b)
    keys = [k for k in fa if k in fb and k not in IGNORED_CONFIG_KEYS]
    return [f"{k}: {json.dumps(fa[k])} -> {json.dumps(fb[k])}" for k in keys if fa[k] != fb[k]]


def runs_by_name(runs_dir: Path) -> dict[str, list[Path]]:
    """Run directories grouped by run name (``mmbal ls``'s reading of them), newest first."""
    found: dict[str, list[Path]] = {}
    for info in list_runs(runs_dir):
        found.setdefault(info.name, []).append(info.path)
    return found


def read_attempt(path: Path, config: dict | None) -> Attempt:
    """The attempt in run directory ``path``, its config compared with ``config`` (None: any matches)."""
    status = read_status(path)
    try:
        old = read_json(RunPaths(path).config_json)
        same = config is None or not config_differences(old, config)
    except (OSError, ValueError):
        same = False
    run_id = path.name.rsplit("_", 1)[-1]
    return Attempt(path, run_id, status["effective_state"], same,
                   RunPaths(path).last.exists(), status.get("reason"))


def choose_attempt(paths: list[Path]) -> Path | None:
    """The attempt that represents a member: the newest finished one, else the newest."""
    for path in paths:
        if read_status(path)["effective_state"] == "finished":
            return path
    return paths[0] if paths else None


def decide(member: Member, attempts: list[Attempt]) -> Task:
    """The action for one member given its attempts (newest first); see the module docstring."""
    for a in attempts:
        if a.state == "finished" and a.same_config:
            return Task(member, "skip", a, "finished")
    for a in attempts:
        if a.state in ("running", "created"):
            return Task(member, "running", a, "running in another process")
        if a.state == "stale":
            return Task(member, "stale", a, a.reason or "heartbeat is stale")
    for a in attempts:
        if a.same_config and a.state in ("interrupted", "failed") and a.has_checkpoint:
            return Task(member, "resume", a, f"{a.state}; resuming from its last checkpoint")
    if attempts:
        a = attempts[0]
        why = "config changed" if not a.same_config else f"{a.state} before its first checkpoint"
        return Task(member, "start", a, f"previous attempt {a.run_id} {why}; starting afresh")
    return Task(member, "start")
