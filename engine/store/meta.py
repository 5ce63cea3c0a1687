"""A run's ``meta.json``: what the user says about a run after the fact (tags, notes) and what
``mmbal gc`` removed from it. Training never writes it, so editing it cannot race a running run; each
change replaces the file atomically.

    {"tags": ["baseline", "paper"], "notes": [{"at": "...", "text": "..."}],
     "gc": {"at": "...", "removed": ["checkpoints/last.pt", "checkpoints/previous.pt"], "bytes": 123}}
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .atomic import atomic_write_json, read_json
from .paths import RunPaths

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}$")


def read_meta(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's tags, notes and gc record; empty ones when the file is missing or unreadable."""
    try:
        meta = read_json(RunPaths(run_dir).meta)
    except (OSError, ValueError):
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    tags = [t for t in meta.get("tags", []) if isinstance(t, str)] if isinstance(meta.get("tags"), list) else []
    notes = [n for n in meta.get("notes", []) if isinstance(n, dict)] if isinstance(meta.get("notes"), list) else []
    return {**meta, "tags": tags, "notes": notes}


def check_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise UsageError(f"tag {tag!r}: a tag is 1 to 64 letters, digits and _ . : + - (starting with a letter "
                         f"or digit), e.g. baseline, paper-table2")
    return tag


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def change_meta(run_dir: str | os.PathLike, *, add_tags: list[str] = (), remove_tags: list[str] = (),
                note: str | None = None, gc: dict | None = None) -> dict[str, Any]:
    """Add or remove tags, append a note, or record a gc; returns the new contents."""
    meta = read_meta(run_dir)
    tags = [t for t in meta["tags"] if t not in set(remove_tags)]
    tags += [check_tag(t) for t in add_tags if t not in tags]
    meta["tags"] = list(dict.fromkeys(tags))
    if note is not None:
        text = note.strip()
        if not text:
            raise UsageError("a note needs some text")
        meta["notes"] = meta["notes"] + [{"at": _now(), "text": text}]
    if gc is not None:
        meta["gc"] = {"at": _now(), **gc}
    atomic_write_json(Path(RunPaths(run_dir).meta), meta)
    return meta
