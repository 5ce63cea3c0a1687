"""Entries that installed packages add to a registry through entry points, loaded when first needed.

A package adds an encoder or a method without editing mmbal by declaring an entry point in its
``pyproject.toml``::

    [project.entry-points."mmbal.encoders"]
    tiny_cnn = "my_pkg.encoders:tiny_cnn"        # a function returning an nn.Module (see encoders/external.py)

    [project.entry-points."mmbal.methods"]
    my_method = "my_pkg.method:MyMethod"         # a Method class decorated with @METHODS.register("my_method", ...)

The entry point's name is the name a preset uses (``encoder = "tiny_cnn"``, ``[method] name =
"my_method"``). Nothing is imported until a preset names something the registry does not hold, or
a listing (``mmbal methods``) asks for every entry. Loading the object imports its module, which
registers it (a decorated class); an object that did not register itself is handed to the
registry's ``adopt`` (the encoders' registry adopts a plain function as an external encoder). A
plugin that fails to import is remembered with its error, which then explains the unknown name
instead of a bare "unknown encoder".
"""

from __future__ import annotations

import sys
from importlib import metadata
from typing import Any, Callable

_FOUND: dict[tuple, list[metadata.EntryPoint]] = {}  # (group, sys.path) -> its entry points: one scan per path


def entry_points(group: str) -> list[metadata.EntryPoint]:
    """The entry points of ``group`` in the installed distributions (sys.path), first of each name kept;
    scanned once per ``sys.path`` (a scan reads every distribution's metadata)."""
    key = (group, tuple(sys.path))
    if key not in _FOUND:
        seen: dict[str, metadata.EntryPoint] = {}
        for ep in metadata.entry_points(group=group):
            seen.setdefault(ep.name, ep)
        _FOUND[key] = list(seen.values())
    return _FOUND[key]


class Plugins:
    """The entry points of one group, loaded into ``registry`` by name on demand."""

    def __init__(self, registry: Any, group: str, adopt: Callable[[str, Any], None] | None):
        self.registry = registry
        self.group = group
        self.adopt = adopt
        self.tried: set[str] = set()
        self.failures: dict[str, str] = {}

    def load(self, name: str) -> None:
        """Load the entry point called ``name`` (once), if one exists."""
        if name in self.tried:
            return
        self.tried.add(name)
        for ep in entry_points(self.group):
            if ep.name == name:
                self._load_one(ep)
                return

    def load_all(self) -> None:
        for ep in entry_points(self.group):
            if ep.name not in self.tried:
                self.tried.add(ep.name)
                self._load_one(ep)

    def failure(self, name: str) -> str | None:
        """Why the entry point ``name`` could not be used, if it was tried and failed."""
        return self.failures.get(name)

    def _load_one(self, ep: metadata.EntryPoint) -> None:
        where = f"the entry point '{ep.name} = {ep.value}' (group {self.group})"
        try:
            obj = ep.load()
        except Exception as exc:  # an ImportError, or anything the plugin's module raises when imported
            self.failures[ep.name] = (f"{self.registry.kind} '{ep.name}' comes from {where}, which failed to load: "
                                      f"{type(exc).__name__}: {exc}")
            return
        if ep.name in self.registry._entries:
            return
        if self.adopt is not None:
            self.adopt(ep.name, obj)
            return
        self.failures[ep.name] = (f"{self.registry.kind} '{ep.name}' comes from {where}, but loading it registered "
                                  f"no {self.registry.kind} of that name (decorate it with the registry's "
                                  f"register(\"{ep.name}\", ...))")
