"""``mmbal bench``: engine vs hand-written and reference-style loops, and methods vs joint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

DEFAULT_PRESET = Path(__file__).resolve().parents[2] / "presets" / "quickstart.toml"


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Reference")
    def bench(preset: Annotated[Optional[Path], typer.Argument(help="Preset to measure (default: the quickstart).")] = None,
              set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Preset override (repeatable).")] = None,
              methods: Annotated[Optional[str], typer.Option(help="Comma-separated methods to time (default: all; '' for none).")] = None,
              repeats: Annotated[int, typer.Option(min=1, help="Timings per contender (each at least 0.2 s of consecutive epochs).")] = 3,
              reference: Annotated[bool, typer.Option(help="Also time a reference-style Dataset/DataLoader loop.")] = True,
              compile_: Annotated[bool, typer.Option("--compile", help="Also time the engine with train.compile = true "
                                                                       "and with train.compile = \"step\" (each first "
                                                                       "epoch, with compilation, apart).")] = False,
              device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
              as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
        """Speed figures on this machine: engine overhead, speed-up over research-style code, methods vs joint."""
        from engine.bench.figures import run_bench
        from engine.errors import MmbalError
        from engine.methods import METHODS
        from engine.registry import did_you_mean

        from ..output import err_console, fail, out_console, print_error
        overrides = list(set_ or []) + ([f'train.device="{device}"'] if device else [])
        names = None if methods is None else [m.strip() for m in methods.split(",") if m.strip()]
        for name in names or []:
            if name not in METHODS:
                print_error(f"--methods: unknown method '{name}'{did_you_mean(name, METHODS.names())}")
                raise typer.Exit(2)
        try:
            result = run_bench(str(preset or DEFAULT_PRESET), overrides, repeats=repeats, reference=reference,
                               methods=names, compile=compile_,
                               progress=lambda text: err_console.print(text, markup=False, highlight=False))
        except MmbalError as exc:
            fail(exc)
        if result.busy:
            err_console.print(f"warning: the machine was busy (1-minute load average {result.load_average[0]:g} before, "
                              f"{result.load_average[-1]:g} after, on {result.cores} cores): other work shared the "
                              f"cores, so these times and ratios are not speed figures; rerun on a quiet machine",
                              markup=False, highlight=False, soft_wrap=True)
        if as_json:
            print(json.dumps(result.to_dict(), indent=2))
            return
        _print(result, out_console)


def _print(result, console) -> None:
    from rich.markup import escape
    from rich.table import Table
    d = result.to_dict()
    console.print(f"[bold]{escape(Path(d['preset']).name)}[/] on {escape(str(d['device']))} (torch {d['torch']}, {d['threads']} threads), "
                  f"{d['train_samples']} training samples, batch {d['batch_size']}")
    t = Table("loop", "epoch (s)", "samples/s", "vs engine")
    t.add_row("mmbal engine", f"{d['engine_epoch_s']:.4f}", f"{d['engine_samples_per_s']:,.0f}", "1.00")
    t.add_row("hand-written loop", f"{d['hand_epoch_s']:.4f}", f"{d['hand_samples_per_s']:,.0f}",
              f"{d['hand_epoch_s'] / d['engine_epoch_s']:.2f}")
    if d["compiled_epoch_s"]:
        t.add_row(f"mmbal engine, train.compile = true (first epoch {d['compile_warmup_s']:.1f} s)",
                  f"{d['compiled_epoch_s']:.4f}", f"{d['train_samples'] / d['compiled_epoch_s']:,.0f}",
                  f"{d['compiled_epoch_s'] / d['engine_epoch_s']:.2f}")
    if d["step_compiled_epoch_s"]:
        t.add_row(f"mmbal engine, train.compile = \"step\" (first epoch {d['step_compile_warmup_s']:.1f} s)",
                  f"{d['step_compiled_epoch_s']:.4f}", f"{d['train_samples'] / d['step_compiled_epoch_s']:,.0f}",
                  f"{d['step_compiled_epoch_s'] / d['engine_epoch_s']:.2f}")
    if d["reference_epoch_s"]:
        t.add_row("reference-style (Dataset, DataLoader, .item())", f"{d['reference_epoch_s']:.4f}",
                  f"{d['train_samples'] / d['reference_epoch_s']:,.0f}",
                  f"{d['reference_epoch_s'] / d['engine_epoch_s']:.2f}")
    if d.get("model_memory"):
        from engine.models.size import ModelSize
        size = ModelSize(**{k: v for k, v in d["model_memory"].items() if k != "total_bytes"})
        console.print(f"model memory (estimated): {size.breakdown()}", markup=False, highlight=False)
    console.print(t)
    ratios = d.get("ratios") or {}
    lines = [("engine / hand-written loop", "engine/hand"), ("reference-style loop / engine (speed-up)", "reference/engine"),
             ("train.compile = true / hand-written loop", "compiled/hand"),
             ("train.compile = \"step\" / hand-written loop", "step_compiled/hand")]
    for label, key in lines:
        if key in ratios:
            r = ratios[key]
            console.print(f"{label}: [bold]{r['median']:.3f}x[/] (median of the repeats; 95% interval of the "
                          f"median {r['ci_low']:.3f}-{r['ci_high']:.3f}; min {r['min']:.3f}, max {r['max']:.3f})",
                          highlight=False)
    if d.get("wide"):
        from engine.bench.figures import WIDE
        console.print(f"[yellow]warning:[/] the 95% interval of the median spans more than {WIDE:.0%} of it for "
                      f"{', '.join(d['wide'])}: too uncertain to trust; rerun with more --repeats (a few dozen) on a "
                      f"quiet machine", highlight=False)
    if d["methods"]:
        m = Table("method", "epoch (s)", "x joint (min-max)", "peak memory", "algorithmic cost (per step)")
        for r in d["methods"]:
            m.add_row(r["method"], f"{r['epoch_s']:.4f}", f"{r['ratio_to_joint']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})",
                      f"{r['peak_memory_bytes'] / 2**20:,.1f} MiB", r["algorithmic_cost"])
        console.print(m)
