"""What a run's live quantities (``coef/<m>``, ``score/<m>``, ``method/...``) mean, from the
registration of the run's method (:class:`engine.methods.MethodInfo`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache


@lru_cache(maxsize=None)
def method_info(name: str):
    """The registration (:class:`engine.methods.MethodInfo`) of method ``name``; None when this
    mmbal registers no such method (a run of another version). The first call imports the methods,
    and with them torch (about a second): the dashboard makes it in its reading worker
    (:meth:`~mmbal_cli.tui.reader.RunReader.read` itself reads only the run's files)."""
    from engine.methods import METHODS

    return METHODS.entry(name).info if name in METHODS else None


def method_name(info: dict | None, config: dict | None) -> str | None:
    """The run's method name: ``[method] name`` of its config.json, else run.json's ``method``."""
    method = (config or {}).get("method")
    name = method.get("name") if isinstance(method, dict) else None
    name = name if isinstance(name, str) else (info or {}).get("method")
    return name if isinstance(name, str) and name else None


@dataclass(frozen=True)
class LiveMeaning:
    """What one live quantity means for the run's method: the registration's ``pattern`` it matches
    (``score/<m>``) and its ``text``; ``known`` False when the registration does not describe it
    (``pattern`` is then the key itself and ``text`` says why)."""

    pattern: str
    text: str
    known: bool = True

    def caption(self) -> str:
        return f"{self.pattern}: {self.text}"

    def label(self, key: str) -> str:
        """What ``key`` puts in the pattern's placeholder (``a`` for ``score/a`` of ``score/<m>``);
        "" for a pattern without one."""
        if "<" not in self.pattern or ">" not in self.pattern:
            return ""
        head, tail = self.pattern.split("<", 1)[0], self.pattern.split(">", 1)[1]
        return key[len(head):len(key) - len(tail)]


@dataclass(frozen=True)
class LiveGroup:
    """The live quantities of one pattern with their latest values, for ``--once``."""

    meaning: LiveMeaning
    values: list[tuple[str, float | None]]


def meaning_of(key: str, info, method: str) -> LiveMeaning | None:
    """What ``key`` (``coef/a``, ``score/a``, ``method/J_a``) means under registration ``info`` of
    ``method``; None when the method is unknown (``"?"``)."""
    if info is None:
        return None if method == "?" else LiveMeaning(key, f"no description: method '{method}' is not "
                                                          "registered in this mmbal", known=False)
    for pattern, text in info.live.items():
        if dataclasses.replace(info, live={pattern: text}).meaning(key) == text:
            return LiveMeaning(pattern, text)
    return LiveMeaning(key, f"not described by {method}'s registration", known=False)


def group_by_meaning(values: list[tuple[str, float | None]], meanings: list[LiveMeaning | None],
                     info) -> list[LiveGroup]:
    """``(key, value)`` pairs grouped by the pattern their meaning matches, in the registration's
    order (``info.live``), undescribed keys last."""
    groups: dict[str, tuple[LiveMeaning, list[tuple[str, float | None]]]] = {}
    for (key, value), meaning in zip(values, meanings):
        meaning = meaning or LiveMeaning(key, "", known=False)
        groups.setdefault(meaning.pattern, (meaning, []))[1].append((key, value))
    order = list(info.live) if info is not None else []
    ranked = sorted(groups.values(), key=lambda g: order.index(g[0].pattern) if g[0].known else len(order))
    return [LiveGroup(meaning, values) for meaning, values in ranked]
