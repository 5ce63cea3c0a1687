"""The ``mmbal`` command: a Typer app, one function per command, torch imported lazily.

Exit codes (interfaces.md): 0 success, 1 runtime failure, 2 usage / preset / data error,
3 run not found or resume refused, 130 interrupted (after a checkpoint is written).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import NprocOpt, RunsDirOpt, SetOpt
from .output import make_reporter, out_console, print_error

EPILOG = ("Exit codes: 0 success, 1 runtime failure, 2 usage/preset/data error, "
          "3 run not found or resume refused, 130 interrupted.")

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_show_locals=False,
                  context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG,
                  help="Balanced multimodal learning: train, resume, list and compare runs.")
data_app = typer.Typer(no_args_is_help=True, help="Make and check datasets in mmbal's Parquet format.",
                       context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(data_app, name="data")

def _fail(exc: Exception, quiet: bool = False) -> None:
    """Print a user-facing error as one paragraph (unless ``quiet``: ranks other than 0 of a
    multi-process run, whose rank 0 prints it) and exit with its code."""
    from engine.errors import MmbalError
    if isinstance(exc, MmbalError):
        if not quiet:
            print_error(str(exc))
        raise typer.Exit(exc.exit_code)
    raise exc


def _announce(run_dir, run_id, info) -> None:
    print(f"run {run_id}  {run_dir}", flush=True)


def _finish(result, quiet: bool = False) -> None:
    if result.state == "interrupted":
        if quiet:
            raise typer.Exit(130)
        print(f"interrupted: checkpoint written; continue with `mmbal resume {result.run_id}`", file=sys.stderr)
        raise typer.Exit(130)


@app.command(rich_help_panel="Training")
def run(preset: Annotated[Path, typer.Argument(help="Preset TOML file.", show_default=False)],
        set_: SetOpt = None, runs_dir: RunsDirOpt = None,
        name: Annotated[Optional[str], typer.Option(help="Run name (default: preset name + method).")] = None,
        device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N (overrides train.device).")] = None,
        tui: Annotated[bool, typer.Option("--tui/--no-tui", help="Train in the background with the live dashboard "
                                                                 "attached (quitting asks whether to stop training).")] = False,
        nproc: NprocOpt = None,
        ) -> None:
    """Start a new run from a preset; prints the run id and directory first."""
    from engine.errors import MmbalError, UsageError
    from engine.run import start_run

    from .nproc import check_run, run_args, start_processes
    if nproc is not None and nproc > 1:
        try:
            if tui:
                raise UsageError("--tui cannot be combined with --nproc; start the run with --nproc and follow it "
                                 "with `mmbal watch` in another terminal")
            check_run(preset, set_ or [], device, nproc)
        except MmbalError as exc:
            _fail(exc)
        raise typer.Exit(start_processes(run_args(preset, set_ or [], runs_dir, name, device), nproc))
    if tui:
        from .tui.launch import build_run_argv, run_with_dashboard
        raise typer.Exit(run_with_dashboard(build_run_argv(preset, set_ or [], name, device), runs_dir))
    _train_here(lambda reporter, main: start_run(preset, set_ or [], runs_dir, name=name, device=device,
                                                 reporter=reporter, on_created=_announce if main else None))


@app.command(rich_help_panel="Training")
def resume(run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, id prefix, name, directory or 'latest'.")],
           set_: SetOpt = None, runs_dir: RunsDirOpt = None, nproc: NprocOpt = None) -> None:
    """Continue a stopped, crashed or finished run from its last checkpoint (with any number of processes)."""
    from engine.errors import MmbalError
    from engine.run import resume_run

    from .nproc import check_resume, resume_args, start_processes
    if nproc is not None and nproc > 1:
        try:
            run_dir = check_resume(run_ref, runs_dir, nproc)
        except MmbalError as exc:
            _fail(exc)
        raise typer.Exit(start_processes(resume_args(run_dir, set_ or [], runs_dir), nproc))
    _train_here(lambda reporter, main: resume_run(
        run_ref, set_ or [], runs_dir, reporter=reporter,
        on_found=lambda d, info: print(f"resuming {info['run_id']}  {d}", flush=True)))


def _train_here(train) -> None:
    """``train(reporter, main)`` in this process (one rank of a multi-process run, or the only one):
    errors, Ctrl-C and the end of the run are reported by the main rank only."""
    from engine.errors import MmbalError
    from engine.run import NullReporter

    from .nproc import ranks
    with ranks() as main:
        reporter = make_reporter() if main else NullReporter()
        try:
            result = train(reporter, main)
        except MmbalError as exc:
            _fail(exc, quiet=not main)
        except KeyboardInterrupt:
            _stop(reporter)
            if main:
                print_error("interrupted: stopped without writing a checkpoint now; `mmbal resume` continues from "
                            "the last one, if any (one is written at the end of each epoch)")
            raise typer.Exit(130)
        finally:
            _stop(reporter)
        _finish(result, quiet=not main)


def _stop(reporter) -> None:
    stop = getattr(reporter, "stop", None)
    if stop:
        stop()


@app.command("ls", rich_help_panel="Runs")
def ls(runs_dir: RunsDirOpt = None,
       as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """The runs in the runs directory, newest first, with their state."""
    from rich.table import Table

    from engine.errors import UsageError
    from engine.store import default_runs_dir, list_runs, usable_runs_dir
    try:
        root = usable_runs_dir(default_runs_dir(runs_dir))
    except UsageError as exc:
        _fail(exc)
    runs = list_runs(root)
    if as_json:
        print(json.dumps([{**vars(r), "path": str(r.path)} for r in runs], indent=2))
        return
    if not runs:
        out_console.print(f"no runs in {root}")
        return
    table = Table(title=str(root), title_justify="left")
    for col in ("id", "name", "method", "dataset", "state", "epoch", "step", "created"):
        table.add_column(col)
    for r in runs:
        state = r.state if not r.error else f"{r.state} ({r.error})"
        table.add_row(r.run_id or "?", r.name or r.path.name, r.method or "", r.dataset or "", state,
                      str(r.epoch if r.epoch is not None else ""), str(r.step if r.step is not None else ""),
                      (r.created or "").replace("T", " ")[:19])
    out_console.print(table)


@app.command(rich_help_panel="Reference")
def methods(fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | md (the README's table)")]
            = "table",
            as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False) -> None:
    """Every balancing method: what it does, its paper, the optimiser and per-step cost of that paper's
    training, its options, and what each live quantity (coef/<m>, score/<m>, method/...) means."""
    from engine.errors import UsageError
    from engine.registry import did_you_mean

    from .methods_listing import FORMATS, method_rows, to_json, to_markdown, to_renderable, to_text
    try:
        if fmt not in FORMATS:
            raise UsageError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}{did_you_mean(fmt, FORMATS)}")
        if as_json and fmt not in ("table", "json"):
            raise UsageError(f"--json means --format json; it cannot be combined with --format {fmt}")
    except UsageError as exc:
        _fail(exc)
    fmt = "json" if as_json else fmt
    rows = method_rows()
    if fmt == "table" and out_console.is_terminal:
        out_console.print(to_renderable(rows))
    elif fmt == "table":
        typer.echo(to_text(rows, out_console.width), nl=False)
    else:
        typer.echo({"json": to_json, "md": to_markdown}[fmt](rows), nl=False)


@data_app.command("synth")
def data_synth(out: Annotated[Path, typer.Argument(help="Output .parquet file.", show_default=False)],
               set_: Annotated[Optional[list[str]], typer.Option(
                   "--set", "-s", help="Generator option: --set unique=[1.0,0.2] --set n_samples=5000 "
                                       "(see `mmbal data synth --help-options`).")] = None,
               samples: Annotated[Optional[int], typer.Option(help="Number of samples.")] = None,
               classes: Annotated[Optional[int], typer.Option(help="Number of classes.")] = None,
               seed: Annotated[Optional[int], typer.Option(help="Generator seed.")] = None,
               help_options: Annotated[bool, typer.Option("--help-options", help="List the generator's options.")] = False,
               ) -> None:
    """Write the built-in synthetic multimodal dataset (unique, shared and synergistic information)."""
    from engine.config import parse_override
    from engine.data import SynthConfig, generate, write_dataset
    from engine.errors import MmbalError, PresetError, UsageError
    from engine.schema import build, describe
    if help_options:
        for n, t, d, h in describe(SynthConfig):
            out_console.print(f"{n} ({t}, default {d!r})  {h}")
        return
    try:
        raw: dict = {}
        for item in set_ or []:
            keys, value = parse_override(item)
            raw[".".join(keys)] = value
        for key, value in (("n_samples", samples), ("n_classes", classes), ("seed", seed)):
            if value is not None:
                raw[key] = value
        problems: list[str] = []
        cfg = build(SynthConfig, raw, "", problems)
        if problems:
            raise PresetError("mmbal data synth", problems)
        if not out.parent.is_dir():
            raise UsageError(f"mmbal data synth: cannot write {out}: the folder {out.parent} does not exist; "
                             f"create it first or choose another output path")
        _check_synth_memory(cfg)
        data = generate(cfg)
        write_dataset(out, data.features, data.labels, data.split, data.classes, name=data.name,
                      kinds={m: "vector" for m in data.features}, source="mmbal synthetic generator",
                      license="CC0-1.0")
    except MmbalError as exc:
        _fail(exc)
    except OSError as exc:
        print_error(f"{out}: cannot write: {exc.strerror or exc}")
        raise typer.Exit(1)
    print(f"wrote {out}: {cfg.n_samples} samples, {cfg.n_classes} classes, modalities "
          + ", ".join(f"{m} ({d})" for m, d in zip(cfg.modalities, cfg.dims)))


def _check_synth_memory(cfg) -> None:
    """Refuse, before allocating, a dataset whose generation needs more than half the free memory."""
    from engine.data.memory import format_bytes, host_available_bytes
    from engine.data.synthetic import working_bytes
    from engine.errors import UsageError
    need, free = working_bytes(cfg), host_available_bytes()
    if need > free // 2:
        raise UsageError(f"mmbal data synth: generating this dataset needs about {format_bytes(need)}, more than "
                         f"half of the {format_bytes(free)} of memory available; use fewer n_samples, n_classes, "
                         f"dims or latent_dim")


@data_app.command("inspect")
def data_inspect(path: Annotated[Path, typer.Argument(help="A .parquet file or a directory of them.")],
                 as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Check a dataset and describe it: rows, splits, classes, modalities and their statistics."""
    from rich.table import Table

    from engine.data import inspect_dataset
    from engine.errors import MmbalError
    try:
        info = inspect_dataset(path)
    except MmbalError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    out_console.print(f"[bold]{info.get('name')}[/]  {info.get('file')}")
    out_console.print(f"rows {info.get('rows')}   splits {info.get('splits') or 'none (split by the preset)'}")
    out_console.print(f"classes {info.get('n_classes')}: {', '.join(map(str, info.get('classes', [])))}")
    table = Table()
    for col in ("modality", "type", "shape", "kind", "missing", "mean", "std", "min", "max"):
        table.add_column(col)
    for m in info.get("modalities", []):
        table.add_row(m.get("name", m["column"]), str(m["arrow_type"]), str(tuple(m["shape"])), m["kind"], str(m["missing"]),
                      *(f"{m[k]:.4g}" if m.get(k) is not None else "-" for k in ("mean", "std", "min", "max")))
    out_console.print(table)
    for key in ("source", "license"):
        if info.get(key):
            out_console.print(f"{key}: {info[key]}")


from .commands import register_all  # noqa: E402  (commands defined in mmbal_cli/commands/*)

register_all(app)


def main() -> None:
    app()
