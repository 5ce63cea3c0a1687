"""``metrics.jsonl``: the append-only metrics log, its writer, a tolerant reader and a live tailer.

The format is JSON Lines (records and segment rules for users: ``docs/metrics.md``), chosen over
Arrow IPC, Parquet and SQLite because it survives a crash (at worst a torn last line), appends
trivially after a resume, accepts new keys mid-run and can be read with ``tail -f`` and ``jq``.
One object per line::

    {"kind":"header","t":...,"schema":1,"run_id":"k3f9a2x1",...}
    {"kind":"metrics","t":...,"step":1200,"epoch":3,"split":"val","seg":0,"m":{"val/acc/fused":0.74}}
    {"kind":"event","t":...,"step":1200,"seg":0,"name":"checkpoint","path":"checkpoints/last.pt"}
    {"kind":"resume","t":...,"from_step":1000,"seg":1}

* Writer: ``O_APPEND``; each record is one complete line written with one ``os.write`` (no user
  space buffer, so a killed process loses nothing already logged); ``fsync`` only on request
  (checkpoints, run end). A torn last line left by a crash is cut off when a writer opens the file.
  A failed append (disk full, a short write then ENOSPC) is cut back to where the record began
  before the error is raised, so the next record never gets glued to half of this one; if even
  that cut fails, it is retried before the next append. Write errors name the file.
  Non-finite values are written as ``null`` and their keys listed in the record's ``nonfinite``
  (strict JSON: ``jq`` rejects bare ``NaN``).
* Readers consume complete lines only, skip unparsable lines with a warning naming the line
  (MLflow's lesson: one bad line must not hide a run; a line nested too deeply for the parser is
  one of them) and never raise for content problems.
* Segments: a resume appends ``resume{from_step: S, seg: k}``; readers then drop ``metrics`` rows
  of earlier segments with ``step > S``, and their ``test`` rows whatever their step (a test row
  describes the end of training, which the resumed segment does again: a run killed after its test
  row but before its status said "finished" is resumed at ``S`` = its last step). This is
  TensorBoard's ``purge_step`` / W&B's rewind done logically, so the file itself stays append-only
  (the trainer may also physically :meth:`MetricsWriter.truncate_to` the checkpoint's offset; both
  give the same rows).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.faults import fault_point
from engine.store.atomic import dumps_strict, naming, to_jsonable
from engine.store.links import open_no_follow

SCHEMA = 1
_RESERVED = frozenset({"kind", "t", "step", "seg", "name", "nonfinite"})
_READ_BLOCK = 1 << 20
_SCAN_BLOCK = 1 << 16  # looking for a line's end: lines are short, read little


def _write_all(fd: int, data: bytes) -> None:
    """One ``os.write`` in practice; loops only if the kernel reports a short write."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_range(fd: int, start: int, end: int) -> bytes:
    parts, pos = [], start
    while pos < end:
        chunk = os.pread(fd, min(_READ_BLOCK * 16, end - pos), pos)
        if not chunk:
            break
        parts.append(chunk)
        pos += len(chunk)
    return b"".join(parts)


def _next_line_start(fd: int, pos: int, size: int) -> int:
    """The first line start at or after ``pos`` (``size`` when no newline follows ``pos - 1``)."""
    if pos <= 0:
        return 0
    at = pos - 1
    while at < size:
        block = os.pread(fd, min(_SCAN_BLOCK, size - at), at)
        if not block:
            break
        found = block.find(b"\n")
        if found >= 0:
            return at + found + 1
        at += len(block)
    return size


def _last_newline_end(fd: int, size: int) -> int:
    """Offset just after the last ``\\n`` in the first ``size`` bytes (0 when there is none)."""
    end = size
    while end > 0:
        start = max(0, end - _READ_BLOCK)
        pos = os.pread(fd, end - start, start).rfind(b"\n")
        if pos >= 0:
            return start + pos + 1
        end = start
    return 0


class MetricsWriter:
    """Appends records to ``metrics.jsonl``; see the module docstring for the rules.

    ``segment`` is the current resume segment (0 until :meth:`resume` is called); metrics and
    events are tagged with it unless ``seg`` is given. ``repaired_bytes`` is the size of the torn
    tail removed on opening (0 normally). Thread-safe. A symbolic link at ``path`` is refused
    (:class:`~engine.store.links.LinkedFileRefused`), never opened.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.segment = 0
        self._lock = threading.Lock()
        self._torn_from: int | None = None  # where a failed append that could not be cut back began
        try:
            # never through a link: its target's last line would be cut and records appended to it
            self._fd: int | None = open_no_follow(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise naming(exc, self.path)
        try:
            self.repaired_bytes = self._truncate_torn_tail()
        except BaseException as exc:
            os.close(self._fd)
            if isinstance(exc, OSError):
                raise naming(exc, self.path)
            raise

    def _truncate_torn_tail(self) -> int:
        size = os.fstat(self._fd).st_size
        if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
            return 0
        keep = _last_newline_end(self._fd, size)
        os.ftruncate(self._fd, keep)
        return size - keep

    def _require_open(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.path}: the metrics writer is closed")
        return self._fd

    def _append(self, record: dict[str, Any]) -> None:
        line = (dumps_strict(record) + "\n").encode("utf-8")
        with self._lock:
            fd = self._require_open()
            try:
                self._cut_torn_append(fd)
                start = os.fstat(fd).st_size
            except OSError as exc:
                raise naming(exc, self.path)
            try:
                fault_point("metrics.jsonl", self.path, partial=lambda: os.write(fd, line[: len(line) // 2]))
                _write_all(fd, line)
            except OSError as exc:
                self._torn_from = start
                self._cut_torn_append(fd, quiet=True)
                raise naming(exc, self.path)

    def _cut_torn_append(self, fd: int, quiet: bool = False) -> None:
        """Remove the part of a failed append that reached the file (``ftruncate`` needs no space)."""
        if self._torn_from is None:
            return
        try:
            os.ftruncate(fd, self._torn_from)
        except OSError:
            if quiet:
                return
            raise
        self._torn_from = None

    def header(self, run_id: str, **fields: Any) -> None:
        """The first record of a run: ``schema``, ``run_id`` and any identity ``fields``."""
        self._append({"kind": "header", "t": time.time(), "schema": SCHEMA, "run_id": run_id, **fields})

    def metrics(
        self,
        step: int,
        epoch: float | int,
        split: str,
        values: dict[str, float],
        seg: int | None = None,
    ) -> None:
        """One row of metric ``values`` (names as in ``docs/metrics.md``, e.g. ``val/acc/fused``)."""
        nonfinite: list[str] = []
        m = to_jsonable(dict(values), nonfinite)
        for key, value in m.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise TypeError(f"metric '{key}' must be a number, got {type(values[key]).__name__}")
        record = {
            "kind": "metrics",
            "t": time.time(),
            "step": int(step),
            "epoch": to_jsonable(epoch),
            "split": split,
            "seg": self.segment if seg is None else int(seg),
            "m": m,
        }
        if nonfinite:
            record["nonfinite"] = nonfinite
        self._append(record)

    def event(self, name: str, step: int, **fields: Any) -> None:
        """A named event at ``step`` (checkpoint, best, early_stop, ...) with free ``fields``."""
        clash = _RESERVED.intersection(fields)
        if clash:
            raise ValueError(f"event fields may not use the reserved keys {sorted(clash)}")
        nonfinite: list[str] = []
        clean = to_jsonable(fields, nonfinite)
        record = {"kind": "event", "t": time.time(), "step": int(step), "seg": self.segment, "name": name, **clean}
        if nonfinite:
            record["nonfinite"] = nonfinite
        self._append(record)

    def resume(self, from_step: int, seg: int) -> None:
        """Start segment ``seg``: rows of earlier segments after ``from_step`` are superseded."""
        self._append({"kind": "resume", "t": time.time(), "from_step": int(from_step), "seg": int(seg)})
        self.segment = int(seg)

    def flush_to_disk(self) -> None:
        """``fsync``: call at checkpoints and at the end of the run."""
        fd = self._require_open()
        try:
            fault_point("metrics.fsync", self.path)
            os.fsync(fd)
        except OSError as exc:
            raise naming(exc, self.path)

    def offset(self) -> int:
        """Current size in bytes (store it in a checkpoint as ``metrics_offset``)."""
        return os.fstat(self._require_open()).st_size

    def truncate_to(self, offset: int) -> None:
        """Drop everything after ``offset`` (a line boundary from :meth:`offset`); appends continue there."""
        with self._lock:
            fd = self._require_open()
            size = os.fstat(fd).st_size
            if not 0 <= offset <= size:
                raise ValueError(f"{self.path}: cannot truncate to {offset}, the file has {size} bytes")
            if offset > 0 and os.pread(fd, 1, offset - 1) != b"\n":
                raise ValueError(f"{self.path}: offset {offset} is not at the end of a line")
            os.ftruncate(fd, offset)

    def close(self, quiet: bool = False) -> None:
        """fsync and close (idempotent); ``quiet`` ignores a failing fsync (an error is already on its way)."""
        with self._lock:
            if self._fd is None:
                return
            fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        except OSError as exc:
            if not quiet:
                raise naming(exc, self.path)
        finally:
            os.close(fd)

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(quiet=exc_type is not None)


def _record_problem(record: Any) -> str | None:
    """Why a parsed line is not a usable record, or None when it is."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    kind = record.get("kind")
    if not isinstance(kind, str):
        return "no 'kind'"
    if kind == "metrics":
        if not _is_int(record.get("step")) or not isinstance(record.get("m"), dict):
            return "metrics record without an integer 'step' and an 'm' object"
        if "seg" in record and not _is_int(record["seg"]):
            return "metrics record with a non-integer 'seg'"
    if kind == "resume" and not (_is_int(record.get("from_step")) and _is_int(record.get("seg"))):
        return "resume record without integer 'from_step' and 'seg'"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _LineParser:
    """The one parser behind :func:`read_metrics` and :class:`MetricsTail`.

    ``feed`` takes the next bytes of the file and returns the records of the lines it
    completes; the incomplete remainder waits in ``partial``. Blank lines are skipped silently,
    bad lines with a warning naming their 1-based line number.
    """

    def __init__(self, label: str):
        self.label = label
        self.lineno = 0
        self.partial = b""
        self.warnings: list[str] = []

    def jumped_to(self, offset: int) -> None:
        """The next bytes fed start at byte ``offset`` of the file, lines before it unread: warnings
        then count lines from there."""
        self.label = f"{self.label.split(' (')[0]} (read from byte {offset})"
        self.lineno = 0
        self.partial = b""

    def feed(self, chunk: bytes) -> list[dict]:
        data = self.partial + chunk if self.partial else chunk
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        records = []
        for line in data[:cut].split(b"\n")[:-1]:
            self.lineno += 1
            record = self._parse(line)
            if record is not None:
                records.append(record)
        return records

    def _parse(self, line: bytes) -> dict | None:
        if not line.strip():
            return None
        try:
            record = json.loads(line)
        except ValueError:
            self._warn("not valid JSON, skipped")
            return None
        except RecursionError:
            self._warn("arrays or objects nested too deeply to read, skipped")
            return None
        problem = _record_problem(record)
        if problem is not None:
            self._warn(f"{problem}, skipped")
            return None
        return record

    def _warn(self, what: str) -> None:
        self.warnings.append(f"{self.label} line {self.lineno}: {what}")


def _value(raw: Any) -> float | None:
    """A metric value as float; null, non-numbers and non-finite numbers give None."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    return float(raw) if math.isfinite(raw) else None


@dataclass
class MetricsLog:
    """Parsed ``metrics.jsonl``: every record in file order plus what went wrong reading it.

    ``records`` may be extended with the output of :meth:`MetricsTail.poll`; the derived views
    (:meth:`metric_rows`, :meth:`series`, :meth:`latest`) follow.
    """

    records: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    torn_tail: bool = False
    _rows_cache: tuple[int, list[dict]] | None = field(default=None, init=False, repr=False, compare=False)

    def metric_rows(self) -> list[dict]:
        """``metrics`` records with segment semantics: after ``resume{from_step: S, seg: k}``,
        rows of segments < k with ``step > S`` are dropped, and so are their ``test`` rows. Order
        is file order. Records appended since the last call are folded into the previous result,
        so a live reader's refresh costs the new records, not the whole log."""
        done, rows = self._rows_cache if self._rows_cache is not None else (0, [])
        if done == len(self.records):
            return rows
        if done > len(self.records):
            done, rows = 0, []
        rows = list(rows)  # a caller may still hold the previous list
        for record in self.records[done:]:
            if record["kind"] == "metrics":
                rows.append(record)
            elif record["kind"] == "resume":
                start, seg = record["from_step"], record["seg"]
                rows = [r for r in rows
                        if not (r.get("seg", 0) < seg and (r["step"] > start or r.get("split") == "test"))]
        self._rows_cache = (len(self.records), rows)
        return rows

    def _rows(self, split: str | None) -> list[dict]:
        rows = self.metric_rows()
        return rows if split is None else [r for r in rows if r.get("split") == split]

    def series(self, key: str, split: str | None = None) -> list[tuple[int, float | None]]:
        """``(step, value)`` of metric ``key`` (non-finite or missing values are None)."""
        return [(r["step"], _value(r["m"][key])) for r in self._rows(split) if key in r["m"]]

    def latest(self, split: str | None = None) -> dict[str, float | None]:
        """The most recent value of every metric key (None where it was non-finite)."""
        out: dict[str, float | None] = {}
        for row in self._rows(split):
            for key, raw in row["m"].items():
                out[key] = _value(raw)
        return out

    def keys(self, split: str | None = None) -> list[str]:
        """Every metric key, in order of first appearance."""
        return list(self.latest(split))

    def events(self, name: str | None = None) -> list[dict]:
        """``event`` records (all segments; history is kept), optionally only those named ``name``."""
        return [r for r in self.records if r["kind"] == "event" and (name is None or r.get("name") == name)]

    def header(self) -> dict | None:
        """The first ``header`` record, if any."""
        return next((r for r in self.records if r["kind"] == "header"), None)


WINDOW_BYTES = 4 << 20  # what a resume reads of a long log: the header and the last 4 MiB


def read_metrics(path: str | os.PathLike, window: int | None = None) -> MetricsLog:
    """Read a ``metrics.jsonl``; content problems become ``warnings``, never exceptions.

    A missing or unreadable file gives an empty log with a warning; a last line without its
    newline (a crash mid-write) is ignored and sets ``torn_tail``. With ``window``, a file larger
    than that is read as its header line and the complete lines of its last ``window`` bytes
    (see :class:`MetricsTail`): bounded time and memory however long the run logged, which is
    what a resume needs (the latest values, the header); the views keep segment semantics.
    """
    path = Path(path)
    if window is not None:
        return _read_window(path, window)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return MetricsLog(warnings=[f"{path}: no metrics yet (the file does not exist)"])
    except OSError as e:
        return MetricsLog(warnings=[f"{path}: cannot be read ({e.strerror or e})"])
    parser = _LineParser(path.name)
    records = parser.feed(data)
    torn = bool(parser.partial)
    if torn:
        parser.warnings.append(
            f"{path.name} line {parser.lineno + 1}: incomplete last line ({len(parser.partial)} bytes, "
            f"the writer was interrupted mid-record), ignored"
        )
    return MetricsLog(records=records, warnings=parser.warnings, torn_tail=torn)


def _read_window(path: Path, window: int) -> MetricsLog:
    if not path.exists():
        return MetricsLog(warnings=[f"{path}: no metrics yet (the file does not exist)"])
    tail = MetricsTail(path, start_window=window)
    records = tail.poll()
    warnings = list(tail.warnings)
    torn = tail.pending_bytes > 0
    if torn:
        warnings.append(f"{path.name}: incomplete last line ({tail.pending_bytes} bytes, the writer was "
                        f"interrupted mid-record), ignored")
    return MetricsLog(records=records, warnings=warnings, torn_tail=torn)


class MetricsTail:
    """Incremental reader of a growing ``metrics.jsonl`` for a live dashboard.

    Each :meth:`poll` reads only the bytes appended since the previous one and returns the
    records of newly completed lines, keeping an incomplete last line for later. If the file
    shrank, vanished or was rewritten before the last read position (a resume's
    :meth:`MetricsWriter.truncate_to`), the tail starts again from byte 0 and sets ``reset``
    for that poll: the caller must then discard what it had. ``warnings`` collects bad lines.

    ``start_window`` bounds the first read (and the first read after a reset) of a large file:
    when the file has more bytes than that, only its first line (the header) and the complete
    lines of its last ``start_window`` bytes are read, and ``skipped_bytes`` says how many bytes
    in between were left out. Segment semantics survive the cut: every row after a ``resume``
    record belongs to its segment or a later one, so rows read from the window are never ones a
    skipped ``resume`` would have superseded. Memory and time of the first poll then stay
    bounded however long the run has been logging (a 1 GB file is read as its header plus the
    window); later polls read only what was appended.
    """

    _SIGNATURE = 64
    _HEADER_MAX = 1 << 20  # a first line longer than this is not treated as the header

    def __init__(self, path: str | os.PathLike, start_window: int | None = None):
        if start_window is not None and start_window <= 0:
            raise ValueError(f"start_window must be positive, got {start_window}")
        self.path = Path(path)
        self.start_window = start_window
        self.reset = False
        self._restart()

    def _restart(self) -> None:
        self.offset = 0
        self.skipped_bytes = 0
        self._signature = b""
        self._parser = _LineParser(self.path.name)

    @property
    def warnings(self) -> list[str]:
        return self._parser.warnings

    @property
    def pending_bytes(self) -> int:
        """Size of the incomplete last line read so far (0 when the file ends with a newline).

        Normal for an instant while a writer is mid-record; lasting after the writer stopped, it
        is the torn tail that :func:`read_metrics` reports as ``torn_tail``.
        """
        return len(self._parser.partial)

    def _rewritten(self, fd: int, size: int) -> bool:
        if size < self.offset:
            return True
        sig = self._signature
        return bool(sig) and os.pread(fd, len(sig), self.offset - len(sig)) != sig

    def poll(self) -> list[dict]:
        """Records completed since the last poll (after a reset: all of them again, or the header and
        the window)."""
        self.reset = False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            if self.offset:
                self._restart()
                self.reset = True
            return []
        try:
            size = os.fstat(fd).st_size
            if self._rewritten(fd, size):
                self._restart()
                self.reset = True
            head = self._skip_to_window(fd, size) if self.offset == 0 else []
            chunk = _read_range(fd, self.offset, size)
        finally:
            os.close(fd)
        self.offset += len(chunk)
        self._signature = (self._signature + chunk)[-self._SIGNATURE :]
        return head + self._parser.feed(chunk)

    def _skip_to_window(self, fd: int, size: int) -> list[dict]:
        """At offset 0 of a file larger than ``start_window``: the header line's records, with the
        read position moved to the first line that starts in the last ``start_window`` bytes."""
        if self.start_window is None or size <= self.start_window:
            return []
        cut = _next_line_start(fd, 1, min(self._HEADER_MAX, size))
        if os.pread(fd, 1, cut - 1) != b"\n":
            cut = 0  # no line end in the first _HEADER_MAX bytes: no header to keep
        start = _next_line_start(fd, max(size - self.start_window, cut), size)
        if start <= cut:
            return []
        records = self._parser.feed(os.pread(fd, cut, 0)) if cut else []
        self._parser.jumped_to(start)
        self.skipped_bytes = start - cut
        self.offset = start
        sig = min(self._SIGNATURE, start)
        self._signature = os.pread(fd, sig, start - sig)
        return records
