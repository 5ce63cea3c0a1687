"""``mmbal data synth``, ``mmbal data inspect`` and ``mmbal data import``: make, check and convert datasets
in mmbal's Parquet format."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..output import fail, out_console, print_error

data_app = typer.Typer(no_args_is_help=True, help="Make, check and convert datasets in mmbal's Parquet format.",
                       context_settings={"help_option_names": ["-h", "--help"]})


def class_line(info: dict, shown: int = 20) -> str:
    """The classes with their row counts (``setosa (50), virginica (2)``), the first ``shown`` of them and how
    many more; with many classes, also the smallest and the largest."""
    counts = info.get("class_counts") or {}
    classes = [str(c) for c in info.get("classes", [])]
    named = [f"{c} ({counts[c]})" if c in counts else c for c in classes]
    line = ", ".join(named[:shown]) + (f", ... {len(named) - shown} more" if len(named) > shown else "")
    if len(named) > shown and counts:
        smallest, largest = min(counts, key=counts.get), max(counts, key=counts.get)
        line += f"; smallest {smallest} ({counts[smallest]}), largest {largest} ({counts[largest]})"
    return line


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
               force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
               ) -> None:
    """Write the built-in synthetic multimodal dataset (unique, shared and synergistic information)."""
    from engine.config import parse_override
    from engine.data import SynthConfig, generate, write_dataset
    from engine.errors import MmbalError, PresetError
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
        check_output("mmbal data synth", out, force)
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
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from engine.data import inspect_dataset
    from engine.data.modality_names import modality_name_problem
    from engine.errors import MmbalError
    try:
        info = inspect_dataset(path)
    except MmbalError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    out_console.print(f"[bold]{escape(str(info.get('name')))}[/]  {escape(str(info.get('file')))}")
    splits = info.get("splits")
    splits = ", ".join(f"{k} {v}" for k, v in splits.items()) if splits else "none (split by the preset)"
    out_console.print(f"rows {info.get('rows')}   splits {splits}", markup=False)
    out_console.print(f"classes {info.get('n_classes')}: {class_line(info)}", markup=False)
    table = Table()
    for col in ("modality", "type", "shape", "kind", "missing", "mean", "std", "min", "max"):
        table.add_column(col)
    for m in info.get("modalities", []):
        table.add_row(Text(m.get("name", m["column"])), str(m["arrow_type"]), str(tuple(m["shape"])), m["kind"],
                      str(m["missing"]),
                      *(f"{m[k]:.4g}" if m.get(k) is not None else "-" for k in ("mean", "std", "min", "max")))
    out_console.print(table)
    for m in info.get("modalities", []):
        problem = modality_name_problem(m["column"])
        if problem:
            out_console.print(f"note: column '{m['column']}' cannot be a modality's name in a run: {problem}; a "
                              f"preset uses it under another name: [modalities.<name>] with column = "
                              f"\"{m['column']}\"", markup=False)
    for key in ("source", "license"):
        if info.get(key):
            out_console.print(f"{key}: {info[key]}", markup=False)
    made_of = {m["name"]: m["source_columns"] for m in info.get("modalities", []) if m.get("source_columns")}
    if made_of:
        label = f"; label from column {info['label_column']}" if info.get("label_column") else ""
        out_console.print("imported from a table's columns (new rows of it can be predicted as they are): "
                          + "; ".join(f"{m} = {', '.join(cols)}" for m, cols in made_of.items()) + label, markup=False)


def _image_size(value: Optional[str]) -> Optional[tuple[int, int]]:
    """``--image-size``: ``HxW`` or one number for square images."""
    if value is None:
        return None
    from engine.errors import UsageError
    parts = value.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"--image-size: expected HEIGHTxWIDTH such as 64x64 (or one number), got {value!r}")
    h, w = (int(parts[0]), int(parts[-1]))
    return h, w


DATASET_SUFFIXES = (".parquet", ".pq", "")


def check_output(command: str, out: Path, force: bool) -> None:
    """The checks on a dataset's output path, before any work: its folder exists, it is not a folder,
    its suffix does not name another format (the file is Parquet whatever its name), and an existing
    file is replaced only with ``--force``."""
    from engine.errors import UsageError
    if not out.parent.is_dir():
        raise UsageError(f"{command}: cannot write {out}: the folder {out.parent} does not exist; create it "
                         f"first or choose another output path")
    if out.is_dir():
        raise UsageError(f"{command}: {out} is a directory; the output is one .parquet file")
    if out.suffix.lower() not in DATASET_SUFFIXES:
        raise UsageError(f"{command}: {out}: a dataset in mmbal's format is a Parquet file, but '{out.suffix}' names "
                         f"another format; name it {out.with_suffix('.parquet').name}")
    if out.exists() and not force:
        raise UsageError(f"{command}: {out} exists; choose another output path or pass --force to replace it")


def _check_import_args(source: str, out: Path, force: bool, val_fraction: float, test_fraction: float) -> None:
    from engine.errors import UsageError
    for name, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise UsageError(f"mmbal data import: {name} must lie strictly between 0 and 1, got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise UsageError(f"mmbal data import: --val-fraction + --test-fraction must be below 1, got "
                         f"{val_fraction} + {test_fraction}")
    check_output("mmbal data import", out, force)
    src = Path(source)
    if src.exists() and src.resolve() == out.resolve():
        raise UsageError(f"mmbal data import: the output {out} is the source itself; choose another output path")


@data_app.command("import")
def data_import(
        source: Annotated[str, typer.Argument(help="A Parquet file, a directory of them (searched recursively, "
                                                   "e.g. a Hugging Face snapshot), a CSV file (.csv, .tsv, .gz) or "
                                                   "a quoted glob such as 'data/*.parquet' or 'data/*.csv'.",
                                              show_default=False)],
        out: Annotated[Path, typer.Argument(help="Output .parquet file in mmbal's format.", show_default=False)],
        label: Annotated[str, typer.Option("--label", help="The label column (integers or class-name strings).")]
        = "label",
        split_column: Annotated[Optional[str], typer.Option(
            "--split-column", help="A column holding each row's split (train / validation / test); default "
                                   "'split' when present, else the files' names give the splits.")] = None,
        modality: Annotated[Optional[list[str]], typer.Option(
            "--modality", "-m", help="A column to import as a modality (repeat, in order), or NAME=COLUMN,... / "
                                     "NAME='prefix_*': one vector modality of a flat table's scalar columns (a "
                                     "pattern takes those no group names and no earlier group took: "
                                     "NAME='*' is the rest); default every column of numeric lists, tensors or "
                                     "images.")] = None,
        image_size: Annotated[Optional[str], typer.Option(
            "--image-size", help="Resize every decoded image to HEIGHTxWIDTH (e.g. 64x64).")] = None,
        val_fraction: Annotated[float, typer.Option(
            help="Fraction of each class of train carved out as validation when the data has no validation "
                 "split.")] = 0.1,
        test_fraction: Annotated[float, typer.Option(
            help="Fraction of each class of train carved out as test when the data has no test split.")] = 0.1,
        seed: Annotated[int, typer.Option(help="Seed of that carving.")] = 0,
        name: Annotated[Optional[str], typer.Option(help="The dataset's name (default: the output file's "
                                                         "name).")] = None,
        force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
) -> None:
    """Convert Parquet from Hugging Face datasets and similar tools, or a CSV table, into mmbal's format,
    keeping its splits.

    Nested lists of one shape per row (datasets' Array2D/Array3D) become tensors, encoded images are
    decoded (pip install "mmbal\\[image]"), scalar columns make vector modalities in groups
    (-m NAME='prefix_*'), and the official splits are kept from a split column or from the files' names
    (train-*, validation-*, test-*); a missing validation or test split is carved from train, stratified
    and seeded.
    """
    from engine.data.importer import ImportOptions, import_dataset
    from engine.errors import MmbalError
    try:
        _check_import_args(source, out, force, val_fraction, test_fraction)
        options = ImportOptions(label_column=label, split_column=split_column, modalities=tuple(modality or ()),
                                image_size=_image_size(image_size), val_fraction=val_fraction,
                                test_fraction=test_fraction, seed=seed, name=name)
        report = import_dataset(source, out, options)
    except MmbalError as exc:
        fail(exc)
    except OSError as exc:
        print_error(f"{out}: cannot write: {exc.strerror or exc}")
        raise typer.Exit(1)
    _print_import_report(report)


def _print_import_report(report) -> None:
    if report.splits is None:
        splits = "no splits (a preset's data.val_fraction and data.test_fraction split it)"
    else:
        splits = ", ".join(f"{k} {v}" for k, v in report.splits.items()) + f" (from the {report.split_source}"
        splits += f"; {' and '.join(report.carved)} carved from train)" if report.carved else ")"
    print(f"wrote {report.out}: {report.rows} rows from {report.files} file(s), {len(report.classes or [])} classes")
    print(f"splits: {splits}")
    print("modalities: " + ", ".join(f"{m} {list(shape)}" for m, shape in report.modalities.items()))
    if report.ignored:
        print("not imported: " + ", ".join(report.ignored))
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"to train on it, a preset of two lines is enough (every modality, method joint; docs/presets.md), "
          f"then `mmbal run PRESET.toml`:\n  [data]\n  path = {json.dumps(str(report.out.resolve()))}")
    if report.source_columns and len(report.source_columns) == len(report.modalities):
        print("a run trained on it predicts new rows of this table as they are (the groups' columns are recorded): "
              "`mmbal predict RUN NEW.csv --out PREDS.csv`")
