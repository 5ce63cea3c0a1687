"""``mmbal sweep``: one ordinary run per (method, seed[, ``--grid`` values]), N at a time; running it again
resumes the sweep."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..options import RunsDirOpt
from ..output import fail, print_error

ACTION_TEXT = {"skip": "finished, skipped", "running": "running elsewhere, left alone",
               "stale": "stale, left alone", "resume": "to resume", "start": "to start"}


def mmbal_argv(python: str) -> list[str]:
    """The command line that starts mmbal with ``python``; the sweep runner starts each member with it."""
    return [python, "-m", "mmbal_cli"]


def _say(text: str) -> None:
    print(text, flush=True)


def _headline(outcome) -> str:
    test = (outcome.summary or {}).get("test") or {}
    acc = test.get("test/acc/fused")
    return f"test acc {acc:.4f}" if isinstance(acc, (int, float)) else ""


class _Progress:
    """Prints one line when a member starts and one when it ends, numbered ``[i/N]``."""

    def __init__(self, total: int):
        self.total, self.started, self.number = total, 0, {}

    def __call__(self, kind, task, outcome) -> None:
        if kind == "stopping":
            if outcome == "SIGHUP":
                _say("hang-up (SIGHUP): asking the running members to write a checkpoint and stop")
            else:
                _say("interrupt: asking the running members to write a checkpoint and stop (Ctrl-C again: stop now)")
            return
        key = task.member.run_name
        if kind == "start":
            self.started += 1
            self.number[key] = self.started
            verb = "resume" if task.action == "resume" else "start"
            where = f"  on GPU {outcome}" if outcome is not None else ""
            _say(f"[{self.started}/{self.total}] {verb:<11} {task.member.key:<16} {key}{where}")
            return
        tag = f"[{self.number.get(key, '?')}/{self.total}]"
        run = f"run {outcome.run_id}" if outcome.run_id else "no run created"
        if outcome.state == "finished":
            _say(f"{tag} done        {task.member.key:<16} {run}  {_headline(outcome)}  ({outcome.seconds:.1f}s)")
        else:
            _say(f"{tag} {outcome.state:<11} {task.member.key:<16} {run}, exit {outcome.returncode} after "
                 f"{outcome.seconds:.1f}s: {outcome.last_line}  (log: {outcome.log})")


def _print_plan(plan, jobs: int, verbose: bool, gpus: list[str] = (), launcher: str = "local") -> None:
    n_m, n_s = len(plan.methods), len(plan.seeds)
    counts = ", ".join(f"{plan.count(a)} {ACTION_TEXT[a]}" for a in ACTION_TEXT if plan.count(a))
    grid = "".join(f" x {a.key} ({len(a.values)}{', ' + a.method + ' only' if a.method else ''})"
                   for a in plan.grid)
    _say(f"sweep {plan.name}: {n_m} method{'s' * (n_m != 1)} x {n_s} seed{'s' * (n_s != 1)}{grid} = "
         f"{len(plan.tasks)} runs ({counts}); {jobs} at a time")
    if gpus:
        per_gpu = ", ".join(f"GPU {g}: {sum(1 for s in range(jobs) if gpus[s % len(gpus)] == g)}" for g in gpus)
        _say(f"  on GPUs {','.join(gpus)}, each member on one (CUDA_VISIBLE_DEVICES), slots dealt round-robin "
             f"({per_gpu} at a time)")
    if launcher == "slurm":
        _say(f"  each run a Slurm job submitted through submitit ({jobs} queued at a time; job files in "
             f"{plan.runs_dir / 'sweeps' / plan.name / 'jobs'}); the runs directory must be shared with the nodes")
    _say(f"  runs in {plan.runs_dir}, sweep record and logs in {plan.runs_dir / 'sweeps' / plan.name}")
    for task in plan.tasks:
        if verbose or task.action != "start" or task.note:
            run = f" run {task.attempt.run_id}" if task.attempt else ""
            note = f" ({task.note})" if task.note and task.note != "finished" else ""
            _say(f"  {task.member.key:<16} {task.member.run_name:<28} {ACTION_TEXT[task.action]}{run}{note}")


def _compare_hint(plan) -> str:
    """The compare of the sweep, with joint (else the first method) as the baseline when that is one row:
    always without a grid, and with one when every grid key is scoped to another method (its row is
    ``joint, -``, which ``--baseline joint`` names)."""
    where = f" --runs-dir {plan.runs_dir}" if plan.runs_dir else ""
    base = "joint" if "joint" in plan.methods else plan.methods[0]
    if any(axis.method in (None, base) for axis in plan.grid):   # the baseline method has several rows
        return f"mmbal compare --sweep {plan.name}{where}"
    return f"mmbal compare --sweep {plan.name}{where} --baseline {base}"


def register(app: typer.Typer) -> None:
    @app.command("sweep", rich_help_panel="Training")
    def sweep(
        preset: Annotated[Path, typer.Argument(help="Preset TOML file.", show_default=False)],
        methods: Annotated[Optional[str], typer.Option(
            "--methods", help="Comma-separated methods (default: the preset's).", show_default=False)] = None,
        seeds: Annotated[Optional[str], typer.Option(
            "--seeds", help="Comma-separated seeds or ranges: 0,1,2 or 0-4 (default: the preset's seed).",
            show_default=False)] = None,
        set_: Annotated[Optional[list[str]], typer.Option(
            "--set", "-s", help="Override a preset key for every run: --set train.epochs=3; scope a method's "
                                "option by its name: --set unimodal.modality=audio (repeatable).",
            show_default=False)] = None,
        grid: Annotated[Optional[list[str]], typer.Option(
            "--grid", "-g", help="Also sweep a preset key over values, read like --set values: --grid "
                                 "train.lr=1e-3,3e-4 (repeatable: every combination x methods x seeds; commas "
                                 "inside [...] stay in a value; scope a method's option: --grid ogm_ge.alpha=0.1,0.5).",
            show_default=False)] = None,
        jobs: Annotated[Optional[int], typer.Option(
            "--jobs", "-j", help="Runs at the same time (default: 1, or one per --gpus GPU).",
            show_default=False)] = None,
        gpus: Annotated[Optional[str], typer.Option(
            "--gpus", help="Place the runs on these GPUs of this machine, round-robin, each run seeing only its "
                           "own (CUDA_VISIBLE_DEVICES): --gpus 0,1 or 0-3.", show_default=False)] = None,
        launcher: Annotated[str, typer.Option(
            "--launcher", help="local: runs on this machine; slurm: each run a Slurm job submitted through "
                               "submitit (the runs directory on a filesystem the nodes share).")] = "local",
        slurm: Annotated[Optional[list[str]], typer.Option(
            "--slurm", help="A submitit parameter of the Slurm jobs (repeatable): --slurm partition=gpu "
                            "--slurm gpus_per_node=1 --slurm timeout_min=600.", show_default=False)] = None,
        name: Annotated[Optional[str], typer.Option(
            "--name", help="Sweep name; runs are named NAME-METHOD[-KEY=VALUE...]-sSEED (default: the preset's name).",
            show_default=False)] = None,
        device: Annotated[Optional[str], typer.Option(
            help="auto | cpu | cuda | cuda:N for every run (overrides train.device).", show_default=False)] = None,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Print what would run, skip and resume, and the commands; start nothing.")] = False,
        runs_dir: RunsDirOpt = None,
    ) -> None:
        """One run per method x seed (x --grid values), N at a time; finished runs are skipped, so running it
        again resumes it."""
        from engine.errors import MmbalError, UsageError
        from engine.store import default_runs_dir
        from engine.sweep.members import parse_methods, parse_seeds
        from engine.sweep.plan import plan_sweep
        from engine.sweep.runner import SweepRunner, member_command
        try:
            _check_launcher(launcher, gpus, slurm)
            gpu_list = _gpus(gpus)
            if jobs is not None and jobs < 1:
                raise UsageError(f"--jobs: expected at least 1, got {jobs}")
            method_list, seed_list = _defaults(preset, methods, seeds, parse_methods, parse_seeds)
            plan = plan_sweep(preset, default_runs_dir(runs_dir), method_list, seed_list, set_ or [],
                              name=name, device=device, grid=grid or [])
            if jobs is None:  # a cluster's scheduler queues every job; here one run, or one per GPU
                jobs = max(1, len(plan.todo())) if launcher == "slurm" else max(1, len(gpu_list))
            cluster = _launcher(launcher, plan, slurm or [], mmbal_argv(sys.executable), gpu_list) \
                if not dry_run else None
        except MmbalError as exc:
            fail(exc)
        except KeyboardInterrupt:
            print_error("interrupted while planning: nothing was started")
            raise typer.Exit(130)
        _print_plan(plan, jobs, verbose=dry_run, gpus=gpu_list, launcher=launcher)
        if dry_run:
            for task in plan.todo():
                _say("  $ " + " ".join(_quote(a) for a in member_command(plan, task, mmbal_argv("python"))))
            return
        from engine.terminal import survive_hangups
        survive_hangups()  # a progress line written to a terminal already hung up does not end the sweep with exit 1
        try:
            result = SweepRunner(plan, mmbal_argv(sys.executable), jobs, on_event=_Progress(len(plan.todo())),
                                 gpus=gpu_list, launcher=cluster).run()
        except MmbalError as exc:
            fail(exc)
        _finish(plan, result)


def _check_launcher(launcher: str, gpus: str | None, slurm: list[str] | None) -> None:
    from engine.errors import UsageError
    if launcher not in ("local", "slurm"):
        raise UsageError(f"--launcher: expected local or slurm, got '{launcher}'")
    if launcher == "slurm" and gpus is not None:
        raise UsageError("--gpus places runs on this machine's GPUs; with --launcher slurm ask Slurm for them: "
                         "--slurm gpus_per_node=1")
    if launcher == "local" and slurm:
        raise UsageError("--slurm sets the parameters of Slurm jobs: it needs --launcher slurm")
    if launcher == "slurm":
        from engine.sweep.launchers import import_submitit
        import_submitit()  # missing: exit 2 before anything is planned


def local_launcher(cli: list[str], gpus: list[str] = ()):
    """Members forked from a server that imported mmbal once (:mod:`mmbal_cli.forked`); None (exec'd
    members) with GPUs or with ``MMBAL_SWEEP_EXEC=1``."""
    from .. import forked
    return forked.ForkLauncher(len(cli)) if not gpus and forked.enabled() else None


def _launcher(launcher: str, plan, slurm: list[str], cli: list[str], gpus: list[str]):
    """The submitit launcher of ``--launcher slurm``; for local runs the fork launcher (or None)."""
    if launcher != "slurm":
        return local_launcher(cli, gpus)
    from engine.sweep.launchers import SubmititLauncher, parse_parameters
    from engine.sweep.layout import sweep_dir
    return SubmititLauncher(sweep_dir(plan.runs_dir, plan.name), parse_parameters(slurm))


def _gpus(text: str | None) -> list[str]:
    """``--gpus``, checked against the GPUs torch sees here (empty without the option)."""
    if text is None:
        return []
    import torch
    from engine.sweep.members import parse_gpus
    return parse_gpus(text, torch.cuda.device_count() if torch.cuda.is_available() else 0)


def _defaults(preset, methods, seeds, parse_methods, parse_seeds):
    """``--methods``/``--seeds`` parsed, or the preset's own method and seed when left out."""
    if methods is not None and seeds is not None:
        return parse_methods(methods), parse_seeds(seeds)
    from engine.config import read_toml
    raw = read_toml(Path(preset))
    table = raw.get("method") if isinstance(raw.get("method"), dict) else {}
    method_list = parse_methods(methods if methods is not None else str(table.get("name", "joint")))
    seed_list = parse_seeds(seeds if seeds is not None else str(raw.get("seed", 0)))
    return method_list, seed_list


def _same_command() -> str:
    """This ``mmbal sweep`` command line, to be run again."""
    return " ".join(["mmbal", *(_quote(a) for a in sys.argv[1:])])


def _quote(arg: str) -> str:
    import shlex
    return shlex.quote(arg)


def _finish(plan, result) -> None:
    from engine.sweep.record import sweep_members
    members = sweep_members(plan.runs_dir, plan.name)
    wanted = {t.member.run_name for t in plan.tasks}
    from engine.store import read_status
    states = [read_status(path)["effective_state"] if path else "not started"
              for m, path in members if m.get("run_name") in wanted]
    done = states.count("finished")
    _say(f"sweep {plan.name}: {done} of {len(states)} runs finished")
    if result.interrupted:
        from engine.terminal import exit_code
        why = "hang-up (SIGHUP)" if result.stopped_by == "SIGHUP" else "interrupted"
        print_error(f"{why}: the running members were asked to write a checkpoint and stop (one still starting up "
                    f"stops without); run the same command again to resume the sweep: {_same_command()}")
        raise typer.Exit(exit_code(result.stopped_by))
    if done < len(states):
        others = {s: states.count(s) for s in states if s != "finished"}
        listed = ", ".join(f"{n} {s}" for s, n in others.items())
        print_error(f"{listed}: run the same command again to retry (failed or interrupted runs resume from their "
                    f"last checkpoint); their logs are in {plan.runs_dir / 'sweeps' / plan.name / 'logs'}")
        raise typer.Exit(1)
    _say(f"compare them: {_compare_hint(plan)}")
