"""``mmbal export RUN --to csv|parquet|tensorboard|wandb|mlflow [--follow]``: a run's metrics out to
another tool, after training or beside it (the backends: :mod:`engine.analysis.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..options import RunsDirOpt
from ..output import err_console, fail, out_console

BACKEND_NAMES = ("csv", "parquet", "tensorboard", "wandb", "mlflow")


def register(app: typer.Typer) -> None:
    @app.command("export", rich_help_panel="Runs")
    def export(
        run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, id prefix, name, directory or 'latest'.")],
        to: Annotated[str, typer.Option("--to", help=f"Where to: {', '.join(BACKEND_NAMES)}.",
                                        show_default=False)],
        out: Annotated[Optional[Path], typer.Option(
            "--out", help="The file (csv, parquet), directory (tensorboard, wandb) or tracking URI or folder (mlflow); "
                          "default: <run>/exports/... (mlflow: $MLFLOW_TRACKING_URI first).", show_default=False)] = None,
        project: Annotated[Optional[str], typer.Option(
            "--project", help="W&B project or MLflow experiment (default: $WANDB_PROJECT, else mmbal).",
            show_default=False)] = None,
        follow: Annotated[bool, typer.Option(
            "--follow", "-f", help="Keep exporting new records as the run logs them, until it ends.")] = False,
        interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between polls with --follow.")] = 2.0,
        runs_dir: RunsDirOpt = None,
    ) -> None:
        """Export a run's metrics, config and summary to a CSV or Parquet file, TensorBoard, W&B or MLflow."""
        from engine.analysis.api import load_run
        from engine.analysis.export import export_run, open_sink
        from engine.errors import MmbalError

        def progress(n: int, state: str) -> None:
            if follow:
                err_console.print(f"exported {n} new row(s) (run {state})", markup=False, highlight=False)

        try:
            run = load_run(run_ref, runs_dir)
            sink = open_sink(to, run, out, project)
            if follow:
                err_console.print(f"following {run.name} ({run.status}); Ctrl-C stops (what was exported stays)",
                                  markup=False, highlight=False)
            result = export_run(run, sink, follow=follow, interval=interval, on_rows=progress)
        except MmbalError as exc:
            fail(exc)
        except KeyboardInterrupt:
            err_console.print("stopped; the export holds what was logged until now", markup=False, highlight=False)
            raise typer.Exit(130)
        for note in result.notes:
            err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
        live = "" if result.complete else f" (the run is {result.state}: export again, or use --follow, for the rest)"
        out_console.print(f"exported {result.rows} row(s) of {run.name} to {result.target}{live}", markup=False,
                          highlight=False, soft_wrap=True)
