"""Where a sweep lives and what its members are called.

``<runs-dir>/sweeps/<sweep>/sweep.json`` holds the plan and the members' attempts, ``logs/`` one
log per member (the member process's output, appended per attempt). Member ``(m, s)`` is the
ordinary run named ``<sweep>-<m>-s<s>`` in ``<runs-dir>``; in a ``--grid`` sweep its grid values
come before the seed: ``<sweep>-<m>-lr=0.0003-fusion=gated-s<s>`` (see :mod:`engine.sweep.grid`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import UsageError

SWEEPS_DIR = "sweeps"
SWEEP_JSON = "sweep.json"
LOGS_DIR = "logs"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def sweep_dir(runs_dir: str | os.PathLike, name: str) -> Path:
    return Path(runs_dir) / SWEEPS_DIR / name


def member_log(home: Path, run_name: str) -> Path:
    """The log of one member in the sweep directory ``home``."""
    return home / LOGS_DIR / f"{run_name}.log"


def member_run_name(sweep: str, method: str, seed: int, grid: tuple[str, ...] = ()) -> str:
    """``grid``: the member's ``key=value`` parts, in the order of the ``--grid`` options."""
    return "-".join((sweep, method, *grid, f"s{seed}"))


def check_sweep_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise UsageError(f"--name: '{name}' is not a usable sweep name: use letters, digits, '.', '_' and '-' "
                         f"(starting with a letter or digit)")
    return name
