"""The stages of an advice as sweeps of ordinary runs: building their members and running them.

A stage is a sweep named ``<advice>-diag``, ``<advice>-r<r>`` or ``<advice>-apply`` in the runs
directory: its members are ordinary runs named like sweep members (``<advice>-r0-ogm_ge-s1``), so
``mmbal ls`` and ``mmbal compare --sweep`` show them and re-running the advice skips finished runs and
resumes interrupted ones (:mod:`engine.sweep.attempts`). Every member pins ``data.split_seed`` (to the
preset's, else the preset's seed) so the test rows are the same in every run of the advice; a
choice round on small data adds ``data.resplit_seed = <seed>`` (the train/val rows re-drawn per seed).

An executor runs a plan's members: :class:`SweepExecutor` as subprocesses through the sweep runner
(what the CLI uses; a Ctrl-C stops the members with a checkpoint and raises :class:`AdviceStopped`),
:class:`InProcessExecutor` one after the other in this process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import UsageError
from ..store import RunPaths, read_json, read_status, read_summary
from ..sweep.attempts import choose_attempt, config_differences, decide, read_attempt, runs_by_name
from ..sweep.members import Member, build_members
from ..sweep.plan import Plan
from .candidates import Candidate


class AdviceStopped(Exception):
    """The advice stopped at a signal (``signal``: SIGINT, SIGTERM or SIGHUP)."""

    def __init__(self, signal: str = "SIGINT"):
        super().__init__(signal)
        self.signal = signal


@dataclass(frozen=True)
class StageRun:
    """A member of a finished stage: its method, seed, run directory, state and summary (finished only)."""

    member: Member
    run_dir: Path | None
    state: str
    summary: dict | None

    @property
    def label(self) -> str:
        """The candidate's label (:class:`engine.advise.candidates.Candidate`): its run name less stage and seed."""
        return "-".join((self.member.method, *self.member.labels))

    @property
    def modality(self) -> str | None:
        """The modality of a ``unimodal`` member."""
        return dict(self.member.grid).get("unimodal.modality")


def stage_members(preset: Path, stage: str, candidates: Sequence[Candidate], seeds: list[int], general: list[str],
                  device: str | None, resplit: bool = False) -> list[Member]:
    """The members of one stage, seed-major: every candidate (:mod:`engine.advise.candidates`) per seed."""
    members: list[Member] = []
    for seed in seeds:
        extra = [f"data.resplit_seed={seed}"] if resplit else []
        for c in candidates:
            members += build_members(preset, stage, [c.method], [seed], [*general, *extra], {}, device, c.axes())
    return members


def plan_stage(preset: Path, runs_dir: Path, stage: str, members: list[Member], device: str | None) -> Plan:
    """The sweep plan of a stage: what to skip, resume or start (a finished run of the same name with
    another config is refused, exit 2, as :func:`engine.sweep.plan.plan_sweep` does)."""
    existing = runs_by_name(runs_dir)
    tasks, conflicts = [], []
    for member in members:
        attempts = [read_attempt(p, member.config) for p in existing.get(member.run_name, [])]
        if not any(a.state == "finished" and a.same_config for a in attempts):
            for a in attempts:
                if a.state == "finished":
                    diffs = config_differences(read_json(RunPaths(a.run_dir).config_json), member.config)
                    conflicts.append(f"{member.run_name} (run {a.run_id}): " + "; ".join(diffs[:3]))
        tasks.append(decide(member, attempts))
    if conflicts:
        raise UsageError(f"{runs_dir} already holds finished runs of stage '{stage}' with another configuration: "
                         + " | ".join(conflicts) + ". Give the advice another name with --name.")
    methods = list(dict.fromkeys(m.method for m in members))
    seeds = list(dict.fromkeys(m.seed for m in members))
    return Plan(stage, preset, runs_dir, methods, seeds, [], {}, device, tasks)


def stage_results(plan: Plan) -> list[StageRun]:
    """Each member of ``plan`` with its newest finished attempt (else its newest) after the stage ran."""
    existing = runs_by_name(plan.runs_dir)
    out = []
    for task in plan.tasks:
        path = choose_attempt(existing.get(task.member.run_name, []))
        state = read_status(path)["effective_state"] if path else "not started"
        summary = None
        if state == "finished":
            try:
                summary = read_summary(path)
            except ValueError:
                state = "damaged"
        out.append(StageRun(task.member, path, state, summary))
    return out


class SweepExecutor:
    """Runs a plan's members as ``mmbal run``/``resume`` subprocesses started by ``cli`` (the sweep runner)."""

    def __init__(self, cli: Sequence[str], jobs: int = 1, on_event: Callable | None = None, launcher=None):
        self.cli, self.jobs, self.on_event, self.launcher = list(cli), jobs, on_event, launcher

    def warm(self) -> None:
        """Whatever the launcher starts once for all members (the fork server), started now."""
        warm = getattr(self.launcher, "warm", None)
        if warm is not None:
            warm()

    def __call__(self, plan: Plan) -> None:
        from ..sweep.runner import SweepRunner
        result = SweepRunner(plan, self.cli, self.jobs, on_event=self.on_event, launcher=self.launcher).run()
        if result.interrupted:
            raise AdviceStopped(result.stopped_by or "SIGINT")


class InProcessExecutor:
    """Runs a plan's members one after the other in this process (``start_run`` / ``resume_run``)."""

    def __call__(self, plan: Plan) -> None:
        from ..run.lifecycle import resume_run, start_run
        for task in plan.todo():
            if task.action == "resume":
                resume_run(str(task.attempt.run_dir), runs_dir=plan.runs_dir)
            else:
                start_run(plan.preset, list(task.member.overrides), plan.runs_dir, name=task.member.run_name,
                          device=plan.device)
