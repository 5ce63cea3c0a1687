"""``--to tensorboard``: TensorBoard event files (``pip install "mmbal[tensorboard]"``).

Written with ``torch.utils.tensorboard.SummaryWriter`` into ``<run>/exports/tensorboard`` (or
``--out DIR``): one scalar per series (``val/acc/fused``, ``train/coef/a``; see
:mod:`~engine.analysis.export.sink`) at its optimiser step, with the record's wall time; the
configuration as text and as the HParams plugin's hyper-parameters, with the test metrics of the
selected checkpoint as its metrics. ``tensorboard --logdir <runs-dir>`` then shows every exported
run, named after its directory. An export starts a fresh event file and removes the event files an
earlier export left in that directory, so running it again never doubles a point; rows a resume
superseded while following make it start again the same way.
"""

from __future__ import annotations

from pathlib import Path

from .sink import Sink, hyperparameter, row_values, summary_values

EVENT_PREFIX = "events.out.tfevents."


class TensorBoardSink(Sink):
    name, requirement = "tensorboard", "tensorboard>=2.14"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dir = Path(self.out) if self.out is not None else self.default_dir() / "tensorboard"
        self.writer = None
        self.params: dict = {}
        self.last_step = 0

    def import_library(self) -> None:
        import tensorboard  # noqa: F401

    @property
    def target(self) -> str:
        return str(self.dir)

    def start(self, params: dict) -> None:
        self.params = {k: hyperparameter(v) for k, v in params.items()}
        self._open()

    def _open(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob(f"{EVENT_PREFIX}*"):
            old.unlink()
        self.writer = SummaryWriter(log_dir=str(self.dir))
        table = "\n".join(f"| {k} | {v} |" for k, v in self.params.items())
        self.writer.add_text("config", "| key | value |\n|---|---|\n" + table, global_step=0)

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            for tag, value in row_values(row).items():
                self.writer.add_scalar(tag, value, global_step=row["step"], walltime=row.get("t"))
            self.last_step = row["step"]
        self.writer.flush()

    def rewind(self) -> None:
        self.writer.close()
        self._open()

    def finish(self, summary: dict | None, complete: bool) -> None:
        from torch.utils.tensorboard.summary import hparams

        results = summary_values(summary)
        if results:
            for summary_part in hparams(self.params, results):
                self.writer.file_writer.add_summary(summary_part, global_step=self.last_step)
        self.writer.close()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
