"""Where training is, and the best validation value so far (the trainer's bookkeeping)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Position:
    """Where training is: ``epoch`` (0-based, the one in progress) and ``batch`` within it."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


@dataclass
class Selection:
    """The best validation value so far and where it was reached."""

    value: float | None = None
    epoch: int = -1
    step: int = -1
    metrics: dict[str, float] = field(default_factory=dict)

    def improves(self, value: float, mode: str) -> bool:
        if value != value:  # NaN never improves
            return False
        return self.value is None or (value > self.value if mode == "max" else value < self.value)
