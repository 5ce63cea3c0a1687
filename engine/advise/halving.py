"""Successive halving: the rounds of the choice and the fit of that schedule to a budget.

Round r trains its candidates (plus ``joint``, the reference, on the same seeds) for ``epochs[r]``
epochs on ``seeds[r]`` seeds and keeps the best ``ceil(n_r / eta)`` by their mean validation score;
rounds go on until one candidate is left, which the last round trains for the full epochs on every
seed. With R rounds, round r gets ``max(1, round(E / eta^(R-1-r)))`` epochs and ``max(2, S-(R-1-r))``
seeds (E, S: the final epochs and seeds). A time budget lowers E (then S, down to 2) until the
estimate fits: each run costs its epochs times the epoch time measured by the diagnosis' joint run
times the method's relative cost (``UNMEASURED_COST`` = 1.5 before it has been measured), plus the
start-up time the diagnosis measured per run. A run budget lowers S (down to 2).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

UNMEASURED_COST = 1.5


@dataclass(frozen=True)
class Round:
    candidates: int
    keep: int
    epochs: int
    seeds: int

    def runs(self) -> int:
        return (self.candidates + 1) * self.seeds   # + joint, the reference


def schedule(n: int, eta: int, epochs: int, seeds: int) -> list[Round]:
    """The rounds for ``n`` candidates (see the module docstring)."""
    counts = [n]
    while counts[-1] > 1:
        counts.append(math.ceil(counts[-1] / eta))
    rounds = len(counts)
    out = []
    for r, c in enumerate(counts):
        back = rounds - 1 - r
        keep = counts[r + 1] if r + 1 < rounds else 1
        out.append(Round(c, keep, max(1, round(epochs / eta ** back)), max(2, seeds - back)))
    return out


def total_runs(rounds: list[Round]) -> int:
    return sum(r.runs() for r in rounds)


def estimate_s(rounds: list[Round], epoch_s: float, startup_s: float, cost: float = UNMEASURED_COST) -> float:
    """Seconds the rounds take: joint at ``epoch_s`` per epoch, candidates at ``cost`` times that."""
    return sum(r.seeds * ((r.epochs * epoch_s + startup_s) * (1 + r.candidates)
                          + r.epochs * epoch_s * (cost - 1) * r.candidates) for r in rounds)


def fit_runs(n: int, eta: int, epochs: int, seeds: int, budget_runs: int) -> list[Round] | None:
    """The schedule with the most seeds (>= 2) whose runs fit ``budget_runs``; None if none does."""
    for s in range(max(seeds, 2), 1, -1):
        rounds = schedule(n, eta, epochs, s)
        if total_runs(rounds) <= budget_runs:
            return rounds
    return None


def fit_time(n: int, eta: int, epochs: int, seeds: int, budget_s: float, epoch_s: float,
             startup_s: float) -> list[Round] | None:
    """The schedule with the most epochs, then seeds, whose estimate fits ``budget_s``; None if none does."""
    for s in range(max(seeds, 2), 1, -1):
        for e in range(epochs, 0, -1):
            rounds = schedule(n, eta, e, s)
            if estimate_s(rounds, epoch_s, startup_s) <= budget_s:
                return rounds
    return None


def as_dicts(rounds: list[Round]) -> list[dict]:
    return [asdict(r) for r in rounds]


def from_dicts(items: list[dict]) -> list[Round]:
    return [Round(**item) for item in items]
