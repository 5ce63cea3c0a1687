"""``--grid KEY=V1,V2,...``: preset keys a sweep varies, every combination of them x methods x seeds.

Each value is read like a ``--set`` value (TOML, else a plain string); the list is split on its
top-level commas only, so ``--grid data.synthetic.unique=[1.0,0.2],[1.0,0.5]`` has two values. A
key scoped by a method's name (``--grid ogm_ge.alpha=0.1,0.5``) varies that method's members only,
as ``--set`` scopes it. ``seed``, ``method`` and ``method.*`` belong to the sweep and are refused,
and so is a key that ``--set`` also gives (or a table around it). Every problem is reported at once
as one :class:`UsageError` (exit 2); a value the preset does not accept is found when the members'
configs are validated, and named there with its ``--grid`` item.

In a member's run name each key reads ``<short>=<value>`` (``lr=0.0003``, ``fusion=gated``): the
key's last part (more parts when two keys end alike) and the value as parsed, with anything but
letters, digits, ``.``, ``+`` and ``-`` made ``_``. A key whose values cannot all be told apart that
way (or are longer than :data:`LABEL_MAX`) reads ``<short>=v<i>``, ``i`` its value's position in
the list; ``sweep.json`` records the values either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..config_text import toml_value
from ..errors import PresetError, UsageError

LABEL_MAX = 32
_KEY_RE = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")
_UNSAFE = re.compile(r"[^A-Za-z0-9.+\-]+")
_CLOSE = {"[": "]", "{": "}"}


@dataclass(frozen=True)
class Axis:
    """One ``--grid`` key: its values in the given order and how each reads in a run name.

    ``method`` is the method whose members it varies (a scoped key such as ``ogm_ge.alpha``),
    None for a key of every member.
    """

    key: str
    values: tuple
    labels: tuple[str, ...]
    short: str
    method: str | None = None
    texts: tuple[str, ...] = field(default=(), compare=False)  # the values as typed

    @property
    def config_key(self) -> str:
        """The dotted key of a run's config that it sets (``method.alpha`` for ``ogm_ge.alpha``)."""
        return f"method.{self.key.split('.', 1)[1]}" if self.method else self.key

    @property
    def option(self) -> str:
        """A scoped key's option name (``alpha`` for ``ogm_ge.alpha``)."""
        return self.key.split(".", 1)[1]

    def item(self, index: int) -> str:
        """The ``--set`` item of value ``index`` (a key of every member)."""
        return f"{self.key}={toml_value(self.values[index])}"

    def text(self, index: int) -> str:
        """Value ``index`` as the user typed it."""
        return self.texts[index] if index < len(self.texts) else toml_value(self.values[index])

    def name_part(self, index: int) -> str:
        return f"{self.short}={self.labels[index]}"


def split_values(text: str) -> list[str]:
    """``"1,[2,3],{a = 1, b = 2},'x,y'"`` -> the four values, split on commas outside brackets and quotes."""
    parts, current, stack, quote = [], [], [], None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"' and i + 1 < len(text):
                current.append(text[i:i + 2])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in _CLOSE:
            stack.append(_CLOSE[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
        elif ch == "," and not stack:
            parts.append("".join(current).strip())
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    parts.append("".join(current).strip())
    return parts


def value_label(value: Any) -> str:
    """``value`` as it reads in a run name: file-safe, possibly empty (then the caller numbers the values)."""
    text = value if isinstance(value, str) else toml_value(value)
    text = re.sub(r"\.{2,}", ".", _UNSAFE.sub("_", text)).strip("_")
    return text


def _labels(values: list) -> tuple[str, ...]:
    labels = [value_label(v) for v in values]
    if all(labels) and all(len(t) <= LABEL_MAX for t in labels) and len(set(labels)) == len(labels):
        return tuple(labels)
    return tuple(f"v{i}" for i in range(len(values)))


def _co_occur(a: tuple[str, str | None], b: tuple[str, str | None]) -> bool:
    """Whether two keys can both vary one member (a scoped key meets only its own method's keys)."""
    return a[1] is None or b[1] is None or a[1] == b[1]


def _shorts(keys: list[tuple[str, str | None]]) -> list[str]:
    """The shortest tail of each dotted key (the option of a scoped key) that no co-occurring key shares."""
    parts = [k.split(".")[1:] if m else k.split(".") for k, m in keys]
    depth = [1] * len(keys)
    while True:
        shorts = [".".join(p[-d:]) for p, d in zip(parts, depth)]
        clash = {i for i in range(len(keys)) for j in range(len(keys))
                 if i != j and shorts[i] == shorts[j] and _co_occur(keys[i], keys[j]) and depth[i] < len(parts[i])}
        if not clash:
            return shorts
        for i in clash:
            depth[i] += 1


def _overlap(a: str, b: str) -> bool:
    """Whether dotted key ``a`` is ``b`` or a table around it, or the other way round."""
    pa, pb = a.split("."), b.split(".")
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def parse_grid(items: list[str], methods: list[str], sets: list[str] = ()) -> list[Axis]:
    """``--grid`` items -> axes, in the given order; every problem at once as one :class:`UsageError`."""
    from ..config import parse_override

    set_keys = []
    for item in sets:
        try:
            set_keys.append(".".join(parse_override(item)[0]))
        except PresetError:   # reported by --set's own check
            continue
    problems: list[str] = []
    parsed: list[tuple[str, str | None, list, tuple[str, ...]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not _KEY_RE.fullmatch(key):
            problems.append(f"'{item}': expected KEY=V1,V2,... with a dotted preset key, "
                            f"e.g. --grid train.lr=1e-3,3e-4")
            continue
        problem, method = _key_problem(key, methods, set_keys, [p[0] for p in parsed])
        if problem is None:
            problem, values, texts = _values(item, key, raw)
        if problem is not None:
            problems.append(problem)
        else:
            parsed.append((key, method, values, texts))
    if problems:
        many = len(problems) > 1
        raise UsageError(f"--grid: {'; '.join(problems)}" + (" (every problem is listed)" if many else ""))
    shorts = _shorts([(k, m) for k, m, _, _ in parsed])
    return [Axis(k, tuple(v), _labels(v), s, m, t) for (k, m, v, t), s in zip(parsed, shorts)]


def _key_problem(key: str, methods: list[str], set_keys: list[str],
                 earlier: list[str]) -> tuple[str | None, str | None]:
    """(why ``key`` cannot be a grid key or None, the method it is scoped to or None)."""
    from ..config import TOP_KEYS
    from ..methods import METHODS

    keys = key.split(".")
    head, method = keys[0], None
    if head == "method":
        return (f"'{key}': a sweep sets [method] per member; vary a method's option by scoping it with the "
                f"method's name, e.g. --grid ogm_ge.alpha=0.1,0.5 (and methods with --methods)"), None
    if head == "seed":
        return f"'{key}': a sweep sets the seed per member; use --seeds", None
    if head in METHODS and head not in TOP_KEYS:
        if head not in methods:
            return f"'{key}': method '{head}' is not in --methods ({', '.join(methods)})", None
        if len(keys) != 2 or keys[1] == "name":
            return f"'{key}': expected {head}.OPTION=V1,V2,... (the method's name is set by --methods)", None
        method = head
    if key in earlier:
        return f"'{key}': given to --grid more than once; list all its values in one --grid {key}=...", None
    clash = [k for k in set_keys if _overlap(k, key)]
    if clash:
        return (f"'{key}': also given to --set ({', '.join(clash)}); a key is either set for every member "
                f"(--set) or varied (--grid)"), None
    return None, method


def _values(item: str, key: str, raw: str) -> tuple[str | None, list, tuple[str, ...]]:
    """(a problem or None, the parsed values, their texts) of the value list ``raw`` of ``--grid item``."""
    from ..config import parse_override

    texts = tuple(split_values(raw))
    if not raw.strip() or any(not t for t in texts):
        what = "no value" if not raw.strip() else "an empty value"
        return (f"'{item}': {what}; give one or more comma-separated values, e.g. --grid {key}=V1,V2 (commas "
                f"inside [...] or quotes stay in a value)"), [], texts
    values = [parse_override(f"{key}={t}")[1] for t in texts]
    twice = next((t for i, t in enumerate(texts) if any(_same(values[i], v) for v in values[:i])), None)
    if twice is not None:
        return f"'{key}': the value {twice} is given more than once", [], texts
    return None, values, texts


def _same(a: Any, b: Any) -> bool:
    """Whether two parsed values are one value (``1`` and ``1.0`` are; ``true`` and ``1`` are not)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return toml_value(a) == toml_value(b)


def problem_source(problem: str, chosen: list[tuple[Axis, int]]) -> tuple[Axis, int] | None:
    """The ``(axis, value index)`` of a member whose ``--grid`` key ``problem`` (of its config) is about."""
    key = problem.split(":", 1)[0].split(" ", 1)[0]
    return next(((axis, i) for axis, i in chosen if _overlap(key, axis.key)), None)


def with_sources(found: dict[str, dict[str, list[int]]], axes: list[Axis]) -> list[str]:
    """Each distinct problem once, followed by the ``--grid`` values that cause it ({problem: {key: indices}})."""
    by_key = {axis.key: axis for axis in axes}
    out = []
    for problem, sources in found.items():
        hints = []
        for key, indices in sources.items():
            axis = by_key[key]
            if len(indices) == len(axis.values) and len(indices) > 1:
                hints.append(f"every value of --grid {key}")
            else:
                hints.append(f"--grid {key}={','.join(axis.text(i) for i in indices)}")
        if hints:   # the --grid item is the place to fix it, not a --set
            problem = re.sub(r" \(scoped to this method: [^)]*\)", "", problem) + f" (from {'; '.join(hints)})"
        out.append(problem)
    return out
