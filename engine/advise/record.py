"""The advice record: ``<runs-dir>/advice/<name>/advice.json``, written atomically after every stage.

It holds the options (a re-run with other options is refused: another ``--name``; until the choice has
its schedule, only the diagnosis's options are held, so a budget too small for the choice can be
raised), the diagnosis, the schedule, each round's candidates with their validation scores and what
was kept, the recommendation, the ``--apply`` test figures and, after a stop, ``stopped``. The runs
themselves are ordinary runs in the runs directory (:mod:`engine.advise.stages`).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from ..errors import RunNotFound
from ..store import atomic_write_json, read_json

ADVICE_DIR = "advice"
ADVICE_JSON = "advice.json"
SCHEMA = 1


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def advice_dir(runs_dir: str | os.PathLike, name: str) -> Path:
    return Path(runs_dir) / ADVICE_DIR / name


def read_advice(home: Path) -> dict | None:
    """The record in ``home``; None when there is none (a damaged one is refused: exit 3)."""
    path = home / ADVICE_JSON
    if not path.exists():
        return None
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        raise RunNotFound(f"{path} is damaged ({exc}); move it away to start the advice afresh") from None
    return record if isinstance(record, dict) else None


def write_advice(home: Path, record: dict) -> None:
    record["updated"] = now()
    atomic_write_json(home / ADVICE_JSON, record)
