"""Resident or streamed: the data's size and peak estimated from metadata, the memory budget, and the choice.

The resident size is known before any row is read: rows (from the Parquet footers) times the
float32 elements of every modality, plus the label, presence flag and split index of each row.
Loading takes more than that at its peak (:func:`resident_peak`, measured with the process's peak
RSS in ``tests/test_memory_budget.py``): Arrow's buffers of the file (pages read ahead, the decoded
columns, what its allocator keeps of them), the numpy copy of each column, float64 standardisation
statistics over the largest modality and the standardised copy (also the host side of a CUDA
device's copy); that peak is what ``data.mode = "auto"`` compares with ``data.memory_budget``:
resident when it fits, streamed otherwise; ``"resident"`` over the budget is refused before anything
is allocated. The budget ``"auto"`` is half of the memory free for the data: on a CUDA device the
free GPU memory, capped by the memory available on the host (the resident path reads through host
memory), on the CPU the memory available on the host. The host's available memory is the smaller
of ``MemAvailable`` (``/proc/meminfo``) and what the process's control group still allows (cgroup v2
``memory.max``, v1 ``memory.limit_in_bytes``, minus the group's usage without its reclaimable page
cache, over the group and its ancestors): a SLURM job's ``--mem`` or a container's limit, which the
kernel enforces by killing the process.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import DataError
from .config import DataConfig, parse_size

LABEL_BYTES = 8    # int64 label
INDEX_BYTES = 8    # int64 row index in its split
FLOAT_BYTES = 4    # float32 features

# the peak of loading resident data, in multiples of sizes known from the metadata (see resident_peak)
ARROW_COPIES = 3            # the file's pages read ahead, the decoded columns, what Arrow's allocator keeps
ARROW_GROUP_COPIES = 2      # decompression and decoding buffers of the largest row group
NUMPY_COPIES = 2            # each column copied out of Arrow, then its standardised copy
STANDARDIZE_EXTRA = 3       # float64 train rows and their deviations (4 x float32) less the copy not yet made

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
CGROUP_UNLIMITED = 1 << 62  # cgroup v1 writes "no limit" as a number near 2**63


@dataclass(frozen=True)
class Placement:
    """Where the data live for a run and why: recorded in ``run.json`` and the metrics header."""

    mode: str             # resident | stream
    estimate_bytes: int   # peak memory of loading the data resident, estimated from the metadata
    budget_bytes: int     # data.memory_budget in bytes
    chosen_by: str        # auto (size vs budget) | preset (data.mode) | run (the mode a resumed run started with)
    resident_bytes: int = 0   # size of the resident tensors once loaded

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        how = {"auto": "auto", "preset": "data.mode", "run": "resumed"}
        over = "over " if self.estimate_bytes > self.budget_bytes else ""
        size = f", {format_bytes(self.resident_bytes)} resident" if self.resident_bytes else ""
        return (f"{self.mode} ({how[self.chosen_by]}: {format_bytes(self.estimate_bytes)} to load{size}; "
                f"{over}budget {format_bytes(self.budget_bytes)})")


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


def resident_peak(n_rows: int, shapes: list[tuple[int, ...]], largest_group_rows: int) -> int:
    """Peak bytes of loading ``n_rows`` rows resident from Parquet (row groups of at most
    ``largest_group_rows`` rows): Arrow's copies of the whole table and of the largest row group, the
    numpy copy and the standardised copy of every column, and the float64 statistics of the largest
    modality (see the module docstring; measured in ``tests/test_memory_budget.py``)."""
    size = resident_estimate(n_rows, shapes)
    group = resident_estimate(largest_group_rows, shapes)
    largest = max((FLOAT_BYTES * math.prod(s) for s in shapes), default=0) * int(n_rows)
    return (ARROW_COPIES + NUMPY_COPIES) * size + ARROW_GROUP_COPIES * group + STANDARDIZE_EXTRA * largest


def generated_peak(n_rows: int, shapes: list[tuple[int, ...]], generating: int) -> int:
    """Peak bytes of generated data made resident: the generator's own peak (``generating``), or the
    features, their standardised copy and the float64 statistics of the largest modality, whichever is more."""
    largest = max((FLOAT_BYTES * math.prod(s) for s in shapes), default=0) * int(n_rows)
    return max(generating, NUMPY_COPIES * resident_estimate(n_rows, shapes) + STANDARDIZE_EXTRA * largest)


def _meminfo_available() -> int:
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


def _read_number(path: Path) -> int | None:
    """The integer in a cgroup file; None when it is missing, unreadable or says ``max`` (no limit)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit():
        return None
    value = int(text)
    return None if value >= CGROUP_UNLIMITED else value


def _stat_value(path: Path, keys: tuple[str, ...]) -> int:
    """The first of ``keys`` found in a cgroup ``memory.stat`` file (0 when none is)."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return 0
    found = dict(line.split(None, 1) for line in lines if " " in line)
    for key in keys:
        if found.get(key, "").strip().isdigit():
            return int(found[key])
    return 0


def _own_cgroups(proc: Path) -> dict[str, str]:
    """Controller -> the process's cgroup path, from ``/proc/self/cgroup`` ("" for cgroup v2's unified line)."""
    try:
        lines = proc.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    groups: dict[str, str] = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                groups.setdefault(controller, parts[2])
    return groups


def _group_and_ancestors(mount: Path, path: str) -> list[Path]:
    """The directories of a cgroup and of its ancestors up to the mount; the mount alone when the path is
    not under it (a container's cgroup namespace mounts its own group as the root)."""
    own = mount / path.strip("/") if path.strip("/") else mount
    if not own.is_dir():
        return [mount]
    chain = [own]
    while chain[-1] != mount and mount in chain[-1].parents:
        chain.append(chain[-1].parent)
    return chain


def cgroup_available_bytes(root: Path | None = None, proc: Path | None = None) -> int | None:
    """Memory the process's control group still allows, or None when no limit applies.

    For the group and each ancestor with a limit: the limit less the usage without the inactive page
    cache (which the kernel reclaims before it kills); the smallest over them. cgroup v2
    (``memory.max``, ``memory.current``) when ``root`` is a unified hierarchy, else v1's memory
    controller (``memory.limit_in_bytes``, ``memory.usage_in_bytes``)."""
    root = CGROUP_ROOT if root is None else root
    groups = _own_cgroups(PROC_SELF_CGROUP if proc is None else proc)
    if (root / "cgroup.controllers").is_file():
        mount, path, files = root, groups.get("", "/"), ("memory.max", "memory.current", ("inactive_file",))
    elif (root / "memory").is_dir():
        mount, path = root / "memory", groups.get("memory", "/")
        files = ("memory.limit_in_bytes", "memory.usage_in_bytes", ("total_inactive_file", "inactive_file"))
    else:
        return None
    free = []
    for group in _group_and_ancestors(mount, path):
        limit = _read_number(group / files[0])
        if limit is None:
            continue
        used = _read_number(group / files[1]) or 0
        cache = _stat_value(group / "memory.stat", files[2])
        free.append(max(limit - max(used - cache, 0), 0))
    return min(free) if free else None


def host_available_bytes() -> int:
    """Memory available to this process on the host: ``MemAvailable``, capped by what its control group
    (a container, a SLURM job's ``--mem``) still allows (:func:`cgroup_available_bytes`)."""
    host = _meminfo_available()
    group = cgroup_available_bytes()
    return host if group is None else min(host, group)


def device_available_bytes(device: torch.device) -> int:
    """Memory free on ``device``: the free GPU memory of a CUDA device, else :func:`host_available_bytes`."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return host_available_bytes()


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


def choose_placement(cfg: DataConfig, estimate: int, budget: int, source: str, forced: str | None = None,
                     resident: int = 0) -> Placement:
    """Resident or stream for data whose loading peaks at ``estimate`` bytes and which take ``resident``
    bytes once loaded (``forced``: a resumed run's mode).

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
        size = f", {format_bytes(resident)} once loaded" if resident else ""
        raise DataError(f"{source}: keeping the dataset resident{why} needs about {format_bytes(estimate)} "
                        f"({estimate} bytes at the peak of loading it{size}, estimated from the metadata), more "
                        f"than the memory budget of "
                        f"{format_bytes(budget)} (data.memory_budget = {cfg.memory_budget!r}); {fix}a larger "
                        f"data.memory_budget")
    return Placement(mode=mode, estimate_bytes=int(estimate), budget_bytes=int(budget), chosen_by=by,
                     resident_bytes=int(resident))
