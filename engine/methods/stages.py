"""Stages inside one run, and the models a stage keeps for the later ones.

Several methods train in stages within one run: UMT and UME train unimodal teachers or members
first, MSLR's "keep" variant, mikd's unimodal / distillation / multitask schedule. :class:`Stages`
fixes the stage boundaries in absolute epochs when the run starts and is part of the method's
state, so a run resumed with more epochs keeps the boundaries it started with and only the last,
open-ended stage grows (a finished run extended to N epochs then equals a run planned for N
whenever the last stage is the open one).

A model a stage produces and later stages need (a teacher, an ensemble member) is kept in the run
directory through ``ctx.kept`` (:class:`KeptModels`): ``ctx.kept.save(name, state_dict)`` writes
``checkpoints/kept/<name>.pt`` atomically with a checksum (rank 0 only) and ``ctx.kept.load(name)``
reads it back, e.g. in the method's ``load_state_dict`` on resume. The method's own state then only
records which models exist; checkpoints stay small and a resume across a stage boundary finds the
teacher on disk. Outside a run (tests, ``mmbal bench``) the models are kept in memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

import torch

KEPT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class Stage:
    """A named stage of ``epochs`` epochs; ``epochs=None`` for the last, open-ended stage."""

    name: str
    epochs: int | None = None


class Stages:
    """A method's stages in absolute epochs: ``at(epoch)`` is the stage that epoch belongs to."""

    def __init__(self, stages: list[Stage]):
        if not stages:
            raise ValueError("a method needs at least one stage")
        if any(s.epochs is None or s.epochs < 1 for s in stages[:-1]):
            raise ValueError("every stage but the last needs a whole number of epochs >= 1")
        self.stages = list(stages)
        ends, total = [], 0
        for s in stages[:-1]:
            total += s.epochs
            ends.append(total)
        self.starts = [0] + ends

    def index(self, epoch: int) -> int:
        """The index of the stage epoch ``epoch`` (0-based) belongs to."""
        return max(i for i, start in enumerate(self.starts) if start <= epoch)

    def at(self, epoch: int) -> Stage:
        return self.stages[self.index(epoch)]

    def begins(self, epoch: int) -> bool:
        """Whether a stage begins at ``epoch``."""
        return epoch in self.starts

    def start_events(self, epoch: int) -> list[dict]:
        """The ``stage`` event for ``on_epoch_start`` when a stage begins at ``epoch``, else []."""
        if not self.begins(epoch):
            return []
        i = self.index(epoch)
        return [{"name": "stage", "stage": self.stages[i].name, "index": i}]

    def state_dict(self) -> dict:
        return {"names": [s.name for s in self.stages], "epochs": [s.epochs for s in self.stages]}

    @classmethod
    def from_state(cls, state: dict) -> "Stages":
        return cls([Stage(n, e) for n, e in zip(state["names"], state["epochs"])])


class KeptModels(Protocol):
    """Where a stage keeps the models later stages need (``ctx.kept``)."""

    def save(self, name: str, state: dict) -> None: ...
    def load(self, name: str) -> dict: ...
    def __contains__(self, name: object) -> bool: ...


def check_kept_name(name: str) -> str:
    if not isinstance(name, str) or not KEPT_NAME.match(name):
        raise ValueError(f"a kept model's name must be letters, digits, '_', '.' or '-' (at most 100), "
                         f"starting with a letter or digit; got {name!r}")
    return name


def clone_state(obj: Any) -> Any:
    """A deep copy of a state dict's tensors (state dicts hold references to live tensors)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_state(v) for v in obj)
    return obj


class MemoryKept:
    """Kept models in memory (outside a run directory): copies, so later training does not change them."""

    def __init__(self):
        self._models: dict[str, dict] = {}

    def save(self, name: str, state: dict) -> None:
        self._models[check_kept_name(name)] = clone_state(state)

    def load(self, name: str) -> dict:
        if name not in self._models:
            raise KeyError(f"no kept model '{name}'")
        return self._models[name]

    def __contains__(self, name: object) -> bool:
        return name in self._models
