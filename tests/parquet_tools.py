"""Small Parquet tables in the mmbal data format for the data tests: a good table of two modalities
(``a``: vectors of 3, ``b``: 2 x 2 tensors), integer labels and a split column, changed one column at a
time into a bad one (see docs/data-format.md for the format)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def vec(rows, dtype=pa.float32(), mask=None) -> pa.Array:
    """A fixed-size-list column (a vector modality) of the rows of a 2-D array; ``mask``: null rows."""
    rows = np.asarray(rows)
    flat = pa.array(rows.reshape(-1), type=dtype)
    return pa.FixedSizeListArray.from_arrays(flat, rows.shape[1], mask=None if mask is None else pa.array(mask))


def tensor(rows, dtype=pa.float32(), mask=None) -> pa.Array:
    """A fixed-shape-tensor column of the rows of an n-D array (each row one tensor); ``mask``: null rows."""
    rows = np.asarray(rows)
    storage = vec(rows.reshape(len(rows), -1), dtype, mask)
    return pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(dtype, list(rows.shape[1:])), storage)


def good_columns(n: int, split_cycle: Sequence[str]) -> dict[str, pa.Array]:
    """``n`` good rows: ``a`` and ``b`` drawn from a seeded normal, labels 0, 1, 0, 1, ..., the split
    names of ``split_cycle`` repeated."""
    rng = np.random.default_rng(0)
    return {"a": vec(rng.normal(size=(n, 3))), "b": tensor(rng.normal(size=(n, 2, 2))),
            "label": pa.array(np.arange(n) % 2, pa.int64()),
            "split": pa.array((list(split_cycle) * n)[:n])}


def changed(columns: dict[str, pa.Array], changes: dict[str, pa.Array | None]) -> dict[str, pa.Array]:
    """``columns`` with ``changes``: a column replaced or added, or dropped where the change is None."""
    out = dict(columns)
    for name, column in changes.items():
        if column is None:
            out.pop(name)
        else:
            out[name] = column
    return out


def write_table(path: Path, columns: dict[str, pa.Array], meta: dict | str | bytes | None = None) -> Path:
    """The columns as a Parquet file; ``meta`` (a dict written as JSON, or raw text) as its ``mmbal`` metadata."""
    table = pa.table(columns)
    if meta is not None:
        table = table.replace_schema_metadata({"mmbal": meta if isinstance(meta, (bytes, str)) else json.dumps(meta)})
    pq.write_table(table, path)
    return path
