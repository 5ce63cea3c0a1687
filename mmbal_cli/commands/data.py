"""``mmbal data synth`` and ``mmbal data inspect``: make and check datasets in mmbal's Parquet format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..output import fail, out_console, print_error

data_app = typer.Typer(no_args_is_help=True, help="Make and check datasets in mmbal's Parquet format.",
                       context_settings={"help_option_names": ["-h", "--help"]})


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


def _print_synth_options(value: bool) -> None:
    """``--help-options``: the generator's options, before (and without) the output path."""
    if not value:
        return
    from engine.data import SynthConfig
    from engine.schema import describe
    for n, t, d, h in describe(SynthConfig):
        out_console.print(f"{n} ({t}, default {d!r})  {h}", markup=False, highlight=False)
    raise typer.Exit()


@data_app.command("synth")
def data_synth(out: Annotated[Path, typer.Argument(help="Output .parquet file.", show_default=False)],
               set_: Annotated[Optional[list[str]], typer.Option(
                   "--set", "-s", help="Generator option: --set unique=[1.0,0.2] --set n_samples=5000 "
                                       "(see `mmbal data synth --help-options`).")] = None,
               samples: Annotated[Optional[int], typer.Option(help="Number of samples.")] = None,
               classes: Annotated[Optional[int], typer.Option(help="Number of classes.")] = None,
               seed: Annotated[Optional[int], typer.Option(help="Generator seed.")] = None,
               help_options: Annotated[bool, typer.Option("--help-options", callback=_print_synth_options, is_eager=True,
                                                          help="List the generator's options and exit.")] = False,
               ) -> None:
    """Write the built-in synthetic multimodal dataset (unique, shared and synergistic information)."""
    from engine.config import parse_override
    from engine.data import SynthConfig, generate, write_dataset
    from engine.errors import MmbalError, PresetError, UsageError
    from engine.schema import build
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
        fail(exc)
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
        fail(exc)
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
