"""Which series each chart tab draws, in which order and colour; the charts' data without markers
(:meth:`~mmbal_cli.tui.model.RunModel.chart` adds the run's event markers)."""

from __future__ import annotations

from typing import Callable

from .chart import PALETTE, ChartData, Series
from .metric_index import MetricIndex

CHART_TABS = (
    ("acc", "Acc"),
    ("loss", "Loss"),
    ("coef", "Coef"),
    ("mi", "MI"),
    ("shapley", "Shapley"),
    ("grad", "Grad"),
    ("method", "Method"),
)
# The prefixes each tab of logged live values draws (``acc``, ``loss`` and ``method`` are built apart).
TAB_PREFIXES = {"coef": ("coef/",), "mi": ("mi/", "cmi/"), "shapley": ("shapley/", "imbalance"), "grad": ("grad/",)}
METHOD_PREFIXES = ("method/", "score/")


def ordered_keys(keys: list[str], prefixes: tuple[str, ...], modalities: list[str]) -> list[str]:
    """Keys with one of ``prefixes``, grouped by prefix, modality order first."""
    order = {m: i for i, m in enumerate(modalities)}
    chosen = []
    for prefix in prefixes:
        mine = [k for k in keys if k.startswith(prefix)]
        mine.sort(key=lambda k: (order.get(k[len(prefix):], len(order)), k))
        chosen.extend(mine)
    return chosen


def series_style(key: str, modalities: list[str]) -> str:
    """Bold for ``.../fused``, the modality's palette colour for ``.../<m>``, else a colour of the key."""
    target = key.rsplit("/", 1)[-1]
    if target == "fused":
        return "bold"
    if target in modalities:
        return PALETTE[modalities.index(target) % len(PALETTE)]
    return PALETTE[(len(modalities) + sum(map(ord, key))) % len(PALETTE)]


def default_accuracy_split(index: MetricIndex) -> str:
    """``val`` once there are two evaluations to draw a line through, ``train`` before."""
    return "val" if len(index.entries("val/acc/fused", "val")) >= 2 else "train"


def line_series(index: MetricIndex, keys: list[str], split: str | None, x_axis: str, modalities: list[str],
                label: Callable[[str], str] = lambda k: k) -> list[Series]:
    """A line per key that has points."""
    out = []
    for key in keys:
        points = index.points(key, split, x_axis)
        if points:
            out.append(Series(label(key), points, series_style(key, modalities)))
    return out


def tab_chart(index: MetricIndex, kind: str, modalities: list[str], x_axis: str, split: str | None) -> ChartData:
    """The series of chart tab ``kind`` (from :data:`CHART_TABS`, except ``method``)."""
    if kind == "acc":
        split = split or default_accuracy_split(index)
        keys = [f"{split}/acc/fused"] + [f"{split}/acc/{m}" for m in modalities]
        series = line_series(index, keys, split, x_axis, modalities, label=lambda k: k.rsplit("/", 1)[-1])
        other = "train" if split == "val" else "val"
        return ChartData(series, [], x_axis, f"no {split} accuracy logged yet", y_bounds=(0.0, 1.0),
                         caption=f"{split} accuracy (s: show {other})")
    if kind == "loss":
        keys = ["train/loss/method", "val/loss/fused"] + [f"val/loss/{m}" for m in modalities]
        return ChartData(line_series(index, keys, None, x_axis, modalities), [], x_axis, "no loss logged yet")
    prefixes = TAB_PREFIXES[kind]
    keys = ordered_keys(index.keys(), prefixes, modalities)
    hint = " or ".join(f"{p}<m>" for p in prefixes if p.endswith("/"))
    return ChartData(line_series(index, keys, None, x_axis, modalities), [], x_axis,
                     f"no {hint} values in this run (method or monitors do not log them)")
