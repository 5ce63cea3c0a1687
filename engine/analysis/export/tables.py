"""``--to csv`` and ``--to parquet``: the metrics table of :meth:`engine.analysis.api.Run.metrics` in a file.

Columns: ``step``, ``epoch``, ``split``, ``seg``, ``t`` then one per metric name as logged (monitors
without a split prefix: the ``split`` column says where they were measured); one row per
``metrics`` record, superseded rows removed; NaN where a value was non-finite, empty (null) where a
record did not log the metric. The file is replaced atomically (a temporary sibling moved over it),
at the end and, while following a run, after each poll that brought rows: a reader never sees half a
file, and running the export again rewrites it rather than adding to it.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

from ..api import metrics_table
from ...errors import UsageError
from ...store import atomic_write_with
from .sink import Sink


TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class TableSink(Sink):
    suffix = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path = Path(self.out) if self.out is not None else self.default_dir() / f"metrics.{self.suffix}"
        self.rows: list[dict] = []
        named = TABLE_SUFFIXES.get(self.path.suffix.lower())
        if named is not None and named != self.name:   # --to parquet --out m.csv: a Parquet file named .csv
            raise UsageError(f"--out {self.path}: its suffix names {named}, but --to is {self.name}; name the file "
                             f"{self.path.with_suffix('.' + self.suffix).name} or export with --to {named}")

    @property
    def target(self) -> str:
        return str(self.path)

    def start(self, params: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        self._save()

    def rewind(self) -> None:
        self.rows = []

    def finish(self, summary: dict | None, complete: bool) -> None:
        self._save()

    def _save(self) -> None:
        table = metrics_table(self.rows)
        atomic_write_with(self.path, lambda f: self.write_table(table, f))

    @abstractmethod
    def write_table(self, table, f) -> None:
        """Write ``table`` to the open binary file ``f`` in the backend's format."""


class CsvSink(TableSink):
    name, suffix = "csv", "csv"

    def write_table(self, table, f) -> None:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, f)


class ParquetSink(TableSink):
    name, suffix = "parquet", "parquet"

    def write_table(self, table, f) -> None:
        import pyarrow.parquet as pq

        pq.write_table(table, f)
