"""What every export backend implements (:class:`Sink`) and the names of exported series.

A series is named ``<split>/<metric>`` as ``docs/metrics.md`` names it (``val/acc/fused``); the
names logged without a split (monitors, method quantities, ``lr``) get the record's split in front
(``val/mi/a``, ``train/coef/a``), so the same monitor measured on two splits makes two series. The
x axis is the optimiser step. A value that was logged as non-finite is NaN.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ...errors import MmbalError, StorageError, UsageError
from ...store.write_errors import reason
from ..api import Run, metric_value

SPLITS = ("train", "val", "test")
COST_KEYS = ("time_per_epoch_s", "peak_memory_bytes")



def series_name(split: str, key: str) -> str:
    """``key`` with the record's split in front unless it starts with a split already."""
    return key if key.split("/", 1)[0] in SPLITS else f"{split}/{key}"


def row_values(row: dict) -> dict[str, float]:
    """The values a ``metrics`` record logged, by series name (non-finite ones as NaN, nulls left out)."""
    nonfinite = set(row.get("nonfinite", ()))
    out = {}
    for key, raw in row["m"].items():
        value = metric_value(raw, key in nonfinite)
        if value is not None:
            out[series_name(str(row.get("split")), key)] = value
    return out


def summary_values(summary: dict | None) -> dict[str, float]:
    """The numbers of ``summary.json`` worth a summary field: the test metrics of the selected checkpoint
    (``test/...``), the selection (``selected/value``, ``selected/epoch``) and the cost keys."""
    if not summary:
        return {}
    out: dict[str, float] = {}
    test = summary.get("test") if isinstance(summary.get("test"), dict) else {}
    for key, raw in test.items():
        if _finite(raw):
            out[series_name("test", key)] = float(raw)
    selected = summary.get("selected") if isinstance(summary.get("selected"), dict) else {}
    for key in ("value", "epoch", "step"):
        if _finite(selected.get(key)):
            out[f"selected/{key}"] = float(selected[key])
    for key in COST_KEYS:
        if _finite(summary.get(key)):
            out[key] = float(summary[key])
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def hyperparameter(value: Any) -> bool | int | float | str:
    """A config value as a scalar hyper-parameter (lists and None as their JSON-like text)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return "none" if value is None else str(value)


def missing_extra(backend: str, requirement: str) -> UsageError:
    return UsageError(f"--to {backend} needs {requirement.split('>')[0]}, which is not installed; install it with: "
                      f'pip install "mmbal[{backend}]"  (or: pip install "{requirement}")')


def write_failed(error: OSError, backend: str) -> StorageError:
    where = error.filename or "its output"
    return StorageError(f"export to {backend} failed writing {where}: {reason(error)}. The run itself is untouched; "
                        f"what the export had written may be incomplete: fix the cause and run the export again")


class Sink(ABC):
    """One export target. The feed calls :meth:`start` once, :meth:`write` with each batch of new
    rows (in log order: steps never go down), :meth:`rewind` when rows already written were
    superseded by a resume, and :meth:`finish` with the summary at the end (also after Ctrl-C)."""

    name = ""
    requirement = ""   # the third-party package the backend needs (its pip extra), checked by :meth:`check_installed`

    def __init__(self, run: Run, out: str | os.PathLike | None = None, project: str | None = None):
        self.run = run
        self.out = out
        self.project = project
        self.notes: list[str] = []   # what the user should know afterwards (printed by the CLI)

    @property
    @abstractmethod
    def target(self) -> str:
        """Where the export went, for the user."""

    def default_dir(self) -> Path:
        """``<run>/exports``: where a backend writes unless told otherwise."""
        return self.run.path / "exports"

    def check_installed(self) -> None:
        """A usage error naming the extra to install when :meth:`import_library` fails."""
        try:
            self.import_library()
        except ImportError:
            raise missing_extra(self.name, self.requirement) from None

    def import_library(self) -> None:
        """Import the backend's third-party library (none by default)."""

    @abstractmethod
    def start(self, params: dict[str, Any]) -> None:
        """Begin the export with the run's configuration as flat parameters."""

    @abstractmethod
    def write(self, rows: list[dict]) -> None:
        """Write new metric rows, in log order."""

    @abstractmethod
    def rewind(self) -> None:
        """Rows written so far were superseded; the feed writes them all again next."""

    @abstractmethod
    def finish(self, summary: dict | None, complete: bool) -> None:
        """``complete``: the run reached a final state (not a snapshot of a live run, not a Ctrl-C)."""

    def abort(self) -> None:
        """An error stops the export: release what is open (files already written stay)."""


def user_error(exc: BaseException, backend: str) -> MmbalError | None:
    """``exc`` as the user's error when it is a failed write, else None."""
    if isinstance(exc, MmbalError):
        return exc
    if isinstance(exc, OSError):
        return write_failed(exc, backend)
    return None
