"""``mmbal advise``: diagnose modality imbalance on the preset's data and choose a method on validation data."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..options import RunsDirOpt, SetOpt
from ..output import fail, print_error

FORMATS = ("table", "md", "json")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _member_event(kind, task, outcome) -> None:
    """One stderr line per member that ends (the sweep runner's events)."""
    if kind == "stopping":
        _say("interrupt: asking the running runs to write a checkpoint and stop (Ctrl-C again: stop now)")
    elif kind == "end":
        _say(f"  {outcome.state:<11} {task.member.run_name}  ({outcome.seconds:.1f}s)")


def _executor(jobs: int):
    """What runs a stage's members: ``mmbal run``/``resume`` subprocesses through the sweep runner."""
    from engine.advise.stages import SweepExecutor
    from .sweep import local_launcher, mmbal_argv
    cli = mmbal_argv(sys.executable)
    return SweepExecutor(cli, jobs, on_event=_member_event, launcher=local_launcher(cli))


def candidate_methods(text: str | None) -> tuple[list[str], bool]:
    """``--methods`` -> the candidates (joint is the reference, always run; unimodal is refused), and whether given."""
    from engine.errors import UsageError
    from engine.methods import METHODS
    from engine.sweep.members import parse_methods
    if text is None:
        return [m for m in sorted(METHODS.names()) if m not in ("joint", "unimodal")], False
    names = parse_methods(text)
    if "unimodal" in names:
        raise UsageError("--methods: unimodal is not a candidate: the diagnosis already trains every modality alone "
                         "and reports it; name balancing methods, e.g. --methods ogm_ge,mla")
    names = [n for n in names if n != "joint"]
    if not names:
        raise UsageError("--methods: name at least one method besides joint (joint is always run as the reference)")
    return names, True


def register(app: typer.Typer) -> None:
    @app.command("advise", rich_help_panel="Training")
    def advise(
        preset: Annotated[Path, typer.Argument(help="Preset TOML file (its data, model and training).",
                                               show_default=False)],
        budget: Annotated[Optional[str], typer.Option(
            "--budget", help="Time for the diagnosis and the choice, e.g. 30m, 90s, 1h30m: the halving's epochs "
                             "(then seeds) are lowered to fit, estimated from the diagnosis' measured epoch time.",
            show_default=False)] = None,
        budget_runs: Annotated[Optional[int], typer.Option(
            "--budget-runs", help="At most this many runs for the choice (joint's included); seeds are lowered to fit.",
            show_default=False)] = None,
        methods: Annotated[Optional[str], typer.Option(
            "--methods", help="Comma-separated candidate methods (default: every registered method the preset "
                              "suits); joint is always run as the reference.", show_default=False)] = None,
        tune: Annotated[bool, typer.Option(
            "--tune/--no-tune", help="Also try each method with each value of the one or two options its "
                                     "registration declares sensitive (`mmbal methods` lists them).")] = True,
        seeds: Annotated[int, typer.Option(
            "--seeds", help="Seeds of the last halving round and of --apply (at least 2; the preset's seed and "
                            "the following ones).")] = 3,
        eta: Annotated[int, typer.Option("--eta", help="Successive halving keeps the best 1/eta each round.")] = 3,
        probe_epochs: Annotated[Optional[int], typer.Option(
            "--probe-epochs", help="Epochs of the diagnosis runs (default: the preset's train.epochs).",
            show_default=False)] = None,
        apply: Annotated[bool, typer.Option(
            "--apply", help="Then train the recommendation and joint for the preset's epochs on every seed and "
                            "report their test figures (test is looked at only here).")] = False,
        fmt: Annotated[str, typer.Option("--format", help="Report format: table | md | json.")] = "table",
        name: Annotated[Optional[str], typer.Option(
            "--name", help="Advice name: its record is RUNS_DIR/advice/NAME/advice.json and its runs are named "
                           "NAME-diag-..., NAME-r0-... (default: the preset's name plus -advice).",
            show_default=False)] = None,
        jobs: Annotated[int, typer.Option(
            "--jobs", "-j", help="Runs at the same time; the --budget estimate counts on it.")] = 1,
        device: Annotated[Optional[str], typer.Option(
            help="auto | cpu | cuda | cuda:N for every run (overrides train.device).", show_default=False)] = None,
        set_: SetOpt = None,
        runs_dir: RunsDirOpt = None,
    ) -> None:
        """Diagnose modality imbalance on the preset's data and choose a balancing method on validation data
        (successive halving over seeds); running it again continues where it stopped."""
        from engine.advise.advisor import Advisor, report
        from engine.advise.config import AdviseConfig, parse_budget
        from engine.advise.report import render
        from engine.advise.stages import AdviceStopped
        from engine.errors import MmbalError, UsageError
        from engine.store import default_runs_dir, slugify
        from engine.sweep.layout import check_sweep_name
        try:
            if fmt not in FORMATS:
                raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, got '{fmt}'")
            if budget is not None and budget_runs is not None:
                raise UsageError("--budget and --budget-runs: give one budget, a time or a number of runs")
            budget_s = parse_budget(budget) if budget is not None else None
            for option, value, least in (("--budget-runs", budget_runs, 1), ("--seeds", seeds, 2), ("--eta", eta, 2),
                                         ("--probe-epochs", probe_epochs, 1), ("--jobs", jobs, 1)):
                if value is not None and value < least:
                    raise UsageError(f"{option}: expected at least {least}, got {value}")
            candidates, explicit = candidate_methods(methods)
            from engine.config import command_line_paths, load_preset
            overrides = tuple(command_line_paths(list(set_ or [])))   # a typed path means one from here
            if name is None:
                cfg, _ = load_preset(preset, list(overrides))
                name = f"{slugify(cfg.name)}-advice"
            check_sweep_name(name)
            cfg = AdviseConfig(preset.resolve(), default_runs_dir(runs_dir).expanduser().resolve(), name,
                               tuple(candidates), seeds, eta, budget_s, budget_runs, probe_epochs, apply, device,
                               explicit, overrides, tune, jobs)
            advisor = Advisor(cfg, _executor(jobs), _say)
        except MmbalError as exc:
            fail(exc)
        except KeyboardInterrupt:
            print_error("interrupted while checking the options: nothing was started")
            raise typer.Exit(130)
        try:
            record = advisor.run()
        except AdviceStopped as exc:
            from engine.terminal import exit_code
            print_error(f"stopped ({exc.signal}): finished runs are kept and interrupted ones checkpointed; run the "
                        f"same command again to continue: mmbal {' '.join(sys.argv[1:])}")
            raise typer.Exit(exit_code(exc.signal))
        except MmbalError as exc:
            fail(exc)
        print(render(report(record), fmt))
