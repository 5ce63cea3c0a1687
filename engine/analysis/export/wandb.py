"""``--to wandb``: a Weights & Biases run (``pip install "mmbal[wandb]"``).

The W&B run's id is the mmbal run id, its name the run's name, its project ``--project`` (default
``$WANDB_PROJECT``, else ``mmbal``); the configuration (dotted keys) is its config, each row a
``run.log(values, step=step)`` with the series names of :mod:`~engine.analysis.export.sink`, and
its summary the test metrics of the selected checkpoint, the selection and the cost keys. W&B's own
settings apply: ``WANDB_MODE=offline`` writes an offline run under ``<run>/exports/wandb`` (or
``--out DIR``) to upload later with ``wandb sync``.

Running the export again resumes the same W&B run (``resume="allow"``): W&B ignores a point at a
step it already has, so nothing is doubled online; offline, each export is a directory of its own
(sync the newest). Points sent before a resume superseded them (while following) cannot be taken
back: the export says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import UsageError
from .sink import Sink, row_values, summary_values

DEFAULT_PROJECT = "mmbal"


class WandbSink(Sink):
    name, requirement = "wandb", "wandb>=0.17"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dir = Path(self.out) if self.out is not None else self.default_dir() / "wandb"
        self.wandb_run = None

    def import_library(self) -> None:
        import wandb  # noqa: F401

    @property
    def target(self) -> str:
        where = self.wandb_run.url if self.wandb_run is not None and self.wandb_run.url else str(self.dir)
        return f"W&B run {self.run.run_id} ({where})"

    def start(self, params: dict) -> None:
        import wandb

        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.run.info
        try:
            self.wandb_run = wandb.init(
                project=self.project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, dir=str(self.dir),
                id=self.run.run_id, name=self.run.name, config=params, resume="allow",
                tags=[t for t in (info.get("method"), info.get("dataset")) if t] + self.run.tags,
                settings=wandb.Settings(console="off", silent=True))
        except Exception as exc:  # no API key, no network, a bad project name...: W&B's message says which
            raise UsageError(f"W&B could not start a run: {exc}. Log in with `wandb login`, or set WANDB_MODE=offline "
                             f"to write an offline run under {self.dir} and upload it later with `wandb sync`") from None

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            values = row_values(row)
            if values:
                self.wandb_run.log(values, step=int(row["step"]))

    def rewind(self) -> None:
        self.notes.append("a resume superseded points already sent to W&B: they stay there (W&B cannot take points "
                          "back); export again into a new W&B project for a clean history")

    def finish(self, summary: dict | None, complete: bool) -> None:
        self.wandb_run.summary.update(summary_values(summary))
        self.wandb_run.finish(exit_code=1 if self.run.status == "failed" else 0)
        self.wandb_run = None
        self._flush()

    @staticmethod
    def _flush() -> None:
        """Wait until W&B's service has written the run: ``finish`` returns before an offline run's file is
        complete. The service is shut down only when no other W&B run of this process is active."""
        import wandb

        if wandb.run is None:
            wandb.teardown()

    def abort(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=1)
            self.wandb_run = None
            self._flush()
