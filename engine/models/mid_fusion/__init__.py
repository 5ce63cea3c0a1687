"""Mid-fusion registry: modules that exchange information between the encoders, between their stages.

A preset asks for one with ``[model] mid_fusion = "<name>"`` and gives its options in
``[model.mid_fusion_options]``; every mid-fusion's options dataclass has ``stages``: the stages
after which a copy of the module sits (0 = each encoder's first stage, negative counts from the
last: -1 = after the last stage). A stage index is read in each encoder's own list of stages
(:mod:`engine.models.encoders.stages`), so with encoders of different depths ``-1`` is after each
one's last stage; the indices must give increasing stages for every modality.

Every builder has the signature ``build_x(cfg: XConfig, shapes: dict[str, StageShape]) -> nn.Module``
(one module per placement, sized from each modality's stage output there; the dict's order is the
modality order) and the module's ``forward(h: dict[str, Tensor]) -> dict[str, Tensor]`` returns
the intermediate tensors with the same shapes. A builder raises ``ValueError`` naming the option
for options that do not fit the modalities.

Importing this package imports every mid-fusion module, so all of them are registered.
"""

from __future__ import annotations

from typing import Any

from ...registry import Registry
from ...schema import build, to_dict

MID_FUSIONS = Registry("mid-fusion")

NONE = "none"   # ``mid_fusion = "none"``: the same as leaving the key out
NAME_KEY, OPTIONS_KEY = "mid_fusion", "mid_fusion_options"
KEYS = (NAME_KEY, OPTIONS_KEY)   # the keys of the [model] table that belong to the mid-fusion


def resolve_table(model_table: dict, problems: list[str]) -> tuple[str | None, Any]:
    """(name, options dataclass) from a preset's ``[model]`` table; (None, None) when there is none.

    Problems are appended with their key paths (``model.mid_fusion``, ``model.mid_fusion_options.*``).
    """
    name = model_table.get(NAME_KEY, NONE)
    options = model_table.get(OPTIONS_KEY)
    if name == NONE:
        if options is not None:
            problems.append(f"model.{OPTIONS_KEY}: given, but model.{NAME_KEY} names no mid-fusion "
                            f"(known: {', '.join(MID_FUSIONS.names())})")
        return None, None
    if name not in MID_FUSIONS:
        problems.append(f"model.{NAME_KEY}: {MID_FUSIONS.unknown_message(name)}, or \"{NONE}\"")
        return None, None
    if options is not None and not isinstance(options, dict):
        problems.append(f"model.{OPTIONS_KEY}: expected a table ([model.{OPTIONS_KEY}]), got {options!r}")
        return None, None
    return name, build(MID_FUSIONS.entry(name).config, options or {}, f"model.{OPTIONS_KEY}", problems)


def preset_entries(name: str | None, options: Any) -> dict:
    """The ``[model]`` keys of a resolved mid-fusion for ``RunConfig.to_dict``: none without one (so the
    config, and its hash, of a model without mid-fusion is what it was before mid-fusion existed)."""
    return {} if name is None else {NAME_KEY: name, OPTIONS_KEY: to_dict(options)}


def check_stages(stages: list[int]) -> None:
    """For the options dataclasses' ``__post_init__``: at least one stage, none twice."""
    if not stages:
        raise ValueError("stages must list at least one stage, got []")
    if len(set(stages)) != len(stages):
        raise ValueError(f"stages lists a stage twice: {list(stages)}")


def placements(stages: list[int], depths: dict[str, int], key: str, problems: list[str]) -> list[dict[str, int]]:
    """For each listed stage, the stage index (0-based, non-negative) of every modality after which
    the module sits; problems (stage out of range, stages not increasing for a modality) name ``key``."""
    out: list[dict[str, int]] = []
    found: list[str] = []
    for s in stages:
        for m, n in depths.items():
            if not -n <= s < n:
                found.append(f"{key}: stage {s} is out of range for modality '{m}', whose encoder has {n} "
                             f"stage{'s' if n != 1 else ''} (0 to {n - 1}, or -{n} to -1)")
        out.append({m: s % n if n else s for m, n in depths.items()})
    if not found:
        for m in depths:
            chosen = [p[m] for p in out]
            if any(b <= a for a, b in zip(chosen, chosen[1:])):
                found.append(f"{key}: {list(stages)} must give increasing stages for every modality, "
                             f"but gives {chosen} for modality '{m}'")
    problems.extend(found)
    return out


from . import mmtm  # noqa: E402,F401  (registers the mid-fusions)

__all__ = ["KEYS", "MID_FUSIONS", "check_stages", "placements", "preset_entries", "resolve_table"]
