"""``max_overhead``: the monitors kept to a fraction of the run's time.

The monitors' own work (training the probes and critics every ``update_every`` steps, and the
estimators at each validation) costs about the same whatever the model, so on small models with
epochs of a few milliseconds it can double an epoch (6 modalities on uci_mfeat). With
``max_overhead = f``, two :class:`OverheadBudget` accounts, one for the updates (and the writing
of the monitors' state, below) and one for the evaluations, each of f / 2, time that work and let the
next update or evaluation run only while its kind's time so far is at most f / 2 times the rest of
the run's time so far (two accounts, so that updates every few steps do not leave the estimators no
room): an update or evaluation that is skipped waits until training has caught up, so the monitors
settle at or under f of the time, and their values come less often on small models (a skipped
evaluation leaves the epoch's ``mi/``, ``cmi/``, ``shapley/`` values out of its log row; the
dashboard keeps showing the last ones). The first update and the first evaluation always run.

Which steps and epochs carry monitor values then depends on the machine's speed, so two runs of the
same preset may log them at different epochs (training itself is unaffected: the monitors never
touch the model or the training RNG). Under the budget the monitors' state (probes, critics, their
optimiser: on 6 modalities more than a third of a small model's checkpoint) is also kept out of
``last.pt``: the trainer writes it to ``checkpoints/monitors.pt`` only when it has changed and the budget
allows, and a resume continues the monitors from there. ``max_overhead = 0`` runs every update and evaluation, as
configured, and keeps the monitors' values reproducible bit for bit. In a multi-process run every
rank must take the same decision without a collective, so the budget is off there. The time is the
host's wall clock: on CUDA, where kernels run asynchronously, it counts the host's share of the work
(launches and the synchronisations of the monitors' own logging), so the monitors may take somewhat
more than f of the GPU's time.
"""

from __future__ import annotations

import time
from contextlib import contextmanager


class OverheadBudget:
    """Whether the monitors may work now, from their measured share of the run's time (see the module)."""

    def __init__(self, fraction: float, clock=time.perf_counter):
        self.fraction = float(fraction)
        self.clock = clock
        self.monitor_s = 0.0      # the monitors' measured time (this run, all segments)
        self.other_s = 0.0        # everything else, up to the last check (all segments)
        self._mark: float | None = None
        self._decided: tuple[object, bool] | None = None

    @property
    def active(self) -> bool:
        return self.fraction > 0

    def allows(self, key: object = None) -> bool:
        """Whether the monitors may work now; the same answer for the same ``key`` (e.g. a step
        number asked twice within the step)."""
        if not self.active:
            return True
        if self._decided is not None and key is not None and self._decided[0] == key:
            return self._decided[1]
        self._advance()
        answer = self.monitor_s <= self.fraction * self.other_s
        self._decided = (key, answer)
        return answer

    @contextmanager
    def timed(self):
        """Counts the enclosed work as the monitors' time."""
        if not self.active:
            yield
            return
        self._advance()
        started = self.clock()
        try:
            yield
        finally:
            now = self.clock()
            self.monitor_s += now - started
            self._mark = now

    def _advance(self) -> None:
        """Adds the time since the last mark to the rest of the run's time."""
        now = self.clock()
        if self._mark is not None:
            self.other_s += now - self._mark
        self._mark = now

    def state_dict(self) -> dict:
        return {"monitor_s": self.monitor_s, "other_s": self.other_s}

    def load_state_dict(self, state: dict) -> None:
        """Continues the accounts of a checkpoint (the pause between the runs is not counted)."""
        self.monitor_s = float(state.get("monitor_s", 0.0))
        self.other_s = float(state.get("other_s", 0.0))
        self._mark, self._decided = None, None
