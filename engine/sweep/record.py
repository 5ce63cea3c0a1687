"""What a sweep writes and reads: ``sweep.json``.

It holds the plan (preset, overrides, methods, seeds, method options, the ``--grid`` keys with
their values) and one entry per member with its run name, its grid values (as config keys) and the
run ids of its attempts; re-running a sweep keeps the members and attempts already recorded and
adds new ones (a member is known by its run name). ``group_by`` is how ``mmbal compare --sweep``
groups the members by default: the method and the config keys the grid varies. It is written
atomically. ``mmbal compare --sweep`` reads it through :func:`sweep_members` and :func:`sweep_group_by`.
"""

from __future__ import annotations

import json
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
    previous = previous or {}
    members = [dict(m) for m in previous.get("members", [])]
    known = {m.get("run_name") for m in members}
    for task in plan.tasks:
        m = task.member
        if m.run_name not in known:
            entry = {"method": m.method, "seed": m.seed, "run_name": m.run_name}
            if m.grid:
                entry["grid"] = m.config_grid
            members.append({**entry, "attempts": []})
    grid = {k: list(v) for k, v in (previous.get("grid") or {}).items()}
    for axis in plan.grid:
        grid[axis.key] = _union(grid.get(axis.key, []), list(axis.values))
    return {
        "schema": SWEEP_SCHEMA, "name": plan.name, "preset": str(plan.preset),
        "created": previous.get("created", now()), "updated": now(),
        "methods": _union(previous.get("methods", []), plan.methods),
        "seeds": _union(previous.get("seeds", []), plan.seeds),
        "overrides": plan.overrides, "method_options": plan.method_options, "grid": grid,
        "group_by": _union(previous.get("group_by", ["method"]), ["method", *_varied_keys(plan)]),
        "members": members,
    }


def _varied_keys(plan: Plan) -> list[str]:
    """The config keys the grid sets (of a table value, those that differ between members)."""
    exact = {axis.config_key for axis in plan.grid}
    grids = [t.member.config_grid for t in plan.tasks]
    keys: list[str] = []
    for g in grids:
        keys += [k for k in g if k not in keys]
    return [k for k in keys if k in exact or len({json.dumps(g.get(k), sort_keys=True) for g in grids}) > 1]


def _union(old: list, new: list) -> list:
    return list(old) + [x for x in new if x not in old]


def add_attempt(record: dict, member: Member, run_id: str) -> None:
    """Record ``run_id`` as the newest attempt of ``member`` in ``record`` (in place)."""
    for entry in record["members"]:
        if entry.get("run_name") == member.run_name:
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


def sweep_group_by(runs_dir: str | os.PathLike, name: str) -> list[str]:
    """How compare groups sweep ``name`` by default: ``method`` and the config keys its grid varies."""
    keys = read_sweep(runs_dir, name).get("group_by")
    return [str(k) for k in keys] if isinstance(keys, list) and keys else ["method"]
