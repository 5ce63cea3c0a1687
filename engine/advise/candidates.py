"""The candidates of an advice: a method at its defaults, or with one of its declared sensitive options
changed (``tune`` in its registration, :class:`engine.methods.info.MethodInfo`), or ``unimodal`` on
one modality (the diagnosis and, when the fused model does not beat the best modality alone, the
choice's second reference).

A candidate's label is the middle of its runs' names, as a sweep names its members:
``ogm_ge``, ``ogm_ge-alpha=0.8``, ``unimodal-modality=gene`` (run ``<advice>-r0-ogm_ge-alpha=0.8-s1``),
so the advice record, the report, ``mmbal ls`` and the dashboard all say the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config_text import toml_value
from ..sweep.grid import Axis, parse_grid


@dataclass(frozen=True)
class Candidate:
    """A method and the options it runs with beside the preset's (``((option, value), ...)``)."""

    method: str
    options: tuple[tuple[str, Any], ...] = ()

    def axes(self) -> list[Axis]:
        """The ``--grid`` axes (one value each) that give the members these options and their names."""
        items = [f"{self.method}.{option}={toml_value(value)}" for option, value in self.options]
        return parse_grid(items, [self.method], []) if items else []

    @property
    def label(self) -> str:
        return "-".join((self.method, *(axis.name_part(0) for axis in self.axes())))


def unimodal(modality: str) -> Candidate:
    return Candidate("unimodal", (("modality", modality),))


def expand(methods: list[str], tune: bool) -> list[Candidate]:
    """Each method at its defaults, then (``tune``) once per value its registration declares sensitive."""
    from ..methods import METHODS
    out: list[Candidate] = []
    for method in methods:
        out.append(Candidate(method))
        if tune:
            info = getattr(METHODS.entry(method), "info", None)
            for variant in (info.variants() if info is not None else []):
                out.append(Candidate(method, tuple(variant.items())))
    return out
