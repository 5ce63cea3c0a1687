"""Where a run stands: steps per epoch, the epoch in progress, wall time over its segments (a
crash and its resume excluded) and the time left, from the log's rows and ``status.json``."""

from __future__ import annotations

from datetime import datetime

from .formatting import finite, whole

# (start time, last time, starting step) of one segment: the first run or a resume
Segment = tuple[float, float, int]


def infer_steps_per_epoch(rows: list[dict]) -> int | None:
    """From the latest val (else train) metric row: a row at ``step`` s and fractional ``epoch`` f
    has s = f x steps per epoch."""
    for wanted in ("val", "train"):
        for row in reversed(rows):
            epoch = finite(row.get("epoch"))
            if row.get("split") == wanted and epoch and epoch > 0 and row["step"] > 0:
                return max(round(row["step"] / epoch), 1)
    return None


def epoch_in_progress(step: int, steps_per_epoch: int | None, status_epoch, is_live: bool,
                      epochs_total: int | None) -> int | None:
    """The epoch in progress (1-based), or the last one when training is complete; from the step,
    else from ``status.json``'s (0-based, completed) ``epoch``."""
    if steps_per_epoch:
        current = step // steps_per_epoch + (0 if step % steps_per_epoch == 0 and not is_live else 1)
    else:
        status_epoch = whole(status_epoch)
        if status_epoch is None:
            return None
        current = status_epoch + (1 if is_live else 0)
    current = max(current, 1)
    return min(current, epochs_total) if epochs_total else current


def extend_segments(out: list[list[float]] | None, records: list[dict]) -> list[list[float]]:
    """Per segment ``[start time, last time, starting step]``, extended with ``records``: a header or
    resume record starts a segment, any other timed record moves its last time."""
    out = out if out is not None else []
    for record in records:
        t = finite(record.get("t"))
        if t is None:
            continue
        if record["kind"] in ("header", "resume") or not out:
            out.append([t, t, float(record.get("from_step", 0) if record["kind"] == "resume" else 0)])
        else:
            out[-1][1] = max(out[-1][1], t)
    return out


def training_seconds(segments: list[Segment], now: float, is_live: bool, started) -> float | None:
    """Training wall time summed over segments; before any is logged, the time since ``started``
    (status.json's ISO time) of a live run."""
    if not segments:
        if is_live and isinstance(started, str):
            try:
                return max(now - datetime.fromisoformat(started).timestamp(), 0.0)
            except ValueError:
                return None
        return None
    total = sum(last - start for start, last, _ in segments[:-1])
    start, last, _ = segments[-1]
    return total + max((now if is_live else last) - start, 0.0)


def seconds_left(segments: list[Segment], last_row: dict, step: int, total_steps: int) -> float | None:
    """Seconds left at the current segment's rate, from its start to ``last_row`` (None when that
    rate is unknown)."""
    start, _, start_step = segments[-1]
    last_t = finite(last_row.get("t"))
    done = last_row["step"] - start_step
    if last_t is None or done <= 0 or last_t <= start:
        return None
    return max(total_steps - step, 0) * (last_t - start) / done
