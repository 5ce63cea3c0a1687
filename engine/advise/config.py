"""The options of ``mmbal advise`` and the parsing of ``--budget``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

SMALL_TRAIN_ROWS = 2000   # below this many training rows the choice uses repeated train/val splits
_BUDGET_RE = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


@dataclass(frozen=True)
class AdviseConfig:
    """What one ``mmbal advise`` invocation asks for.

    ``candidates``: the methods the choice considers (``joint`` is always run beside them as the
    reference); ``seeds``: seeds of the last round and of ``--apply``; ``eta``: the halving factor;
    ``budget_s`` / ``budget_runs``: the choice's budget in seconds or in runs (at most one);
    ``probe_epochs``: epochs of the diagnosis runs (None: the preset's); ``overrides``: ``--set``
    values applied to the preset for every run (the diagnosis, the choice and ``--apply``); ``tune``:
    each method is also a candidate with each value of the options its registration declares
    sensitive (one option changed at a time; :mod:`engine.advise.candidates`); ``jobs``: runs at the
    same time, which the time budget's estimate counts on (not part of the identity: a re-run may change it).
    """

    preset: Path
    runs_dir: Path
    name: str
    candidates: tuple[str, ...]
    seeds: int = 3
    eta: int = 3
    budget_s: float | None = None
    budget_runs: int | None = None
    probe_epochs: int | None = None
    apply: bool = False
    device: str | None = None
    explicit_methods: bool = False
    overrides: tuple[str, ...] = ()   # --set KEY=VALUE, given to every run of the advice
    tune: bool = True   # also try each value of the options each method declares sensitive
    jobs: int = 1       # runs at the same time (--jobs): the time budget's estimate counts on it


    def identity(self) -> dict:
        """The options a re-run must repeat to continue the same advice (``--apply`` may be added later).
        Until the choice has started, only :data:`DIAGNOSIS_OPTIONS` must be repeated (:func:`changed_options`)."""
        return {"preset": str(self.preset), "candidates": list(self.candidates), "seeds": self.seeds,
                "eta": self.eta, "budget_s": self.budget_s, "budget_runs": self.budget_runs,
                "probe_epochs": self.probe_epochs, "overrides": list(self.overrides), "tune": self.tune}


DIAGNOSIS_OPTIONS = ("preset", "probe_epochs", "overrides")   # what the diagnosis runs depend on


def changed_options(before: dict, now: dict, choice_started: bool) -> list[str]:
    """The options of an advice's re-run that differ from its record and may not: every option once the
    choice has its schedule, else only those of the diagnosis (a choice refused for its budget can then
    be re-run with a larger one, reusing the diagnosis). Each as ``key: before (now: value)``."""
    keys = now.keys() if choice_started else DIAGNOSIS_OPTIONS
    return [f"{k}: {before.get(k)!r} (now: {now.get(k)!r})" for k in keys if before.get(k) != now.get(k)]


def parse_budget(text: str) -> float:
    """``"30m"``, ``"90s"``, ``"2h"``, ``"1h30m"`` -> seconds (> 0); :class:`UsageError` otherwise."""
    raw = str(text).strip().lower().replace(" ", "")
    match = _BUDGET_RE.fullmatch(raw)
    if not raw or match is None or not any(match.groups()):
        raise UsageError(f"--budget: '{text}' is not a time; give hours, minutes and/or seconds with their unit, "
                         f"e.g. --budget 30m, --budget 90s, --budget 1h30m (or count runs with --budget-runs N)")
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    seconds = 3600 * h + 60 * m + s
    if seconds <= 0:
        raise UsageError(f"--budget: '{text}' is no time at all; give more than 0 seconds, e.g. --budget 30m")
    return seconds
