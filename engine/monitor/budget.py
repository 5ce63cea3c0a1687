"""``eval_time_budget``: the evaluation-time monitors kept within a time per evaluation.

The monitors' evaluation cost grows with the rows they score (the head passes over permuted copies
and coalitions linearly, the neighbour search of ``cmi/<m>`` quadratically). With a budget of
``seconds`` per evaluation, :class:`EvalBudget` measures how long each evaluation's monitors took
and multiplies the row limits of the next evaluation by ``budget / measured`` (capped at the
configured limits, 1x, and never below a floor of rows), so the time settles at or under the budget
within a few evaluations. The time is measured without synchronising with the device: on the CPU
with the wall clock, on CUDA with two events whose elapsed time is read at the next evaluation,
long after they completed (``Event.query``).

With a budget the rows scored depend on the machine's speed, so the monitors' values are no longer
reproducible bit for bit from run to run (training itself is unaffected: the monitors never touch
the model or the training RNG). Budget 0 (the default) is no limit and keeps them deterministic.
"""

from __future__ import annotations

import time

import torch

MIN_SCALE = 1e-3


class EvalBudget:
    """The row scale of the evaluation-time monitors under a time budget (see the module docstring)."""

    def __init__(self, seconds: float, device: torch.device):
        self.seconds = float(seconds)
        self.device = torch.device(device)
        self.scale = 1.0
        self.last_seconds: float | None = None    # the last measured evaluation's monitor time
        self._pending: float | None = None         # a measurement not yet folded into the scale
        self._started: float | None = None
        self._events: tuple | None = None

    @property
    def active(self) -> bool:
        return self.seconds > 0

    def rows(self, limit: int, floor: int) -> int:
        """``limit`` times the current scale, at least ``floor`` and at most ``limit`` (``limit`` itself
        without a budget)."""
        if not self.active:
            return limit
        return min(limit, max(floor, int(limit * self.scale)))

    def start(self) -> None:
        """Before an evaluation's monitors: fold in the last measurement, then start timing."""
        if not self.active:
            return
        self._adapt(self._take_measurement())
        if self.device.type == "cuda":
            begin = torch.cuda.Event(enable_timing=True)
            begin.record()
            self._events = (begin, None)
        else:
            self._started = time.perf_counter()

    def stop(self) -> None:
        """After an evaluation's monitors (no device synchronisation)."""
        if not self.active:
            return
        if self.device.type == "cuda" and self._events is not None:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events = (self._events[0], end)
        elif self._started is not None:
            self.last_seconds = self._pending = time.perf_counter() - self._started
            self._started = None

    def _take_measurement(self) -> float | None:
        """The monitor time in seconds of an evaluation not yet folded into the scale, None when there is
        none (or, on CUDA, when its end event has not completed yet: it is then dropped, never waited for)."""
        if self._events is not None and self._events[1] is not None and self._events[1].query():
            begin, end = self._events
            self.last_seconds = self._pending = begin.elapsed_time(end) / 1000.0
        self._events = None
        seconds, self._pending = self._pending, None
        return seconds

    def _adapt(self, seconds: float | None) -> None:
        if seconds is None or seconds <= 0:
            return
        self.scale = min(1.0, max(MIN_SCALE, self.scale * self.seconds / seconds))
