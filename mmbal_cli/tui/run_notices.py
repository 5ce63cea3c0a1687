"""The lines under the dashboard's header that explain a damaged or dead run: a stale heartbeat,
a failed or interrupted run, a missing or unreadable file, a torn last line, bad lines skipped, a
resume that superseded logged steps, a long log read as a window. Each takes plain values, so the
rules read apart from where the values come from (:meth:`~mmbal_cli.tui.model.RunModel.notices`)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.store import METRICS_JSONL, SUMMARY_JSON

from .formatting import fmt_duration, fmt_size


@dataclass(frozen=True)
class Notice:
    """A line under the header: ``level`` is info, warning or error."""

    level: str
    text: str


def state_notices(state: str, status: dict, run_id: str, heartbeat_age: float | None) -> list[Notice]:
    """What the run's state says went wrong, and how to continue."""
    reason, message = status.get("reason"), status.get("message")
    if state == "stale":
        return [Notice("error", f"stale: {_stale_reason(status, heartbeat_age)}; the process may have died "
                                f"(`mmbal resume {run_id}` continues from the last checkpoint)")]
    if state == "failed" and message:
        return [Notice("error", f"failed: {message}")]
    if state == "failed":
        return [Notice("error", f"failed: {reason or 'no message'}, without writing its final state (killed, "
                                f"or the machine went down); `mmbal resume {run_id}` continues from the "
                                "last checkpoint")]
    if state == "unknown":
        return [Notice("warning", f"state unknown: {reason}")]
    if state == "interrupted" and message:
        return [Notice("warning", f"interrupted: {message}")]
    return []


def _stale_reason(status: dict, heartbeat_age: float | None) -> str:
    host, pid = status.get("host"), status.get("pid")
    where = f" (process {pid} on {host})" if host and pid else ""
    return f"no heartbeat for {fmt_duration(heartbeat_age)}{where}" if heartbeat_age is not None \
        else str(status.get("reason"))


def file_notices(problems: dict[str, str], state: str, is_live: bool) -> list[Notice]:
    """A missing or unreadable file, by name; a metrics log not created yet is normal while the run
    starts, a summary missing only matters once the run is finished."""
    out = []
    for name, problem in sorted(problems.items()):
        if name == METRICS_JSONL and problem == "missing":
            out.append(Notice("info" if is_live else "warning", f"{METRICS_JSONL} does not exist yet: nothing logged"))
        elif name == SUMMARY_JSON and problem == "missing" and state != "finished":
            continue  # normal until the first checkpoint; a finished run has one
        else:
            out.append(Notice("warning", f"{name} {problem}"))
    return out


def log_notices(pending_bytes: int, is_live: bool, warnings: list[str]) -> list[Notice]:
    """A torn last line of a run no longer writing (a live writer may be mid-record), bad lines skipped."""
    out = []
    if pending_bytes and not is_live:
        out.append(Notice("warning", f"{METRICS_JSONL} ends with an incomplete line ({pending_bytes} bytes: "
                                     "the writer stopped mid-record); ignored"))
    if warnings:
        more = f" ({len(warnings)} bad lines skipped)" if len(warnings) > 1 else ""
        out.append(Notice("warning", f"{warnings[-1]}{more}"))
    return out


def resume_notices(resumes: list[dict], superseded_steps: list[int]) -> list[Notice]:
    """How often the run was resumed and from where, and the logged rows a resume superseded."""
    if not resumes:
        return []
    where = ", ".join(str(r["from_step"]) for r in resumes)
    text = f"resumed {len(resumes)}x (from step {where})"
    if superseded_steps:
        lo, hi = min(superseded_steps), max(superseded_steps)
        rows = f"{len(superseded_steps)} logged row{'s' if len(superseded_steps) > 1 else ''}"
        steps = f"step {lo}" if lo == hi else f"steps {lo}-{hi}"
        text += f"; {rows} at {steps} of the earlier segment superseded"
    return [Notice("info", text)]


def window_notices(skipped_bytes: int, window_bytes: int, first_step: int | None) -> list[Notice]:
    """A long log read as its header and last ``window_bytes``, ``skipped_bytes`` before them unread."""
    if not skipped_bytes:
        return []
    since = f" (from step {first_step})" if first_step is not None else ""
    return [Notice("info", f"{METRICS_JSONL} is long: its header and last {fmt_size(window_bytes)} are shown{since}; "
                           f"the {fmt_size(skipped_bytes)} before them are not read")]
