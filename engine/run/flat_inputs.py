"""New rows to predict from a flat table: ``mmbal predict RUN new.csv`` on a run whose data were made by
``mmbal data import`` from such a table.

The import records, in the dataset's metadata, the scalar columns each vector modality was made of
(``modalities.<m>.columns``) and the table's label column (``label_column``). A CSV file, or a Parquet
file holding those columns instead of the modality columns, then gives the same modalities: the same
columns, in the same order, stacked as the import stacked them (a row whose group is all empty is an
absent value; one with some of it empty is refused). Labels are optional (``eval`` needs them): class
names are matched to the run's classes, integers are class indices. A ``split`` column keeps its names
(and their synonyms, as the import reads them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..data import parquet as pq_format
from ..data.importer import SourceTables, source_labels, split_codes_of, stacked_group
from ..data.sources import is_csv
from ..errors import DataError
from ..registry import did_you_mean
from .inputs import Inputs, check_carried, labels_in_range, split_inputs


@dataclass(frozen=True)
class FlatLayout:
    """Where the run's modalities came from in the flat table its data were imported from."""

    data: Path                      # the run's dataset file
    groups: dict[str, list[str]]    # run modality -> the table's columns, in order (empty: none recorded)
    label: str | None               # the table's label column

    def complete(self, modalities: list[str]) -> bool:
        return all(self.groups.get(m) for m in modalities)


def imported_layout(run) -> FlatLayout | None:
    """The flat-table columns recorded in the metadata of the run's Parquet data (None for generated data)."""
    cfg = run.cfg
    if cfg.data.source == "synthetic" or not cfg.data.path:
        return None
    data = Path(cfg.base_dir) / cfg.data.path
    try:
        first = pq_format.dataset_files(data)[0]
        meta = pq_format._parse_metadata(pq_format.read_schema(first), first)
    except (DataError, OSError):
        return None
    described = meta.get("modalities") or {}
    columns = cfg.columns or {}
    groups = {}
    for m in cfg.modalities:
        recorded = (described.get(columns.get(m, m)) or {}).get("columns")
        if isinstance(recorded, list) and recorded and all(isinstance(c, str) for c in recorded):
            groups[m] = recorded
    label = meta.get("label_column")
    return FlatLayout(data, groups, label if isinstance(label, str) else None)


def reads_flat(run, path: Path, layout: FlatLayout | None) -> bool:
    """Whether ``path`` is read as a flat table: a CSV file, or Parquet that lacks a modality column but has
    every column the import made the run's modalities of."""
    if is_csv(path):
        return True
    if layout is None or not layout.complete(list(run.cfg.modalities)):
        return False
    try:
        first = pq_format.dataset_files(path)[0]
        names = set(pq_format.read_schema(first).names)
    except (DataError, OSError):
        return False
    columns = run.cfg.columns or {}
    if all(columns.get(m, m) in names for m in run.cfg.modalities):
        return False
    return all(c in names for cols in layout.groups.values() for c in cols)


def read_flat(run, path: Path, layout: FlatLayout | None, split: str | None,
              need_labels: bool, carry: tuple[str, ...] = ()) -> Inputs:
    """The rows of the flat table ``path`` as the run's modalities (see the module docstring)."""
    modalities = list(run.cfg.modalities)
    if layout is None or not layout.complete(modalities):
        where = f"the run's data ({layout.data})" if layout is not None else "the run's data"
        raise DataError(f"{path}: a flat table, whose columns make the run's modalities only as the import of the "
                        f"run's data made them; {where} record no such columns (not made by `mmbal data import` "
                        f"from a table, or by a version before it recorded them). Write the rows to predict as "
                        f"Parquet with the run's modality columns ({', '.join(modalities)}; docs/data-format.md)")
    tables = SourceTables()
    files = [path] if is_csv(path) else pq_format.dataset_files(path)
    if len(files) > 1:
        pq_format._check_same_schemas(files, [pq_format.read_schema(f) for f in files])
    schema = tables.schema(files[0])
    label = next((c for c in (layout.label, run.cfg.data.label_column) if c and c in schema.names), None)
    wanted = [c for cols in layout.groups.values() for c in cols]
    for c in wanted:
        if c not in schema.names:
            owner = next(m for m, cols in layout.groups.items() if c in cols)
            raise DataError(f"{files[0]}: has no column '{c}' (modality '{owner}' is made of "
                            f"{', '.join(layout.groups[owner])}){did_you_mean(c, schema.names)}")
    if need_labels and label is None:
        raise DataError(f"{files[0]}: has no label column ('{layout.label or run.cfg.data.label_column}'); "
                        f"scoring needs the true classes")
    has_split = pq_format.SPLIT_COLUMN in schema.names and label != pq_format.SPLIT_COLUMN
    check_carried(carry, schema.names, files[0])
    read = list(dict.fromkeys(wanted + ([label] if label else []) + ([pq_format.SPLIT_COLUMN] if has_split else [])
                              + list(carry)))
    table = pa.concat_tables([tables.table(f, read) for f in files])
    if table.num_rows == 0:
        raise DataError(f"{path}: the data has no rows")
    codes = split_codes_of(table.column(pq_format.SPLIT_COLUMN).combine_chunks(), files[0],
                           pq_format.SPLIT_COLUMN) if has_split else None
    if split is not None and codes is None:
        raise DataError(f"{path}: --split {split} asks for rows of one split, but the table has no "
                        f"'{pq_format.SPLIT_COLUMN}' column")
    labels = None if label is None else _labels_if_usable(table, label, files[0], run.classes, need_labels)
    features = ((m, *stacked_group(table, m, layout.groups[m], files[0])) for m in modalities)
    return split_inputs(run, path, table, codes, split, labels, features, carry)


def _labels_if_usable(table, column: str, file: Path, classes: list[str], need_labels: bool) -> np.ndarray | None:
    """The label column as the run's class indices; for a prediction, which does not need them, None when
    some are missing or unknown (new rows often have no class yet), instead of an error."""
    try:
        return _run_classes(table, column, file, classes)
    except DataError:
        if need_labels:
            raise
        return None


def _run_classes(table, column: str, file: Path, classes: list[str]) -> np.ndarray:
    """The label column as the run's class indices: names matched to the run's classes, integers kept."""
    tp = table.column(column).type
    named = pa.types.is_string(tp) or pa.types.is_large_string(tp) or pa.types.is_dictionary(tp) \
        or pa.types.is_boolean(tp)
    codes, names = source_labels([table.column(column).combine_chunks()], [file], column, table.schema)
    if named:
        index = {c: i for i, c in enumerate(classes)}
        mapped = np.array([index.get(n, -1) for n in names], np.int64)
        codes = mapped[codes] if codes.size else codes
        unknown = np.flatnonzero(codes < 0)
        if unknown.size:
            row = int(unknown[0])
            value = table.column(column)[row].as_py()
            raise DataError(f"{file}: column '{column}', row {row} (counting from 0): class {value!r} is not one of "
                            f"the run's classes ({', '.join(classes)})")
        return codes
    return labels_in_range(codes, column, len(classes), lambda row: (file, row))
