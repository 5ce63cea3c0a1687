"""Reading datasets in the mmbal Parquet format with pyarrow; the format (columns, metadata, what is
refused) is described in ``docs/data-format.md``.

Every problem with the data raises :class:`~engine.errors.DataError` with one paragraph that
names the file, the column and, where it applies, the first offending row (counted from 0).
All checks are vectorised (Arrow compute / numpy), never a Python loop over rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import DataError
from ..registry import did_you_mean
from .flat import flat_table_hint
from .sources import file_splits, glob_files, glob_root, is_csv, is_glob
from .split import SPLIT_NAMES

KINDS = ("vector", "image", "spectrogram", "sequence")
SPLIT_COLUMN = "split"
METADATA_KEY = b"mmbal"


@dataclass(frozen=True)
class ModalityInfo:
    """One modality: its name in the run, the column holding it, its per-sample shape and kind."""

    name: str
    column: str
    shape: tuple[int, ...]
    kind: str


@dataclass
class RawDataset:
    """A dataset read into host memory, checked, before splitting and standardisation."""

    name: str
    source: str
    labels: np.ndarray
    split: np.ndarray | None
    features: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    modalities: dict[str, ModalityInfo]
    classes: list[str]
    metadata: dict = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.labels.shape[0])


# ----------------------------------------------------------------------------------------------
# files, schemas, metadata


def dataset_files(path: str | Path) -> list[Path]:
    """The Parquet file, the directory's ``*.parquet`` files, or the files a glob pattern matches, in name order."""
    p = Path(path)
    if is_glob(p):
        return glob_files(p)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory; a dataset is a Parquet file, a directory of "
                        f"Parquet files or a glob pattern of them (see docs/data-format.md)")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix == ".parquet" and f.is_file())
        if not files:
            raise DataError(f"{p}: the directory holds no .parquet files; a dataset directory must contain one "
                            f"or more Parquet files that share a schema")
        return files
    return [p]


SPREADSHEET_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods", ".numbers")


def read_schema(file: Path) -> pa.Schema:
    """The file's Arrow schema, checked for duplicate column names (a column must be named once)."""
    try:
        schema = pq.read_schema(file)
    except (pa.ArrowException, OSError) as exc:
        stem = file.name.split('.')[0]
        hint = (f"; it is a CSV table by its name: convert it once with `mmbal data import {file} "
                f"{stem}.parquet --label COLUMN -m NAME='prefix_*' ...`" if is_csv(file) else "")
        if file.suffix.lower() in SPREADSHEET_SUFFIXES:
            hint = (f"; it is a spreadsheet workbook by its name: save its sheet as CSV (UTF-8, or the "
                    f"spreadsheet's own CSV) and convert that once with `mmbal data import {stem}.csv {stem}.parquet "
                    f"--label COLUMN -m NAME=COLUMN,COLUMN ...`")
        raise DataError(f"{file}: cannot be read as a Parquet file ({exc}). A dataset is a Parquet file or a "
                        f"directory of Parquet files (see docs/data-format.md){hint}") from None
    check_unique_columns(schema, file)
    return schema


def check_unique_columns(schema: pa.Schema, file: Path) -> None:
    """Refuse a schema that names a column twice: which of the two is meant cannot be told."""
    names = schema.names
    seen: set[str] = set()
    for name in names:
        if name in seen:
            positions = [str(i) for i, n in enumerate(names) if n == name]
            raise DataError(f"{file}: column '{name}' appears {len(positions)} times (positions "
                            f"{', '.join(positions)}, counting from 0); every column needs a name of its own, so "
                            f"rename or drop the duplicates (e.g. with pyarrow's Table.rename_columns)")
        seen.add(name)


def _parse_metadata(schema: pa.Schema, file: Path) -> dict:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{file}: the schema metadata key 'mmbal' is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{file}: the schema metadata key 'mmbal' must hold a JSON object, "
                        f"got {type(meta).__name__}")
    classes = meta.get("classes")
    if classes is not None and (not isinstance(classes, list) or not classes
                                or not all(isinstance(c, str) for c in classes)):
        raise DataError(f"{file}: the schema metadata 'mmbal.classes' must be a non-empty list of class names "
                        f"(strings), got {classes!r}")
    mods = meta.get("modalities")
    if mods is not None and not isinstance(mods, dict):
        raise DataError(f"{file}: the schema metadata 'mmbal.modalities' must be an object keyed by column name")
    return meta


def _check_same_schemas(files: list[Path], schemas: list[pa.Schema]) -> None:
    first = schemas[0]
    for file, schema in zip(files[1:], schemas[1:]):
        if schema.equals(first, check_metadata=False):
            continue
        a = {f.name: str(f.type) for f in first}
        b = {f.name: str(f.type) for f in schema}
        diffs = [f"column '{n}' is missing" for n in a if n not in b]
        diffs += [f"extra column '{n}'" for n in b if n not in a]
        diffs += [f"column '{n}' is {b[n]} instead of {a[n]}" for n in a if n in b and a[n] != b[n]]
        if not diffs:
            diffs = ["the columns are in a different order"]
        raise DataError(f"{file}: its schema differs from that of {files[0].name} in the same dataset "
                        f"({'; '.join(diffs)}); all files of a dataset (directory or glob) must share one schema")


# ----------------------------------------------------------------------------------------------
# column types


def _is_list_like(tp: pa.DataType) -> bool:
    return (pa.types.is_list(tp) or pa.types.is_large_list(tp) or pa.types.is_fixed_size_list(tp)
            or pa.types.is_list_view(tp) or pa.types.is_large_list_view(tp))


def _leaf_type(tp: pa.DataType) -> pa.DataType:
    while True:
        if isinstance(tp, pa.BaseExtensionType):
            tp = tp.storage_type
        elif _is_list_like(tp):
            tp = tp.value_type
        else:
            return tp


def _is_tensor(tp: pa.DataType) -> bool:
    return isinstance(tp, pa.FixedShapeTensorType)


def _modality_shape(tp: pa.DataType) -> tuple[int, ...] | None:
    """The per-sample (logical) shape when ``tp`` is a valid modality type, else None."""
    if _is_tensor(tp):
        if not pa.types.is_floating(tp.value_type):
            return None
        shape, perm = list(tp.shape), tp.permutation
        return tuple(shape[i] for i in perm) if perm else tuple(shape)
    if pa.types.is_fixed_size_list(tp) and pa.types.is_floating(tp.value_type):
        return (tp.list_size,)
    return None


def _is_modality_like(tp: pa.DataType) -> bool:
    """A column that looks meant as a modality: any tensor, or any list whose leaves are floats."""
    return _is_tensor(tp) or (_is_list_like(tp) and pa.types.is_floating(_leaf_type(tp)))


def _type_problem(tp: pa.DataType) -> str:
    expected = ("a modality column must hold fixed_size_list<float>[d] (a vector) or "
                "arrow.fixed_shape_tensor with float values (a tensor)")
    if _is_tensor(tp):
        what = f"a tensor of {tp.value_type} values"
    elif pa.types.is_list(tp) or pa.types.is_large_list(tp) or pa.types.is_list_view(tp) \
            or pa.types.is_large_list_view(tp):
        what = "variable-length lists"
    elif pa.types.is_fixed_size_list(tp):
        what = f"fixed-size lists of {tp.value_type}"
    elif pa.types.is_string(tp) or pa.types.is_large_string(tp):
        what = "strings"
    else:
        what = "one scalar per row" if not pa.types.is_nested(tp) else "nested values"
    return f"has type {tp} ({what}); {expected}"


def guess_kind(shape: tuple[int, ...]) -> str:
    """1-D: vector; 2-D [H, W] and 3-D [C, H, W]: image; more dimensions: sequence."""
    if len(shape) == 1:
        return "vector"
    if len(shape) in (2, 3):
        return "image"
    return "sequence"


def _modality_info(name: str, column: str, shape: tuple[int, ...], meta: dict, file: Path) -> ModalityInfo:
    hint = (meta.get("modalities") or {}).get(column) or {}
    if not isinstance(hint, dict):
        raise DataError(f"{file}: column '{column}': the schema metadata 'mmbal.modalities.{column}' must be an "
                        f"object, got {hint!r}")
    kind = hint.get("kind") or guess_kind(shape)
    if kind not in KINDS:
        raise DataError(f"{file}: column '{column}': the schema metadata gives kind {kind!r}, which is not one of "
                        f"{', '.join(KINDS)}{did_you_mean(str(kind), KINDS)}")
    declared = hint.get("shape")
    if declared is not None and (not isinstance(declared, list)
                                 or not all(isinstance(d, int) and not isinstance(d, bool) for d in declared)):
        raise DataError(f"{file}: column '{column}': the schema metadata 'mmbal.modalities.{column}.shape' must be "
                        f"a list of integers, got {declared!r}")
    if declared is not None and tuple(declared) != shape:
        raise DataError(f"{file}: column '{column}': the schema metadata gives shape {list(declared)} but the "
                        f"column holds values of shape {list(shape)}")
    return ModalityInfo(name=name, column=column, shape=shape, kind=kind)


def _auto_modalities(schema: pa.Schema, meta: dict, file: Path, label_column: str,
                     strict: bool) -> dict[str, ModalityInfo]:
    """Every modality-typed column in file order; with ``strict``, modality-like bad ones raise."""
    out: dict[str, ModalityInfo] = {}
    for f in schema:
        if f.name in (label_column, SPLIT_COLUMN):
            continue
        shape = _modality_shape(f.type)
        if shape is not None:
            out[f.name] = _modality_info(f.name, f.name, shape, meta, file)
        elif strict and _is_modality_like(f.type):
            raise DataError(f"{file}: column '{f.name}' {_type_problem(f.type)}. Convert it, or name the "
                            f"modality columns to use explicitly")
    return out


def _requested_modalities(schema: pa.Schema, meta: dict, file: Path,
                          columns: dict[str, str]) -> dict[str, ModalityInfo]:
    out: dict[str, ModalityInfo] = {}
    names = schema.names
    for name, column in columns.items():
        if column not in names:
            raise DataError(f"{file}: has no column '{column}' (asked for modality '{name}')"
                            f"{did_you_mean(column, names)}; its columns are {', '.join(names)}")
        tp = schema.field(column).type
        shape = _modality_shape(tp)
        if shape is None:
            raise DataError(f"{file}: column '{column}' (modality '{name}') {_type_problem(tp)}")
        out[name] = _modality_info(name, column, shape, meta, file)
    return out


def peek_schema(path: str | Path, label_column: str = "label",
                strict: bool = False) -> tuple[dict[str, ModalityInfo], dict]:
    """Modality columns and ``mmbal`` metadata of a dataset, from its schema only (no data read).

    Lists the valid modality columns only; with ``strict`` (all columns will be used, as by
    :func:`read_dataset` without ``columns``) a float-list column of a wrong type raises. For a
    directory, the first file's schema is used.
    """
    files = dataset_files(path)
    schema = read_schema(files[0])
    meta = _parse_metadata(schema, files[0])
    return _auto_modalities(schema, meta, files[0], label_column, strict=strict), meta


def flat_hint(path: str | Path, label_column: str = "label") -> str | None:
    """For a dataset of scalar feature columns, how to make modalities of them (``flat_table_hint``)."""
    return flat_table_hint(read_schema(dataset_files(path)[0]), (label_column, SPLIT_COLUMN), str(path))


def column_type_problem(path: str | Path, column: str) -> str | None:
    """Why an existing column of the dataset cannot be a modality (None if absent or usable)."""
    schema = read_schema(dataset_files(path)[0])
    if column not in schema.names:
        return None
    tp = schema.field(column).type
    return None if _modality_shape(tp) is not None else _type_problem(tp)


# ----------------------------------------------------------------------------------------------
# reading and checking the data


class _Rows:
    """Maps a row of the concatenated table to its file and row within it, for messages."""

    def __init__(self, files: list[Path], counts: list[int]):
        self.files = files
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def where(self, row: int) -> tuple[Path, int]:
        i = int(np.searchsorted(self.starts, row, side="right") - 1)
        return self.files[i], int(row - self.starts[i])

    def error(self, column: str, row: int | None, problem: str) -> DataError:
        if row is None:
            return DataError(f"{self.files[0]}: column '{column}' {problem}")
        file, local = self.where(row)
        return DataError(f"{file}: column '{column}', row {local} (counting from 0): {problem}")


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def read_columns(file: Path, columns: list[str]) -> pa.Table:
    """``columns`` of one Parquet file; a data error naming the file when it cannot be read."""
    try:
        return pq.read_table(file, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{file}: cannot be read as a Parquet file ({exc})") from None


def _read_table(files: list[Path], columns: list[str]) -> tuple[pa.Table, list[int]]:
    tables = [read_columns(f, columns) for f in files]
    return (pa.concat_tables(tables) if len(tables) > 1 else tables[0]), [t.num_rows for t in tables]


def _labels(table: pa.Table, column: str, rows: _Rows, meta: dict) -> tuple[np.ndarray, list[str]]:
    arr = table.column(column).combine_chunks()
    if not pa.types.is_integer(arr.type):
        raise rows.error(column, None, f"has type {arr.type}; labels must be integers 0..C-1 "
                                       f"(int8..int64), one class index per row. `mmbal data import FILE OUT.parquet "
                                       f"--label {column}` converts class names, whole-number floats and booleans "
                                       f"into class indices, keeping the names as the dataset's classes")
    if arr.null_count:
        row = _first(pc.is_null(arr).to_numpy(zero_copy_only=False))
        raise rows.error(column, row, "the label is missing (null); every row needs a class index")
    values = arr.to_numpy()
    classes = meta.get("classes")
    if classes is not None:
        bad = _first((values < 0) | (values >= len(classes)))
        if bad is not None:
            raise rows.error(column, bad, f"label {int(values[bad])} is outside 0..{len(classes) - 1} (the schema "
                                          f"metadata names {len(classes)} classes)")
        _check_class_count(len(classes), values, rows, column)
    else:
        bad = _first(values < 0)
        if bad is not None:
            raise rows.error(column, bad, f"label {int(values[bad])} is negative; labels are class indices 0..C-1")
        top = _first(values >= len(values))  # C = max + 1 would exceed the rows: not class indices
        if top is not None:
            raise rows.error(column, top, f"label {int(values[top])} would make at least {int(values[top]) + 1} "
                                          f"classes for {len(values)} rows; labels are class indices 0..C-1 (name "
                                          f"the classes in the schema metadata 'mmbal.classes' if some have no rows)")
        classes = [str(i) for i in range(int(values.max()) + 1)]
    return values.astype(np.int64), list(classes)


def _check_class_count(n_classes: int, values: np.ndarray, rows: _Rows, column: str) -> None:
    """Classes without rows are allowed, but not more classes than both the rows and the largest label
    need: a model, its C x C confusion matrices and its metrics grow with C."""
    bound = max(len(values), int(values.max()) + 1 if len(values) else 0)
    if n_classes > bound:
        raise rows.error(column, None, f"holds {len(values)} rows whose largest label is {int(values.max())}, "
                                       f"but the schema metadata 'mmbal.classes' names {n_classes} classes; at "
                                       f"most {bound} (the larger of the row count and the largest label + 1) are "
                                       f"allowed, as a model and its C x C confusion matrices grow with C. Name "
                                       f"only the classes the data can hold")


def _split(table: pa.Table, rows: _Rows) -> np.ndarray:
    arr = table.column(SPLIT_COLUMN).combine_chunks()
    tp = arr.type
    if pa.types.is_dictionary(tp):
        tp = tp.value_type
    if not (pa.types.is_string(tp) or pa.types.is_large_string(tp) or pa.types.is_string_view(tp)):
        raise rows.error(SPLIT_COLUMN, None, f"has type {arr.type}; the split column must hold the strings "
                                             f"'train', 'val' or 'test'")
    codes = pc.index_in(arr, value_set=pa.array(SPLIT_NAMES)).to_numpy(zero_copy_only=False)
    bad = _first(np.isnan(codes)) if codes.dtype.kind == "f" else None
    if bad is not None:
        value = arr[bad].as_py()
        shown = "null" if value is None else repr(value)
        raise rows.error(SPLIT_COLUMN, bad, f"split value {shown} is not one of 'train', 'val', 'test'")
    codes = codes.astype(np.int8)
    counts = np.bincount(codes, minlength=3)
    empty = [SPLIT_NAMES[i] for i in range(3) if counts[i] == 0]
    if empty:
        raise rows.error(SPLIT_COLUMN, None, f"has no {' and no '.join(repr(e) for e in empty)} rows; every split "
                                             f"(train, val, test) needs at least one row "
                                             f"(counts: train {counts[0]}, val {counts[1]}, test {counts[2]})")
    return codes


def _fixed_list_values(arr: pa.FixedSizeListArray) -> pa.Array:
    """The child values of every slot (nulls included), honouring the array's offset."""
    d = arr.type.list_size
    return arr.values.slice(arr.offset * d, len(arr) * d)


def decode_features(table: pa.Table, info: ModalityInfo, rows) -> tuple[np.ndarray, np.ndarray]:
    """(N, *shape) float32 values with missing rows set to 0, and the (N,) presence mask.

    ``rows`` turns a row of ``table`` into a message (:class:`_Rows`, or :class:`GroupRows` for one row group).
    """
    arr = table.column(info.column).combine_chunks()
    n = len(arr)
    tp = arr.type
    storage = arr.storage if isinstance(arr, pa.ExtensionArray) else arr
    values = _fixed_list_values(storage)
    if values.type != pa.float32():
        values = pc.cast(values, pa.float32())
    flat = values.to_numpy(zero_copy_only=False)  # child nulls become NaN
    present = ~pc.is_null(storage).to_numpy(zero_copy_only=False) if storage.null_count else np.ones(n, bool)
    if _is_tensor(tp):
        physical = flat.reshape(n, *tp.shape)
        perm = tp.permutation
        data = physical.transpose(0, *[1 + p for p in perm]) if perm else physical
    else:
        data = flat.reshape(n, *info.shape)
    data = np.ascontiguousarray(data)
    if not data.flags.writeable:
        data = data.copy()
    finite = np.isfinite(data.reshape(n, -1)).all(axis=1)
    bad = _first(~finite & present)
    if bad is not None:
        raise rows.error(info.column, bad, "holds a NaN, infinite or null element (after conversion to float32); "
                                           "write a missing modality as a null value for the whole row instead")
    if not present.all():
        data[~present] = 0.0
    return data, present


@dataclass(frozen=True)
class DatasetLayout:
    """A dataset's files, shared schema, metadata and chosen columns, from the schemas alone (no data read)."""

    path: Path
    files: list[Path]
    schema: pa.Schema
    meta: dict
    modalities: dict[str, ModalityInfo]
    label_column: str
    has_split: bool
    file_splits: tuple[int, ...] | None = None  # each file's split code, from its name (no split column)

    @property
    def name(self) -> str:
        folder = glob_root(self.path) if is_glob(self.path) else None
        return str(self.meta.get("name") or (folder.resolve().name if folder is not None else self.path.stem))

    @property
    def feature_columns(self) -> list[str]:
        """The modality columns to read, each once, in modality order."""
        return list(dict.fromkeys(i.column for i in self.modalities.values()))

    @property
    def index_columns(self) -> list[str]:
        """The label column, and the split column when the data have one."""
        return [self.label_column] + ([SPLIT_COLUMN] if self.has_split else [])


def open_dataset(path: str | Path, columns: dict[str, str] | None = None,
                 label_column: str = "label") -> DatasetLayout:
    """Check a dataset's schemas and pick its modality, label and split columns (no rows read).

    ``columns`` maps modality name -> column name, in the order wanted; None takes every
    modality-typed column in file order (a float-list column of a wrong type is then an error).
    """
    files = dataset_files(path)
    schemas = [read_schema(f) for f in files]
    _check_same_schemas(files, schemas)
    schema, file = schemas[0], files[0]
    meta = _parse_metadata(schema, file)
    if columns is None:
        mods = _auto_modalities(schema, meta, file, label_column, strict=True)
    else:
        mods = _requested_modalities(schema, meta, file, columns)
    if len(mods) < 2:
        found = ", ".join(f"'{m}'" for m in mods) or "none"
        hint = flat_table_hint(schema, (label_column, SPLIT_COLUMN), str(path))
        raise DataError(f"{file}: a multimodal dataset needs at least two modality columns "
                        f"(fixed_size_list<float> or arrow.fixed_shape_tensor); found {found}"
                        + (f"; {hint}" if hint else ""))
    if label_column not in schema.names:
        raise DataError(f"{file}: column '{label_column}' (the label) is missing"
                        f"{did_you_mean(label_column, schema.names)}; its columns are {', '.join(schema.names)}")
    has_split = SPLIT_COLUMN in schema.names and label_column != SPLIT_COLUMN
    return DatasetLayout(path=Path(path), files=files, schema=schema, meta=meta, modalities=mods,
                         label_column=label_column, has_split=has_split,
                         file_splits=None if has_split else _file_split_codes(Path(path), files))


def _file_split_codes(path: Path, files: list[Path]) -> tuple[int, ...] | None:
    """Split codes of the files of a directory or glob whose names name two or more splits.

    Files named after one split only (``train-0000*.parquet``) are shards, split by the preset's
    fractions as before; names naming two splits but not the third are refused (no empty split).
    """
    if len(files) < 2 or not (path.is_dir() or is_glob(path)):
        return None
    splits = file_splits(files, path if path.is_dir() else glob_root(path))
    if splits is None or len(set(splits)) < 2:
        return None
    missing = [name for name in SPLIT_NAMES if name not in splits]
    if missing:
        raise DataError(f"{path}: its files' names give the splits {', '.join(sorted(set(splits)))} but no "
                        f"{' and no '.join(missing)} file; every split needs rows. Import the data with "
                        f"`mmbal data import {path} OUT.parquet`, which carves the missing split from train "
                        f"(--val-fraction, --test-fraction), or add a file for it")
    return tuple(SPLIT_NAMES.index(s) for s in splits)


def _split_of_files(layout: DatasetLayout, counts: list[int]) -> np.ndarray | None:
    """Per-row split codes from the files' names (None when they name no splits); no split may be empty."""
    if layout.file_splits is None:
        return None
    codes = np.repeat(np.asarray(layout.file_splits, np.int8), counts)
    rows = np.bincount(codes, minlength=3)
    empty = [SPLIT_NAMES[i] for i in range(3) if rows[i] == 0]
    if empty:
        raise DataError(f"{layout.path}: the files of split {' and '.join(repr(e) for e in empty)} (from their "
                        f"names) hold no rows; every split (train, val, test) needs at least one row")
    return codes


def file_row_counts(files: list[Path]) -> list[list[int]]:
    """Rows of every row group of every file, from the Parquet footers (no data read)."""
    counts = []
    for f in files:
        try:
            md = pq.ParquetFile(f).metadata
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{f}: cannot be read as a Parquet file ({exc})") from None
        counts.append([md.row_group(i).num_rows for i in range(md.num_row_groups)])
    return counts


def read_index_columns(layout: DatasetLayout) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """Labels (int64), class names and split codes (int8, or None) of every row: only those columns are read."""
    table, counts = _read_table(layout.files, layout.index_columns)
    if table.num_rows == 0:
        raise DataError(f"{layout.path}: the dataset has no rows")
    rows = _Rows(layout.files, counts)
    labels, classes = _labels(table, layout.label_column, rows, layout.meta)
    split = _split(table, rows) if layout.has_split else _split_of_files(layout, counts)
    return labels, classes, split


class GroupRows:
    """Like :class:`_Rows` for one row group of one file: messages name the file, row group and row."""

    def __init__(self, file: Path, group: int, first_row: int):
        self.file, self.group, self.first_row = file, group, first_row

    def error(self, column: str, row: int | None, problem: str) -> DataError:
        if row is None:
            return DataError(f"{self.file}: row group {self.group}, column '{column}' {problem}")
        return DataError(f"{self.file}: row group {self.group}, column '{column}', row {self.first_row + row} "
                         f"of the file (counting from 0): {problem}")


def read_row_group_features(layout: DatasetLayout, file: int, group: int,
                            first_row: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decoded and checked ``(values, present)`` of every modality of one row group of one file.

    The file is opened for this read and closed after it: an open reader keeps about one row
    group's buffers alive, which adds up over the files of a streamed directory (opening costs a
    footer read, well under a millisecond). Arrow's own threads are not used (the caller is a
    reader thread beside training).
    """
    path = layout.files[file]
    try:
        with pq.ParquetFile(path) as pf:
            table = pf.read_row_group(group, columns=layout.feature_columns, use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: row group {group} cannot be read ({exc})") from None
    rows = GroupRows(path, group, first_row)
    return {name: decode_features(table, info, rows) for name, info in layout.modalities.items()}


def read_dataset(path: str | Path, columns: dict[str, str] | None = None,
                 label_column: str = "label") -> RawDataset:
    """Read and check a dataset (a Parquet file or a directory of them, in name order).

    ``columns`` maps modality name -> column name, in the order wanted; None takes every
    modality-typed column in file order (a float-list column of a wrong type is then an error).
    """
    layout = open_dataset(path, columns, label_column)
    table, counts = _read_table(layout.files, layout.index_columns + layout.feature_columns)
    rows = _Rows(layout.files, counts)
    if table.num_rows == 0:
        raise DataError(f"{Path(path)}: the dataset has no rows")
    labels, classes = _labels(table, label_column, rows, layout.meta)
    split = _split(table, rows) if layout.has_split else _split_of_files(layout, counts)
    features, present = {}, {}
    for name, info in layout.modalities.items():
        features[name], present[name] = decode_features(table, info, rows)
    return RawDataset(name=layout.name, source=str(path), labels=labels, split=split,
                      features=features, present=present, modalities=dict(layout.modalities), classes=classes,
                      metadata=layout.meta)
