"""The members of a sweep: methods x seeds (x ``--grid`` values), seed-major, each with its overrides
and validated config.

Every member of seed 0 comes first, so a partial sweep already pairs methods on the same seeds;
within a seed, each combination of the grid's values has every method in turn (a key scoped by a
method, ``--grid ogm_ge.alpha=...``, multiplies only that method's members).
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

from itertools import product

from ..config_text import flatten, toml_value
from ..errors import PresetError, UsageError
from ..registry import did_you_mean
from .grid import Axis, problem_source, with_sources
from .layout import member_run_name


@dataclass(frozen=True)
class Member:
    """One (method, seed[, grid values]) of a sweep: its run name, the overrides it runs with and its config.

    ``grid``: ``(--grid key, value)`` pairs; ``labels``: how each reads in the run name (``lr=0.0003``).
    """

    method: str
    seed: int
    run_name: str
    overrides: tuple[str, ...]
    config: dict = field(compare=False, repr=False)
    grid: tuple[tuple[str, Any], ...] = ()
    labels: tuple[str, ...] = ()
    config_grid: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        return " ".join((self.method, *self.labels, f"s{self.seed}"))


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


def parse_gpus(text: str, visible: int) -> list[str]:
    """``--gpus 0,1`` or ``0-3`` -> distinct GPU indices below ``visible`` (the GPUs this machine shows)."""
    gpus: list[str] = []
    for part in (p.strip() for p in str(text).split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match or (match.group(2) is not None and int(match.group(2)) < int(match.group(1))):
            raise UsageError(f"--gpus: '{part}' is not a GPU index (an integer >= 0) or a range like 0-3; "
                             f"e.g. --gpus 0,1")
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        for gpu in range(lo, hi + 1):
            if str(gpu) in gpus:
                raise UsageError(f"--gpus: GPU {gpu} is given twice; to run several members on one GPU "
                                 f"raise --jobs (the slots are dealt to the GPUs round-robin)")
            gpus.append(str(gpu))
    missing = [g for g in gpus if int(g) >= visible]
    if missing:
        shown = f"GPUs 0-{visible - 1}" if visible > 1 else ("GPU 0" if visible == 1 else "no CUDA GPU")
        raise UsageError(f"--gpus: GPU{'s' * (len(missing) > 1)} {', '.join(missing)} not found: this machine "
                         f"shows {shown} "
                         f"(torch.cuda.device_count() = {visible}, after CUDA_VISIBLE_DEVICES)")
    return gpus


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


def grid_points(grid: list[Axis], methods: list[str]) -> list[tuple[str, list[tuple[Axis, int]]]]:
    """The members of one seed: (method, [(axis, value index), ...] in ``--grid`` order), each
    combination of the keys of every member with every method in turn (a scoped key: its method's)."""
    order = {axis.key: i for i, axis in enumerate(grid)}
    common = [a for a in grid if a.method is None]
    out = []
    for point in product(*(range(len(a.values)) for a in common)):
        for method in methods:
            own = [a for a in grid if a.method == method]
            for own_point in product(*(range(len(a.values)) for a in own)):
                chosen = [*zip(common, point), *zip(own, own_point)]
                out.append((method, sorted(chosen, key=lambda c: order[c[0].key])))
    return out


def build_members(preset: Path, name: str, methods: list[str], seeds: list[int], general: list[str],
                  scoped: dict[str, dict[str, Any]], device: str | None, grid: list[Axis] = ()) -> list[Member]:
    """Every member, seed-major, with its config validated; all problems raised as one PresetError
    (a problem with a ``--grid`` key once, naming the values that cause it)."""
    from ..config import command_line_paths, load_preset, read_toml

    raw = read_toml(preset)
    preset_method = raw.get("method", {}) if isinstance(raw.get("method", {}), dict) else {}
    device_override = [f'train.device="{device}"'] if device else []
    members: list[Member] = []
    found: dict[str, dict[str, list[int]]] = {}   # problem -> {grid key: the indices of the values causing it}
    for seed in seeds:
        for method, chosen in grid_points(list(grid), methods):
            own = {a.option: a.values[i] for a, i in chosen if a.method}
            table = method_table(preset_method, method, {**scoped.get(method, {}), **own})
            items = command_line_paths([a.item(i) for a, i in chosen if not a.method])
            overrides = member_overrides([*general, *items], seed, table)
            try:
                cfg, _ = load_preset(preset, [*overrides, *device_override])
            except PresetError as exc:
                for p in _scoped_problems(exc.problems, method):
                    sources, source = found.setdefault(p, {}), problem_source(p, chosen)
                    if source is not None and source[1] not in sources.setdefault(source[0].key, []):
                        sources[source[0].key].append(source[1])
                continue
            labels = tuple(a.name_part(i) for a, i in chosen)
            config = cfg.to_dict()
            config_grid = {k: v for a, _ in chosen for k, v in flatten(config).items()
                           if k == a.config_key or k.startswith(a.config_key + ".")}
            members.append(Member(method, seed, member_run_name(name, method, seed, labels), overrides, config,
                                  tuple((a.key, a.values[i]) for a, i in chosen), labels, config_grid))
    if found:
        raise PresetError(f"{preset} (sweep '{name}')", with_sources(found, list(grid)))
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
