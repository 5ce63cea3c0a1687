"""``mmbal predict`` and ``mmbal eval``: a finished run's selected model on a data file
(:mod:`engine.run.predict` does the work)."""

from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..options import RunsDirOpt
from ..output import fail, out_console, print_heading

RunArg = Annotated[str, typer.Argument(metavar="RUN", help="Run id, id prefix, name, directory or 'latest'.")]
DataArg = Annotated[Path, typer.Argument(metavar="DATA", help="A Parquet file or directory with the run's modality "
                                                             "columns (docs/data-format.md), or, for a run on data "
                                                             "that data import made from a table, rows of that "
                                                             "table (a CSV file) as they are.")]
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", help="cpu, cuda, cuda:N or auto (default: the run's train.device).", show_default=False)]


class Split(str, Enum):
    train = "train"
    val = "val"
    test = "test"


SplitOpt = Annotated[Optional[Split], typer.Option(
    "--split", help="Only the rows of this split (the data's split column).", show_default=False)]


def _loaded(run_ref: str, runs_dir, device, data):
    from engine.run.predict import load_run
    from engine.store import default_runs_dir, resolve_run

    return load_run(resolve_run(default_runs_dir(runs_dir), run_ref), device, data)


def _shown_epoch(epoch) -> str:
    """The checkpoint's epoch counted from 1, as ``mmbal run`` prints it."""
    return "?" if epoch is None or epoch < 0 else str(epoch + 1)


def score_lines(values: dict[str, float], split: str, targets: list[str], rows: int = 0,
                absent: dict[str, int] | None = None) -> list[str]:
    """One line per target: accuracy, macro-F1 and loss; a modality absent in some of the ``rows`` says
    over how many rows it was scored."""
    width = max(len(t) for t in targets)
    absent = absent or {}

    def counted(t: str) -> str:
        return f"  ({rows - absent[t]} rows: absent in {absent[t]})" if absent.get(t) else ""
    def shown(value: float) -> str:
        return f"{value:.4f}" if math.isfinite(value) else "-"
    return [f"{t:<{width}}  acc {shown(values[f'{split}/acc/{t}'])}  f1 {shown(values[f'{split}/f1/{t}'])}  "
            f"loss {shown(values[f'{split}/loss/{t}'])}{counted(t)}" for t in targets]


MATRIX_CLASSES = 20   # more classes than this: the confusion matrix only in --json


def print_per_class(confusion, classes: list[str]) -> None:
    """The fused model's per-class table, then its confusion matrix (true class by row)."""
    from rich.table import Table
    from rich.text import Text

    from engine.run.predict import per_class

    figures = per_class(confusion)

    def cell(value: float) -> str:
        return "-" if value != value else f"{value:.3f}"
    print_heading("per class (fused)")
    table = Table()
    for heading in ("class", "rows", "precision", "recall", "f1"):
        table.add_column(heading, justify="left" if heading == "class" else "right")
    for i, name in enumerate(classes):
        table.add_row(Text(name), str(int(figures["rows"][i])),
                      *(cell(figures[k][i]) for k in ("precision", "recall", "f1")))
    out_console.print(table)
    if len(classes) > MATRIX_CLASSES:
        out_console.print(f"the confusion matrix of {len(classes)} classes is too wide to print here: "
                          f"`mmbal eval ... --json` holds it (key confusion)", markup=False)
        return
    print_heading("confusion (fused): a row per true class, a column per predicted class")
    matrix = Table()
    matrix.add_column("true \\ predicted")
    for name in classes:
        matrix.add_column(Text(name), justify="right")
    for i, name in enumerate(classes):
        matrix.add_row(Text(name), *(str(int(v)) for v in confusion[i]))
    out_console.print(matrix)


def register(app: typer.Typer) -> None:
    @app.command("predict", rich_help_panel="Runs")
    def predict_command(run_ref: RunArg, data: DataArg,
                        out: Annotated[Path, typer.Option(
                            "--out", "-o", help="File to write the predictions to: Parquet (.parquet), or CSV for a .csv name.")],
                        split: SplitOpt = None, device: DeviceOpt = None, runs_dir: RunsDirOpt = None,
                        keep: Annotated[Optional[list[str]], typer.Option(
                            "--keep", metavar="COLUMN", help="A column of DATA to copy into the predictions as it is "
                                                             "(an id or a file name; repeat for more), after row.",
                            show_default=False)] = None) -> None:
        """Predict with a finished run's selected checkpoint: fused and per-modality class probabilities per row.

        Writes row, the columns named with --keep, split and label (when the data have them), pred, predicted_class and prob (fused), pred_<m> and prob_<m>
        (null where modality m is absent); in a .csv file, one prob[<class>] column per class.
        """
        from engine.errors import MmbalError
        from engine.run.predict import check_keep, predict, predictions_format, read_inputs, write_predictions
        kept = tuple(dict.fromkeys(keep or ()))
        try:
            predictions_format(out)
            run = _loaded(run_ref, runs_dir, device, data)
            check_keep(kept, run.cfg.modalities)
            preds = predict(run, read_inputs(run, data, split.value if split else None, carry=kept))
            written = write_predictions(run, preds, out)
        except MmbalError as exc:
            fail(exc)
        out_console.print(f"{len(preds.inputs.row)} rows predicted with {run.run_dir.name} "
                          f"({run.checkpoint}, epoch {_shown_epoch(run.epoch)}) -> {written}", markup=False, highlight=False)

    @app.command("eval", rich_help_panel="Runs")
    def eval_command(run_ref: RunArg, data: DataArg, split: SplitOpt = None, device: DeviceOpt = None,
                     runs_dir: RunsDirOpt = None,
                     as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
                     by_class: Annotated[bool, typer.Option(
                         "--per-class", help="Also each class's rows, precision, recall and F1, and the confusion "
                                             "matrix, of the fused model.")] = False) -> None:
        """Score a finished run's selected checkpoint on a labelled data file: accuracy, macro-F1, loss (fused and per modality).

        A modality is scored on the rows where its value is present; the fused model on every row.
        --json holds each target's confusion matrix too.
        """
        from engine.errors import MmbalError
        from engine.run.predict import predict, read_inputs, score
        name = split.value if split else None
        try:
            run = _loaded(run_ref, runs_dir, device, data)
            preds = predict(run, read_inputs(run, data, name, need_labels=True))
            values, matrices = score(run, preds, name)
        except MmbalError as exc:
            fail(exc)
        rows = len(preds.inputs.row)
        absent = {m: int(a.sum()) for m, a in (preds.inputs.absent or {}).items()}
        if as_json:
            print(json.dumps({"run": str(run.run_dir), "checkpoint": run.checkpoint, "epoch": run.epoch,
                              "rows": rows, "absent": absent, "classes": run.classes,
                              "metrics": {k: v if math.isfinite(v) else None for k, v in values.items()},
                              "confusion": {t: m.tolist() for t, m in matrices.items()}}, indent=2))
            return
        say = lambda text: out_console.print(text, markup=False, highlight=False)  # noqa: E731
        say(f"{run.run_dir.name} ({run.checkpoint}, epoch {_shown_epoch(run.epoch)}) on {data}: {len(preds.inputs.row)} rows"
            + (f" of split {name}" if name else ""))
        for line in score_lines(values, name or "all", ["fused", *run.cfg.modalities], rows, absent):
            say(line)
        if by_class:
            print_per_class(matrices["fused"], run.classes)
