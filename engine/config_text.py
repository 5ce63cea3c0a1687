"""A config as text: nested tables as dotted keys, and values written back as TOML.

Shared by the analysis wing (config columns of ``mmbal compare``) and the sweep wing (a member's
``--set method={...}`` override, configs of attempts compared key by key); it imports nothing
from ``engine``.

It also bounds how deeply a preset may nest (:data:`MAX_NESTING`): ``tomllib`` and ``json`` recurse
once per level, so a value nested thousands deep would end in a ``RecursionError``.
:func:`deep_nesting_in_text` finds such a value in TOML text without parsing it (where the parser
would run out of stack), :func:`too_deep_path` in parsed data (dotted keys nest without brackets).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_TOML_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

MAX_NESTING = 100  # levels of tables, arrays and inline tables a preset may nest (real ones use about 5)
# What the nesting scan looks at: strings (whose brackets do not count), comments, brackets, "=", line ends.
_NESTING_TOKEN = re.compile("|".join((
    r'"""(?:[^\\]|\\.)*?"""',   # multi-line basic string
    r"'''.*?'''",             # multi-line literal string
    r'"(?:[^"\\\n]|\\.)*"',     # basic string
    r"'[^'\n]*'",               # literal string
    r"#[^\n]*",                 # comment
    r"[\[\]{}=\n]",
)), re.S)
_HEADER = re.compile(r"\[\[?\s*([^\]\n]*?)\s*\]")


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


def deep_nesting_in_text(text: str, limit: int = MAX_NESTING) -> tuple[str, int] | None:
    """``(key, line)`` of the first value of TOML ``text`` nested in more than ``limit`` arrays or inline
    tables, else None. Brackets inside strings and comments do not count, nor those of ``[table]`` headers;
    ``key`` is the statement's dotted key under its table header. Linear in the text, without recursion."""
    depth, line, table, key = 0, 1, "", ""
    statement, in_value, in_header = 0, False, False  # statement: where the current top-level line began
    for token in _NESTING_TOKEN.finditer(text):
        t = token.group()
        if t == "\n":
            line += 1
            if depth == 0:
                statement, in_value, in_header = token.end(), False, False
        elif t[0] in "\"'#":
            line += t.count("\n")
        elif in_header:
            continue
        elif t == "=" and depth == 0 and not in_value:
            key, in_value = _spaced_key(text[statement:token.start()]), True
        elif t == "[" and depth == 0 and not in_value:
            header = _HEADER.match(text, token.start())
            table, in_header = _spaced_key(header.group(1) if header else ""), True
        elif t in "[{":
            depth += 1
            if depth > limit:
                return ".".join(part for part in (table, key) if part), line
        elif t in "]}":
            depth = max(0, depth - 1)
    return None


def _spaced_key(raw: str) -> str:
    """A key as written (``a . b`` -> ``a.b``), without the spaces TOML allows around its dots."""
    return re.sub(r"\s*\.\s*", ".", raw.strip())


def too_deep_path(value: Any, limit: int = MAX_NESTING) -> str | None:
    """The dotted path (``a.b[0]``) of the first place in ``value`` more than ``limit`` tables and arrays deep,
    else None; iterative, so any depth can be checked. A long path is shortened to its start and its depth."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > limit:
            return path if len(path) <= 80 else f"{path[:60]}... ({depth} levels)"
        if isinstance(node, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in reversed(list(enumerate(node))))
    return None
