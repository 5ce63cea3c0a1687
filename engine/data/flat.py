"""Flat tables: one scalar numeric column per feature (as pandas or a CSV writes them), and the vector
modalities their column prefixes suggest (``mmbal data import ... -m gene='gene_*'``)."""

from __future__ import annotations

import re

import pyarrow as pa


def scalar_columns(schema: pa.Schema, reserved: tuple) -> list[str]:
    """The integer and float columns of ``schema`` other than ``reserved`` (label, split), in order."""
    return [f.name for f in schema if f.name not in reserved
            and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]


def group_example(scalars: list[str]) -> str:
    """``-m gene='gene_*' -m prot='prot_*'`` from the prefixes that several columns share (up to three),
    else two columns by name."""
    prefixes: dict[str, int] = {}
    for name in scalars:
        head = re.split(r"[_.\-]", name, maxsplit=1)[0]
        prefixes[head] = prefixes.get(head, 0) + 1
    shared = [p for p, n in prefixes.items() if n > 1 and len(prefixes) > 1]
    return " ".join(f"-m {p}='{p}_*'" for p in shared[:3]) or f"-m a={scalars[0]} -m b={scalars[1]}"


def listed(names: list[str], most: int = 6) -> str:
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


LABEL_NAMES = ("label", "labels", "target", "class", "y", "outcome")   # what tables commonly call their label


def likely_label(schema: pa.Schema) -> str | None:
    """The column a flat table most likely holds its label in (scikit-learn's frames: ``target``), by name."""
    by_name = {f.name.lower(): f.name for f in schema}
    return next((by_name[n] for n in LABEL_NAMES if n in by_name), None)


def flat_table_hint(schema: pa.Schema, reserved: tuple, source: str = "FILE") -> str | None:
    """For a table of scalar feature columns, how ``mmbal data import`` makes modalities of them (from
    ``source``; the label column guessed by its name, else LABEL); None when it has fewer than two."""
    label = likely_label(schema)
    scalars = scalar_columns(schema, (*reserved, label))
    if len(scalars) < 2:
        return None
    return (f"it has {len(scalars)} scalar numeric columns ({listed(scalars)}), one feature each: "
            f"`mmbal data import {source} OUT.parquet --label {label or 'LABEL'} {group_example(scalars)}` groups "
            f"them into vector modalities")
