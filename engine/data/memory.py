"""Resident or streamed: the data's size estimated from metadata, the memory budget, and the choice.

The resident size is known before any row is read: rows (from the Parquet footers) times the
float32 elements of every modality, plus the label, presence flag and split index of each row.
``data.mode = "auto"`` keeps the data resident when that fits ``data.memory_budget`` and streams
it otherwise; ``"resident"`` over the budget is refused before anything is allocated. The budget
``"auto"`` is half of the memory free for the data: on a CUDA device the free GPU memory, capped by
the host's ``MemAvailable`` (the resident path reads through host memory), on the CPU
``MemAvailable`` from ``/proc/meminfo``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch

from ..errors import DataError
from .config import DataConfig, parse_size

LABEL_BYTES = 8    # int64 label
INDEX_BYTES = 8    # int64 row index in its split
FLOAT_BYTES = 4    # float32 features


@dataclass(frozen=True)
class Placement:
    """Where the data live for a run and why: recorded in ``run.json`` and the metrics header."""

    mode: str             # resident | stream
    estimate_bytes: int   # resident size estimated from the metadata
    budget_bytes: int     # data.memory_budget in bytes
    chosen_by: str        # auto (size vs budget) | preset (data.mode) | run (the mode a resumed run started with)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        how = {"auto": "chosen automatically", "preset": "set by data.mode", "run": "as when the run started"}
        rel = "<=" if self.estimate_bytes <= self.budget_bytes else ">"
        return (f"{self.mode} ({how[self.chosen_by]}: {format_bytes(self.estimate_bytes)} resident {rel} "
                f"budget {format_bytes(self.budget_bytes)})")


def format_bytes(n: int) -> str:
    """``n`` bytes in binary units with three significant digits, e.g. ``1.25 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{n} B"


def row_bytes(shapes: list[tuple[int, ...]]) -> int:
    """Bytes one resident row takes: float32 features of every modality, label, presence flags, split index."""
    return sum(FLOAT_BYTES * math.prod(s) for s in shapes) + LABEL_BYTES + len(shapes) + INDEX_BYTES


def resident_estimate(n_rows: int, shapes: list[tuple[int, ...]]) -> int:
    """Bytes of the resident tensors of ``n_rows`` rows with modalities of ``shapes``."""
    return int(n_rows) * row_bytes(shapes)


def host_available_bytes() -> int:
    """``MemAvailable`` of ``/proc/meminfo``; elsewhere the free physical pages (``sysconf``)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        raise DataError("cannot tell how much memory is available on this machine; set data.memory_budget to a "
                        "size such as \"4GiB\"") from None


def available_bytes(device: torch.device) -> int:
    """Memory free for the data on ``device`` (see the module docstring)."""
    host = host_available_bytes()
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return min(int(free), host)
    return host


def memory_budget(cfg: DataConfig, device: torch.device) -> int:
    """``data.memory_budget`` in bytes; ``auto`` is half of :func:`available_bytes`."""
    if cfg.memory_budget == "auto":
        return available_bytes(torch.device(device)) // 2
    return parse_size(cfg.memory_budget, "data.memory_budget")


def choose_placement(cfg: DataConfig, estimate: int, budget: int, source: str, forced: str | None = None) -> Placement:
    """Resident or stream for data of resident size ``estimate`` (``forced``: a resumed run's mode).

    Refuses ``resident`` over the budget with a :class:`DataError` naming ``source`` and the fix.
    """
    if forced is not None:
        mode, by = forced, "run"
    elif cfg.mode == "auto":
        mode, by = ("resident" if estimate <= budget else "stream"), "auto"
    else:
        mode, by = cfg.mode, "preset"
    if mode == "stream" and cfg.source == "synthetic":
        mode = "resident"
    if mode == "resident" and estimate > budget:
        why = {"auto": "", "preset": ' (data.mode = "resident")', "run": " (the run started with resident data)"}[by]
        if by == "run":  # data.mode is locked on resume; the budget is not
            fix = "give "
        elif cfg.source == "parquet":
            fix = 'set data.mode = "stream" to read it from disk during training, or give '
        else:
            fix = "use fewer samples, or give "
        raise DataError(f"{source}: keeping the dataset resident{why} needs about {format_bytes(estimate)} "
                        f"({estimate} bytes, estimated from the metadata), more than the memory budget of "
                        f"{format_bytes(budget)} (data.memory_budget = {cfg.memory_budget!r}); {fix}a larger "
                        f"data.memory_budget")
    return Placement(mode=mode, estimate_bytes=int(estimate), budget_bytes=int(budget), chosen_by=by)
