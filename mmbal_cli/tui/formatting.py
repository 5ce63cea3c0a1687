"""Values read leniently from a run's files, and numbers printed compactly for the dashboard.

A value of the wrong type reads as None rather than raising: the run's files may be damaged or
written by another version, and the dashboard shows what it can.
"""

from __future__ import annotations

import math
from typing import Any


def finite(raw: Any) -> float | None:
    """``raw`` as a float when it is a finite number (not a bool); else None."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    return float(raw) if math.isfinite(raw) else None


def whole(raw: Any) -> int | None:
    """``raw`` when it is an int (not a bool); else None."""
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


def fmt_number(value: float | None) -> str:
    """At most 7 characters, negative values included (the panel's columns are 7 wide): 3 decimals, 1 from
    100 on, else ``1.5e-4`` (the exponent without its padding zero); ``-1e-12`` where one decimal of the
    mantissa would not fit."""
    if value is None or not math.isfinite(value):
        return "-"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e5):
        return _scientific(value)
    text = f"{value:.1f}" if magnitude >= 100 else f"{value:.3f}"
    return text if len(text) <= 7 else _scientific(value)   # -12345.6


def _scientific(value: float) -> str:
    for digits in (1, 0):
        mantissa, exponent = f"{value:.{digits}e}".split("e")
        text = f"{mantissa}e{int(exponent)}"
        if len(text) <= 7:
            break
    return text


def fmt_duration(seconds: float | None) -> str:
    """``3d04h``, ``1h02m``, ``4m05s`` or ``12s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def fmt_size(n: int) -> str:
    """``4 MiB`` below 10 GiB, else ``12.5 GiB``."""
    return f"{n / (1 << 20):.0f} MiB" if n < 10 << 30 else f"{n / (1 << 30):.1f} GiB"
