"""Writing datasets in the mmbal Parquet format (``docs/data-format.md``), atomically.

Vectors become ``fixed_size_list<float32>[d]``; samples with two or more dimensions become
Arrow's canonical ``arrow.fixed_shape_tensor`` extension. The ``mmbal`` schema metadata holds the
name, class names, per-modality kind and shape, source and licence. The file is written to a
temporary file in the target's folder and moved into place with ``os.replace``, so a reader never
sees a half-written dataset; the file gets the mode a plain ``open`` would give it (0644 under
umask 022), not the temporary file's 0600.

Row groups hold about :data:`ROW_GROUP_BYTES` of features each (at least one row, at most
:data:`MAX_GROUP_ROWS`): a streamed run reads a row group at a time, so pyarrow's default of
1,048,576 rows per group would make it hold the whole file (issue #21, item 5).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .parquet import KINDS, METADATA_KEY, SPLIT_COLUMN, SPLIT_NAMES, guess_kind

ROW_GROUP_BYTES = 8 * 2 ** 20   # features (float32) per row group
MAX_GROUP_ROWS = 65_536


def group_rows(features: dict[str, np.ndarray]) -> int:
    """Rows per row group: as many as :data:`ROW_GROUP_BYTES` of float32 features hold, 1 to :data:`MAX_GROUP_ROWS`."""
    row = sum(4 * int(np.prod(v.shape[1:])) for v in features.values()) + 8   # + the label
    return max(1, min(MAX_GROUP_ROWS, ROW_GROUP_BYTES // row))


def current_umask() -> int:
    """The process's umask (``/proc/self/status`` where it says, else set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _modality_array(values: np.ndarray, present: np.ndarray | None) -> pa.Array:
    shape = tuple(values.shape[1:])
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    mask = None if present is None or present.all() else pa.array(~np.asarray(present, bool))
    storage = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(shape)), mask=mask)
    if len(shape) == 1:
        return storage
    return pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.float32(), list(shape)), storage)


def _split_array(split: np.ndarray) -> pa.Array:
    split = np.asarray(split)
    if split.dtype.kind in "iu":
        if split.size and (split.min() < 0 or split.max() > 2):
            raise ValueError("split codes must be 0 (train), 1 (val) or 2 (test)")
        return pa.array(np.asarray(SPLIT_NAMES, dtype=object)[split.astype(np.int64)], pa.string())
    bad = ~np.isin(split.astype(str), SPLIT_NAMES)
    if bad.any():
        raise ValueError(f"split value {split[np.flatnonzero(bad)[0]]!r} is not train, val or test")
    return pa.array(split.astype(str), pa.string())


def write_dataset(path: str | Path, features: dict[str, np.ndarray], labels: np.ndarray,
                  split: np.ndarray | None, classes: list[str] | None, name: str,
                  kinds: dict[str, str] | None = None, source: str = "", license: str = "",
                  present: dict[str, np.ndarray] | None = None, row_group_rows: int | None = None,
                  source_columns: dict[str, list[str]] | None = None, label_column: str | None = None) -> None:
    """Write one Parquet file in the mmbal format.

    ``features``: modality name -> (N, *shape) array (any float dtype, stored as float32).
    ``split``: codes 0/1/2 or the strings train/val/test, or None for no split column.
    ``kinds``: modality -> kind hint (default guessed from the shape). ``present``: modality ->
    (N,) bool, False writes a null (missing modality) for that row. ``row_group_rows``: rows per row
    group (default :func:`group_rows`). ``source_columns``: modality -> the scalar columns of a flat
    table it was made of, and ``label_column``: that table's label column, recorded in the metadata
    (``columns`` of the modality, ``label_column``) so that new rows of such a table can be predicted.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    kinds = dict(kinds or {})
    present = dict(present or {})
    for m, values in features.items():
        if values.shape[0] != n:
            raise ValueError(f"modality '{m}' has {values.shape[0]} rows but there are {n} labels")
        kind = kinds.get(m) or guess_kind(tuple(values.shape[1:]))
        if kind not in KINDS:
            raise ValueError(f"kind of modality '{m}' must be one of {KINDS}, got {kind!r}")
        kinds[m] = kind
    columns = {m: _modality_array(v, present.get(m)) for m, v in features.items()}
    columns["label"] = pa.array(labels.astype(np.int64))
    if split is not None:
        columns[SPLIT_COLUMN] = _split_array(split)
    meta = {"format": 1, "name": name}
    if classes is not None:
        meta["classes"] = [str(c) for c in classes]
    meta["modalities"] = {m: {"kind": kinds[m], "shape": list(v.shape[1:])} for m, v in features.items()}
    for m, names in (source_columns or {}).items():
        meta["modalities"][m]["columns"] = list(names)
    if source_columns and label_column:
        meta["label_column"] = label_column
    if source:
        meta["source"] = source
    if license:
        meta["license"] = license
    table = pa.table(columns).replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        pq.write_table(table, tmp, row_group_size=row_group_rows or group_rows(features))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
