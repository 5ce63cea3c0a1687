"""A run's logged metrics as series: per split, metric key -> ``(step, epoch, value)`` entries,
kept up to date as rows are appended, and their sorted ``(x, value)`` points per x axis."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.store import MetricsLog

from .formatting import finite

# Evaluation estimates: read from the val rows when there are any (the monitors also log running
# training estimates of mi/).
EVAL_PREFIXES = ("mi/", "cmi/", "shapley/")

Entry = tuple[int, float | None, float | None]  # (step, epoch, value)


@dataclass
class _Entries:
    """Per split (and ``None`` for all): metric key -> entries, built from the first ``records``
    records of ``log``."""

    log: MetricsLog
    records: int = 0
    by_split: dict[str | None, dict[str, list[Entry]]] = field(default_factory=dict)

    def add(self, rows) -> None:
        every = self.by_split.setdefault(None, {})
        for row in rows:
            per_split = self.by_split.setdefault(row.get("split"), {})
            epoch = finite(row.get("epoch"))
            for key, raw in row["m"].items():
                point = (row["step"], epoch, finite(raw))
                per_split.setdefault(key, []).append(point)
                every.setdefault(key, []).append(point)


def sorted_points(entries: list[Entry], x_axis: str) -> list[tuple[float, float | None]]:
    """``(x, value)`` sorted by x from ``(step, epoch, value)`` entries; a repeated x keeps the later value."""
    by_x: dict[float, float | None] = {}
    for step, epoch, value in entries:
        x = step if x_axis == "step" else epoch
        if x is not None:
            by_x[float(x)] = value
    return sorted(by_x.items())


def extend_points(points: list, new: list[Entry], x_axis: str) -> list | None:
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


class MetricIndex:
    """The metric series of one :class:`~engine.store.MetricsLog`, indexed incrementally: a refresh
    costs the rows appended since, not the whole log (a resume, which may supersede rows already
    indexed, rebuilds it)."""

    def __init__(self, log: MetricsLog):
        self.log = log
        self._entries: _Entries | None = None
        # (key, split, x axis) -> (entries list, points of its first n entries, those points): a refresh
        # extends the points with the new rows instead of re-sorting every row of a long run
        self._points: dict[tuple, tuple[list, int, list]] = {}

    @property
    def by_split(self) -> dict[str | None, dict[str, list[Entry]]]:
        records = self.log.records
        index = self._entries
        if index is not None and index.records == len(records):
            return index.by_split
        new = records[index.records:] if index is not None else None
        if new is None or any(r["kind"] == "resume" for r in new):
            index = _Entries(self.log)
            index.add(self.log.metric_rows())
        else:
            index.add(r for r in new if r["kind"] == "metrics")
        index.records = len(records)
        self._entries = index
        return index.by_split

    def entries(self, key: str, split: str | None) -> list[Entry]:
        return self.by_split.get(split, {}).get(key, [])

    def keys(self, split: str | None = None) -> list[str]:
        return list(self.by_split.get(split, {}))

    def preferred_split(self, key: str) -> str | None:
        """Where ``key`` is read from: its own split for ``train/...`` and friends; for the
        evaluation estimates (``mi/``, ``cmi/``, ``shapley/``) the val rows when it has any;
        otherwise the train rows when it has any (per-interval values, denser than a per-epoch
        copy); else every row."""
        head = key.split("/", 1)[0]
        if head in ("train", "val", "test"):
            return head
        index = self.by_split
        if key.startswith(EVAL_PREFIXES) and key in index.get("val", {}):
            return "val"
        if key in index.get("train", {}):
            return "train"
        return None

    def value(self, key: str) -> float | None:
        """The latest value of ``key`` from its :meth:`preferred_split` (None: absent or non-finite)."""
        entries = self.entries(key, self.preferred_split(key))
        return entries[-1][2] if entries else None

    def points(self, key: str, split: str | None = None, x_axis: str = "step") -> list[tuple[float, float | None]]:
        """``(x, value)`` of ``key`` in ``split`` (default: its :meth:`preferred_split`), sorted by
        x; for a repeated x the later row wins."""
        split = split or self.preferred_split(key)
        raw = self.entries(key, split)
        hit = self._points.get((key, split, x_axis))
        done, out = (hit[1], hit[2]) if hit is not None and hit[0] is raw else (0, [])
        if done < len(raw):
            out = extend_points(out, raw[done:], x_axis) if done else None
            if out is None:  # first call, or x went backwards: from scratch
                out = sorted_points(raw, x_axis)
            self._points[(key, split, x_axis)] = (raw, len(raw), out)
        return out
