"""A tiny registry for pluggable parts (encoders, fusions, methods), in the manner of timm.

Each entry is a builder plus the dataclass of its options, so a preset's table can be validated
against the entry's schema before anything is built::

    ENCODERS = Registry("encoder")

    @ENCODERS.register("mlp", config=MLPConfig, help="multi-layer perceptron for vectors")
    def build_mlp(cfg: MLPConfig, input_shape: tuple[int, ...]) -> nn.Module: ...
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    builder: T
    config: type | None
    help: str


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """" (did you mean 'x'?)" when one of ``choices`` is close to ``word``, else ""."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """Name -> (builder, options dataclass, one-line help)."""

    def __init__(self, kind: str, group: str | None = None, adopt: Callable[[str, Any], None] | None = None):
        """``group``: the entry-point group (e.g. ``mmbal.encoders``) where installed packages add entries;
        a name not registered here is looked up there, and listing loads them all (:mod:`.plugins`).
        ``adopt(name, obj)`` registers a loaded object that did not register itself (None: it must)."""
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self.plugins = Plugins(self, group, adopt) if group else None

    def register(self, name: str, *, config: type | None = None, help: str = "") -> Callable[[T], T]:
        def deco(builder: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            doc = help or (getattr(builder, "__doc__", None) or "").strip().splitlines()[0:1]
            text = doc if isinstance(doc, str) else (doc[0] if doc else "")
            self._entries[name] = Entry(name, builder, config, text)
            return builder

        return deco

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name not in self._entries and self.plugins is not None:
            self.plugins.load(name)
        return name in self._entries

    def names(self) -> list[str]:
        if self.plugins is not None:
            self.plugins.load_all()
        return list(self._entries)

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries and self.plugins is not None:
            self.plugins.load(name)
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise KeyError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; known: {known}"
            ) from None

    def get(self, name: str) -> T:
        return self.entry(name).builder

    def entries(self) -> list[Entry[T]]:
        if self.plugins is not None:
            self.plugins.load_all()
        return list(self._entries.values())

    def unknown_message(self, name: Any) -> str:
        """Why ``name`` names no entry (a preset may hold any TOML value there, e.g. a list)."""
        known = ", ".join(sorted(self.names()))
        if not isinstance(name, str):
            article = "an" if self.kind[:1] in "aeiou" else "a"
            return f"expected the name of {article} {self.kind} (a string), got {name!r}; known: {known}"
        failed = self.plugins.failure(name) if self.plugins is not None else None
        if failed:
            return failed
        return f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; known: {known}"


from .plugins import Plugins  # noqa: E402  (plugins.py does not import this module)
