"""Columns of nested lists as fixed-shape float32 tensors, for ``mmbal data import``.

Hugging Face ``datasets`` writes its ``Array2D``/``Array3D`` features (and ``Sequence`` of
sequences) as *variable*-length nested lists, although every row has the same shape. Such a column
becomes an ``(N, *shape)`` array after one vectorised length check per nesting level: all lists of
a level must have the length of the first one (else the message names the row). Fixed-size lists
and fixed-shape tensors (their ``permutation`` honoured) are taken as they are; integer and float
leaves are converted to float32. A null row is a missing modality (``present`` False, values 0);
a null or non-finite element inside a present row is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DataError


@dataclass(frozen=True)
class Where:
    """What a message about one column of one file names."""

    file: Path
    column: str

    def error(self, problem: str, row: int | None = None) -> DataError:
        at = f", row {row} (counting from 0)" if row is not None else ""
        return DataError(f"{self.file}: column '{self.column}'{at}: {problem}")


def _is_list(tp: pa.DataType) -> bool:
    return (pa.types.is_list(tp) or pa.types.is_large_list(tp) or pa.types.is_fixed_size_list(tp)
            or pa.types.is_list_view(tp) or pa.types.is_large_list_view(tp))


def _storage_type(tp: pa.DataType) -> pa.DataType:
    return tp.storage_type if isinstance(tp, pa.BaseExtensionType) else tp


def numeric_leaf(tp: pa.DataType) -> pa.DataType | None:
    """The leaf type of a (nested) list or tensor type when it is integer or float, else None."""
    depth = 0
    if isinstance(tp, pa.FixedShapeTensorType):
        tp, depth = tp.value_type, 1
    tp = _storage_type(tp)
    while _is_list(tp):
        tp, depth = _storage_type(tp.value_type), depth + 1
    if depth == 0:
        return None
    return tp if (pa.types.is_integer(tp) or pa.types.is_floating(tp)) else None


def is_tensor_like(tp: pa.DataType) -> bool:
    """A column that ``to_tensor`` can turn into a fixed-shape float tensor (if its lengths agree)."""
    return isinstance(tp, pa.FixedShapeTensorType) or numeric_leaf(tp) is not None


def to_tensor(column: pa.ChunkedArray | pa.Array, where: Where) -> tuple[np.ndarray, np.ndarray]:
    """``(values (N, *shape) float32, present (N,) bool)`` of a tensor-like column (see the module doc)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(arr.type, pa.FixedShapeTensorType):
        return _fixed_shape_tensor(arr, where)
    if isinstance(arr, pa.ExtensionArray):  # e.g. datasets' Array2DExtensionType when datasets is imported
        arr = arr.storage
    n = len(arr)
    present = ~pc.is_null(arr).to_numpy(zero_copy_only=False) if arr.null_count else np.ones(n, bool)
    rows = np.flatnonzero(present)
    level = arr.filter(pa.array(present)) if arr.null_count else arr
    shape: list[int] = []
    while _is_list(level.type):
        if isinstance(level, pa.ExtensionArray):
            level = level.storage
        d = _uniform_length(level, shape, rows, where)
        shape.append(d)
        level = level.flatten()
        if isinstance(level, pa.ExtensionArray):
            level = level.storage
    flat = _leaf_values(level, shape, rows, where)
    data = np.zeros((n, *shape), np.float32)
    data[present] = flat.reshape(len(rows), *shape)
    return data, present


def _uniform_length(level: pa.Array, outer: list[int], rows: np.ndarray, where: Where) -> int:
    """The one length of every list of this nesting level; the first list of another length is refused."""
    per_row = int(np.prod(outer)) if outer else 1
    if level.null_count:
        inner = int(np.flatnonzero(pc.is_null(level).to_numpy(zero_copy_only=False))[0])
        raise where.error(f"holds a null list inside the row (at depth {len(outer) + 1}); write a missing "
                          f"modality as a null value for the whole row instead", int(rows[inner // per_row]))
    if len(level) == 0:
        return 0 if not outer else outer[-1]
    if pa.types.is_fixed_size_list(level.type):
        return level.type.list_size
    lengths = pc.list_value_length(level).to_numpy(zero_copy_only=False)
    d = int(lengths[0])
    bad = np.flatnonzero(lengths != d)
    if bad.size:
        i = int(bad[0])
        dims = "x".join(map(str, outer + [d]))
        raise where.error(f"a list at depth {len(outer) + 1} has {int(lengths[i])} values where the first row's "
                          f"have {d} (shape {dims}); a modality needs the same shape in every row, so pad, crop "
                          f"or resize the data first", int(rows[i // per_row]))
    if d == 0:
        raise where.error(f"holds empty lists (at depth {len(outer) + 1}); a modality needs at least one value "
                          f"per row", int(rows[0]))
    return d


def _leaf_values(leaves: pa.Array, shape: list[int], rows: np.ndarray, where: Where) -> np.ndarray:
    per_row = int(np.prod(shape)) if shape else 1
    tp = leaves.type
    if not (pa.types.is_integer(tp) or pa.types.is_floating(tp)):
        raise where.error(f"holds {tp} values; a modality needs numbers (integers or floats)")
    if leaves.null_count:
        inner = int(np.flatnonzero(pc.is_null(leaves).to_numpy(zero_copy_only=False))[0])
        raise where.error("holds a null element inside the row; write a missing modality as a null value for the "
                          "whole row instead", int(rows[inner // per_row]))
    flat = pc.cast(leaves, pa.float32(), safe=False).to_numpy(zero_copy_only=False)
    finite = np.isfinite(flat)
    if not finite.all():
        raise where.error("holds a NaN or infinite element (after conversion to float32)",
                          int(rows[int(np.flatnonzero(~finite)[0]) // per_row]))
    return flat


def _fixed_shape_tensor(arr: pa.ExtensionArray, where: Where) -> tuple[np.ndarray, np.ndarray]:
    tp = arr.type
    n = len(arr)
    storage = arr.storage
    present = ~pc.is_null(storage).to_numpy(zero_copy_only=False) if storage.null_count else np.ones(n, bool)
    rows = np.flatnonzero(present)
    kept = storage.filter(pa.array(present)) if storage.null_count else storage
    shape = list(tp.shape)
    flat = _leaf_values(kept.flatten(), shape, rows, where)
    physical = flat.reshape(len(rows), *shape)
    perm = tp.permutation
    logical = physical.transpose(0, *[1 + p for p in perm]) if perm else physical
    data = np.zeros((n, *logical.shape[1:]), np.float32)
    data[present] = logical
    return data, present
