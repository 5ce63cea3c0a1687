"""The members of a sweep: methods x seeds, seed-major, each with its overrides and validated config.

Every method of seed 0 comes first, so a partial sweep already pairs methods on the same seeds.
``--set KEY=VALUE`` applies to every member, except keys scoped by a method name
(``--set unimodal.modality=a`` is ``method.modality=a`` for the ``unimodal`` members only). Each
member gets ``--set seed=S`` and ``--set method={name = "m", ...}``, a TOML inline table that
*replaces* the preset's ``[method]`` table: options the preset gives its own method are kept for
that method and never leak into another. ``--set method.*`` and ``--set seed=`` are refused (the
sweep owns them); problems name the scoped key (``unimodal.modality``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config_text import toml_value
from ..errors import PresetError, UsageError
from ..registry import did_you_mean
from .layout import member_run_name


@dataclass(frozen=True)
class Member:
    """One (method, seed) of a sweep: its run name, the overrides it runs with and its config."""

    method: str
    seed: int
    run_name: str
    overrides: tuple[str, ...]
    config: dict = field(compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.method} s{self.seed}"


def parse_methods(text: str) -> list[str]:
    """``"joint,ogm_ge"`` -> names checked against the method registry (exit 2 with did-you-mean)."""
    from ..methods import METHODS  # torch: imported only by the functions that plan a sweep

    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise UsageError("--methods: give at least one method, e.g. --methods joint,unimodal")
    known = METHODS.names()
    unknown = [n for n in names if n not in known]
    if unknown:
        parts = [f"'{n}'{did_you_mean(n, known)}" for n in unknown]
        raise UsageError(f"--methods: unknown method {', '.join(parts)}; known: {', '.join(sorted(known))} "
                         f"(`mmbal methods` describes them)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"--methods: {', '.join(twice)} given more than once")
    return names


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) or a mix -> distinct seeds >= 0 in the given order."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match or (match.group(2) is not None and int(match.group(2)) < int(match.group(1))):
            raise UsageError(f"--seeds: '{part}' is not a seed (an integer >= 0) or a range like 0-4; "
                             f"e.g. --seeds 0,1,2")
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        seeds.extend(s for s in range(lo, hi + 1) if s not in seeds)
    return seeds


def split_overrides(sets: list[str], methods: list[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """``--set`` items -> (overrides for every member, {method: {option: value}} scoped ones)."""
    from ..config import TOP_KEYS, parse_override
    from ..methods import METHODS

    general: list[str] = []
    scoped: dict[str, dict[str, Any]] = {m: {} for m in methods}
    problems: list[str] = []
    for item in sets:
        keys, value = parse_override(item)
        head = keys[0]
        if head == "method":
            problems.append(f"'{item}': a sweep sets [method] per member; scope method options by the method's "
                            f"name instead, e.g. --set unimodal.modality=a")
        elif head == "seed":
            problems.append(f"'{item}': a sweep sets the seed per member; use --seeds")
        elif head in METHODS and head not in TOP_KEYS:
            if head not in scoped:
                problems.append(f"'{item}': method '{head}' is not in --methods ({', '.join(methods)})")
            elif len(keys) != 2:
                problems.append(f"'{item}': expected {head}.OPTION=VALUE")
            elif keys[1] == "name":
                problems.append(f"'{item}': the method's name is set by --methods")
            else:
                scoped[head][keys[1]] = value
        else:
            general.append(item)
    if problems:
        raise PresetError("--set", problems)
    return general, {m: o for m, o in scoped.items() if o}


def method_table(preset_method: dict, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The ``[method]`` table of a member: the preset's own options when it is the preset's method."""
    own = preset_method.get("name", "joint") == method
    base = {k: v for k, v in preset_method.items() if k != "name"} if own else {}
    return {"name": method, **base, **options}


def member_overrides(general: list[str], seed: int, table: dict[str, Any]) -> tuple[str, ...]:
    return (*general, f"seed={seed}", f"method={toml_value(table)}")


def build_members(preset: Path, name: str, methods: list[str], seeds: list[int], general: list[str],
                  scoped: dict[str, dict[str, Any]], device: str | None) -> list[Member]:
    """Every member, seed-major, with its config validated; all problems raised as one PresetError."""
    from ..config import load_preset, read_toml

    raw = read_toml(preset)
    preset_method = raw.get("method", {}) if isinstance(raw.get("method", {}), dict) else {}
    device_override = [f'train.device="{device}"'] if device else []
    members, problems = [], []
    for seed in seeds:
        for method in methods:
            overrides = member_overrides(general, seed, method_table(preset_method, method, scoped.get(method, {})))
            try:
                cfg, _ = load_preset(preset, [*overrides, *device_override])
            except PresetError as exc:
                problems.extend(p for p in _scoped_problems(exc.problems, method) if p not in problems)
                continue
            members.append(Member(method, seed, member_run_name(name, method, seed), overrides, cfg.to_dict()))
    if problems:
        raise PresetError(f"{preset} (sweep '{name}')", problems)
    return members


def _scoped_problems(problems: list[str], method: str) -> list[str]:
    """``method.modality: ...`` -> ``unimodal.modality: ... (scoped to this method: --set unimodal.modality=VALUE)``."""
    out = []
    for p in problems:
        if p.startswith("method.") and not p.startswith("method.name"):
            key = p.split(":", 1)[0].removeprefix("method.")
            p = f"{method}.{p.removeprefix('method.')} (scoped to this method: --set {method}.{key}=VALUE)"
        out.append(p)
    return out
