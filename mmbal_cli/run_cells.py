"""A run's cells in a list of runs, shared by ``mmbal ls`` and the dashboard's runs screen: its age, its
epochs done of planned and its selected validation score."""

from __future__ import annotations

import time
from datetime import datetime


def age(created: str, now: float | None = None) -> str:
    """``created`` (ISO 8601) as an age: ``45s``, ``12m``, ``5h``, ``3d``, ``7w``; ``?`` if unreadable."""
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return "?"
    if then.tzinfo is None:
        then = then.astimezone()
    seconds = max(0.0, (now if now is not None else time.time()) - then.timestamp())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit == "w" else 1):
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def score_text(selected: dict | None) -> str:
    """The selected checkpoint's validation score: ``0.9725``, with the metric when it is not the usual
    fused accuracy (``f1/fused 0.9100``)."""
    if not selected:
        return "-"
    metric = str(selected["metric"])
    short = metric.removeprefix("val/")
    return f"{selected['value']:.4f}" if metric == "val/acc/fused" else f"{short} {selected['value']:.4f}"


def epochs_text(run) -> str:
    """``3/10``: the epochs done of the planned (``-`` when neither is known)."""
    done = "" if run.epoch is None else f"{run.epoch:g}" if isinstance(run.epoch, float) else str(run.epoch)
    if run.epochs is None:
        return done or "-"
    return f"{done or 0}/{run.epochs}"
