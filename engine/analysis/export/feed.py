"""The export loop: the run's metric rows handed to a sink once, or as they are appended (``follow``).

The log is read with the store's tail (:class:`engine.store.MetricsTail`), so each poll reads only
what was appended, and folded by :meth:`engine.store.MetricsLog.metric_rows`, which drops the rows a
resume superseded. Rows already written that a resume record (or a log cut back by a resume) has
superseded make the sink rewind and receive every row again. With ``follow`` the loop ends when the
run's state is final (finished, failed, interrupted); the state is read before the log, so the last
poll has every record the run wrote.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, NoReturn

from ...store import FINAL_STATES, MetricsLog, MetricsTail
from ..api import Run
from .sink import Sink, user_error


@dataclass
class ExportResult:
    """What an export did: ``rows`` the target holds, the run's ``state`` when the export ended,
    ``complete`` (the run had ended), the sink's ``target`` and its ``notes`` for the user."""

    rows: int
    state: str
    complete: bool
    target: str
    notes: list[str]


class _Rows:
    """The metric rows of a growing log and how many of them the sink has."""

    def __init__(self, run: Run):
        self.tail = MetricsTail(run.paths.metrics)
        self.log = MetricsLog()
        self.sent = 0
        self.last_sent: dict | None = None

    def poll(self) -> tuple[list[dict], bool]:
        """The rows the sink has not got, and whether it must rewind first (rows it has were superseded)."""
        new = self.tail.poll()
        if self.tail.reset:
            self.log = MetricsLog()
        self.log.records.extend(new)
        rows = self.log.metric_rows()
        rewind = self.sent > 0 and (len(rows) < self.sent or rows[self.sent - 1] is not self.last_sent)
        if rewind:
            self.sent = 0
        fresh = rows[self.sent:]
        if fresh:
            self.sent, self.last_sent = len(rows), rows[-1]
        return fresh, rewind


def export_run(run: Run, sink: Sink, follow: bool = False, interval: float = 2.0,
               on_rows: Callable[[int, str], None] | None = None, sleep: Callable[[float], None] = time.sleep
               ) -> ExportResult:
    """Export ``run`` to ``sink``: what is logged now, or (``follow``) until the run ends.

    ``on_rows(n, state)`` is told after each poll that wrote rows. A Ctrl-C while following finishes the
    sink with what was written (files complete) and raises it again. A failed write is a
    :class:`~engine.errors.StorageError` naming the file.
    """
    rows, state, started = _Rows(run), run.status, False
    try:
        sink.start(run.flat_config())
        started = True
        while True:
            state = run.status
            fresh, rewind = rows.poll()
            if rewind:
                sink.rewind()
            if fresh:
                sink.write(fresh)
                if on_rows:
                    on_rows(len(fresh), state)
            if not follow or state in FINAL_STATES:
                break
            sleep(interval)
    except KeyboardInterrupt:
        if started:
            _finish(sink, run, complete=False)
        else:
            sink.abort()
        raise
    except BaseException as exc:
        _stop(sink, exc)
    complete = state in FINAL_STATES
    _finish(sink, run, complete)
    return ExportResult(rows=rows.sent, state=state, complete=complete, target=sink.target, notes=sink.notes)


def _finish(sink: Sink, run: Run, complete: bool) -> None:
    try:
        summary = run.summary
    except ValueError:  # a damaged summary.json: the metrics are exported all the same
        summary = None
        sink.notes.append(f"{run.paths.summary} is unreadable: no summary values were exported")
    try:
        sink.finish(summary, complete)
    except BaseException as exc:
        _stop(sink, exc)


def _stop(sink: Sink, exc: BaseException) -> NoReturn:
    """An error ended the export: release the sink and raise ``exc``, a failed write as the user's error."""
    sink.abort()
    error = user_error(exc, sink.name)
    if error is None or error is exc:
        raise exc
    raise error from exc
