"""A JSON-able summary of a dataset file, for ``mmbal data inspect FILE``.

The dataset is read and checked by :func:`engine.data.parquet.read_dataset`, so bad data raises
the same :class:`~engine.errors.DataError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .parquet import RawDataset, dataset_files, read_schema, read_dataset
from .split import SPLIT_NAMES


def _modality_summary(raw: RawDataset, name: str, arrow_type: str) -> dict:
    info = raw.modalities[name]
    values = raw.features[name]
    present = raw.present[name]
    flat = values[present].reshape(-1).astype(np.float64)
    stats = ({"mean": float(flat.mean()), "std": float(flat.std()), "min": float(flat.min()),
              "max": float(flat.max())} if flat.size else {"mean": None, "std": None, "min": None, "max": None})
    described = (raw.metadata.get("modalities") or {}).get(info.column) or {}
    made_of = described.get("columns") if isinstance(described, dict) else None
    return {"name": name, "column": info.column, "arrow_type": arrow_type, "shape": list(info.shape), "kind": info.kind,
            "missing": int((~present).sum()), **stats,
            "source_columns": list(made_of) if isinstance(made_of, list) else None}


def inspect_dataset(path: str | Path) -> dict:
    """Summary of a dataset as plain JSON-able data.

    Keys: ``file``, ``name``, ``rows``, ``splits`` ({train, val, test} counts, or None without a
    split column), ``n_classes``, ``classes``, ``class_counts`` (name -> rows), ``modalities`` (a
    list, in modality order, of {name, column, arrow_type, shape, kind, missing, mean, std, min,
    max, source_columns}; the statistics are over present values and None when every row is missing;
    ``source_columns``: the flat table's columns ``mmbal data import`` made it of, or None),
    ``source``, ``license``, ``label_column`` (that table's label column, or None).
    """
    raw = read_dataset(path)
    schema = read_schema(dataset_files(path)[0])
    counts = np.bincount(raw.labels, minlength=len(raw.classes))
    splits = None
    if raw.split is not None:
        split_counts = np.bincount(raw.split, minlength=3)
        splits = {name: int(split_counts[i]) for i, name in enumerate(SPLIT_NAMES)}
    return {
        "file": str(path),
        "name": raw.name,
        "rows": raw.n_rows,
        "splits": splits,
        "n_classes": len(raw.classes),
        "classes": list(raw.classes),
        "class_counts": {c: int(n) for c, n in zip(raw.classes, counts)},
        "modalities": [_modality_summary(raw, m, str(schema.field(raw.modalities[m].column).type))
                       for m in raw.modalities],
        "source": raw.metadata.get("source", ""),
        "license": raw.metadata.get("license", ""),
        "label_column": raw.metadata.get("label_column"),
    }
