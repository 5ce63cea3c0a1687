"""A sweep's plan: every member validated and an action decided for each; nothing started or written.

A *finished* attempt whose config differs from this invocation's is a conflict (exit 2): the
user picks another ``--name``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..store import RunPaths, read_json, slugify
from .attempts import Task, config_differences, decide, read_attempt, runs_by_name
from .grid import Axis, parse_grid
from .layout import check_sweep_name
from .members import build_members, split_overrides


@dataclass
class Plan:
    name: str
    preset: Path
    runs_dir: Path
    methods: list[str]
    seeds: list[int]
    overrides: list[str]
    method_options: dict[str, dict[str, Any]]
    device: str | None
    tasks: list[Task]
    grid: list[Axis] = field(default_factory=list)

    def todo(self) -> list[Task]:
        return [t for t in self.tasks if t.action in ("start", "resume")]

    def count(self, action: str) -> int:
        return sum(t.action == action for t in self.tasks)


def plan_sweep(preset: str | os.PathLike, runs_dir: str | os.PathLike, methods: list[str], seeds: list[int],
               sets: list[str] = (), name: str | None = None, device: str | None = None,
               grid: list[str] = ()) -> Plan:
    """Validate every member (methods x seeds x every combination of the ``--grid`` items' values)
    and decide what to do about each.

    Raises :class:`UsageError` (exit 2) when a finished member's config differs from this
    invocation's or a ``--grid`` item is malformed, and :class:`PresetError` for any invalid member config.
    """
    from ..config import command_line_paths, load_preset

    preset = Path(preset).resolve()
    sets = command_line_paths(list(sets))
    runs_dir = Path(runs_dir).expanduser().resolve()
    general, scoped = split_overrides(list(sets), methods)
    axes = parse_grid(list(grid), methods, list(sets))
    if name is None:
        cfg, _ = load_preset(preset, general)
        name = slugify(cfg.name)
    check_sweep_name(name)
    members = build_members(preset, name, methods, seeds, general, scoped, device, axes)
    existing = runs_by_name(runs_dir)
    tasks, conflicts = [], []
    for member in members:
        attempts = [read_attempt(p, member.config) for p in existing.get(member.run_name, [])]
        done = any(a.state == "finished" and a.same_config for a in attempts)
        for a in attempts:
            if a.state == "finished" and not a.same_config and not done:
                diffs = config_differences(read_json(RunPaths(a.run_dir).config_json), member.config)
                conflicts.append(f"{member.run_name} (run {a.run_id}) finished with another config: "
                                 + "; ".join(diffs[:4]) + (" ..." if len(diffs) > 4 else ""))
        tasks.append(decide(member, attempts))
    if conflicts:
        raise UsageError(f"sweep '{name}' in {runs_dir} already has finished runs with a different configuration, "
                         f"so they cannot be part of this sweep: " + " | ".join(conflicts)
                         + f". Give this sweep another name with --name (e.g. --name {name}-2).")
    return Plan(name, preset, runs_dir, methods, seeds, general, scoped, device, tasks, axes)
