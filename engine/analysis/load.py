"""Runs as ``mmbal compare`` reads them: one :class:`RunRecord` per run directory or sweep member.

A metric key is looked up in the summary's ``test``, ``best`` then ``final`` dictionaries; a key
without a split (``imbalance``) also as ``test/<key>`` and ``val/<key>``. The test values are those
of the checkpoint selected on validation. Only finished runs have values; a run whose files are
damaged becomes a record in state ``damaged`` with the reason, so the others still compare.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config_text import flatten
from ..errors import MmbalError, RunNotFound
from ..store import (CONFIG_JSON, STATUS_JSON, SUMMARY_JSON, RunPaths, read_json, read_run_json, read_status,
                      read_summary, resolve_run)
from ..sweep.record import sweep_group_by, sweep_members

COST_KEYS = ("time_per_epoch_s", "peak_memory_bytes")
SPLITS = ("train/", "val/", "test/")
SECTIONS = ("test", "best", "final")
HIDDEN_CONFIG = ("base_dir",)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class RunRecord:
    """One run as compare sees it. ``state``: the effective state, ``"damaged"`` or ``"not started"``."""

    path: Path | None
    run_id: str
    name: str
    state: str
    reason: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict | None = None
    modalities: list[str] = field(default_factory=list)
    epoch: Any = None
    sweep_group_by: tuple[str, ...] = ()  # a sweep member: how its sweep groups by default (sweep.json)

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    def value(self, key: str) -> float | None:
        """Metric ``key`` of a finished run (see the module docstring for where it is looked up)."""
        if not self.finished or self.summary is None:
            return None
        return summary_value(self.summary, key)

    def state_text(self) -> str:
        if self.state in ("finished", "not started"):
            return self.state
        where = f" at epoch {self.epoch}" if self.epoch not in (None, "") and self.state != "damaged" else ""
        return f"{self.state}{where}" + (f": {self.reason}" if self.reason else "")


def summary_value(summary: dict, key: str) -> float | None:
    candidates = [key] if key.startswith(SPLITS) else [key, f"test/{key}", f"val/{key}"]
    for section in SECTIONS:
        table = summary.get(section)
        if isinstance(table, dict):
            for c in candidates:
                value = _number(table.get(c))
                if value is not None:
                    return value
    return _number(summary.get(key))


def summary_keys(summary: dict) -> list[str]:
    """Every numeric key a summary offers (its sections' keys and the cost keys)."""
    keys = [k for k in COST_KEYS if _number(summary.get(k)) is not None]
    for section in SECTIONS:
        table = summary.get(section)
        if isinstance(table, dict):
            keys += [k for k, v in table.items() if _number(v) is not None and k not in keys]
    return keys


def load_run(path: str | os.PathLike) -> RunRecord:
    """Read one run directory; damaged files give ``state="damaged"`` with the reason, never an exception."""
    path = Path(path)
    problems: list[str] = []
    try:
        meta = read_run_json(path)
    except (MmbalError, OSError, ValueError) as exc:
        meta = {}
        problems.append(str(exc))
    try:
        config = {k: v for k, v in flatten(read_json(RunPaths(path).config_json)).items() if k not in HIDDEN_CONFIG}
    except FileNotFoundError:
        config = {}
        problems.append(f"{CONFIG_JSON} is missing")
    except (OSError, ValueError) as exc:
        config = {}
        problems.append(str(exc))
    status = read_status(path)
    state = status["effective_state"]
    if state == "unknown":
        problems.append(status.get("reason", f"{STATUS_JSON} unreadable"))
    try:
        summary = read_summary(path)
    except (OSError, ValueError) as exc:
        summary = None
        problems.append(str(exc))
    else:
        if state == "finished" and summary is None:
            problems.append(f"{SUMMARY_JSON} is missing although the run finished")
        elif state == "finished" and not isinstance(summary.get("test"), dict):
            problems.append(f"{SUMMARY_JSON} has no test metrics although the run finished")
    reason = status.get("message") or status.get("reason")
    modalities = meta.get("modalities") or (summary or {}).get("modalities") or []
    record = RunRecord(path=path, run_id=str(meta.get("run_id") or path.name.rsplit("_", 1)[-1]),
                       name=str(meta.get("name") or path.name), state=state, reason=reason,
                       config=config, summary=summary, epoch=status.get("epoch"),
                       modalities=[str(m) for m in modalities] if isinstance(modalities, list) else [])
    if problems:
        record.state = "damaged"
        record.reason = "; ".join(p.replace(f"{path}{os.sep}", "") for p in problems)
    return record


def load_runs(runs_dir: str | os.PathLike, refs: list[str]) -> list[RunRecord]:
    """Resolve every ``RUN`` reference (exit 3 listing all that match nothing) and read the runs."""
    paths, missing = [], []
    for ref in refs:
        try:
            paths.append(resolve_run(runs_dir, ref))
        except RunNotFound as exc:
            missing.append(str(exc))
    if missing:
        raise RunNotFound(" | ".join(missing))
    unique = list(dict.fromkeys(paths))
    return [load_run(p) for p in unique]


def load_sweep(runs_dir: str | os.PathLike, name: str) -> list[RunRecord]:
    """The members of sweep ``name``; members never started are records in state ``not started``
    (their config: method, seed and grid values). Each carries the sweep's default grouping."""
    records = []
    for member, path in sweep_members(runs_dir, name):
        if path is None:
            grid = member.get("grid") if isinstance(member.get("grid"), dict) else {}
            config = {"method.name": member.get("method"), "seed": member.get("seed"), **flatten(grid)}
            records.append(RunRecord(None, "", str(member.get("run_name")), "not started", config=config))
        else:
            records.append(load_run(path))
    group_by = tuple(sweep_group_by(runs_dir, name))
    for record in records:
        record.sweep_group_by = group_by
    return records
