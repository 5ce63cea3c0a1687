"""Successive halving: the rounds of the choice and the fit of that schedule to a budget.

Round r trains its candidates (plus ``joint``, the reference, on the same seeds) for ``epochs[r]``
epochs on ``seeds[r]`` seeds and keeps the best ``ceil(n_r / eta)`` by their mean validation score;
rounds go on until one candidate is left, which the last round trains for the full epochs on every
seed. With R rounds, round r gets ``min(E, max(E_min, round(E / eta^(R-1-r))))`` epochs and
``max(2, S-(R-1-r))`` seeds (E, S: the final epochs and seeds). E_min, the fewest epochs a round may
train, is what the diagnosis' joint run needed to get half of the way from chance to its best
validation accuracy (:func:`min_round_epochs`): shorter runs rank candidates by how fast they leave
chance, not by where they go (on a tiny dataset one epoch left 26 of 29 candidates tied at chance).
A time budget lowers E (then S, down to 2; E never below E_min) until the estimate fits: each run costs its epochs times the epoch time measured by the diagnosis' joint run
times the method's relative cost (``UNMEASURED_COST`` = 1.5 before it has been measured), plus the
start-up time the diagnosis measured per run; with ``--jobs J`` a round's runs go J at a time, so it
takes ceil(runs / J) / runs of that sum (measured: avdigits' choice at ``--jobs 2`` took 2408 s of
run time in about 20 minutes of wall time, and each run's epoch time stayed within 10 % of the
diagnosis' on the 2-core CPU). A run budget lowers S (down to 2).
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
    references: int = 1   # joint, and unimodal on the best modality when fused does not beat it

    def runs(self) -> int:
        return (self.candidates + self.references) * self.seeds


def min_round_epochs(curve: list[tuple[int, float]], chance: float, epochs: int) -> int:
    """The first epoch at which ``curve`` (joint's validation accuracy by epoch) reached half of the way
    from ``chance`` to its best value, at most ``epochs``; ``epochs`` when it never rose above chance."""
    if not curve:
        return 1
    best = max(v for _, v in curve)
    if best <= chance:
        return epochs
    halfway = chance + 0.5 * (best - chance)
    first = next(e for e, v in curve if v >= halfway)
    return max(1, min(first, epochs))


def schedule(n: int, eta: int, epochs: int, seeds: int, min_epochs: int = 1, references: int = 1) -> list[Round]:
    """The rounds for ``n`` candidates (see the module docstring)."""
    counts = [n]
    while counts[-1] > 1:
        counts.append(math.ceil(counts[-1] / eta))
    rounds = len(counts)
    out = []
    for r, c in enumerate(counts):
        back = rounds - 1 - r
        keep = counts[r + 1] if r + 1 < rounds else 1
        least = min(max(1, min_epochs), epochs)
        out.append(Round(c, keep, max(least, round(epochs / eta ** back)), max(2, seeds - back), references))
    return out


def total_runs(rounds: list[Round]) -> int:
    return sum(r.runs() for r in rounds)


def estimate_s(rounds: list[Round], epoch_s: float, startup_s: float, cost: float = UNMEASURED_COST,
               jobs: int = 1) -> float:
    """Wall seconds the rounds take: joint at ``epoch_s`` per epoch, candidates at ``cost`` times that,
    each round's runs ``jobs`` at a time."""
    total = 0.0
    for r in rounds:
        run_s = r.seeds * ((r.epochs * epoch_s + startup_s) * (r.references + r.candidates)
                           + r.epochs * epoch_s * (cost - 1) * r.candidates)
        total += run_s * math.ceil(r.runs() / jobs) / r.runs()
    return total


def fit_runs(n: int, eta: int, epochs: int, seeds: int, budget_runs: int, min_epochs: int = 1,
             references: int = 1) -> list[Round] | None:
    """The schedule with the most seeds (>= 2) whose runs fit ``budget_runs``; None if none does."""
    for s in range(max(seeds, 2), 1, -1):
        rounds = schedule(n, eta, epochs, s, min_epochs, references)
        if total_runs(rounds) <= budget_runs:
            return rounds
    return None


def fit_time(n: int, eta: int, epochs: int, seeds: int, budget_s: float, epoch_s: float,
             startup_s: float, min_epochs: int = 1, references: int = 1, jobs: int = 1) -> list[Round] | None:
    """The schedule with the most epochs (>= ``min_epochs``), then seeds, whose estimate fits ``budget_s``;
    None if none does."""
    least = min(max(1, min_epochs), epochs)
    for s in range(max(seeds, 2), 1, -1):
        for e in range(epochs, least - 1, -1):
            rounds = schedule(n, eta, e, s, least, references)
            if estimate_s(rounds, epoch_s, startup_s, jobs=jobs) <= budget_s:
                return rounds
    return None


def as_dicts(rounds: list[Round]) -> list[dict]:
    return [asdict(r) for r in rounds]


def from_dicts(items: list[dict]) -> list[Round]:
    return [Round(**item) for item in items]
