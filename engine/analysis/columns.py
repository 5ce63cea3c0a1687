"""The metric columns of a comparison: which keys, their short headers and which way is better.

Defaults: fused test accuracy and macro-F1, each modality's own test accuracy, ``imbalance`` and
``shapley/<m>`` (dropped when no run has them), time per epoch and peak memory. "Better" is max
for accuracy/F1, min for loss, imbalance, time and memory; Shapley values and unknown keys have
none.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from ..registry import did_you_mean
from .load import COST_KEYS, RunRecord, summary_keys


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    better: str | None  # "max" | "min" | None
    cost: bool = False


def better_of(key: str) -> str | None:
    if key in COST_KEYS or key.endswith("imbalance") or "/loss/" in f"/{key}/":
        return "min"
    parts = key.split("/")
    if any(p in ("acc", "f1") for p in parts[:-1]) or parts[0] in ("acc", "f1"):
        return "max"
    return None


def header_of(key: str) -> str:
    """Short column titles for the default keys (test split implied); other keys as they are."""
    if key == "time_per_epoch_s":
        return "s/epoch"
    if key == "peak_memory_bytes":
        return "peak mem"
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "test" and parts[1] in ("acc", "f1"):
        return parts[1] if parts[2] == "fused" else f"{parts[1]}:{parts[2]}"
    if len(parts) == 2 and parts[0] == "shapley":
        return f"shapley:{parts[1]}"
    return key


def column_of(key: str) -> Column:
    return Column(key, header_of(key), better_of(key), key in COST_KEYS)


def all_modalities(records: list[RunRecord]) -> list[str]:
    seen: list[str] = []
    for r in records:
        seen += [m for m in r.modalities if m not in seen]
    return seen


def default_metric_keys(records: list[RunRecord]) -> list[str]:
    mods = all_modalities(records)
    optional = ["imbalance", *(f"shapley/{m}" for m in mods)]
    present = [k for k in optional if any(r.value(k) is not None for r in records)]
    return ["test/acc/fused", "test/f1/fused", *(f"test/acc/{m}" for m in mods), *present, *COST_KEYS]


def select_metric_keys(records: list[RunRecord], wanted: list[str] | None, warnings: list[str]) -> list[str]:
    """``wanted`` keys or glob patterns (``test/acc/*``) against the finished runs' keys."""
    if not wanted:
        return default_metric_keys(records)
    available: list[str] = []
    for r in records:
        if r.finished and r.summary:
            available += [k for k in summary_keys(r.summary) if k not in available]
    keys: list[str] = []
    for item in wanted:
        if any(ch in item for ch in "*?["):
            matched = [k for k in available if fnmatch.fnmatchcase(k, item)]
            if not matched:
                warnings.append(f"--metrics: no run has a metric matching '{item}'")
            keys += [k for k in matched if k not in keys]
        else:
            if not any(r.value(item) is not None for r in records):
                warnings.append(f"--metrics: no finished run has '{item}'{did_you_mean(item, available)}")
            if item not in keys:
                keys.append(item)
    return keys
