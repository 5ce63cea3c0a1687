"""``mmbal data import``: Parquet written by Hugging Face ``datasets`` and similar tools, or a CSV table,
as one file in mmbal's format (``docs/data-format.md``).

* **Files.** The source is a Parquet file, a directory (searched recursively, as a Hugging Face
  snapshot lays out ``data/train-00000-of-00002.parquet``) or a glob pattern; all files share one
  schema. A CSV (``.csv``, tab-separated ``.tsv``, compressed ``.gz``/``.bz2``) file or glob of them is
  read whole with pyarrow's CSV reader (its scalar columns make modalities with ``NAME=COLUMNS``).
* **Modalities.** Every column of numeric (nested) lists or tensors, and every image column, other
  than the label and split; or the columns named. ``NAME=COLUMN,COLUMN`` (or ``NAME='prefix_*'``)
  makes one vector modality of scalar columns, as a flat table (pandas' ``to_parquet``) holds them.
  Variable-length nested lists of equal lengths (``datasets``' ``Array2D``/``Array3D``) become
  fixed-shape tensors (:mod:`engine.data.tensors`);
  encoded images are decoded with Pillow (:mod:`engine.data.images`, the ``image`` extra).
* **Splits.** The official splits are kept: from a split column (``train``/``validation``/``test``
  and their synonyms) or from the files' names (``train-*``, ``validation-*``, ``test-*``, or split
  folders). A missing validation or test split is carved from train, stratified and seeded (the
  official test split is never touched). Without any split the output has no split column and the
  preset's fractions split it.
* **Labels.** Integer labels are kept, with the class names of ``datasets``' ``ClassLabel`` (or of
  mmbal metadata); string labels become indices of their sorted distinct values.

Every problem is a :class:`~engine.errors.DataError` naming the file, the column and the row. The
output is written atomically by :func:`engine.data.writer.write_dataset`.
"""

from __future__ import annotations

import fnmatch
import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DataError
from ..registry import did_you_mean
from .csv_dialect import csv_dialect, csv_encoding
from .flat import group_example, listed, scalar_columns
from .images import decode_images, is_image_type
from .modality_names import modality_name_problem
from .parquet import METADATA_KEY, check_unique_columns, dataset_files, read_columns, read_schema
from .sources import SPLIT_SYNONYMS, file_splits, glob_root, is_csv, is_glob
from .split import SPLIT_NAMES, stratified_split
from .tensors import Where, is_tensor_like, to_tensor
from .writer import write_dataset


@dataclass(frozen=True)
class ImportOptions:
    """What ``mmbal data import`` takes from the source and how it completes the splits."""

    label_column: str = "label"
    split_column: str | None = None            # None: 'split' when the data have it
    modalities: tuple[str, ...] = ()           # columns to take, in order; () = every tensor or image column
    image_size: tuple[int, int] | None = None  # (height, width) every image is resized to
    val_fraction: float = 0.1                  # of train, per class, when there is no validation split
    test_fraction: float = 0.1                 # of train, per class, when there is no test split
    seed: int = 0                              # of that carving
    name: str | None = None                    # the dataset's name (default: the output file's stem)


@dataclass
class ImportReport:
    """What was written: rows, where the splits came from, modalities and the columns left out."""

    out: Path
    rows: int
    files: int
    splits: dict[str, int] | None
    split_source: str
    carved: list[str]
    modalities: dict[str, tuple[int, ...]]
    classes: list[str]
    ignored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # about the labels: see label_warnings
    source_columns: dict[str, list[str]] = field(default_factory=dict)  # a group's modality -> its columns


@dataclass
class _Columns:
    label: str
    split: str | None
    modalities: list[str]
    images: set[str]
    ignored: list[str]
    groups: dict[str, list[str]] = field(default_factory=dict)  # a modality made of scalar columns: its columns

    def read(self) -> list[str]:
        """The columns to read: label, split, then each modality's own column or its group's columns."""
        wanted = [self.label] + ([self.split] if self.split else [])
        return wanted + [c for m in self.modalities for c in self.groups.get(m, [m])]


def import_dataset(source: str | Path, out: str | Path, options: ImportOptions = ImportOptions()) -> ImportReport:
    """Convert ``source`` (file, directory or glob) into the mmbal Parquet file ``out`` (see the module doc)."""
    files, root = source_files(source)
    tables = SourceTables()
    schema = _shared_schema(files, tables)
    columns = _choose_columns(schema, files[0], options)
    parts = [_read_file(f, columns, options, tables) for f in files]
    features, present = _joined_features(parts, files, columns)
    labels, classes = source_labels([p["label"] for p in parts], files, columns.label, schema)
    split, split_source = _splits(parts, files, root, columns)
    carved: list[str] = []
    if split is not None:
        split, carved = _complete_splits(split, labels, options, f"{source}: the splits from the {split_source}")
    name = options.name or Path(out).stem
    kinds = {m: "image" for m in columns.images}
    grouped = {m: columns.groups[m] for m in columns.modalities if m in columns.groups}
    write_dataset(out, features, labels, split, classes, name=name, kinds=kinds,
                  source=f"imported by mmbal data import from {source}", present=present,
                  source_columns=grouped, label_column=columns.label)
    counts = None if split is None else {s: int(c) for s, c in zip(SPLIT_NAMES, np.bincount(split, minlength=3))}
    classes = classes or [str(i) for i in range(int(labels.max()) + 1)]
    return ImportReport(out=Path(out), rows=int(labels.shape[0]), files=len(files), splits=counts,
                        split_source=split_source, carved=carved,
                        modalities={m: tuple(v.shape[1:]) for m, v in features.items()},
                        classes=classes, ignored=columns.ignored,
                        warnings=label_warnings(labels, len(classes), columns.label), source_columns=grouped)


# -- files and columns ------------------------------------------------------------------------------
def source_files(source: str | Path) -> tuple[list[Path], Path | None]:
    """The source's Parquet files in name order (a directory recursively), or its CSV file(s), and the folder
    split names are below."""
    p = Path(source)
    if is_glob(p):
        tables = sorted(Path(m) for m in glob.glob(str(p), recursive=True) if is_csv(Path(m)) and Path(m).is_file())
        return tables or dataset_files(p), glob_root(p)
    if is_csv(p):
        if not p.is_file():
            raise DataError(f"{p}: no such file")
        return [p], None
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.parquet") if f.is_file()
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
        if not files:
            raise DataError(f"{p}: the directory (and its subfolders) holds no .parquet files")
        return files, p
    return dataset_files(p), None


class SourceTables:
    """The source files' schemas and columns: Parquet read column by column, a CSV table read whole once
    (pyarrow's CSV reader: types inferred, empty cells null, in text columns too, so that an empty label
    is a missing one and not a class named ''; ``.gz``/``.bz2`` decompressed; the delimiter and decimal
    point of :func:`~engine.data.csv_dialect.csv_dialect`: commas, or a spreadsheet's ``;`` and ``39,1``)."""

    def __init__(self):
        self._csv: dict[Path, pa.Table] = {}

    def schema(self, file: Path) -> pa.Schema:
        return self._read_csv(file).schema if is_csv(file) else read_schema(file)

    def table(self, file: Path, columns: list[str]) -> pa.Table:
        return self._read_csv(file).select(columns) if is_csv(file) else read_columns(file, columns)

    def _read_csv(self, file: Path) -> pa.Table:
        if file not in self._csv:
            from pyarrow import csv
            def read(encoding: str) -> pa.Table:
                delimiter, decimal = csv_dialect(file, encoding)
                try:
                    return csv.read_csv(file, read_options=csv.ReadOptions(encoding=encoding),
                                        parse_options=csv.ParseOptions(delimiter=delimiter),
                                        convert_options=csv.ConvertOptions(strings_can_be_null=True,
                                                                           decimal_point=decimal))
                except (pa.ArrowException, OSError) as exc:
                    raise DataError(f"{file}: cannot be read as a CSV table ({exc})") from None
            # read as UTF-8 first; pyarrow types a column binary only where its text is not UTF-8, and only
            # then is the file's encoding looked for (a whole pass over it)
            table = read("utf-8")
            if any(pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) for f in table.schema):
                table = read(csv_encoding(file))
            check_unique_columns(table.schema, file)
            self._csv[file] = table
        return self._csv[file]


def _shared_schema(files: list[Path], tables: SourceTables) -> pa.Schema:
    first = tables.schema(files[0])
    for f in files[1:]:
        schema = tables.schema(f)
        if schema.names != first.names:
            extra = [n for n in schema.names if n not in first.names]
            missing = [n for n in first.names if n not in schema.names]
            what = (f"column '{missing[0]}' is missing" if missing else f"extra column '{extra[0]}'" if extra
                    else "the columns are in a different order")
            raise DataError(f"{f}: its columns differ from those of {files[0]} ({what}); the files of one dataset "
                            f"must share one schema")
        for a, b in zip(first, schema):
            if not a.type.equals(b.type):
                raise DataError(f"{f}: column '{b.name}' is {b.type} where {files[0]} has {a.type}; the files of "
                                f"one dataset must share one schema")
    return first


def _choose_columns(schema: pa.Schema, file: Path, options: ImportOptions) -> _Columns:
    names = schema.names
    label = options.label_column
    if label not in names:
        raise DataError(f"{file}: has no label column '{label}'{did_you_mean(label, names)}; its columns are "
                        f"{', '.join(names)} (name the label column with --label)")
    split = options.split_column or ("split" if "split" in names and label != "split" else None)
    if split is not None and split not in names:
        raise DataError(f"{file}: has no split column '{split}'{did_you_mean(split, names)}; its columns are "
                        f"{', '.join(names)}")
    usable = {f.name for f in schema if f.name not in (label, split)
              and (is_tensor_like(f.type) or is_image_type(f.type))}
    groups: dict[str, list[str]] = {}
    if options.modalities:
        modalities = []
        named = _named_in_groups(options.modalities)
        for spec in options.modalities:
            if "=" in spec:
                name, columns = _group(spec, schema, file, (label, split), groups, named)
                groups[name] = columns
                modalities.append(name)
                continue
            if spec not in names:
                raise DataError(f"{file}: has no column '{spec}' (asked for with --modality)"
                                f"{did_you_mean(spec, names)}; its columns are {', '.join(names)}")
            if spec not in usable:
                raise DataError(f"{file}: column '{spec}' has type {schema.field(spec).type}; a modality needs "
                                f"numeric lists or tensors of one shape per row, or encoded images (scalar columns "
                                f"make a modality together: --modality NAME=COLUMN,COLUMN or NAME='prefix_*')")
            modalities.append(spec)
        modalities = list(dict.fromkeys(modalities))
    else:
        modalities = [n for n in names if n in usable]
    for m in modalities:
        bad = modality_name_problem(m)
        if bad and m in groups:
            raise DataError(f"--modality {m}=...: {bad}; name the group otherwise")
        if bad:
            raise DataError(f"{file}: column '{m}' cannot be imported as a modality: {bad}; rename it in the "
                            f"source, or name the modalities to import with --modality, without it")
    if len(modalities) < 2:
        raise DataError(f"{file}: a multimodal dataset needs at least two modality columns (numeric lists or "
                        f"tensors, or images, or groups of scalar columns named with --modality NAME=COLUMNS); "
                        f"found {', '.join(modalities) or 'none'} among {_described(schema, (label, split))}")
    images = {m for m in modalities if m not in groups and is_image_type(schema.field(m).type)}
    taken = {c for m in modalities for c in groups.get(m, [m])}
    ignored = [n for n in names if n not in taken and n not in (label, split)]
    return _Columns(label=label, split=split, modalities=modalities, images=images, ignored=ignored, groups=groups)


def _described(schema: pa.Schema, reserved: tuple) -> str:
    """The columns and their types; for a flat table of scalar columns, the groups their prefixes suggest."""
    scalars = scalar_columns(schema, reserved)
    if len(scalars) < 2:
        return ", ".join(f"{f.name} ({f.type})" for f in schema)
    return f"{len(scalars)} scalar numeric columns ({listed(scalars)}), which make modalities in groups: " \
           f"{group_example(scalars)}"


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def _named_in_groups(specs: list[str]) -> set[str]:
    """The columns that groups name exactly (not by a pattern): a pattern never takes them."""
    return {p.strip() for spec in specs if "=" in spec for p in spec.partition("=")[2].split(",")
            if p.strip() and not _is_pattern(p.strip())}


def _is_number(tp: pa.DataType) -> bool:
    return pa.types.is_integer(tp) or pa.types.is_floating(tp) or pa.types.is_boolean(tp)


def _group(spec: str, schema: pa.Schema, file: Path, reserved: tuple, groups: dict[str, list[str]],
           named: set[str] = frozenset()) -> tuple[str, list[str]]:
    """``NAME=PATTERN,PATTERN...``: the modality NAME made of the scalar numeric columns the patterns name.

    An exact column name takes that column (two groups naming one column is an error). A pattern
    (``fnmatch``: ``gene_*``, ``*``) takes, in the file's column order, the scalar numeric columns that no
    group names exactly and no earlier group took, so ``-m clinical=age,bmi -m genes='*'`` puts every other
    numeric column in ``genes``; text columns are left out (listed as not imported)."""
    name, _, patterns = spec.partition("=")
    name = name.strip()
    if not name or not patterns.strip():
        raise DataError(f"--modality {spec!r}: a group of columns is NAME=COLUMN,COLUMN... or NAME='prefix_*'")
    if name in groups:
        raise DataError(f"--modality {spec!r}: two groups are named '{name}'")
    taken = {c for cols in groups.values() for c in cols}
    columns: list[str] = []
    for pattern in (p.strip() for p in patterns.split(",") if p.strip()):
        if pattern in reserved:
            raise DataError(f"{file}: column '{pattern}' (in --modality {spec!r}) is the label or split column; "
                            f"it cannot be part of a modality")
        if _is_pattern(pattern):
            matched = [n for n in schema.names if fnmatch.fnmatchcase(n, pattern) and n not in reserved
                       and n not in named and n not in taken and _is_number(schema.field(n).type)]
        else:
            matched = [pattern] if pattern in schema.names else []
        if not matched:
            names = schema.names
            shown = ", ".join(names[:12]) + (f", and {len(names) - 12} more" if len(names) > 12 else "")
            left = " that another group did not take" if any(fnmatch.fnmatchcase(n, pattern) for n in names) else ""
            what = f"no numeric column{left} matches '{pattern}'" if _is_pattern(pattern) else \
                f"has no column '{pattern}'"
            raise DataError(f"{file}: {what} (in --modality {spec!r}){did_you_mean(pattern, names)}; its columns "
                            f"are {shown}")
        columns += [n for n in matched if n not in columns]
    for column in columns:
        tp = schema.field(column).type
        if not _is_number(tp):
            raise DataError(f"{file}: column '{column}' (in --modality {spec!r}) has type {tp}; a group of columns "
                            f"takes one number per row from each (integers, floats or booleans)")
        other = next((g for g, cols in groups.items() if column in cols), None)
        if other is not None:
            raise DataError(f"{file}: column '{column}' is in two modalities, '{other}' and '{name}'")
    if name in schema.names and name not in columns:
        raise DataError(f"--modality {spec!r}: '{name}' is another column of {file}; name the group otherwise")
    return name, columns


def stacked_group(table: pa.Table, name: str, columns: list[str], file: Path) -> tuple[np.ndarray, np.ndarray]:
    """The group's columns side by side as ``(values (N, k) float32, present (N,))``: a row whose columns are
    all null is a missing modality; a row with some of them null is refused, as is a NaN or infinite value,
    or a column that is not numbers (naming its first value that is not one)."""
    for c in columns:   # a column of no value at all (type null: an empty CSV column) is all missing
        if not (_is_number(table.column(c).type) or pa.types.is_null(table.column(c).type)):
            raise _not_numbers(table.column(c), c, name, file)
    nulls = np.stack([pc.is_null(table.column(c)).to_numpy(zero_copy_only=False) for c in columns], axis=1)
    partial = np.flatnonzero(nulls.any(axis=1) & ~nulls.all(axis=1))
    if partial.size:
        row = int(partial[0])
        column = columns[int(np.flatnonzero(nulls[row])[0])]
        raise DataError(f"{file}: column '{column}', row {row} (counting from 0): the value is missing while other "
                        f"columns of modality '{name}' have theirs; fill it, or leave the whole group empty in that "
                        f"row (a missing modality)")
    values = np.stack([pc.cast(table.column(c), pa.float32(), safe=False).to_numpy(zero_copy_only=False)
                       .astype(np.float32) for c in columns], axis=1)
    present = ~nulls.all(axis=1)
    values[~present] = 0.0
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        row = int(bad[0])
        column = columns[int(np.flatnonzero(~np.isfinite(values[row]))[0])]
        raise DataError(f"{file}: column '{column}', row {row} (counting from 0): holds a NaN or infinite value "
                        f"(in modality '{name}')")
    return values, present


def _not_numbers(column: pa.ChunkedArray, name: str, modality: str, file: Path) -> DataError:
    """The error for a group's column of another type than numbers, with its first value that is not one."""
    def number(value) -> bool:   # an empty text cell is a missing value, not a word
        if isinstance(value, str) and not value.strip():
            return True
        try:
            float(value)
            return True
        except (TypeError, ValueError):
            return False
    values = column.to_pylist()
    row = next((i for i, v in enumerate(values) if v is not None and not number(v)), None)
    where = "" if row is None else f", row {row} (counting from 0) holds {values[row]!r}"
    return DataError(f"{file}: column '{name}' (in modality '{modality}') has type {column.type}{where}; a modality's "
                     f"columns hold one number per row (integers, floats or booleans; an empty cell is a missing "
                     f"value)")


def _read_file(file: Path, columns: _Columns, options: ImportOptions, tables: SourceTables) -> dict:
    table = tables.table(file, list(dict.fromkeys(columns.read())))
    part = {"rows": table.num_rows, "label": table.column(columns.label).combine_chunks(),
            "split": table.column(columns.split).combine_chunks() if columns.split else None, "features": {}}
    for m in columns.modalities:
        where = Where(file, m)
        if m in columns.groups:
            part["features"][m] = stacked_group(table, m, columns.groups[m], file)
        elif m in columns.images:
            part["features"][m] = decode_images(table.column(m), where, options.image_size)
        else:
            part["features"][m] = to_tensor(table.column(m), where)
    return part


def _joined_features(parts: list[dict], files: list[Path],
                     columns: _Columns) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    features, present = {}, {}
    for m in columns.modalities:
        shapes = [p["features"][m][0].shape[1:] for p in parts]
        for f, shape, part in zip(files, shapes, parts):
            if shape != shapes[0] and part["rows"]:
                raise DataError(f"{f}: column '{m}' holds values of shape {list(shape)} where {files[0]} holds "
                                f"{list(shapes[0])}; a modality needs one shape in every file")
        features[m] = np.concatenate([p["features"][m][0] for p in parts])
        present[m] = np.concatenate([p["features"][m][1] for p in parts])
    return features, present


# -- labels -----------------------------------------------------------------------------------------
def source_labels(arrays: list[pa.Array], files: list[Path], column: str,
            schema: pa.Schema) -> tuple[np.ndarray, list[str] | None]:
    """int64 class indices of every row and the class names (None: the reader numbers them)."""
    tp = arrays[0].type
    for f, arr in zip(files, arrays):
        if arr.null_count:
            row = int(np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{f}: column '{column}', row {row} (counting from 0): the label is missing (null), "
                            f"in {arr.null_count} of {len(arr)} rows; every row to train on needs its class. Leave "
                            f"the unlabelled rows out of the table to import (a run trained on it can predict them "
                            f"later: `mmbal predict RUN rows.csv`)")
    if pa.types.is_dictionary(tp) or pa.types.is_string(tp) or pa.types.is_large_string(tp):
        return _named_labels(arrays)
    if pa.types.is_boolean(tp):
        return np.concatenate([a.to_numpy(zero_copy_only=False).astype(np.int64) for a in arrays]), ["False", "True"]
    if pa.types.is_floating(tp):
        values = [_whole_numbers(a.to_numpy(zero_copy_only=False), f, column) for f, a in zip(files, arrays)]
    elif pa.types.is_integer(tp):
        values = [a.to_numpy(zero_copy_only=False).astype(np.int64) for a in arrays]
    else:
        raise DataError(f"{files[0]}: column '{column}' has type {tp}; labels must be integers (class indices), "
                        f"whole numbers stored as floats, booleans or strings (class names)")
    for f, v in zip(files, values):
        if v.size and v.min() < 0:
            row = int(np.flatnonzero(v < 0)[0])
            raise DataError(f"{f}: column '{column}', row {row} (counting from 0): label {int(v[row])} is negative; "
                            f"labels are class indices 0..C-1")
    labels = np.concatenate(values)
    return labels, _class_names(schema, column, labels)


def label_warnings(labels: np.ndarray, n_classes: int, column: str) -> list[str]:
    """What looks wrong in the imported labels: far more classes than a classifier can learn from the rows
    (a continuous target, such as a price or a score, read as class indices), or class indices that no row
    has (the model would get an output for each)."""
    counts = np.bincount(labels, minlength=n_classes)
    present = int(np.count_nonzero(counts))
    empty = n_classes - present
    if n_classes > 20 and labels.shape[0] < 5 * present:
        return [f"column '{column}' gives {n_classes} classes for {labels.shape[0]} rows "
                f"({labels.shape[0] / present:.1f} rows per class present): if it is a continuous target, bin it "
                f"into classes before importing it; mmbal classifies"]
    if empty:
        return [f"{empty} of the class indices 0..{n_classes - 1} in column '{column}' have no row: the model gets "
                f"{n_classes} outputs, {empty} of them for classes it never sees; renumber the classes "
                f"0..{present - 1}, or store them as names"]
    return []


def _whole_numbers(values: np.ndarray, file: Path, column: str) -> np.ndarray:
    """Float labels as int64 class indices (pandas writes integer labels as floats where it met a NaN), when
    every value is a whole number; a data error naming the first that is not (a continuous target)."""
    bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
    if bad.size:
        row = int(bad[0])
        raise DataError(f"{file}: column '{column}', row {row} (counting from 0): label {float(values[row])!r} is "
                        f"not a whole number; float labels are read as class indices only when every one is whole "
                        f"(mmbal classifies: bin a continuous target into classes first)")
    return values.astype(np.int64)


def _named_labels(arrays: list[pa.Array]) -> tuple[np.ndarray, list[str]]:
    texts = [pc.cast(a.dictionary_decode() if pa.types.is_dictionary(a.type) else a, pa.string()) for a in arrays]
    classes = sorted(set().union(*(pc.unique(t).to_pylist() for t in texts)))
    codes = [pc.index_in(t, value_set=pa.array(classes, pa.string())).to_numpy(zero_copy_only=False) for t in texts]
    return np.concatenate(codes).astype(np.int64), [str(c) for c in classes]


def _class_names(schema: pa.Schema, column: str, labels: np.ndarray) -> list[str] | None:
    """``datasets``' ClassLabel names (or mmbal's ``classes``) kept up to what the labels and rows allow."""
    meta = schema.metadata or {}
    names = None
    try:
        hf = json.loads(meta.get(b"huggingface", b"{}"))
        feature = ((hf.get("info") or {}).get("features") or {}).get(column) or {}
        names = feature.get("names") if isinstance(feature, dict) else None
        if names is None:
            names = json.loads(meta.get(METADATA_KEY, b"{}")).get("classes")
    except (ValueError, AttributeError):
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return None
    top = int(labels.max()) if labels.size else -1
    if top >= len(names):
        return None  # the names do not cover the labels: number the classes instead
    return names[: max(top + 1, min(len(names), labels.shape[0]))]


# -- splits -----------------------------------------------------------------------------------------
def _splits(parts: list[dict], files: list[Path], root: Path | None,
            columns: _Columns) -> tuple[np.ndarray | None, str]:
    """Split codes of every row and where they came from, or (None, "none")."""
    if columns.split is not None:
        codes = [split_codes_of(p["split"], f, columns.split) for p, f in zip(parts, files)]
        return np.concatenate(codes).astype(np.int8), f"column '{columns.split}'"
    names = file_splits(files, root) if len(files) > 1 or root is not None else None
    if names is None:
        return None, "none"
    return (np.repeat(np.array([SPLIT_NAMES.index(s) for s in names], np.int8), [p["rows"] for p in parts]),
            "file names")


def split_codes_of(arr: pa.Array, file: Path, column: str) -> np.ndarray:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise DataError(f"{file}: column '{column}' has type {arr.type}; a split column holds the split names "
                        f"train, validation (or val) and test")
    synonyms = list(SPLIT_SYNONYMS)
    idx = pc.index_in(pc.utf8_lower(arr), value_set=pa.array(synonyms)).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(np.isnan(idx)) if idx.dtype.kind == "f" else np.array([], int)
    if bad.size:
        value = arr[int(bad[0])].as_py()
        raise DataError(f"{file}: column '{column}', row {int(bad[0])} (counting from 0): split value "
                        f"{'null' if value is None else repr(value)} is not one of {', '.join(synonyms)}")
    return np.array([SPLIT_NAMES.index(SPLIT_SYNONYMS[s]) for s in synonyms], np.int8)[idx.astype(np.int64)]


def _complete_splits(split: np.ndarray, labels: np.ndarray, options: ImportOptions,
                     what: str) -> tuple[np.ndarray, list[str]]:
    """Carve a missing val and/or test split out of train (stratified, seeded); train itself is required."""
    counts = np.bincount(split, minlength=3)
    if counts[0] == 0:
        raise DataError(f"{what} have no train rows (train {counts[0]}, val {counts[1]}, "
                        f"test {counts[2]}); a dataset needs training rows")
    missing = [SPLIT_NAMES[i] for i in (1, 2) if counts[i] == 0]
    if not missing:
        return split, []
    train = np.flatnonzero(split == 0)
    carved = stratified_split(labels[train], options.val_fraction, options.test_fraction, options.seed)
    out = split.copy()
    for code in (1, 2):
        if counts[code] == 0:
            out[train[carved == code]] = code
    after = np.bincount(out, minlength=3)
    if (after == 0).any():
        raise DataError(f"{what}: carving {' and '.join(missing)} out of the {counts[0]} train rows (--val-fraction "
                        f"{options.val_fraction}, --test-fraction {options.test_fraction}) leaves a split empty; "
                        f"use larger fractions or more data")
    return out, missing
