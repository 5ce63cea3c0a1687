"""A config as text: nested tables as dotted keys, and values written back as TOML.

Shared by the analysis wing (config columns of ``mmbal compare``) and the sweep wing (a member's
``--set method={...}`` override, configs of attempts compared key by key); it imports nothing
from ``engine``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_TOML_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": leaf}``; lists and scalars are leaves."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def toml_value(value: Any) -> str:
    """``value`` (as parsed from TOML) written back as a TOML value; tested by a tomllib round trip."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def toml_key(key: str) -> str:
    return key if _TOML_BARE_KEY.match(key) else toml_value(str(key))
