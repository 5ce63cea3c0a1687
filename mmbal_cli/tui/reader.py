"""Reading a run's files for the dashboard: what changed since the previous read, never written.

:class:`RunReader` does the I/O (it may run in a worker thread): it tails ``metrics.jsonl`` with
:class:`engine.store.MetricsTail` (the same parser ``read_metrics`` and ``mmbal compare`` use) and
re-reads the small ``status.json``, ``run.json``, ``config.json`` and ``summary.json``. It returns
a :class:`Delta`, which :meth:`~mmbal_cli.tui.model.RunModel.apply` folds in on the UI thread.
A missing or unreadable file is recorded in :attr:`Delta.problems`; nothing here raises for file
content.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.store import (
    CONFIG_JSON,
    METRICS_JSONL,
    RUN_JSON,
    SUMMARY_JSON,
    MetricsTail,
    read_json,
    read_status,
    read_summary,
)

# A larger metrics.jsonl is read as its header plus its last this many bytes (about 9,000 records):
# memory and the time of the first read stay bounded however long the run has logged.
METRICS_WINDOW_BYTES = 4 << 20


@dataclass
class Delta:
    """One read of a run's files."""

    records: list[dict]
    reset: bool
    status: dict
    info: dict | None
    config: dict | None
    summary: dict | None
    problems: dict[str, str]
    warnings: list[str]
    pending_bytes: int
    metrics_found: bool
    skipped_bytes: int = 0


class RunReader:
    """Reads what changed in ``run_dir`` since the previous :meth:`read` (not thread-safe itself:
    call it from one thread at a time)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.tail = MetricsTail(self.run_dir / METRICS_JSONL, start_window=METRICS_WINDOW_BYTES)

    def _json(self, name: str, problems: dict[str, str]) -> dict | None:
        try:
            value = read_json(self.run_dir / name)
        except FileNotFoundError:
            problems[name] = "missing"
            return None
        except (OSError, ValueError) as exc:
            problems[name] = f"unreadable: {getattr(exc, 'strerror', None) or exc}"
            return None
        if not isinstance(value, dict):
            problems[name] = "unreadable: not a JSON object"
            return None
        return value

    def _summary(self, problems: dict[str, str]) -> dict | None:
        try:
            summary = read_summary(self.run_dir)
        except (OSError, ValueError) as exc:
            problems[SUMMARY_JSON] = f"unreadable: {getattr(exc, 'strerror', None) or exc}"
            return None
        if summary is None:
            problems[SUMMARY_JSON] = "missing"  # shown only for a finished run (see run_notices)
        return summary

    def _metrics_problem(self) -> str | None:
        path = self.tail.path
        try:
            with open(path, "rb"):
                return None
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            return f"unreadable: {exc.strerror or exc}"

    def _poll_metrics(self, problems: dict[str, str]) -> tuple[list[dict], bool]:
        """New records and whether the tail started over (the caller then drops what it had)."""
        problem = self._metrics_problem()
        if problem is not None:
            problems[METRICS_JSONL] = problem
            if problem != "missing":  # an unreadable file is left alone until it can be read
                return [], False
        try:
            records = self.tail.poll()  # a missing file makes the tail start over when it returns
        except OSError as exc:
            problems[METRICS_JSONL] = f"unreadable: {exc.strerror or exc}"
            return [], False
        return records, self.tail.reset

    def read(self) -> Delta:
        problems: dict[str, str] = {}
        records, reset = self._poll_metrics(problems)
        return Delta(
            records=records,
            reset=reset,
            status=read_status(self.run_dir),
            info=self._json(RUN_JSON, problems),
            config=self._json(CONFIG_JSON, problems),
            summary=self._summary(problems),
            problems=problems,
            warnings=list(self.tail.warnings),
            pending_bytes=self.tail.pending_bytes,
            metrics_found=METRICS_JSONL not in problems,
            skipped_bytes=self.tail.skipped_bytes,
        )
