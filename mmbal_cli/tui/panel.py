"""The per-modality panel: one row per modality (and ``fused``) of the latest values, the weakest
modality flagged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# (column header, metric key with {m} for the modality)
PANEL_COLUMNS = (
    ("train acc", "train/acc/{m}"),
    ("val acc", "val/acc/{m}"),
    ("mi", "mi/{m}"),
    ("cmi", "cmi/{m}"),
    ("shapley", "shapley/{m}"),
    ("coef", "coef/{m}"),
    ("grad", "grad/{m}"),
)
FUSED_COLUMNS = ("train acc", "val acc")


@dataclass(frozen=True)
class ModalityRow:
    name: str
    values: dict[str, float | None]
    weakest: bool = False


def panel_rows(modalities: list[str], value: Callable[[str], float | None]) -> list[ModalityRow]:
    """One row per modality plus ``fused`` (``value(key)``: a metric's latest value); the weakest
    modality (lowest val accuracy, else lowest train accuracy) is flagged when at least two
    modalities have a value."""
    rows = [ModalityRow(m, {label: value(key.format(m=m)) for label, key in PANEL_COLUMNS}) for m in modalities]
    lowest = weakest(rows)
    rows = [ModalityRow(r.name, r.values, r.name == lowest) for r in rows]
    fused = {label: value(key.format(m="fused")) if label in FUSED_COLUMNS else None for label, key in PANEL_COLUMNS}
    rows.append(ModalityRow("fused", fused))
    return rows


def weakest(rows: list[ModalityRow]) -> str | None:
    """The modality with the lowest val accuracy (else train accuracy), when every row has one
    and there are at least two."""
    for column in ("val acc", "train acc"):
        scored = [(r.values[column], r.name) for r in rows if r.values.get(column) is not None]
        if len(scored) >= 2 and len(scored) == len(rows):
            return min(scored)[1]
    return None
