"""Runs: start and resume training in a run directory (see :mod:`engine.run.lifecycle`).

Modules: ``lifecycle`` (``start_run`` / ``resume_run``), ``parts`` (device, data, model, method),
``recorder`` (what a run reports), ``resume_points`` (which checkpoint a resume starts from),
``failures`` (a run stopped by a failed write), ``signals`` (Ctrl-C), ``ranks`` (the other processes
of a multi-process run).
"""

from .lifecycle import resume_run, start_run
from .parts import build_parts, check_batch_split
from .ranks import OtherRankFailed
from .recorder import NullReporter, Reporter, RunResult

__all__ = ["start_run", "resume_run", "build_parts", "check_batch_split", "NullReporter", "Reporter", "RunResult",
           "OtherRankFailed"]
