"""``--to mlflow``: an MLflow run (``pip install "mmbal[mlflow]"``).

The tracking store is ``--out`` (a URI such as ``http://host:5000`` or ``sqlite:///mlflow.db``; a
path ending in ``.db`` is an SQLite store, another path a folder of MLflow's file store), else
``$MLFLOW_TRACKING_URI``, else the SQLite store ``<run>/exports/mlflow.db`` (``mlflow ui
--backend-store-uri sqlite:///<that path>`` shows it). MLflow 3 keeps its file store (``./mlruns``)
behind ``MLFLOW_ALLOW_FILE_STORE=true``; naming one (``--out ./mlruns`` or a ``file:`` URI) is taken
as that opt-in. The experiment is ``--project`` (default ``mmbal``). The MLflow run is
named after the run and tagged ``mmbal.run_id``, ``mmbal.method``, ``mmbal.dataset`` and
``mmbal.status``; the configuration (dotted keys) is its params, each series
(:mod:`~engine.analysis.export.sink`) a metric history over the optimiser steps, and the summary
values (test metrics of the selected checkpoint, the selection, the cost keys) are logged at the
last step. MLflow names allow letters, digits and ``_ - . / space``: any other character (the ``;``
of ``mi/a;b``) becomes ``_``.

MLflow appends every point it is sent, so running the export again replaces the MLflow run: the
earlier runs tagged with this mmbal run id are deleted (MLflow's soft delete: ``mlflow runs restore``
brings one back, ``mlflow gc`` purges them) and a new one is written. While following, the run is
``RUNNING`` until the mmbal run ends; rows a resume superseded then make the export start a new
MLflow run the same way.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from ...errors import UsageError
from .sink import Sink, hyperparameter, row_values, summary_values

DEFAULT_EXPERIMENT = "mmbal"
RUN_ID_TAG = "mmbal.run_id"
MAX_METRICS, MAX_PARAMS, MAX_VALUE = 1000, 100, 6000   # MLflow's limits per log_batch and per param value
_BAD_NAME = re.compile(r"[^\w.\- /]")


def mlflow_name(name: str) -> str:
    return _BAD_NAME.sub("_", name)


def tracking_uri(out: str | os.PathLike | None, default_db: Path) -> str:
    """``out`` as a tracking URI (a ``.db`` path: SQLite; another path: a file store folder), else the
    environment's, else the SQLite database ``default_db``."""
    if out is None:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{default_db.resolve()}"
    text = os.fspath(out)
    if re.match(r"^[a-z][a-z0-9+.-]*:", text) and not re.match(r"^[A-Za-z]:[\\/]", text):
        return text
    path = Path(text).expanduser().resolve()
    return f"sqlite:///{path}" if path.suffix == ".db" else path.as_uri()


class MlflowSink(Sink):
    name, requirement = "mlflow", "mlflow>=2.10"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.uri = tracking_uri(self.out, self.default_dir() / "mlflow.db")
        self.client = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.params: dict = {}
        self.last_step = 0

    def import_library(self) -> None:
        import mlflow  # noqa: F401

    @property
    def target(self) -> str:
        return f"MLflow run {self.run_id} in experiment '{self.project or DEFAULT_EXPERIMENT}' at {self.uri}"

    def start(self, params: dict) -> None:
        from mlflow.tracking import MlflowClient

        self._prepare_store()
        self.params = {mlflow_name(k): str(hyperparameter(v))[:MAX_VALUE] for k, v in params.items()}
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment()
            self._new_run()
        except Exception as exc:
            if isinstance(exc, OSError):
                raise
            raise UsageError(f"MLflow at {self.uri} refused the export: {exc}") from None

    def _prepare_store(self) -> None:
        """The folder of a local store; a file store named explicitly is MLflow 3's opt-in to it."""
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        elif self.uri.startswith("file:"):
            Path(self.uri.removeprefix("file://").removeprefix("file:")).mkdir(parents=True, exist_ok=True)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

    def _experiment(self) -> str:
        name = self.project or DEFAULT_EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else self.client.create_experiment(name)

    def _new_run(self) -> None:
        """Delete the MLflow runs earlier exports made of this run, then start a new one with the params."""
        from mlflow.entities import Param

        earlier = self.client.search_runs([self.experiment_id], f"tags.`{RUN_ID_TAG}` = '{self.run.run_id}'")
        for old in earlier:
            self.client.delete_run(old.info.run_id)
        if earlier:
            self.notes.append(f"replaced {len(earlier)} earlier MLflow run(s) of this run (deleted: `mlflow runs "
                              f"restore` brings one back, `mlflow gc` purges them)")
        info = self.run.info
        tags = {RUN_ID_TAG: self.run.run_id, "mmbal.method": str(info.get("method") or ""),
                "mmbal.dataset": str(info.get("dataset") or ""), "mmbal.status": self.run.status}
        self.run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=self.run.name).info.run_id
        items = [Param(k, v) for k, v in self.params.items()]
        for i in range(0, len(items), MAX_PARAMS):
            self.client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS])

    def write(self, rows: list[dict]) -> None:
        from mlflow.entities import Metric

        points = []
        for row in rows:
            stamp = int(1000 * (row.get("t") or time.time()))
            points += [Metric(mlflow_name(k), v, stamp, int(row["step"])) for k, v in row_values(row).items()]
            self.last_step = int(row["step"])
        self._log(points)

    def _log(self, points: list) -> None:
        for i in range(0, len(points), MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=points[i:i + MAX_METRICS])

    def rewind(self) -> None:
        self._new_run()

    def finish(self, summary: dict | None, complete: bool) -> None:
        from mlflow.entities import Metric

        stamp = int(1000 * time.time())
        self._log([Metric(mlflow_name(k), v, stamp, self.last_step) for k, v in summary_values(summary).items()
                   if not k.startswith("test/")])  # the test metrics are the test rows already logged
        state = self.run.status
        self.client.set_tag(self.run_id, "mmbal.status", state)
        status = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}.get(state)
        if status is not None:
            self.client.set_terminated(self.run_id, status)

    def abort(self) -> None:
        """An error stopped the export: the MLflow run is marked FAILED (best effort: the store may be the cause)."""
        if self.client is not None and self.run_id is not None:
            try:
                self.client.set_terminated(self.run_id, "FAILED")
            except Exception:  # noqa: BLE001 - the export's own error is the one to report
                pass
