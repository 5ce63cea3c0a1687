"""Typed option dataclasses validated from plain TOML tables, collecting every problem at once.

Config dataclasses live beside the code they configure (nanoGPT style). This module turns a
TOML table into one of them, checking unknown keys (with "did you mean"), types, choices
(``Literal``) and ranges (``opt(..., ge=0)``), and reports *all* problems with their dotted key
paths instead of stopping at the first (torchtune's ``ConfigError``, harlequin's ``Problems``).

Supported field types: ``int`` (64-bit, TOML's range), ``float`` (an int is accepted; TOML's
``inf`` and ``nan`` are not), ``bool``, ``str``, ``Literal[...]``, ``list[X]`` / ``tuple[X, ...]``
of those, ``X | None`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Mapping, get_args, get_origin

from .registry import did_you_mean

_MISSING = dataclasses.MISSING
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1  # TOML's integer range (tomllib itself accepts any size)


def opt(default: Any = _MISSING, *, ge: float | None = None, gt: float | None = None,
        le: float | None = None, lt: float | None = None, help: str = "",
        default_factory: Any = _MISSING) -> Any:
    """A dataclass field with a range and a one-line help, for :func:`build`."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "help": help}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"list of {type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "none"
    if dataclasses.is_dataclass(tp):
        return "table"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    """Check ``value`` against ``tp``; append a problem and return None when it does not fit."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            out = _convert(arg, value, path, trial)
            if not trial:
                return out
        problems.append(f"{path}: expected {type_name(tp)}, got {_show(value)}")
        return None
    if origin is Literal:
        choices = get_args(tp)
        if value in choices and type(value) is type(choices[choices.index(value)]):
            return value
        hint = did_you_mean(str(value), [str(c) for c in choices])
        problems.append(f"{path}: expected one of {', '.join(repr(c) for c in choices)}, got {_show(value)}{hint}")
        return None
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            problems.append(f"{path}: expected {type_name(tp)}, got {_show(value)}")
            return None
        args = [a for a in get_args(tp) if a is not Ellipsis]
        item_tp = args[0] if args else Any
        before = len(problems)
        items = [_convert(item_tp, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        if len(problems) > before:
            return None
        return tuple(items) if origin is tuple else list(items)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            problems.append(f"{path}: expected a table, got {_show(value)}")
            return None
        return build(tp, value, path, problems)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if INT64_MIN <= value <= INT64_MAX:
                return value
            problems.append(f"{path}: expected a 64-bit integer, got {_show(value)}")
            return None
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if isinstance(value, float) or INT64_MIN <= value <= INT64_MAX else math.inf
            if math.isfinite(number):
                return number
            problems.append(f"{path}: expected a finite number, got {_show(value)}")
            return None
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    problems.append(f"{path}: expected {type_name(tp)}, got {_show(value)}")
    return None


def _check_range(f: dataclasses.Field, value: Any, path: str, problems: list[str]) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        values = value if isinstance(value, (list, tuple)) else []
        for i, v in enumerate(values):
            _check_range(f, v, f"{path}[{i}]", problems)
        return
    m = f.metadata
    bad = ((m.get("ge") is not None and not value >= m["ge"]) and f">= {m['ge']}") or \
          ((m.get("gt") is not None and not value > m["gt"]) and f"> {m['gt']}") or \
          ((m.get("le") is not None and not value <= m["le"]) and f"<= {m['le']}") or \
          ((m.get("lt") is not None and not value < m["lt"]) and f"< {m['lt']}")
    if bad:
        problems.append(f"{path}: must be {bad}, got {_show(value)}")


def fields_of(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def build(cls: type, raw: Mapping[str, Any] | None, path: str, problems: list[str],
          ignore: tuple[str, ...] = ()) -> Any:
    """Build ``cls`` from ``raw``; every problem is appended to ``problems`` as ``"path.key: ..."``.

    Returns the instance, or None when there was a problem in this table. Keys in ``ignore`` are
    skipped (they belong to the caller, e.g. ``name`` of a ``[method]`` table).
    """
    raw = dict(raw or {})
    prefix = f"{path}." if path else ""
    known = {f.name: (f, tp) for f, tp in fields_of(cls)}
    before = len(problems)
    for key in raw:
        if key not in known and key not in ignore:
            problems.append(f"{prefix}{key}: unknown key{did_you_mean(key, list(known))}; "
                            f"known: {', '.join(known) or 'none'}")
    kwargs = {}
    for name, (f, tp) in known.items():
        if name in raw:
            value = _convert(tp, raw[name], prefix + name, problems)
            if value is not None:
                _check_range(f, value, prefix + name, problems)
            kwargs[name] = value
        elif f.default is _MISSING and f.default_factory is _MISSING:  # type: ignore[misc]
            problems.append(f"{prefix}{name}: required key is missing ({type_name(tp)})")
    if len(problems) > before:
        return None
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ cross-field checks
        problems.append(f"{path or cls.__name__}: {exc}")
        return None
    return obj


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain JSON/TOML-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def describe(cls: type | None) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) of each option, for ``mmbal methods`` and the docs."""
    if cls is None:
        return []
    rows = []
    for f, tp in fields_of(cls):
        if f.default is not _MISSING:
            default = f.default
        elif f.default_factory is not _MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        rows.append((f.name, type_name(tp), default, f.metadata.get("help", "")))
    return rows
