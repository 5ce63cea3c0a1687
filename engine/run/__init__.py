"""Runs: start and resume training in a run directory (see :mod:`engine.run.lifecycle`).

Modules: ``lifecycle`` (``start_run`` / ``resume_run``), ``parts`` (device, data, model, method),
``reporting`` (what the caller is told: the front end's ``ProgressReporter``, ``RunResult``),
``recorder`` (what training writes to the run directory: the trainer's ``Recorder`` for rank 0 and
for the other ranks), ``kept`` (models kept by a method's stages), ``recovery`` (after a crash: what a
resume tidies and where it starts), ``failures`` (a run stopped by a failed write), ``signals``
(Ctrl-C), ``ranks`` (the other processes of a multi-process run). File names and checkpoint files are
the run store's (:mod:`engine.store`).
"""

from .lifecycle import resume_run, start_run
from .parts import build_parts, check_batch_split
from .ranks import OtherRankFailed
from .reporting import NullReporter, ProgressReporter, RunResult

__all__ = ["start_run", "resume_run", "build_parts", "check_batch_split", "NullReporter", "ProgressReporter",
           "RunResult", "OtherRankFailed"]
