"""The only place an advice reads a run's figures: validation while diagnosing and choosing, test
only for ``--apply``.

:class:`ValidationReader` reads the ``best`` section of ``summary.json`` (the checkpoint selected on
validation) and refuses any key outside the validation split and the monitors (``mi/``,
``shapley/``); it records every key it read, which the advice record keeps (``read_while_choosing``)
so that anyone can check that the choice never looked at a test figure. :func:`test_value` is
called by the apply stage alone.
"""

from __future__ import annotations

import math

VALIDATION_PREFIXES = ("val/", "mi/", "shapley/")


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


class ValidationReader:
    """Reads validation figures of finished runs' summaries; ``read``: the keys it was asked for."""

    def __init__(self):
        self.read: set[str] = set()

    def value(self, summary: dict, key: str) -> float | None:
        if not key.startswith(VALIDATION_PREFIXES):
            raise ValueError(f"the choice may read validation figures only, not '{key}'")
        self.read.add(key)
        return _number((summary.get("best") or {}).get(key))

    def curve(self, run_dir, key: str) -> list[tuple[int, float]]:
        """``(epoch, value)`` of validation metric ``key`` over a run's epochs (its ``metrics.jsonl``)."""
        if not key.startswith("val/"):
            raise ValueError(f"the choice may read validation curves only, not '{key}'")
        from ..store import RunPaths
        from ..store.jsonl import read_metrics
        self.read.add(key)
        rows = read_metrics(RunPaths(run_dir).metrics).metric_rows()
        out = []
        for r in rows:
            value = _number(r["m"].get(key)) if r.get("split") == "val" else None
            if value is not None:
                out.append((int(r.get("epoch") or len(out) + 1), value))
        return out

    def epoch_s(self, summary: dict) -> float | None:
        """Measured training seconds per epoch (a cost, not a score)."""
        self.read.add("time_per_epoch_s")
        return _number(summary.get("time_per_epoch_s"))


def test_value(summary: dict, key: str) -> float | None:
    """A test figure of the selected checkpoint (``summary.json``'s ``test``): for ``--apply`` only."""
    if not key.startswith("test/"):
        raise ValueError(f"not a test key: '{key}'")
    return _number((summary.get("test") or {}).get(key))


def test_key(select_metric: str) -> str:
    """``val/acc/fused`` -> ``test/acc/fused``."""
    return "test/" + select_metric.split("/", 1)[1]
