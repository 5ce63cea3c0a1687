"""``mmbal export``: a run's metrics out to CSV, Parquet, TensorBoard, W&B or MLflow.

Export reads the run directory and nothing else, after training or beside it (``follow``): training
never imports these libraries, so it never depends on them, and a resume stays exact. Each backend
is a :class:`~engine.analysis.export.sink.Sink` in its own module (``backends`` lists them), its
library an optional extra (``pip install "mmbal[tensorboard]"``...) imported when the export starts:

| backend | module | what an export writes | run again |
|---|---|---|---|
| ``csv``, ``parquet`` | ``tables`` | the metrics table of :meth:`engine.analysis.api.Run.metrics` | the file is replaced atomically |
| ``tensorboard`` | ``tensorboard`` | scalars per ``<split>/<name>``, the config as hyper-parameters and text | a fresh event file (the old ones removed) |
| ``wandb`` | ``wandb`` | ``run.log`` per step, config, summary | the same W&B run id: steps it has are not logged again |
| ``mlflow`` | ``mlflow`` | metric histories, params, tags | the earlier MLflow run of this mmbal run is deleted, a new one written |

The rows are those of :meth:`engine.store.MetricsLog.metric_rows` (superseded rows of a resume
removed); :mod:`~engine.analysis.export.feed` hands them to the sink as they are appended.
"""

from .backends import BACKENDS, open_sink
from .feed import export_run
from .sink import Sink

__all__ = ["BACKENDS", "Sink", "export_run", "open_sink"]
