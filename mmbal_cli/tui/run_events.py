"""A run's events and resumes as rows of the Events tab, and as markers on the charts' x axis.

An event of an earlier segment past a later resume's ``from_step`` is ``superseded``: kept in the
table (it is history) but not marked on the curves, which show the later segment there.
"""

from __future__ import annotations

from dataclasses import dataclass

from .chart import Marker
from .formatting import finite, whole

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


@dataclass(frozen=True)
class EventRow:
    step: int | None
    epoch: float | None
    seg: int | None
    name: str
    details: str
    superseded: bool = False


def scan_events(records: list[dict]) -> list[EventRow]:
    """The event and resume records among ``records`` as rows, in file order."""
    rows: list[EventRow] = []
    later_resumes: list[tuple[int, int]] = []  # (seg, from_step) of resumes after the record
    for record in reversed(records):
        if record["kind"] == "resume":
            later_resumes.append((record["seg"], record["from_step"]))
            rows.append(EventRow(record["from_step"], None, record["seg"], "resume",
                                 f"continued from step {record['from_step']} as segment {record['seg']}"))
        elif record["kind"] == "event":
            step, seg = whole(record.get("step")), whole(record.get("seg")) or 0
            superseded = step is not None and any(s > seg and step > f for s, f in later_resumes)
            details = ", ".join(f"{k}={v}" for k, v in record.items()
                                if k not in ("kind", "t", "step", "seg", "name", "epoch"))
            rows.append(EventRow(step, finite(record.get("epoch")), whole(record.get("seg")),
                                 str(record.get("name", "?")), details, superseded))
    rows.reverse()
    return rows


def extend_events(rows: list[EventRow] | None, new: list[dict], records: list[dict]) -> list[EventRow]:
    """``rows`` (of the records before ``new``) extended with ``new``: records without a resume
    cannot supersede earlier events, so their rows are appended; otherwise every one of
    ``records`` is scanned again."""
    if rows is None or any(r["kind"] == "resume" for r in new):
        return scan_events(records)
    return rows + scan_events(new)


def chart_markers(rows: list[EventRow], x_axis: str, steps_per_epoch: int | None) -> list[Marker]:
    """A marker per event not superseded nor skipped, at its step or epoch (an event without an
    epoch is placed at step / steps per epoch)."""
    out = []
    for row in rows:
        if row.superseded or row.name in SKIPPED_EVENTS:
            continue
        symbol, rule, priority, _ = EVENT_MARKS.get(row.name, OTHER_EVENT_MARK)
        if x_axis == "step":
            x = row.step
        elif row.epoch is not None:
            x = row.epoch
        else:
            x = row.step / steps_per_epoch if row.step is not None and steps_per_epoch else None
        if x is not None:
            out.append(Marker(float(x), symbol, rule, priority))
    return out


def markers_legend(rows: list[EventRow]) -> list[tuple[str, str]]:
    """(symbol, meaning) of the markers present, most important first."""
    names = {row.name for row in rows if not row.superseded and row.name not in SKIPPED_EVENTS}
    seen: dict[str, str] = {}
    for name in sorted(names, key=lambda n: -EVENT_MARKS.get(n, OTHER_EVENT_MARK)[2]):
        symbol, _, _, text = EVENT_MARKS.get(name, OTHER_EVENT_MARK)
        seen.setdefault(symbol, text)
    return list(seen.items())
