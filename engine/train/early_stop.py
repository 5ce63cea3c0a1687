"""Early stopping on the selection metric (``train.early_stop``, ``train.early_stop_min_delta``).

Training stops after the epoch at which the selection metric (``train.select_metric``) has gone
``early_stop`` epochs without improving on its reference value by more than ``min_delta``; the
reference is the last value that did. The test metrics are then those of the selected checkpoint, as
at the planned end. The state (reference value and its epoch) is in the checkpoint, and whether a run
has stopped is a function of that state and the current options, so a resume is exact and
``--set train.early_stop=0`` (or a larger patience) lets a stopped run train on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EarlyStop:
    patience: int            # epochs without improvement that end the run (0: off)
    min_delta: float = 0.0   # an improvement must exceed this to reset the count
    mode: str = "max"        # "max" | "min": which way the metric improves
    reference: float | None = None   # the last value that counted as an improvement
    epoch: int = -1                   # the epoch (0-based) it was reached at

    def observe(self, epoch: int, value: float | None) -> None:
        """Note the selection metric after ``epoch``."""
        if value is None or value != value:   # missing or NaN: never an improvement
            return
        better = (self.reference is None
                  or (value - self.reference > self.min_delta if self.mode == "max"
                      else self.reference - value > self.min_delta))
        if better:
            self.reference, self.epoch = value, epoch

    def stopped_after(self, epoch: int) -> bool:
        """Whether training ends after ``epoch`` (0-based, finished)."""
        return self.patience > 0 and self.epoch >= 0 and epoch - self.epoch >= self.patience

    def reason(self, metric: str) -> str:
        return (f"{metric} has not improved by more than {self.min_delta:g} for {self.patience} epoch(s) "
                f"(last improvement {self.reference:.4f} after epoch {self.epoch + 1})")

    def state_dict(self) -> dict:
        return {"reference": self.reference, "epoch": self.epoch}

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.reference, self.epoch = state["reference"], state["epoch"]
