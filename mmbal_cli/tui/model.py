"""What the dashboard knows about one run: read from its files (:mod:`.reader`), never written.

:class:`RunModel` holds the latest read, folded in by :meth:`RunModel.apply` on the UI thread, and
derives everything shown from it, each concept in its own module: the header fields and progress
(:mod:`.progress`), the per-modality panel (:mod:`.panel`), the metric series (:mod:`.metric_index`)
and what each chart tab draws (:mod:`.chart_series`), the events and chart markers
(:mod:`.run_events`), what the method's ``coef/``, ``score/`` and ``method/`` values mean
(:mod:`.meanings`), and the notices that explain a damaged or dead run (:mod:`.run_notices`).
Views that scan the whole log are extended with the records appended since the last refresh.
Nothing here raises for file content.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from engine.store import MetricsLog

from .chart import ChartData, Marker
from .chart_series import METHOD_PREFIXES, default_accuracy_split, line_series, ordered_keys, tab_chart
from .formatting import finite, whole
from .meanings import LiveGroup, LiveMeaning, group_by_meaning, meaning_of, method_info, method_name
from .metric_index import MetricIndex
from .panel import ModalityRow, panel_rows
from .progress import (
    Segment,
    epoch_in_progress,
    extend_segments,
    infer_steps_per_epoch,
    seconds_left,
    training_seconds,
)
from .reader import METRICS_WINDOW_BYTES, Delta, RunReader
from .run_events import EventRow, chart_markers, extend_events, markers_legend
from .run_notices import Notice, file_notices, log_notices, resume_notices, state_notices, window_notices

LIVE_STATES = ("running", "created")


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
        self._index = MetricIndex(self.log)
        self._memos: dict[object, tuple[object, object]] = {}
        self._folds: dict[str, tuple[list, int, object]] = {}  # see _folded

    # -- updating -------------------------------------------------------------------------------
    def _read_fields(self) -> tuple:
        return (self.status, self.info, self.config, self.summary, self.problems, self.warnings,
                self.pending_bytes, self.metrics_found, self.skipped_bytes)

    def apply(self, delta: Delta) -> bool:
        """Fold in one read; True when anything shown may have changed."""
        before = self._read_fields()
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
        changed = delta.reset or bool(delta.records) or before != self._read_fields() or not self.loaded
        self.loaded = True
        if changed:
            self.version += 1
        return changed

    def load(self) -> "RunModel":
        """Read everything now (the one-shot path: ``--once``, tests)."""
        self.apply(RunReader(self.run_dir).read())
        return self

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

    @property
    def series(self) -> MetricIndex:
        """The metric series of the current log (a new index after the log started over)."""
        if self._index.log is not self.log:
            self._index = MetricIndex(self.log)
        return self._index

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
        epochs = whole(train.get("epochs")) if isinstance(train, dict) else None
        return epochs if epochs and epochs > 0 else None

    @property
    def steps_per_epoch(self) -> int | None:
        """As recorded (``steps_per_epoch`` in the log's header or status.json), else inferred from
        the log (:func:`.progress.infer_steps_per_epoch`)."""
        for source in (self.status, self._header()):
            recorded = whole(source.get("steps_per_epoch"))
            if recorded and recorded > 0:
                return recorded
        return self._memo("steps_per_epoch", lambda: infer_steps_per_epoch(self.log.metric_rows()))

    @property
    def step(self) -> int:
        rows = self.log.metric_rows()
        logged = rows[-1]["step"] if rows else 0
        return max(whole(self.status.get("step")) or 0, logged)

    @property
    def total_steps(self) -> int | None:
        spe, epochs = self.steps_per_epoch, self.epochs_total
        return spe * epochs if spe and epochs else None

    @property
    def epoch_now(self) -> int | None:
        """The epoch in progress (1-based), or the last one when training is complete."""
        return epoch_in_progress(self.step, self.steps_per_epoch, self.status.get("epoch"), self.is_live,
                                 self.epochs_total)

    @property
    def progress(self) -> float | None:
        total = self.total_steps
        return min(self.step / total, 1.0) if total else None

    def _segments(self) -> list[Segment]:
        """Per segment (start time, last time, starting step), from header/resume records."""
        return [(a, b, int(s)) for a, b, s in self._folded("segments", extend_segments)]

    def elapsed(self) -> float | None:
        """Training wall time summed over segments (time between a crash and its resume excluded)."""
        return training_seconds(self._segments(), self.clock(), self.is_live, self.status.get("started"))

    def eta(self) -> float | None:
        """Seconds left at the current segment's rate (None unless running with a known total)."""
        total, segments, rows = self.total_steps, self._segments(), self.log.metric_rows()
        if not (self.is_live and total and segments and rows):
            return None
        return seconds_left(segments, rows[-1], self.step, total)

    def heartbeat_age(self) -> float | None:
        beat = finite(self.status.get("heartbeat"))
        return None if beat is None else max(self.clock() - beat, 0.0)

    # -- values ---------------------------------------------------------------------------------
    def keys(self, split: str | None = None) -> list[str]:
        return self.series.keys(split)

    def preferred_split(self, key: str) -> str | None:
        """Where ``key`` is read from (:meth:`.metric_index.MetricIndex.preferred_split`)."""
        return self.series.preferred_split(key)

    def value(self, key: str) -> float | None:
        """The latest value of ``key`` from its :meth:`preferred_split` (None: absent or non-finite)."""
        return self.series.value(key)

    def points(self, key: str, split: str | None = None, x_axis: str = "step") -> list[tuple[float, float | None]]:
        """``(x, value)`` of ``key`` in ``split`` (default: its :meth:`preferred_split`), sorted by
        x; for a repeated x the later row wins."""
        return self.series.points(key, split, x_axis)

    def modality_rows(self) -> list[ModalityRow]:
        """One row per modality plus ``fused``, the weakest modality flagged (:mod:`.panel`)."""
        return panel_rows(self.modalities, self.value)

    def test_values(self) -> dict[str, float | None]:
        """The selected checkpoint's test metrics (summary.json), else the log's test row."""
        test = (self.summary or {}).get("test")
        if isinstance(test, dict) and test:
            return {k: finite(v) for k, v in test.items()}
        return {key: entries[-1][2] for key, entries in self.series.by_split.get("test", {}).items()}

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
        return meaning_of(key, self.method_info, self.method)

    def coef_meaning(self) -> LiveMeaning | None:
        """What the panel's ``coef`` column means, when the run logs ``coef/<m>`` and its method
        describes it."""
        found = next((f"coef/{m}" for m in self.modalities if self.value(f"coef/{m}") is not None), None)
        meaning = self.meaning(found) if found else None
        return meaning if meaning is not None and meaning.known else None

    def live_groups(self, prefixes: tuple[str, ...] = ("score/", "method/")) -> list[LiveGroup]:
        """The logged live quantities with ``prefixes``, grouped by the registration's pattern that
        they match (in the registration's order, undescribed keys last), with their latest values."""
        keys = ordered_keys(self.keys(), prefixes, self.modalities)
        return group_by_meaning([(k, self.value(k)) for k in keys], [self.meaning(k) for k in keys],
                                self.method_info)

    # -- charts ---------------------------------------------------------------------------------
    def accuracy_split(self) -> str:
        """``val`` once there are two evaluations to draw a line through, ``train`` before."""
        return default_accuracy_split(self.series)

    def chart(self, kind: str, x_axis: str = "step", split: str | None = None) -> ChartData:
        """The series of one chart tab (``kind`` from :data:`.chart_series.CHART_TABS`, except
        ``method``) with the run's event markers."""
        data = tab_chart(self.series, kind, self.modalities, x_axis, split)
        data.markers, data.marker_legend = self.markers(x_axis), self.marker_legend()
        return data

    def method_charts(self, x_axis: str = "step") -> list[ChartData]:
        """One chart per ``method/...`` and ``score/...`` key (their scales differ), each captioned
        with what the key means for the run's method."""
        marks, legend, modalities = self.markers(x_axis), self.marker_legend(), self.modalities
        charts = []
        for key in ordered_keys(self.keys(), METHOD_PREFIXES, modalities):
            meaning = self.meaning(key)
            charts.append(ChartData(line_series(self.series, [key], None, x_axis, modalities), marks, x_axis,
                                    marker_legend=legend, caption=meaning.caption() if meaning is not None else ""))
        return charts

    # -- events ---------------------------------------------------------------------------------
    def _resumes(self) -> list[dict]:
        return self._folded("resumes", lambda before, new: (before or []) + [r for r in new if r["kind"] == "resume"])

    def event_rows(self) -> list[EventRow]:
        """Events and resumes in file order; an event of an earlier segment past a later resume's
        ``from_step`` is flagged ``superseded`` (kept: it is history, but not on the curves)."""
        return self._folded("events", lambda rows, new: extend_events(rows, new, self.log.records))

    def markers(self, x_axis: str = "step") -> list[Marker]:
        return chart_markers(self.event_rows(), x_axis, self.steps_per_epoch)

    def marker_legend(self) -> list[tuple[str, str]]:
        """(symbol, meaning) of the markers present."""
        return markers_legend(self.event_rows())

    # -- what went wrong ------------------------------------------------------------------------
    def notices(self) -> list[Notice]:
        """Notices in order: the state, missing or unreadable files, the log's torn or bad lines,
        resumes, a long log read as a window (:mod:`.run_notices`)."""
        rows = self.log.metric_rows() if self.skipped_bytes else []
        return [*state_notices(self.state, self.status, self.run_id, self.heartbeat_age()),
                *file_notices(self.problems, self.state, self.is_live),
                *log_notices(self.pending_bytes, self.is_live, self.warnings),
                *self._resume_notices(),
                *window_notices(self.skipped_bytes, METRICS_WINDOW_BYTES, rows[0]["step"] if rows else None)]

    def _resume_notices(self) -> list[Notice]:
        """Recomputed when a resume arrives (rows appended after the last one are never superseded)."""
        key = (self.log.records, len(self._resumes()))
        hit = self._memos.get("resume-notices")
        if hit is not None and hit[0][0] is key[0] and hit[0][1] == key[1]:
            return hit[1]
        value = resume_notices(self._resumes(), self._superseded_steps() if key[1] else [])
        self._memos["resume-notices"] = (key, value)
        return value

    def _superseded_steps(self) -> list[int]:
        """Steps of the logged metric rows that a later resume replaced."""
        kept = {id(r) for r in self.log.metric_rows()}
        return [r["step"] for r in self.log.records if r["kind"] == "metrics" and id(r) not in kept]
