"""The export backends by name (``--to``) and :func:`open_sink`, which makes one for a run.

The table is fixed here (each backend's module imports its library only when an export starts), so
the choices are listed without importing TensorBoard, W&B or MLflow.
"""

from __future__ import annotations

import os

from ...errors import UsageError
from ..api import Run
from .mlflow import MlflowSink
from .sink import Sink
from .tables import CsvSink, ParquetSink
from .tensorboard import TensorBoardSink
from .wandb import WandbSink

BACKENDS: dict[str, type[Sink]] = {
    "csv": CsvSink,
    "parquet": ParquetSink,
    "tensorboard": TensorBoardSink,
    "wandb": WandbSink,
    "mlflow": MlflowSink,
}


def open_sink(backend: str, run: Run, out: str | os.PathLike | None = None, project: str | None = None) -> Sink:
    """The sink of ``backend`` for ``run`` (a usage error naming the choices, or the extra to install)."""
    if backend not in BACKENDS:
        raise UsageError(f"--to {backend}: choose one of {', '.join(BACKENDS)}")
    sink = BACKENDS[backend](run, out, project)
    sink.check_installed()
    return sink
