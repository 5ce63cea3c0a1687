"""Reading an advice for the dashboard: its ``advice.json`` and the runs of its stages, never written.

An advice (``mmbal advise``) is one record, ``<runs-dir>/advice/<name>/advice.json``, plus ordinary
runs named ``<name>-diag-...``, ``<name>-r<r>-...`` and ``<name>-apply-...``. :class:`AdviceReader`
reads both (it may run in a worker thread) and returns an :class:`AdviceRead`; nothing here raises
for file content: a missing, torn or non-object ``advice.json`` is a ``problem`` and the runs are
read all the same. A finished run does not change, so its ``mmbal ls`` line is read once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.advise.record import ADVICE_DIR, ADVICE_JSON
from engine.store import RunInfo, read_json, run_dirs, run_info, slugify

STAMP = len("YYYYMMDD-HHMMSS_")


@dataclass(frozen=True)
class AdviceRead:
    """One read: the record (None when it could not be read), why not, and the advice's runs by run
    name (per name the newest finished attempt, else the newest)."""

    record: dict | None
    problem: str | None
    runs: dict[str, RunInfo] = field(default_factory=dict)


def advice_home(runs_dir: str | os.PathLike, name: str) -> Path:
    """The advice's directory, ``<runs-dir>/advice/<name>``."""
    return Path(runs_dir) / ADVICE_DIR / name


def advice_names(runs_dir: str | os.PathLike) -> list[str]:
    """The advices of a runs directory (directories under ``advice/`` holding an ``advice.json``), by name."""
    try:
        entries = list(os.scandir(Path(runs_dir) / ADVICE_DIR))
    except OSError:
        return []
    return sorted(e.name for e in entries
                  if not e.name.startswith(".") and e.is_dir() and os.path.exists(os.path.join(e.path, ADVICE_JSON)))


def read_record(home: Path) -> tuple[dict | None, str | None]:
    """``advice.json`` of ``home`` as a dict, or None and the problem (``missing``, ``unreadable: ...``)."""
    try:
        record = read_json(home / ADVICE_JSON)
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as exc:
        return None, f"unreadable: {getattr(exc, 'strerror', None) or exc}"
    if not isinstance(record, dict):
        return None, "unreadable: not a JSON object"
    return record, None


def _slug(path: Path) -> str:
    """The run-name part of a run directory's name (``<stamp>_<slug>_<id>``)."""
    return path.name[STAMP:].rsplit("_", 1)[0]


class AdviceReader:
    """Reads the advice in ``home`` (``<runs-dir>/advice/<name>``) and its runs in ``runs_dir``."""

    def __init__(self, home: str | os.PathLike, runs_dir: str | os.PathLike | None = None):
        self.home = Path(home)
        self.name = self.home.name
        self.runs_dir = Path(runs_dir) if runs_dir is not None else self.home.parent.parent
        self._finished: dict[Path, RunInfo] = {}

    def _info(self, path: Path) -> RunInfo:
        cached = self._finished.get(path)
        if cached is not None:
            return cached
        info = run_info(path)
        if info.state == "finished":
            self._finished[path] = info
        return info

    def read_runs(self) -> dict[str, RunInfo]:
        """The advice's runs by run name: only directories whose slug starts with the advice's are read."""
        prefix, wanted = slugify(self.name), f"{self.name}-"
        chosen: dict[str, RunInfo] = {}
        for path in run_dirs(self.runs_dir):   # newest first
            if not _slug(path).startswith(prefix):
                continue
            info = self._info(path)
            if not info.name.startswith(wanted):
                continue
            held = chosen.get(info.name)
            if held is None or (held.state != "finished" and info.state == "finished"):
                chosen[info.name] = info
        return chosen

    def read(self) -> AdviceRead:
        record, problem = read_record(self.home)
        return AdviceRead(record, problem, self.read_runs())
