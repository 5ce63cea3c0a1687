"""Reading and writing a run's identity (``run.json``) and results (``summary.json``).

``summary.json`` (keys: ``docs/metrics.md``) is small, schema-versioned and replaced atomically at
each checkpoint and at the end, so ``mmbal compare`` never reads half a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.errors import RunNotFound
from engine.store.atomic import atomic_write_json, read_json
from engine.store.paths import RUN_JSON, RunPaths

SUMMARY_SCHEMA = 1


def write_summary(run_dir: str | os.PathLike, summary: dict[str, Any]) -> None:
    """Atomically write ``summary.json`` with ``"schema": 1`` first (unless ``summary`` sets it)."""
    atomic_write_json(RunPaths(run_dir).summary, {"schema": SUMMARY_SCHEMA, **summary})


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's summary, or None when it has none yet; ``ValueError`` naming the file if invalid."""
    try:
        return read_json(RunPaths(run_dir).summary)
    except FileNotFoundError:
        return None


def read_run_json(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's identity record.

    Raises :class:`RunNotFound` when ``run.json`` is missing (not a run directory, or a damaged
    one) and ``ValueError`` naming the file when it is not a valid JSON object.
    """
    path = RunPaths(run_dir).run_json
    try:
        return read_json(path)
    except FileNotFoundError:
        raise RunNotFound(f"{Path(run_dir)} is not a usable mmbal run: {RUN_JSON} is missing") from None
