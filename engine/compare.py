"""``mmbal compare``: run summaries side by side, per run or per group, with a paired test to a baseline.

The table answers "which balancing method helps on my data, and by how much" (ux-research 4.3,
the W&B Run Comparer / ``dvc exp show`` / ``dvc metrics diff`` shape):

* **Rows**: one per run, or one per group (``group_by`` config keys; ``method`` means
  ``method.name``) with the mean, the sample standard deviation (n - 1) and the number of runs.
  Only *finished* runs enter the numbers. Runs that failed, were interrupted, are still running
  or were never started are shown as such (as rows, or in group mode in ``excluded`` with their
  reason); a run whose files are damaged is reported with the reason and the others still compare.
* **Metric columns** (defaults): fused test accuracy and macro-F1, each modality's own test
  accuracy, ``imbalance`` and ``shapley/<m>`` (dropped when no run has them), time per epoch and
  peak memory. A key is looked up in the summary's ``test``, ``best`` then ``final`` dictionaries;
  a key without a split (``imbalance``) also as ``test/<key>`` and ``val/<key>``. The test
  values are those of the checkpoint selected on validation. The best value per column is
  marked (max for accuracy/F1, min for loss, imbalance, time and memory; Shapley values and
  unknown keys have no "best").
* **Config columns**: ``config.json`` flattened to dotted keys; only keys whose values differ
  between the rows are shown (MLflow's removed "only show diff", mlflow#10477), all of them
  with ``all_config`` (as a second, transposed table). A method's own options (``method.<x>``)
  count as differing only between rows of the same method. In group mode a key that varies
  inside a group reads ``mixed`` (runs recorded before an option existed do not make it mixed);
  the seed is the axis averaged over and is shown as the list of seeds instead.
* **Baseline**: with ``baseline`` (a group label; it implies grouping by method when no
  ``group_by`` is given) every other row's metric cells carry ``delta = mean(row) -
  mean(baseline)`` and the two-sided p-value of a paired t-test over the seeds both rows have
  (per seed the mean of that seed's runs). Marks: ``*`` p < 0.05, ``**`` p < 0.01, ``***``
  p < 0.001; none with fewer than 2 pairs. The t distribution is computed here from the
  regularised incomplete beta function (scipy is not a dependency): for ``t`` with ``df``
  degrees of freedom the two-sided p is ``I_{df/(df+t^2)}(df/2, 1/2)`` (Abramowitz & Stegun
  26.7.1 with 26.5.27), evaluated by the continued fraction of Numerical Recipes 6.4. When all
  paired differences are equal the p-value is 0 (nonzero difference) or 1 (zero difference).

Rendering: :func:`to_json`, :func:`to_csv`, :func:`to_markdown` return text; :func:`display_grid`
gives header and cell texts with a "best" flag for a terminal table (the CLI draws it with Rich).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MmbalError, RunNotFound, UsageError
from .registry import did_you_mean
from .stats import mean_std, paired_t_test, significance_mark
from .store import (CONFIG_JSON, read_json, read_run_json, read_status, read_summary, resolve_run)

COST_KEYS = ("time_per_epoch_s", "peak_memory_bytes")
SPLITS = ("train/", "val/", "test/")
SECTIONS = ("test", "best", "final")
HIDDEN_CONFIG = ("base_dir",)
GROUP_ALIASES = {"method": "method.name", "fusion": "model.fusion"}


# -- runs ---------------------------------------------------------------------------------------
def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": leaf}``; lists and scalars are leaves."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


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
        config = {k: v for k, v in flatten(read_json(path / CONFIG_JSON)).items() if k not in HIDDEN_CONFIG}
    except FileNotFoundError:
        config = {}
        problems.append(f"{CONFIG_JSON} is missing")
    except (OSError, ValueError) as exc:
        config = {}
        problems.append(str(exc))
    status = read_status(path)
    state = status["effective_state"]
    if state == "unknown":
        problems.append(status.get("reason", "status.json unreadable"))
    try:
        summary = read_summary(path)
    except (OSError, ValueError) as exc:
        summary = None
        problems.append(str(exc))
    else:
        if state == "finished" and summary is None:
            problems.append("summary.json is missing although the run finished")
        elif state == "finished" and not isinstance(summary.get("test"), dict):
            problems.append("summary.json has no test metrics although the run finished")
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
    """The members of sweep ``name``; members never started are records in state ``not started``."""
    from .sweep import sweep_members

    records = []
    for member, path in sweep_members(runs_dir, name):
        if path is None:
            config = {"method.name": member.get("method"), "seed": member.get("seed")}
            records.append(RunRecord(None, "", str(member.get("run_name")), "not started", config=config))
        else:
            records.append(load_run(path))
    return records


# -- the comparison -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    key: str
    header: str
    better: str | None  # "max" | "min" | None
    cost: bool = False


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


def better_of(key: str) -> str | None:
    if key in COST_KEYS or key.endswith("imbalance") or "/loss/" in f"/{key}/":
        return "min"
    parts = key.split("/")
    if any(p in ("acc", "f1") for p in parts[:-1]) or parts[0] in ("acc", "f1"):
        return "max"
    return None


def header_of(key: str) -> str:
    """Short column titles for the default keys (test split implied); other keys as they are."""
    if key == "time_per_epoch_s":
        return "s/epoch"
    if key == "peak_memory_bytes":
        return "peak mem"
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "test" and parts[1] in ("acc", "f1"):
        return parts[1] if parts[2] == "fused" else f"{parts[1]}:{parts[2]}"
    if len(parts) == 2 and parts[0] == "shapley":
        return f"shapley:{parts[1]}"
    return key


def all_modalities(records: list[RunRecord]) -> list[str]:
    seen: list[str] = []
    for r in records:
        seen += [m for m in r.modalities if m not in seen]
    return seen


def default_metric_keys(records: list[RunRecord]) -> list[str]:
    mods = all_modalities(records)
    optional = ["imbalance", *(f"shapley/{m}" for m in mods)]
    present = [k for k in optional if any(r.value(k) is not None for r in records)]
    return ["test/acc/fused", "test/f1/fused", *(f"test/acc/{m}" for m in mods), *present, *COST_KEYS]


def select_metric_keys(records: list[RunRecord], wanted: list[str] | None, warnings: list[str]) -> list[str]:
    """``wanted`` keys or glob patterns (``test/acc/*``) against the finished runs' keys."""
    if not wanted:
        return default_metric_keys(records)
    available: list[str] = []
    for r in records:
        if r.finished and r.summary:
            available += [k for k in summary_keys(r.summary) if k not in available]
    keys: list[str] = []
    for item in wanted:
        if any(ch in item for ch in "*?["):
            matched = [k for k in available if fnmatch.fnmatchcase(k, item)]
            if not matched:
                warnings.append(f"--metrics: no run has a metric matching '{item}'")
            keys += [k for k in matched if k not in keys]
        else:
            if not any(r.value(item) is not None for r in records):
                warnings.append(f"--metrics: no finished run has '{item}'{did_you_mean(item, available)}")
            if item not in keys:
                keys.append(item)
    return keys


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


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "none"
    return json.dumps(value)


def _groups(records: list[RunRecord], keys: list[str]) -> tuple[list[tuple[str, list[RunRecord]]], list[RunRecord]]:
    groups: dict[str, list[RunRecord]] = {}
    loose = []
    for r in records:
        if not r.config:
            loose.append(r)
            continue
        label = ", ".join(_show(r.config.get(k, "-")) for k in keys)
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


def _apply_baseline(rows: list[Row], columns: list[Column], label: str) -> None:
    labels = [r.label for r in rows]
    if label not in labels:
        raise UsageError(f"--baseline: no row is '{label}'{did_you_mean(label, labels)}; rows: {', '.join(labels)}")
    base = rows[labels.index(label)]
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


def _mark_best(rows: list[Row], columns: list[Column]) -> None:
    for col in columns:
        if col.better is None:
            continue
        means = [row.cells[col.key].mean for row in rows if row.cells[col.key].mean is not None]
        if len(means) < 2:
            continue
        best = max(means) if col.better == "max" else min(means)
        for row in rows:
            row.cells[col.key].best = row.cells[col.key].mean == best


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
    columns = [Column(k, header_of(k), better_of(k), k in COST_KEYS)
               for k in select_metric_keys(records, metrics, warnings)]
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
        _apply_baseline(rows, columns, baseline)
    _mark_best(rows, columns)
    if sort:
        rows = _sort(rows, columns, sort)
    if not any(r.finished for r in records):
        warnings.append("none of these runs has finished, so there are no results to compare yet")
    return Comparison(rows, columns, config_keys, keys, baseline, excluded, warnings, all_keys)


# -- rendering ----------------------------------------------------------------------------------
def format_number(key: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    sign = "+" if signed else ""
    if key == "peak_memory_bytes":
        return f"{value / 2**20:{sign}.0f} MiB"
    if key == "time_per_epoch_s":
        return f"{value:{sign}.2f}s"
    return f"{value:{sign}.4f}"


def cell_text(key: str, cell: Cell, with_delta: bool = True, sep: str = " ") -> str:
    """``mean ± std`` (or the single value), plus ``(+delta marks)`` after ``sep`` when there is a baseline."""
    if cell.mean is None:
        return "-"
    if cell.std is None:
        text = format_number(key, cell.mean)
    elif key == "peak_memory_bytes":
        text = f"{cell.mean / 2**20:.0f} ± {cell.std / 2**20:.0f} MiB"
    else:
        text = f"{format_number(key, cell.mean)} ± {format_number(key, cell.std)}"
    if cell.short_of:
        text += f" [n={cell.n}]"
    if with_delta and cell.delta is not None:
        text += f"{sep}({format_number(key, cell.delta, signed=True)}{cell.mark})"
    return text


def _label_header(comp: Comparison) -> str:
    if not comp.grouped:
        return "run"
    return ",".join("method" if k == "method.name" else k for k in comp.group_by)


def display_grid(comp: Comparison, multiline: bool = False) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Headers and rows of ``(text, is_best)`` cells for a terminal (``multiline``: the difference
    to the baseline on a second line) or a Markdown table."""
    headers = [_label_header(comp)]
    headers += ["runs", "seeds"] if comp.grouped else ["id", "state"]
    headers += comp.config_keys + [c.header for c in comp.columns]
    grid = []
    for row in comp.rows:
        label = row.label + (" (baseline)" if row.baseline else "")
        cells = [(label, False)]
        if comp.grouped:
            cells += [(row.runs_text(), False), (",".join(str(s) for s in row.seeds) or "-", False)]
        else:
            rec = row.records[0]
            cells += [(rec.run_id or "-", False), (rec.state_text(), False)]
        cells += [(_show(row.config.get(k, "-")), False) for k in comp.config_keys]
        sep = "\n" if multiline else " "
        cells += [(cell_text(c.key, row.cells[c.key], sep=sep), row.cells[c.key].best) for c in comp.columns]
        grid.append(cells)
    return headers, grid


def config_grid(comp: Comparison) -> tuple[list[str], list[list[str]]]:
    """Every shown config key as a row, one column per comparison row (W&B's Run Comparer layout)."""
    headers = ["config"] + [row.label for row in comp.rows]
    return headers, [[key] + [_show(row.config.get(key, "-")) for row in comp.rows] for key in comp.all_keys]


def notes(comp: Comparison) -> list[str]:
    """The lines printed under a table: what the numbers are, the test, and what was left out."""
    lines = []
    if any(c.key.startswith("test/") for c in comp.columns):
        lines.append("test metrics of the checkpoint selected on validation")
    if comp.grouped:
        lines.append("mean ± sample std (n-1) over each group's finished runs; runs = finished/total")
    if comp.baseline:
        lines.append(f"(+x) difference to '{comp.baseline}'; * p<0.05, ** p<0.01, *** p<0.001, two-sided paired "
                     f"t-test over the seeds both rows have")
    for r in comp.excluded:
        where = f" {r.run_id}" if r.run_id else ""
        lines.append(f"not included: {r.name}{where} {r.state_text()}")
    return lines


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(comp: Comparison) -> str:
    """A GitHub/pandoc pipe table, best per column in bold, and the notes as a paragraph below."""
    headers, grid = display_grid(comp)
    n_left = 1 + 2 + len(comp.config_keys)
    align = [":--"] * n_left + ["--:"] * len(comp.columns)
    lines = ["| " + " | ".join(_md_escape(h) for h in headers) + " |", "|" + "|".join(align) + "|"]
    for cells in grid:
        texts = [f"**{_md_escape(t)}**" if best else _md_escape(t) for t, best in cells]
        lines.append("| " + " | ".join(texts) + " |")
    extra = notes(comp) + (["best per column in bold"] if any(c.better for c in comp.columns) else [])
    if extra:
        lines += ["", "  \n".join(_md_escape(x) for x in extra)]
    if comp.all_keys != comp.config_keys:
        headers, grid = config_grid(comp)
        lines += ["", "| " + " | ".join(_md_escape(h) for h in headers) + " |",
                  "|" + "|".join([":--"] * len(headers)) + "|"]
        lines += ["| " + " | ".join(_md_escape(t) for t in cells) + " |" for cells in grid]
    return "\n".join(lines) + "\n"


def _record_json(r: RunRecord) -> dict:
    return {"run_id": r.run_id or None, "name": r.name, "state": r.state, "reason": r.reason,
            "seed": r.seed, "path": str(r.path) if r.path else None}


def _cell_json(cell: Cell) -> dict:
    return {"mean": cell.mean, "std": cell.std, "n": cell.n, "values": cell.values, "delta": cell.delta,
            "p": cell.p, "pairs": cell.pairs, "mark": cell.mark, "best": cell.best}


def to_dict(comp: Comparison) -> dict:
    return {
        "group_by": comp.group_by,
        "baseline": comp.baseline,
        "columns": [{"key": c.key, "header": c.header, "better": c.better} for c in comp.columns],
        "config_keys": comp.all_keys,
        "rows": [{"label": row.label, "baseline": row.baseline, "n": len(row.used), "runs": len(row.records),
                  "seeds": row.seeds, "config": {k: row.config.get(k) for k in comp.all_keys},
                  "members": [_record_json(r) for r in row.records],
                  "metrics": {c.key: _cell_json(row.cells[c.key]) for c in comp.columns}}
                 for row in comp.rows],
        "excluded": [_record_json(r) for r in comp.excluded],
        "warnings": comp.warnings,
    }


def to_json(comp: Comparison) -> str:
    return json.dumps(to_dict(comp), indent=2) + "\n"


def to_csv(comp: Comparison) -> str:
    """One line per row; metric columns by full key, ``<key>:std`` per group, ``:delta``/``:p`` with a baseline."""
    head = [_label_header(comp)] + (["runs", "n", "seeds"] if comp.grouped else ["run_id", "state"]) + comp.all_keys
    for c in comp.columns:
        head.append(c.key)
        if comp.grouped:
            head.append(f"{c.key}:std")
        if comp.baseline and not c.cost:
            head += [f"{c.key}:delta", f"{c.key}:p"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(head)
    for row in comp.rows:
        if comp.grouped:
            line = [row.label, len(row.records), len(row.used), " ".join(str(s) for s in row.seeds)]
        else:
            line = [row.label, row.records[0].run_id, row.records[0].state]
        line += [_csv_value(row.config.get(k)) for k in comp.all_keys]
        for c in comp.columns:
            cell = row.cells[c.key]
            line.append(_csv_value(cell.mean))
            if comp.grouped:
                line.append(_csv_value(cell.std))
            if comp.baseline and not c.cost:
                line += [_csv_value(cell.delta), _csv_value(cell.p)]
        writer.writerow(line)
    return out.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value if isinstance(value, str) else json.dumps(value)
