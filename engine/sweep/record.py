"""What a sweep writes and reads: ``sweep.json``.

It holds the plan (preset, overrides, methods, seeds, method options) and one entry per member
with its run name and the run ids of its attempts; re-running a sweep keeps the members and
attempts already recorded and adds new ones. It is written atomically. ``mmbal compare --sweep``
reads it through :func:`sweep_members`.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RunNotFound
from ..registry import did_you_mean
from ..store import atomic_write_json, read_json
from .attempts import choose_attempt, runs_by_name
from .layout import SWEEP_JSON, SWEEPS_DIR, sweep_dir
from .members import Member

if TYPE_CHECKING:
    from .plan import Plan

SWEEP_SCHEMA = 1


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sweep_record(plan: Plan, previous: dict | None) -> dict:
    """The content of ``sweep.json`` for ``plan``, keeping the members and attempts already recorded."""
    old_members = {(m["method"], m["seed"]): m for m in (previous or {}).get("members", [])}
    members = [dict(m) for m in (previous or {}).get("members", [])]
    for task in plan.tasks:
        m = task.member
        if (m.method, m.seed) not in old_members:
            members.append({"method": m.method, "seed": m.seed, "run_name": m.run_name, "attempts": []})
    return {
        "schema": SWEEP_SCHEMA, "name": plan.name, "preset": str(plan.preset),
        "created": (previous or {}).get("created", now()), "updated": now(),
        "methods": _union((previous or {}).get("methods", []), plan.methods),
        "seeds": _union((previous or {}).get("seeds", []), plan.seeds),
        "overrides": plan.overrides, "method_options": plan.method_options, "members": members,
    }


def _union(old: list, new: list) -> list:
    return list(old) + [x for x in new if x not in old]


def add_attempt(record: dict, member: Member, run_id: str) -> None:
    """Record ``run_id`` as the newest attempt of ``member`` in ``record`` (in place)."""
    for entry in record["members"]:
        if entry["method"] == member.method and entry["seed"] == member.seed:
            if run_id not in entry["attempts"]:
                entry["attempts"].append(run_id)
            entry["run_id"] = run_id
    record["updated"] = now()


def read_previous(home: Path) -> dict | None:
    """The ``sweep.json`` in sweep directory ``home`` before this invocation; None if absent or unreadable."""
    if not (home / SWEEP_JSON).exists():
        return None
    try:
        return read_json(home / SWEEP_JSON)
    except (OSError, ValueError):
        return None


def write_record(home: Path, record: dict) -> None:
    atomic_write_json(home / SWEEP_JSON, record)


def read_sweep(runs_dir: str | os.PathLike, name: str) -> dict:
    """``sweep.json`` of sweep ``name``; :class:`RunNotFound` (exit 3) with did-you-mean otherwise."""
    path = sweep_dir(runs_dir, name) / SWEEP_JSON
    try:
        record = read_json(path)
    except FileNotFoundError:
        known = list_sweeps(runs_dir)
        listed = f"; sweeps there: {', '.join(known)}" if known else "; there are no sweeps there"
        raise RunNotFound(f"no sweep '{name}' in {Path(runs_dir)}{did_you_mean(name, known)}{listed}") from None
    except (OSError, ValueError) as exc:
        raise RunNotFound(f"sweep '{name}': {path} is damaged ({exc})") from None
    if not isinstance(record.get("members"), list):
        raise RunNotFound(f"sweep '{name}': {path} has no 'members' list")
    return record


def list_sweeps(runs_dir: str | os.PathLike) -> list[str]:
    root = Path(runs_dir) / SWEEPS_DIR
    try:
        return sorted(p.name for p in root.iterdir() if (p / SWEEP_JSON).exists())
    except OSError:
        return []


def sweep_members(runs_dir: str | os.PathLike, name: str) -> list[tuple[dict, Path | None]]:
    """Each member of sweep ``name`` (method, seed, run_name) with its run directory (None: not started)."""
    record = read_sweep(runs_dir, name)
    existing = runs_by_name(Path(runs_dir))
    return [(m, choose_attempt(existing.get(str(m.get("run_name")), []))) for m in record["members"]]
