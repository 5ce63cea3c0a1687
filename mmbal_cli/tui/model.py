"""What the dashboard knows about one run: read from its files, never written.

:class:`RunReader` does the I/O (it may run in a worker thread): it tails ``metrics.jsonl`` with
:class:`engine.store.MetricsTail` (the same parser ``read_metrics`` and ``mmbal compare`` use) and
re-reads the small ``status.json``, ``run.json``, ``config.json`` and ``summary.json``. It returns
a :class:`Delta`, which :meth:`RunModel.apply` folds in on the UI thread. :class:`RunModel` then
derives everything shown: header fields, the per-modality panel, chart series and events, what the
method's ``coef/``, ``score/`` and ``method/`` values mean (from the registration of the run's
method, :func:`method_info`), and the notices that explain a damaged or dead run (a torn last line,
bad lines, a resume that superseded steps, a stale heartbeat, a missing or unreadable file).
Nothing here raises for file content.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from engine.store import (
    CONFIG_JSON,
    METRICS_JSONL,
    RUN_JSON,
    SUMMARY_JSON,
    MetricsLog,
    MetricsTail,
    read_json,
    read_status,
    read_summary,
)

from .chart import PALETTE, ChartData, Marker, Series

LIVE_STATES = ("running", "created")
# A larger metrics.jsonl is read as its header plus its last this many bytes (about 9,000 records):
# memory and the time of the first read stay bounded however long the run has logged.
METRICS_WINDOW_BYTES = 4 << 20
EVAL_PREFIXES = ("mi/", "cmi/", "shapley/")
# Event name -> (axis symbol, vertical rule, priority, legend text).
EVENT_MARKS = {
    "resume": ("R", True, 5, "resume"),
    "head_added": ("H", True, 4, "head added"),
    "stage": ("S", True, 4, "stage"),
    "interrupted": ("I", True, 3, "interrupted"),
    "checkpoint": ("c", False, 1, "checkpoint"),
}
OTHER_EVENT_MARK = ("*", False, 2, "other event")
SKIPPED_EVENTS = ("finished",)  # the end of the curve already says it


def _num(raw: Any) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    return float(raw) if math.isfinite(raw) else None


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n < 10 << 30 else f"{n / (1 << 30):.1f} GiB"


def _int(raw: Any) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


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


@lru_cache(maxsize=None)
def method_info(name: str):
    """The registration (:class:`engine.methods.MethodInfo`) of method ``name``; None when this
    mmbal registers no such method (a run of another version). The first call imports the methods,
    and with them torch (about a second): the dashboard makes it in its reading worker
    (:meth:`RunReader.read` itself reads only the run's files)."""
    from engine.methods import METHODS

    return METHODS.entry(name).info if name in METHODS else None


def method_name(info: dict | None, config: dict | None) -> str | None:
    """The run's method name: ``[method] name`` of its config.json, else run.json's ``method``."""
    method = (config or {}).get("method")
    name = method.get("name") if isinstance(method, dict) else None
    name = name if isinstance(name, str) else (info or {}).get("method")
    return name if isinstance(name, str) and name else None


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
            problems[SUMMARY_JSON] = "missing"  # shown only for a finished run (see RunModel.notices)
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


@dataclass(frozen=True)
class Notice:
    """A line under the header: ``level`` is info, warning or error."""

    level: str
    text: str


@dataclass(frozen=True)
class ModalityRow:
    name: str
    values: dict[str, float | None]
    weakest: bool = False


@dataclass(frozen=True)
class LiveMeaning:
    """What one live quantity means for the run's method: the registration's ``pattern`` it matches
    (``score/<m>``) and its ``text``; ``known`` False when the registration does not describe it
    (``pattern`` is then the key itself and ``text`` says why)."""

    pattern: str
    text: str
    known: bool = True

    def caption(self) -> str:
        return f"{self.pattern}: {self.text}"

    def label(self, key: str) -> str:
        """What ``key`` puts in the pattern's placeholder (``a`` for ``score/a`` of ``score/<m>``);
        "" for a pattern without one."""
        if "<" not in self.pattern or ">" not in self.pattern:
            return ""
        head, tail = self.pattern.split("<", 1)[0], self.pattern.split(">", 1)[1]
        return key[len(head):len(key) - len(tail)]


@dataclass(frozen=True)
class LiveGroup:
    """The live quantities of one pattern with their latest values, for ``--once``."""

    meaning: LiveMeaning
    values: list[tuple[str, float | None]]


@dataclass(frozen=True)
class EventRow:
    step: int | None
    epoch: float | None
    seg: int | None
    name: str
    details: str
    superseded: bool = False


PANEL_COLUMNS = (
    ("train acc", "train/acc/{m}"),
    ("val acc", "val/acc/{m}"),
    ("mi", "mi/{m}"),
    ("cmi", "cmi/{m}"),
    ("shapley", "shapley/{m}"),
    ("coef", "coef/{m}"),
    ("grad", "grad/{m}"),
)

CHART_TABS = (
    ("acc", "Acc"),
    ("loss", "Loss"),
    ("coef", "Coef"),
    ("mi", "MI"),
    ("shapley", "Shapley"),
    ("grad", "Grad"),
    ("method", "Method"),
)


@dataclass
class _Index:
    """Per split (and ``None`` for all): metric key -> list of (step, epoch, value), built from the
    first ``records`` records of ``log``."""

    log: MetricsLog
    records: int = 0
    by_split: dict[str | None, dict[str, list[tuple[int, float | None, float | None]]]] = field(default_factory=dict)

    def add(self, rows) -> None:
        every = self.by_split.setdefault(None, {})
        for row in rows:
            per_split = self.by_split.setdefault(row.get("split"), {})
            epoch = _num(row.get("epoch"))
            for key, raw in row["m"].items():
                point = (row["step"], epoch, _num(raw))
                per_split.setdefault(key, []).append(point)
                every.setdefault(key, []).append(point)


def _sorted_points(raw, x_axis: str) -> list[tuple[float, float | None]]:
    """``(x, value)`` sorted by x from index entries ``(step, epoch, value)``; a repeated x keeps the later value."""
    by_x: dict[float, float | None] = {}
    for step, epoch, value in raw:
        x = step if x_axis == "step" else epoch
        if x is not None:
            by_x[float(x)] = value
    return sorted(by_x.items())


def _extend_points(points: list, new, x_axis: str) -> list | None:
    """``points`` (sorted by x) followed by the ``new`` entries, as a new list; None when an entry's x
    is below the last one (the caller then sorts from scratch)."""
    out = list(points)
    for step, epoch, value in new:
        x = step if x_axis == "step" else epoch
        if x is None:
            continue
        x = float(x)
        if not out or x > out[-1][0]:
            out.append((x, value))
        elif x == out[-1][0]:
            out[-1] = (x, value)
        else:
            return None
    return out


class RunModel:
    """The dashboard's view of one run; fed by :meth:`apply`, read by the widgets."""

    def __init__(self, run_dir: str | os.PathLike, clock: Callable[[], float] = time.time):
        self.run_dir = Path(run_dir)
        self.clock = clock
        self.log = MetricsLog()
        self.status: dict = {"effective_state": "unknown", "reason": "not read yet"}
        self.info: dict = {}
        self.config: dict = {}
        self.summary: dict | None = None
        self.problems: dict[str, str] = {}
        self.warnings: list[str] = []
        self.pending_bytes = 0
        self.metrics_found = False
        self.skipped_bytes = 0  # bytes of metrics.jsonl between the header and the window, not read
        self.loaded = False
        self.version = 0
        self._index: _Index | None = None
        self._memos: dict[object, tuple[object, object]] = {}
        self._folds: dict[str, tuple[list, int, object]] = {}  # see _folded
        # (key, split, x axis) -> (index list, points of its first n entries, those points): a refresh
        # extends the points with the new rows instead of re-sorting every row of a long run
        self._points: dict[tuple, tuple[list, int, list]] = {}

    # -- updating -------------------------------------------------------------------------------
    def apply(self, delta: Delta) -> bool:
        """Fold in one read; True when anything shown may have changed."""
        before = (self.status, self.info, self.config, self.summary, self.problems, self.warnings,
                  self.pending_bytes, self.metrics_found, self.skipped_bytes)
        if delta.reset:
            self.log = MetricsLog()
        if delta.records:
            self.log.records.extend(delta.records)
        self.status = delta.status
        self.info = delta.info or {}
        self.config = delta.config or {}
        self.summary = delta.summary
        self.problems = delta.problems
        self.warnings = delta.warnings
        self.pending_bytes = delta.pending_bytes
        self.metrics_found = delta.metrics_found
        self.skipped_bytes = delta.skipped_bytes
        after = (self.status, self.info, self.config, self.summary, self.problems, self.warnings,
                 self.pending_bytes, self.metrics_found, self.skipped_bytes)
        changed = delta.reset or bool(delta.records) or before != after or not self.loaded
        self.loaded = True
        if changed:
            self.version += 1
        return changed

    def load(self) -> "RunModel":
        """Read everything now (the one-shot path: ``--once``, tests)."""
        self.apply(RunReader(self.run_dir).read())
        return self

    # -- identity -------------------------------------------------------------------------------
    def _header(self) -> dict:
        return self.log.header() or {}

    @property
    def run_id(self) -> str:
        return str(self.info.get("run_id") or self._header().get("run_id") or self.run_dir.name.rsplit("_", 1)[-1])

    @property
    def name(self) -> str:
        return str(self.info.get("name") or self._header().get("name") or self.run_dir.name)

    @property
    def method(self) -> str:
        method = self.info.get("method") or self._header().get("method") or (self.config.get("method") or {})
        return str(method.get("name", "?") if isinstance(method, dict) else method)

    @property
    def dataset(self) -> str:
        return str(self.info.get("dataset") or (self.summary or {}).get("dataset") or "?")

    @property
    def device(self) -> str:
        return str(self.info.get("device") or (self.summary or {}).get("device") or "?")

    @property
    def modalities(self) -> list[str]:
        for source in (self.info.get("modalities"), self.config.get("modalities"), self._header().get("modalities")):
            if isinstance(source, (list, dict)) and source:
                return [str(m) for m in source]
        found = []
        for key in self.keys():
            parts = key.split("/")
            if len(parts) == 3 and parts[1] == "acc" and parts[2] != "fused" and parts[2] not in found:
                found.append(parts[2])
        return found

    # -- state and progress ---------------------------------------------------------------------
    @property
    def state(self) -> str:
        return str(self.status.get("effective_state", "unknown"))

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def epochs_total(self) -> int | None:
        train = self.config.get("train")
        epochs = _int(train.get("epochs")) if isinstance(train, dict) else None
        return epochs if epochs and epochs > 0 else None

    @property
    def steps_per_epoch(self) -> int | None:
        """As recorded (``steps_per_epoch`` in the log's header or status.json), else inferred from
        the log: a row at ``step`` s and fractional ``epoch`` f has s = f x steps per epoch."""
        for source in (self.status, self._header()):
            recorded = _int(source.get("steps_per_epoch"))
            if recorded and recorded > 0:
                return recorded
        return self._memo("steps_per_epoch", self._infer_steps_per_epoch)

    def _infer_steps_per_epoch(self) -> int | None:
        rows = self.log.metric_rows()
        for wanted in ("val", "train"):
            for row in reversed(rows):
                epoch = _num(row.get("epoch"))
                if row.get("split") == wanted and epoch and epoch > 0 and row["step"] > 0:
                    return max(round(row["step"] / epoch), 1)
        return None

    @property
    def step(self) -> int:
        rows = self.log.metric_rows()
        logged = rows[-1]["step"] if rows else 0
        return max(_int(self.status.get("step")) or 0, logged)

    @property
    def total_steps(self) -> int | None:
        spe, epochs = self.steps_per_epoch, self.epochs_total
        return spe * epochs if spe and epochs else None

    @property
    def epoch_now(self) -> int | None:
        """The epoch in progress (1-based), or the last one when training is complete."""
        spe, total = self.steps_per_epoch, self.epochs_total
        if spe:
            current = self.step // spe + (0 if self.step % spe == 0 and not self.is_live else 1)
        else:
            status_epoch = _int(self.status.get("epoch"))
            if status_epoch is None:
                return None
            current = status_epoch + (1 if self.is_live else 0)
        current = max(current, 1)
        return min(current, total) if total else current

    @property
    def progress(self) -> float | None:
        total = self.total_steps
        return min(self.step / total, 1.0) if total else None

    def _segments(self) -> list[tuple[float, float, int]]:
        """Per segment (start time, last time, starting step), from header/resume records."""
        return [(a, b, int(s)) for a, b, s in self._folded("segments", self._scan_segments)]

    @staticmethod
    def _scan_segments(out: list[list[float]] | None, records: list[dict]) -> list[list[float]]:
        out = out if out is not None else []
        for record in records:
            t = _num(record.get("t"))
            if t is None:
                continue
            if record["kind"] in ("header", "resume") or not out:
                out.append([t, t, float(record.get("from_step", 0) if record["kind"] == "resume" else 0)])
            else:
                out[-1][1] = max(out[-1][1], t)
        return out

    def elapsed(self) -> float | None:
        """Training wall time summed over segments (time between a crash and its resume excluded)."""
        segments = self._segments()
        if not segments:
            started = self.status.get("started")
            if self.is_live and isinstance(started, str):
                try:
                    return max(self.clock() - datetime.fromisoformat(started).timestamp(), 0.0)
                except ValueError:
                    return None
            return None
        total = sum(last - start for start, last, _ in segments[:-1])
        start, last, _ = segments[-1]
        return total + max((self.clock() if self.is_live else last) - start, 0.0)

    def eta(self) -> float | None:
        """Seconds left at the current segment's rate (None unless running with a known total)."""
        total = self.total_steps
        segments = self._segments()
        rows = self.log.metric_rows()
        if not (self.is_live and total and segments and rows):
            return None
        start, _, start_step = segments[-1]
        last_t = _num(rows[-1].get("t"))
        done = rows[-1]["step"] - start_step
        if last_t is None or done <= 0 or last_t <= start:
            return None
        return max(total - self.step, 0) * (last_t - start) / done

    # -- values ---------------------------------------------------------------------------------
    def preferred_split(self, key: str) -> str | None:
        """Where ``key`` is read from: its own split for ``train/...`` and friends; for the
        evaluation estimates (``mi/``, ``cmi/``, ``shapley/``) the val rows when it has any (the
        monitors also log running training estimates of ``mi/``); otherwise the train rows when it
        has any (per-interval values, denser than a per-epoch copy); else every row."""
        head = key.split("/", 1)[0]
        if head in ("train", "val", "test"):
            return head
        index = self._series_index().by_split
        if key.startswith(EVAL_PREFIXES) and key in index.get("val", {}):
            return "val"
        if key in index.get("train", {}):
            return "train"
        return None

    def value(self, key: str) -> float | None:
        """The latest value of ``key`` from its :meth:`preferred_split` (None: absent or non-finite)."""
        points = self._series_index().by_split.get(self.preferred_split(key), {}).get(key)
        return points[-1][2] if points else None

    def modality_rows(self) -> list[ModalityRow]:
        """One row per modality plus ``fused``; the weakest modality (lowest val accuracy, else
        lowest train accuracy) is flagged when at least two modalities have a value."""
        rows = []
        for m in self.modalities:
            rows.append(ModalityRow(m, {label: self.value(key.format(m=m)) for label, key in PANEL_COLUMNS}))
        weakest = self.weakest(rows)
        rows = [ModalityRow(r.name, r.values, r.name == weakest) for r in rows]
        fused = {label: self.value(key.format(m="fused")) if label in ("train acc", "val acc") else None
                 for label, key in PANEL_COLUMNS}
        rows.append(ModalityRow("fused", fused))
        return rows

    @staticmethod
    def weakest(rows: list[ModalityRow]) -> str | None:
        for column in ("val acc", "train acc"):
            scored = [(r.values[column], r.name) for r in rows if r.values.get(column) is not None]
            if len(scored) >= 2 and len(scored) == len(rows):
                return min(scored)[1]
        return None

    def test_values(self) -> dict[str, float | None]:
        """The selected checkpoint's test metrics (summary.json), else the log's test row."""
        test = (self.summary or {}).get("test")
        if isinstance(test, dict) and test:
            return {k: _num(v) for k, v in test.items()}
        return {key: points[-1][2] for key, points in self._series_index().by_split.get("test", {}).items()}

    # -- what the method's values mean -----------------------------------------------------------
    @property
    def method_info(self):
        """The registration of the run's method (``[method] name`` of its config.json, else
        run.json's ``method``); None when unknown or not registered in this mmbal."""
        name = method_name(self.info, self.config) or (self.method if self.method != "?" else None)
        return method_info(name) if name else None

    def meaning(self, key: str) -> LiveMeaning | None:
        """What live quantity ``key`` (``coef/a``, ``score/a``, ``method/J_a``) means for this run's
        method, from the method's registration; None when the method is unknown."""
        info, method = self.method_info, self.method
        if info is None:
            return None if method == "?" else LiveMeaning(key, f"no description: method '{method}' is not "
                                                              "registered in this mmbal", known=False)
        for pattern, text in info.live.items():
            if dataclasses.replace(info, live={pattern: text}).meaning(key) == text:
                return LiveMeaning(pattern, text)
        return LiveMeaning(key, f"not described by {method}'s registration", known=False)

    def coef_meaning(self) -> LiveMeaning | None:
        """What the panel's ``coef`` column means, when the run logs ``coef/<m>`` and its method
        describes it."""
        found = next((f"coef/{m}" for m in self.modalities if self.value(f"coef/{m}") is not None), None)
        meaning = self.meaning(found) if found else None
        return meaning if meaning is not None and meaning.known else None

    def live_groups(self, prefixes: tuple[str, ...] = ("score/", "method/")) -> list[LiveGroup]:
        """The logged live quantities with ``prefixes``, grouped by the registration's pattern that
        they match (in the registration's order, undescribed keys last), with their latest values."""
        groups: dict[str, tuple[LiveMeaning, list[tuple[str, float | None]]]] = {}
        for key in self._ordered(self.keys(), prefixes):
            meaning = self.meaning(key) or LiveMeaning(key, "", known=False)
            groups.setdefault(meaning.pattern, (meaning, []))[1].append((key, self.value(key)))
        order = list(self.method_info.live) if self.method_info is not None else []
        ranked = sorted(groups.values(), key=lambda g: order.index(g[0].pattern) if g[0].known else len(order))
        return [LiveGroup(meaning, values) for meaning, values in ranked]

    # -- series ---------------------------------------------------------------------------------
    def _series_index(self) -> _Index:
        """Extended with the rows appended since it was built; rebuilt after a reset or a resume
        (which may supersede rows already indexed)."""
        records = self.log.records
        index = self._index
        if index is not None and index.log is self.log and index.records == len(records):
            return index
        new = records[index.records:] if index is not None and index.log is self.log else None
        if new is None or any(r["kind"] == "resume" for r in new):
            index = _Index(self.log)
            index.add(self.log.metric_rows())
        else:
            index.add(r for r in new if r["kind"] == "metrics")
        index.records = len(records)
        self._index = index
        return index

    def _folded(self, key: str, fold: Callable[[object, list[dict]], object]):
        """A view of the log kept up to date incrementally: ``fold(previous, records)`` extends the
        value computed for the records seen before with the records appended since (``previous``
        None: from the first record), so a refresh costs the new records, not the whole log."""
        records = self.log.records
        hit = self._folds.get(key)
        if hit is not None and hit[0] is records and hit[1] <= len(records):
            value = hit[2] if hit[1] == len(records) else fold(hit[2], records[hit[1]:])
        else:
            value = fold(None, records)
        self._folds[key] = (records, len(records), value)
        return value

    def _memo(self, key: object, compute: Callable[[], object]):
        """``compute()`` once per :attr:`version` (the derived views that scan every record)."""
        hit = self._memos.get(key)
        if hit is not None and hit[0] == self.version:
            return hit[1]
        value = compute()
        self._memos[key] = (self.version, value)
        return value

    def keys(self, split: str | None = None) -> list[str]:
        return list(self._series_index().by_split.get(split, {}))

    def points(self, key: str, split: str | None = None, x_axis: str = "step") -> list[tuple[float, float | None]]:
        """``(x, value)`` of ``key`` in ``split`` (default: its :meth:`preferred_split`), sorted by
        x; for a repeated x the later row wins."""
        split = split or self.preferred_split(key)
        raw = self._series_index().by_split.get(split, {}).get(key, [])
        hit = self._points.get((key, split, x_axis))
        done, out = (hit[1], hit[2]) if hit is not None and hit[0] is raw else (0, [])
        if done < len(raw):
            out = _extend_points(out, raw[done:], x_axis) if done else None
            if out is None:  # first call, or x went backwards: from scratch
                out = _sorted_points(raw, x_axis)
            self._points[(key, split, x_axis)] = (raw, len(raw), out)
        return out

    def _ordered(self, keys: list[str], prefixes: tuple[str, ...]) -> list[str]:
        """Keys with one of ``prefixes``, grouped by prefix, modality order first."""
        order = {m: i for i, m in enumerate(self.modalities)}
        chosen = []
        for prefix in prefixes:
            mine = [k for k in keys if k.startswith(prefix)]
            mine.sort(key=lambda k: (order.get(k[len(prefix):], len(order)), k))
            chosen.extend(mine)
        return chosen

    def _style(self, key: str) -> str:
        target = key.rsplit("/", 1)[-1]
        if target == "fused":
            return "bold"
        modalities = self.modalities
        if target in modalities:
            return PALETTE[modalities.index(target) % len(PALETTE)]
        return PALETTE[(len(modalities) + sum(map(ord, key))) % len(PALETTE)]

    def accuracy_split(self) -> str:
        """``val`` once there are two evaluations to draw a line through, ``train`` before."""
        evaluations = self._series_index().by_split.get("val", {}).get("val/acc/fused", [])
        return "val" if len(evaluations) >= 2 else "train"

    def chart(self, kind: str, x_axis: str = "step", split: str | None = None) -> ChartData:
        """The series of one chart tab (``kind`` from :data:`CHART_TABS`, except ``method``)."""
        data = self._chart(kind, x_axis, split)
        data.markers, data.marker_legend = self.markers(x_axis), self.marker_legend()
        return data

    def _chart(self, kind: str, x_axis: str, split: str | None) -> ChartData:
        markers: list[Marker] = []
        if kind == "acc":
            split = split or self.accuracy_split()
            keys = [f"{split}/acc/fused"] + [f"{split}/acc/{m}" for m in self.modalities]
            series = self._series(keys, split, x_axis, label=lambda k: k.rsplit("/", 1)[-1])
            return ChartData(series, markers, x_axis, f"no {split} accuracy logged yet", y_bounds=(0.0, 1.0))
        if kind == "loss":
            keys = ["train/loss/method", "val/loss/fused"] + [f"val/loss/{m}" for m in self.modalities]
            series = self._series(keys, None, x_axis, label=lambda k: k)
            return ChartData(series, markers, x_axis, "no loss logged yet")
        prefixes = {"coef": ("coef/",), "mi": ("mi/", "cmi/"), "shapley": ("shapley/", "imbalance"),
                    "grad": ("grad/",)}[kind]
        keys = self._ordered(self.keys(), prefixes)
        series = self._series(keys, None, x_axis, label=lambda k: k)
        hint = " or ".join(f"{p}<m>" for p in prefixes if p.endswith("/"))
        return ChartData(series, markers, x_axis, f"no {hint} values in this run (method or monitors do not log them)")

    def _caption(self, key: str) -> str:
        meaning = self.meaning(key)
        return meaning.caption() if meaning is not None else ""

    def method_charts(self, x_axis: str = "step") -> list[ChartData]:
        """One chart per ``method/...`` and ``score/...`` key (their scales differ), each captioned
        with what the key means for the run's method."""
        markers, marks = self.markers(x_axis), self.marker_legend()
        keys = self._ordered(self.keys(), ("method/", "score/"))
        return [ChartData(self._series([k], None, x_axis, label=lambda k: k), markers, x_axis, marker_legend=marks,
                          caption=self._caption(k))
                for k in keys]

    def _series(self, keys: list[str], split: str | None, x_axis: str, label) -> list[Series]:
        out = []
        for key in keys:
            points = self.points(key, split, x_axis)
            if points:
                out.append(Series(label(key), points, self._style(key)))
        return out

    # -- events ---------------------------------------------------------------------------------
    def _resumes(self) -> list[dict]:
        return self._folded("resumes", lambda before, new: (before or []) + [r for r in new if r["kind"] == "resume"])

    def event_rows(self) -> list[EventRow]:
        """Events and resumes in file order; an event of an earlier segment past a later resume's
        ``from_step`` is flagged ``superseded`` (kept: it is history, but not on the curves)."""
        return self._folded("events", self._fold_events)

    def _fold_events(self, rows: list[EventRow] | None, new: list[dict]) -> list[EventRow]:
        """New records without a resume cannot supersede earlier events: their rows are appended."""
        if rows is None or any(r["kind"] == "resume" for r in new):
            return self._scan_events(self.log.records)
        return rows + self._scan_events(new)

    @staticmethod
    def _scan_events(records: list[dict]) -> list[EventRow]:
        rows: list[EventRow] = []
        later_resumes: list[tuple[int, int]] = []  # (seg, from_step) of resumes after the record
        for record in reversed(records):
            if record["kind"] == "resume":
                later_resumes.append((record["seg"], record["from_step"]))
                rows.append(EventRow(record["from_step"], None, record["seg"], "resume",
                                     f"continued from step {record['from_step']} as segment {record['seg']}"))
            elif record["kind"] == "event":
                step, seg = _int(record.get("step")), _int(record.get("seg")) or 0
                superseded = step is not None and any(s > seg and step > f for s, f in later_resumes)
                details = ", ".join(f"{k}={v}" for k, v in record.items()
                                    if k not in ("kind", "t", "step", "seg", "name", "epoch"))
                rows.append(EventRow(step, _num(record.get("epoch")), _int(record.get("seg")),
                                     str(record.get("name", "?")), details, superseded))
        rows.reverse()
        return rows

    def markers(self, x_axis: str = "step") -> list[Marker]:
        spe = self.steps_per_epoch
        out = []
        for row in self.event_rows():
            if row.superseded or row.name in SKIPPED_EVENTS:
                continue
            symbol, rule, priority, _ = EVENT_MARKS.get(row.name, OTHER_EVENT_MARK)
            if x_axis == "step":
                x = row.step
            elif row.epoch is not None:
                x = row.epoch
            else:
                x = row.step / spe if row.step is not None and spe else None
            if x is not None:
                out.append(Marker(float(x), symbol, rule, priority))
        return out

    def marker_legend(self) -> list[tuple[str, str]]:
        """(symbol, meaning) of the markers present."""
        names = {row.name for row in self.event_rows() if not row.superseded and row.name not in SKIPPED_EVENTS}
        seen: dict[str, str] = {}
        for name in sorted(names, key=lambda n: -EVENT_MARKS.get(n, OTHER_EVENT_MARK)[2]):
            symbol, _, _, text = EVENT_MARKS.get(name, OTHER_EVENT_MARK)
            seen.setdefault(symbol, text)
        return list(seen.items())

    # -- what went wrong ------------------------------------------------------------------------
    def notices(self) -> list[Notice]:
        out: list[Notice] = []
        state, reason = self.state, self.status.get("reason")
        if state == "stale":
            out.append(Notice("error", f"stale: {self._stale_reason()}; the process may have died "
                                       f"(`mmbal resume {self.run_id}` continues from the last checkpoint)"))
        elif state == "failed" and self.status.get("message"):
            out.append(Notice("error", f"failed: {self.status['message']}"))
        elif state == "failed":
            out.append(Notice("error", f"failed: {reason or 'no message'}, without writing its final state (killed, "
                                       f"or the machine went down); `mmbal resume {self.run_id}` continues from the "
                                       "last checkpoint"))
        elif state == "unknown":
            out.append(Notice("warning", f"state unknown: {reason}"))
        elif state == "interrupted" and self.status.get("message"):
            out.append(Notice("warning", f"interrupted: {self.status['message']}"))
        for name, problem in sorted(self.problems.items()):
            if name == METRICS_JSONL and problem == "missing":
                level = "info" if self.is_live else "warning"
                out.append(Notice(level, f"{METRICS_JSONL} does not exist yet: nothing logged"))
            elif name == SUMMARY_JSON and problem == "missing" and state != "finished":
                continue  # normal until the first checkpoint; a finished run has one
            else:
                out.append(Notice("warning", f"{name} {problem}"))
        if self.pending_bytes and not self.is_live:
            out.append(Notice("warning", f"{METRICS_JSONL} ends with an incomplete line ({self.pending_bytes} bytes: "
                                         "the writer stopped mid-record); ignored"))
        if self.warnings:
            more = f" ({len(self.warnings)} bad lines skipped)" if len(self.warnings) > 1 else ""
            out.append(Notice("warning", f"{self.warnings[-1]}{more}"))
        out.extend(self._resume_notices())
        if self.skipped_bytes:
            out.append(Notice("info", self._window_text()))
        return out

    def _window_text(self) -> str:
        rows = self.log.metric_rows()
        since = f" (from step {rows[0]['step']})" if rows else ""
        return (f"{METRICS_JSONL} is long: its header and last {_mib(METRICS_WINDOW_BYTES)} are shown{since}; "
                f"the {_mib(self.skipped_bytes)} before them are not read")

    def heartbeat_age(self) -> float | None:
        beat = _num(self.status.get("heartbeat"))
        return None if beat is None else max(self.clock() - beat, 0.0)

    def _stale_reason(self) -> str:
        from .text import fmt_duration  # text imports this module

        age = self.heartbeat_age()
        host, pid = self.status.get("host"), self.status.get("pid")
        where = f" (process {pid} on {host})" if host and pid else ""
        return f"no heartbeat for {fmt_duration(age)}{where}" if age is not None else str(self.status.get("reason"))

    def _resume_notices(self) -> list[Notice]:
        """Recomputed when a resume arrives (rows appended after the last one are never superseded)."""
        key = (self.log.records, len(self._resumes()))
        hit = self._memos.get("resume-notices")
        if hit is not None and hit[0][0] is key[0] and hit[0][1] == key[1]:
            return hit[1]
        value = self._scan_resumes()
        self._memos["resume-notices"] = (key, value)
        return value

    def _scan_resumes(self) -> list[Notice]:
        resumes = self._resumes()
        if not resumes:
            return []
        kept = {id(r) for r in self.log.metric_rows()}
        dropped = [r["step"] for r in self.log.records if r["kind"] == "metrics" and id(r) not in kept]
        where = ", ".join(str(r["from_step"]) for r in resumes)
        text = f"resumed {len(resumes)}x (from step {where})"
        if dropped:
            lo, hi = min(dropped), max(dropped)
            rows = f"{len(dropped)} logged row{'s' if len(dropped) > 1 else ''}"
            steps = f"step {lo}" if lo == hi else f"steps {lo}-{hi}"
            text += f"; {rows} at {steps} of the earlier segment superseded"
        return [Notice("info", text)]
