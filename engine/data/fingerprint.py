"""A run's data, identified cheaply: recorded when the run starts, compared by ``mmbal resume``.

A resume that trains on other data than the run started with mixes two experiments without a
word (other rows, another test set) or fails deep inside ``load_state_dict`` (other shapes). The
fingerprint lets the resume refuse such a change before it touches any file of the run.

What it holds (JSON, stored as ``data_fingerprint`` in ``run.json``):

* Parquet data: the dataset's path, its schema (column name -> Arrow type), its row count, and per
  file its name, size, modification time, rows and the SHA-256 of its footer. The footer is the
  file's metadata: schema, row groups, every column chunk's offsets, sizes and statistics (min,
  max, null count), so data rewritten with other values changes it. Reading it costs a few
  kilobytes per file, however large the data.
* Synthetic data: the generator's configuration (the data are a function of it).
* From the data loaded at the start: rows per split and the class count (for the message).

The identity compared is everything but the modification times: a file touched or copied with
its content unchanged is the same data, and the time only helps to say what changed.
"""

from __future__ import annotations

import hashlib
import os
import struct
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import DataError
from .memory import format_bytes
from .parquet import dataset_files, open_dataset, read_index_columns, read_schema
from .split import SPLIT_NAMES, resplit_train_val, stratified_split

FINGERPRINT_VERSION = 1
PARQUET_MAGIC = b"PAR1"
TAIL_BYTES = 8  # a Parquet file ends with its footer's length (4 bytes, little-endian) and the magic


def data_fingerprint(config: dict, data=None) -> dict:
    """The fingerprint of the data of ``config`` (a run's configuration as in ``config.json``).

    ``data`` (the batch source loaded from it) adds its rows per split and class count. Reads
    Parquet footers only; a dataset that is gone or unreadable is a :class:`DataError`.
    """
    section = config["data"]
    if section["source"] == "synthetic":
        found = {"source": "synthetic", "generator": section["synthetic"]}
    else:
        path = dataset_path(section["path"], config["base_dir"])
        found = {"source": "parquet", "path": str(path), **parquet_identity(path)}
    found = {"version": FINGERPRINT_VERSION, **found}
    return {**found, **loaded_counts(data)} if data is not None else found


def loaded_counts(data) -> dict:
    """Rows per split and the class count of loaded data (a ``TensorData`` or ``StreamData``)."""
    return {"split_counts": {s: int(data.split_size(s)) for s in SPLIT_NAMES}, "classes": int(data.n_classes)}


def dataset_path(path: str, base_dir: str) -> Path:
    """``data.path`` as the run reads it: relative paths are taken from ``base_dir`` (the preset's folder)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(os.path.normpath(Path(base_dir) / p))


def parquet_identity(path: Path) -> dict:
    """Schema, rows and per-file identity of the Parquet dataset at ``path`` (footers only)."""
    files = dataset_files(path)
    schema = read_schema(files[0])
    described = [file_identity(f) for f in files]
    return {"schema": {field.name: str(field.type) for field in schema},
            "rows": sum(f["rows"] for f in described), "files": described}


def file_identity(file: Path) -> dict:
    """Name, size, modification time (UTC), rows and footer hash of one Parquet file."""
    try:
        stat = file.stat()
        footer = read_footer(file, stat.st_size)
    except OSError as exc:
        raise DataError(f"{file}: cannot be read ({exc.strerror or exc})") from None
    return {"name": file.name, "size": stat.st_size, "modified": _utc(stat.st_mtime), "rows": footer_rows(file),
            "footer_sha256": hashlib.sha256(footer).hexdigest()}


def read_footer(file: Path, size: int) -> bytes:
    """The footer bytes of a Parquet file (its metadata, statistics included)."""
    with open(file, "rb") as f:
        if size < 2 * len(PARQUET_MAGIC) + TAIL_BYTES:
            raise _not_parquet(file)
        f.seek(size - TAIL_BYTES)
        tail = f.read(TAIL_BYTES)
        length = struct.unpack("<I", tail[:4])[0]
        if tail[4:] != PARQUET_MAGIC or length > size - TAIL_BYTES - len(PARQUET_MAGIC):
            raise _not_parquet(file)
        f.seek(size - TAIL_BYTES - length)
        return f.read(length)


def footer_rows(file: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        return int(pq.read_metadata(file).num_rows)
    except (pa.ArrowException, OSError):
        raise _not_parquet(file) from None


def _not_parquet(file: Path) -> DataError:
    return DataError(f"{file}: cannot be read as a Parquet file (no Parquet footer at its end); a dataset is a "
                     f"Parquet file or a directory of Parquet files (see docs/data-format.md)")


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- comparing ------------------------------------------------------------------------------------
def data_changes(recorded: dict, current: dict) -> list[str]:
    """What differs between the recorded fingerprint and the current one, one phrase each; empty when
    the data are the same (modification times alone do not count)."""
    if recorded.get("source") != current.get("source") or recorded.get("path") != current.get("path"):
        return [f"the dataset was {_where(recorded)}, it is now {_where(current)}"]
    if current["source"] == "synthetic":
        return _generator_changes(recorded.get("generator") or {}, current["generator"])
    changes = _schema_changes(recorded.get("schema") or {}, current["schema"])
    if recorded.get("rows") != current["rows"]:
        changes.append(f"rows {recorded.get('rows')} -> {current['rows']}")
    return changes + _file_changes(recorded.get("files") or [], current["files"])


def _where(fp: dict) -> str:
    return "generated (synthetic)" if fp.get("source") == "synthetic" else f"read from {fp.get('path')}"


def _generator_changes(old: dict, new: dict) -> list[str]:
    keys = list(old) + [k for k in new if k not in old]
    return [f"data.synthetic.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def _schema_changes(old: dict, new: dict) -> list[str]:
    changes = [f"column '{c}' removed" for c in old if c not in new]
    changes += [f"column '{c}' added ({new[c]})" for c in new if c not in old]
    changes += [f"column '{c}' is {new[c]} instead of {old[c]}" for c in old if c in new and old[c] != new[c]]
    return changes


def _file_changes(old: list[dict], new: list[dict]) -> list[str]:
    before, after = {f["name"]: f for f in old}, {f["name"]: f for f in new}
    changes = [f"file {n} removed" for n in before if n not in after]
    changes += [f"file {n} added" for n in after if n not in before]
    for name in (n for n in before if n in after):
        a, b = before[name], after[name]
        if (a.get("size"), a.get("footer_sha256")) == (b["size"], b["footer_sha256"]):
            continue
        size = (f"size {_size(a.get('size', 0), b['size'])} -> {_size(b['size'], a.get('size', 0))}"
                if a.get("size") != b["size"] else "same size, other footer statistics")
        changes.append(f"{name} rewritten ({size}; modified {a.get('modified')} -> {b['modified']})")
    return changes


def _size(n: int, other: int) -> str:
    """``n`` bytes in binary units, or exactly when ``other`` would read the same."""
    return format_bytes(n) if format_bytes(n) != format_bytes(other) else f"{n} B"


def split_changes(recorded: dict, config: dict) -> list[str]:
    """Rows per split and the class count of the data now, against those recorded, for a refusal's message.

    Reads the label (and split) column only, and only when a change was found; a dataset that can no
    longer be read this way gives no phrase.
    """
    old = recorded.get("split_counts")
    if not old or recorded.get("source") != "parquet":
        return []
    try:
        counts, classes = current_split_counts(config)
    except (DataError, KeyError, TypeError, ValueError):  # only the message's detail: the change itself is reported
        return []
    changes = [f"{s} rows {old.get(s)} -> {counts[s]}" for s in SPLIT_NAMES if old.get(s) != counts[s]]
    if recorded.get("classes") is not None and recorded["classes"] != classes:
        changes.append(f"classes {recorded['classes']} -> {classes}")
    return changes


def current_split_counts(config: dict) -> tuple[dict[str, int], int]:
    """Rows per split (the data's split column, else the run's stratified split) and classes of the Parquet data."""
    section = config["data"]
    columns = {m: spec["column"] for m, spec in (config.get("modalities") or {}).items()} or None
    layout = open_dataset(dataset_path(section["path"], config["base_dir"]), columns, section["label_column"])
    labels, classes, split = read_index_columns(layout)
    if split is None:
        seed = section["split_seed"] if section.get("split_seed") is not None else config["seed"]
        split = stratified_split(labels, section["val_fraction"], section["test_fraction"], seed)
    if section.get("resplit_seed") is not None:
        split = resplit_train_val(labels, split, section["resplit_seed"])
    counts = np.bincount(split, minlength=len(SPLIT_NAMES))
    return {s: int(counts[i]) for i, s in enumerate(SPLIT_NAMES)}, len(classes)
