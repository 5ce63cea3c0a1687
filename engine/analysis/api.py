"""A run from Python (a notebook, a script): ``engine.load_run("try1").metrics()``.

:func:`load_run` resolves ``RUN`` as the CLI does (id, id prefix, name, directory name, path or
``latest``, in ``runs_dir``: default ``$MMBAL_RUNS_DIR`` or the user data dir) and returns a
:class:`Run`, a read-only view of the run directory that reads its files when asked, so a live run
shows its latest state on every call:

* ``config`` (``config.json``, nested), ``info`` (``run.json``), ``summary`` (``summary.json`` or
  None before the first checkpoint), ``status`` (the effective state: ``running``, ``finished``...);
* :meth:`Run.metrics`: one row per ``metrics`` record of ``metrics.jsonl`` as a pyarrow Table
  (``format="pandas"`` or :meth:`Run.to_pandas` for a DataFrame), rows superseded by a resume
  removed by the store's reader (:meth:`engine.store.MetricsLog.metric_rows`), so a resumed run
  reads as one uninterrupted run: each ``(split, step)`` once, from the segment that counts;
* :meth:`Run.events`: the ``event`` records (checkpoints, warnings, a method's stages...);
* :meth:`Run.checkpoint`: a verified ``weights_only`` checkpoint (``best``, ``last``, ``previous``);
  :meth:`Run.load_model` builds the run's model and loads those weights into it.

Metric columns are the names of ``docs/metrics.md`` as logged; monitors carry no split prefix, the
``split`` column says where they were measured. A value that was non-finite is NaN; a metric the
record did not log is null.
"""

from __future__ import annotations

import math
import os
from functools import cached_property
from pathlib import Path
from typing import Any

from ..config_text import flatten
from ..errors import UsageError
from ..store import (CheckpointDamaged, MetricsLog, RunPaths, default_runs_dir, load_checkpoint, read_json,
                     read_metrics, read_run_json, read_status, read_summary, resolve_run)
from ..store.meta import read_meta

ROW_COLUMNS = ("step", "epoch", "split", "seg", "t")
CHECKPOINTS = ("best", "last", "previous")
FORMATS = ("arrow", "pandas")
PANDAS_HINT = 'pip install "mmbal[pandas]"  (or: pip install pandas)'


def load_run(run: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> "Run":
    """The run ``run`` names (see the module docstring); :class:`~engine.errors.RunNotFound` otherwise."""
    return Run(resolve_run(default_runs_dir(runs_dir), os.fspath(run)))


def metric_value(raw: Any, nonfinite: bool) -> float | None:
    """A logged value as a float: NaN where the record lists it as non-finite, None where absent."""
    if nonfinite:
        return math.nan
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    return float(raw)


def metric_keys(rows: list[dict]) -> list[str]:
    """Every metric name of ``rows``, in order of first appearance."""
    return list(dict.fromkeys(key for row in rows for key in row["m"]))


def metrics_table(rows: list[dict], keys: list[str] | None = None):
    """``rows`` (``metrics`` records) as a pyarrow Table: ``step``, ``epoch``, ``split``, ``seg``, ``t``,
    then one float64 column per metric name (``keys``: those only, in that order)."""
    import pyarrow as pa

    keys = metric_keys(rows) if keys is None else list(keys)
    columns: dict[str, Any] = {
        "step": pa.array([r["step"] for r in rows], pa.int64()),
        "epoch": pa.array([_float(r.get("epoch")) for r in rows], pa.float64()),
        "split": pa.array([r.get("split") for r in rows], pa.string()),
        "seg": pa.array([r.get("seg", 0) for r in rows], pa.int64()),
        "t": pa.array([_float(r.get("t")) for r in rows], pa.float64()),
    }
    for key in keys:
        if key in columns:
            raise UsageError(f"metric '{key}' has the name of a row column ({', '.join(ROW_COLUMNS)})")
        columns[key] = pa.array([metric_value(r["m"].get(key), key in r.get("nonfinite", ())) for r in rows],
                                pa.float64())
    return pa.table(columns)


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def to_pandas(table):
    """A pyarrow Table as a pandas DataFrame; a usage error naming the extra when pandas is missing."""
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise UsageError(f"a DataFrame needs pandas, which is not installed; install it with: {PANDAS_HINT}") from None
    return table.to_pandas()


class Run:
    """A run directory, read-only (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.paths = RunPaths(self.path)
        read_run_json(self.path)  # not a run directory: RunNotFound naming it

    def __repr__(self) -> str:
        return f"Run({self.name!r}, id={self.run_id!r}, status={self.status!r}, path='{self.path}')"

    # -- identity and state ---------------------------------------------------------------------------
    @property
    def info(self) -> dict:
        """``run.json``: id, name, method, dataset, modalities, classes, device, resumes."""
        return read_run_json(self.path)

    @cached_property
    def run_id(self) -> str:
        return str(self.info.get("run_id") or self.path.name.rsplit("_", 1)[-1])

    @cached_property
    def name(self) -> str:
        return str(self.info.get("name") or self.path.name)

    @property
    def modalities(self) -> list[str]:
        return [str(m) for m in self.info.get("modalities") or []]

    @property
    def config(self) -> dict:
        """``config.json``: the resolved configuration, nested (``flat_config`` for dotted keys)."""
        return read_json(self.paths.config_json)

    def flat_config(self) -> dict[str, Any]:
        """The configuration as dotted keys (``train.lr``), without the machine-specific ``base_dir``."""
        return {k: v for k, v in flatten(self.config).items() if k != "base_dir"}

    @property
    def summary(self) -> dict | None:
        """``summary.json`` (``test``, ``best``, ``selected``, ...), or None before the first checkpoint."""
        return read_summary(self.path)

    @property
    def status(self) -> str:
        """The effective state: ``created``, ``running``, ``finished``, ``failed``, ``interrupted``,
        ``stale`` or ``unknown`` (``status_record()`` has the whole ``status.json``)."""
        return self.status_record()["effective_state"]

    def status_record(self) -> dict:
        return read_status(self.path)

    @property
    def tags(self) -> list[str]:
        return read_meta(self.path)["tags"]

    # -- the log --------------------------------------------------------------------------------------
    def log(self) -> MetricsLog:
        """``metrics.jsonl`` parsed by the store's reader (``warnings`` lists lines it skipped)."""
        return read_metrics(self.paths.metrics)

    def metrics(self, split: str | None = None, keys: list[str] | None = None, format: str = "arrow"):
        """The metric rows (superseded ones removed) as a pyarrow Table, or a pandas DataFrame with
        ``format="pandas"``; ``split`` keeps one split's rows, ``keys`` only those metric columns."""
        if format not in FORMATS:
            raise UsageError(f"format '{format}': choose one of {', '.join(FORMATS)}")
        rows = [r for r in self.log().metric_rows() if split is None or r.get("split") == split]
        table = metrics_table(rows, keys)
        return to_pandas(table) if format == "pandas" else table

    def to_pandas(self, split: str | None = None, keys: list[str] | None = None):
        """:meth:`metrics` as a pandas DataFrame."""
        return self.metrics(split, keys, format="pandas")

    def events(self, name: str | None = None) -> list[dict]:
        """The ``event`` records of every segment (optionally only those named ``name``), in file order."""
        return self.log().events(name)

    # -- weights --------------------------------------------------------------------------------------
    def checkpoint(self, which: str = "best", map_location: Any = "cpu") -> dict:
        """The verified checkpoint ``which`` (``best``, ``last`` or ``previous``) as loaded with
        ``weights_only=True``: ``model`` (the state dict), ``epoch``, ``step``, ``metrics``, ..."""
        if which not in CHECKPOINTS:
            raise UsageError(f"checkpoint '{which}': choose one of {', '.join(CHECKPOINTS)}")
        path = self.paths.checkpoint(which)
        try:
            return load_checkpoint(path, map_location=map_location)
        except FileNotFoundError:
            raise UsageError(f"{path} does not exist: {self._why_missing(which)}") from None
        except CheckpointDamaged as exc:
            raise UsageError(f"checkpoint {exc}; try another one (best, last, previous)") from None

    def _why_missing(self, which: str) -> str:
        removed = (read_meta(self.path).get("gc") or {}).get("removed") or []
        if any(str(r).endswith(f"{which}.pt") for r in removed):
            return "`mmbal gc` removed it"
        if which == "best":
            return "no evaluation was selected on validation yet (a run without a validation split has none)"
        return "the run has not written it yet (it is written at the end of every epoch)"

    def load_model(self, which: str = "best", device: Any = "cpu"):
        """The run's model (``engine.models.MultimodalModel``) with the weights of checkpoint ``which``,
        in eval mode on ``device``. Built from the run's preset and overrides, as a resume builds it;
        the dataset's schema gives the input shapes (no rows are read)."""
        from .model import build_run_model

        state = self.checkpoint(which, map_location=device)
        model = build_run_model(self.path, self.info).to(device)
        model.load_state_dict(state["model"])
        return model.eval()
