"""A comparison of run records: rows, config columns, cells, and the test against a baseline.

* **Rows**: one per run, or one per group (``group_by`` config keys; ``method`` means
  ``method.name``, and for a ``--grid`` sweep's members the method and the keys the grid varies,
  ``sweep.json``'s ``group_by``, while ``method.name`` is the method alone) with the mean, the
  sample standard deviation (n - 1) and the number of runs over the group's *finished* runs; the
  others are listed in ``excluded`` with their reason.
* **Config columns**: only keys whose values differ between the rows (all of them with
  ``all_config``). A method's own options (``method.<x>``) count as differing only between rows
  of the same method. In a group a key that varies reads ``mixed`` (runs recorded before an
  option existed do not make it mixed); the seed is the axis averaged over.
* **Baseline** (a row label; it implies grouping by method): every other row's metric cells
  carry ``delta = mean(row) - mean(baseline)`` and the two-sided p-value of a paired t-test over
  the seeds both rows have, per seed the mean of that seed's runs (:mod:`engine.analysis.stats`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..registry import did_you_mean
from .columns import Column, column_of, select_metric_keys
from .load import RunRecord
from .stats import mean_std, paired_t_test, significance_mark

GROUP_ALIASES = {"method": "method.name", "fusion": "model.fusion"}


@dataclass
class Cell:
    """A metric over a row's finished runs; delta/p/pairs relative to the baseline row."""

    values: list[float]
    mean: float | None
    std: float | None
    delta: float | None = None
    p: float | None = None
    pairs: int = 0
    best: bool = False
    short_of: int = 0  # finished runs of the row that lack this metric

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mark(self) -> str:
        return significance_mark(self.p)


@dataclass
class Row:
    label: str
    records: list[RunRecord]
    config: dict[str, Any]
    cells: dict[str, Cell]
    baseline: bool = False

    @property
    def used(self) -> list[RunRecord]:
        return [r for r in self.records if r.finished]

    @property
    def seeds(self) -> list:
        return sorted({r.seed for r in self.used if r.seed is not None}, key=str)

    def runs_text(self) -> str:
        used, total = len(self.used), len(self.records)
        return str(total) if used == total else f"{used}/{total}"


@dataclass
class Comparison:
    """``config_keys``: the keys that differ (table columns); ``all_keys``: every key with
    ``all_config`` (JSON and CSV columns, and the transposed config table), else the same."""

    rows: list[Row]
    columns: list[Column]
    config_keys: list[str]
    group_by: list[str] | None
    baseline: str | None
    excluded: list[RunRecord]
    warnings: list[str]
    all_keys: list[str] = field(default_factory=list)

    @property
    def grouped(self) -> bool:
        return self.group_by is not None


def show(value: Any) -> str:
    """A config value as a label or cell text: strings as they are, None as ``none``, else JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return "none"
    return json.dumps(value)


def _group_keys(records: list[RunRecord], group_by: list[str]) -> list[str]:
    known = sorted({k for r in records for k in r.config})
    keys, problems = [], []
    for item in group_by:
        key = GROUP_ALIASES.get(item, item)
        if known and key not in known:
            problems.append(f"'{item}' is not a config key{did_you_mean(key, known)}")
        keys.append(key)
    if problems:
        raise UsageError("--group-by: " + "; ".join(problems) + " (dotted config keys such as method, "
                         "model.fusion, train.lr; `--all-config` lists them)")
    return keys


def _groups(records: list[RunRecord], keys: list[str]) -> tuple[list[tuple[str, list[RunRecord]]], list[RunRecord]]:
    groups: dict[str, list[RunRecord]] = {}
    loose = []
    for r in records:
        if not r.config:
            loose.append(r)
            continue
        label = ", ".join(show(r.config.get(k, "-")) for k in keys)
        groups.setdefault(label, []).append(r)
    return list(groups.items()), loose


def _ordered_keys(records: list[RunRecord]) -> list[str]:
    keys: list[str] = []
    for r in records:
        if _has_config(r):
            keys += [k for k in r.config if k not in keys]
    return keys


def _has_config(r: RunRecord) -> bool:
    """Whether ``r`` has a whole config (a never-started sweep member knows only method and seed)."""
    return bool(r.config) and r.state != "not started"


def _row_config(records: list[RunRecord], key: str) -> Any:
    """The group's value of ``key``: the one its runs share, ``"mixed"`` when they disagree.

    Runs without the key (recorded by an older mmbal, before the option existed) do not make
    a group mixed.
    """
    values = [r.config[key] for r in records if _has_config(r) and key in r.config]
    if not values:
        return "-"
    first = values[0]
    return first if all(v == first for v in values) else "mixed"


def _method_of(row: Row) -> Any:
    names = {r.config.get("method.name") for r in row.records if _has_config(r)}
    return names.pop() if len(names) == 1 else None


def _differs(key: str, rows: list[Row]) -> bool:
    """Whether ``key`` takes several values over ``rows`` (or is ``mixed`` inside one).

    A method's own option (``method.<x>``) only counts when it differs between rows of the
    *same* method: otherwise it merely comes with the method (every mcr row has mcr's options)
    and would bury the table under one column per option of every method compared.
    """
    if any(row.config.get(key) == "mixed" for row in rows):
        return True
    if key.startswith("method.") and key != "method.name":
        by_method: dict[Any, set[str]] = {}
        for row in rows:
            if key in row.config:
                by_method.setdefault(_method_of(row), set()).add(json.dumps(row.config[key], sort_keys=True))
        return any(len(values) > 1 for values in by_method.values())
    return len({json.dumps(row.config.get(key, "-"), sort_keys=True) for row in rows}) > 1


def _config_keys(rows: list[Row], all_config: bool) -> list[str]:
    """Config keys shown: those that differ between rows with a known config (all with ``all_config``)."""
    known = [row for row in rows if any(_has_config(r) for r in row.records)]
    keys: list[str] = []
    for row in known:
        keys += [k for k in row.config if k not in keys]
    if all_config:
        return keys
    return [k for k in keys if _differs(k, known)]


def _cell(records: list[RunRecord], key: str) -> Cell:
    values = [v for v in (r.value(key) for r in records) if v is not None]
    mean, std = mean_std(values)
    finished = sum(r.finished for r in records)
    return Cell(values, mean, std, short_of=finished - len(values) if values else 0)


def _per_seed(records: list[RunRecord], key: str) -> dict[Any, float]:
    by_seed: dict[Any, list[float]] = {}
    for r in records:
        v = r.value(key)
        if v is not None and r.seed is not None:
            by_seed.setdefault(r.seed, []).append(v)
    return {s: math.fsum(vs) / len(vs) for s, vs in by_seed.items()}


def _without_unset(label: str) -> str:
    """A row label without its trailing unset grid values: ``joint, -`` -> ``joint``."""
    parts = label.split(", ")
    while len(parts) > 1 and parts[-1] == "-":
        parts.pop()
    return ", ".join(parts)


def baseline_row(rows: list[Row], label: str) -> Row:
    """The row ``--baseline`` names: its label, or the one row whose label is that once the grid values it
    does not have are dropped (``joint`` for ``joint, -`` in a sweep whose grid varies ogm_ge's alpha)."""
    labels = [r.label for r in rows]
    if label in labels:
        return rows[labels.index(label)]
    trimmed = [r for r in rows if _without_unset(r.label) == label]
    if len(trimmed) == 1:
        return trimmed[0]
    shown = ", ".join(f"'{x}'" for x in labels)
    raise UsageError(f"--baseline: no row is '{label}'{did_you_mean(label, labels)}; rows: {shown}")


def _apply_baseline(rows: list[Row], columns: list[Column], label: str) -> str:
    """Mark the baseline row and each other row's differences to it; returns the baseline row's label."""
    base = baseline_row(rows, label)
    base.baseline = True
    for row in rows:
        if row is base:
            continue
        for col in columns:
            if col.cost:
                continue
            cell, ref = row.cells[col.key], base.cells[col.key]
            if cell.mean is None or ref.mean is None:
                continue
            cell.delta = cell.mean - ref.mean
            mine, theirs = _per_seed(row.records, col.key), _per_seed(base.records, col.key)
            common = sorted(set(mine) & set(theirs), key=str)
            test = paired_t_test([mine[s] for s in common], [theirs[s] for s in common])
            cell.pairs, cell.p = test.n, test.p
    return base.label


def _shown_value(key: str, value: float) -> float:
    """``value`` at the precision the tables print it (4 decimals; MiB; hundredths of a second)."""
    if key == "peak_memory_bytes":
        return round(value / 2**20)
    return round(value, 2 if key == "time_per_epoch_s" else 4)


def _mark_best(rows: list[Row], columns: list[Column]) -> None:
    for col in columns:
        if col.better is None:
            continue
        means = [row.cells[col.key].mean for row in rows if row.cells[col.key].mean is not None]
        if len(means) < 2:
            continue
        best = max(means) if col.better == "max" else min(means)
        shown = _shown_value(col.key, best)
        if sum(_shown_value(col.key, m) == shown for m in means) > 1:
            continue   # a tie at the shown precision: no row is best
        for row in rows:
            mean = row.cells[col.key].mean
            row.cells[col.key].best = mean is not None and _shown_value(col.key, mean) == shown


def _sort(rows: list[Row], columns: list[Column], key: str) -> list[Row]:
    by_key = {c.key: c for c in columns} | {c.header: c for c in columns}
    if key in by_key:
        col = by_key[key]
        sign = 1 if col.better == "min" else -1
        present = [r for r in rows if r.cells[col.key].mean is not None]
        absent = [r for r in rows if r.cells[col.key].mean is None]
        return sorted(present, key=lambda r: sign * r.cells[col.key].mean) + absent
    if key in ("name", "label", "run"):
        return sorted(rows, key=lambda r: r.label)
    config_keys = {k for r in rows for k in r.config}
    if key in config_keys or GROUP_ALIASES.get(key) in config_keys:
        k = GROUP_ALIASES.get(key, key) if key not in config_keys else key
        return sorted(rows, key=lambda r: (str(type(r.config.get(k)).__name__), str(r.config.get(k))))
    choices = [c.key for c in columns] + [c.header for c in columns] + ["name"] + sorted(config_keys)
    raise UsageError(f"--sort: unknown key '{key}'{did_you_mean(key, choices)}; sort by a metric "
                     f"({', '.join(c.key for c in columns)}), 'name' or a config key")


def build_comparison(records: list[RunRecord], group_by: list[str] | None = None, metrics: list[str] | None = None,
                     sort: str | None = None, baseline: str | None = None, all_config: bool = False) -> Comparison:
    """The rows, columns and marks of a comparison of ``records`` (see the module docstring)."""
    warnings: list[str] = []
    if baseline and not group_by:
        group_by = ["method"]
    if group_by == ["method"]:   # a grid sweep's members: the method and the grid's keys
        group_by = ["method", *(k for k in dict.fromkeys(k for r in records for k in r.sweep_group_by)
                                if GROUP_ALIASES.get(k, k) != "method.name")]
    columns = [column_of(k) for k in select_metric_keys(records, metrics, warnings)]
    excluded: list[RunRecord] = []
    if group_by:
        keys = _group_keys(records, group_by)
        groups, excluded = _groups(records, keys)
        rows = []
        for label, members in groups:
            config = {k: _row_config(members, k) for k in _ordered_keys(members) if k not in keys and k != "seed"}
            rows.append(Row(label, members, config, {c.key: _cell(members, c.key) for c in columns}))
        excluded += [r for _, members in groups for r in members if not r.finished]
    else:
        keys = None
        rows = [Row(r.name, [r], dict(r.config), {c.key: _cell([r], c.key) for c in columns}) for r in records]
    config_keys = _config_keys(rows, False)
    all_keys = _config_keys(rows, True) if all_config else config_keys
    if baseline:
        baseline = _apply_baseline(rows, columns, baseline)
    _mark_best(rows, columns)
    if sort:
        rows = _sort(rows, columns, sort)
    if not any(r.finished for r in records):
        warnings.append("none of these runs has finished, so there are no results to compare yet")
    return Comparison(rows, columns, config_keys, keys, baseline, excluded, warnings, all_keys)
