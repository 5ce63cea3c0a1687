"""An encoder's starting weights and which of them train: ``init`` and ``freeze`` of ``[modalities.<m>]``.

``init = "encoder.pt"`` loads the encoder's weights from a file (relative paths from the preset's
folder) with ``torch.load(weights_only=True)``, so no code can run from it. The file holds the
encoder's state dict, as ``torch.save(encoder.state_dict(), path)`` writes it, or a dict with it under
``"state_dict"``; an mmbal checkpoint (``checkpoints/best.pt`` of another run) gives the encoder of the
same modality (its ``model`` entries ``encoders.<m>.*``). Every key must match in name and shape: a
missing, unexpected or differently shaped key is a preset problem that names them.

``freeze`` chooses parameters that do not train:

* ``true``: the whole encoder (``false``, the default: none);
* an integer N: the encoder's first N stages (:mod:`.stages`; mlp, conv, resnet18, transformer);
* a list of names: ``"stage<i>"`` for stage i, or a parameter-name prefix (``"embed"``,
  ``"backbone.embeddings"``, ``"backbone.encoder.layer.0"``): every parameter whose name is it or starts
  with it and a dot.

A frozen parameter gets ``requires_grad = False``: no gradient, and it is left out of the optimiser
(no momentum or Adam state), of ``MultimodalModel.encoder_parameters`` and so of every method that
reads, scales or clips encoder gradients (OGM, AGM, PMR, ...: they modulate the parameters that still
train). A BatchNorm whose parameters are all frozen also keeps its running statistics (it stays in
eval mode while the model trains), as a frozen backbone is meant to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from . import EncoderProblem

SHOWN = 6  # keys named in a message, at most


def read_state(path: str, modality: str) -> dict:
    """The encoder's state dict from ``path`` (see the module docstring for the forms accepted)."""
    import torch

    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EncoderProblem(f"init: the file {path} does not exist") from None
    except Exception as exc:  # not a torch file, damaged, or holding Python objects (refused unrun)
        raise EncoderProblem(f"init: {path} cannot be loaded with torch.load(weights_only=True) "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "checksum" in state:
        prefix = f"encoders.{modality}."
        state = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
        if not state:
            raise EncoderProblem(f"init: {path} is an mmbal checkpoint without a modality '{modality}'")
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise EncoderProblem(f"init: {path} holds a {type(state).__name__}, not a state dict (parameter name -> "
                             f"tensor, as torch.save(encoder.state_dict(), path) writes)")
    return state


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def load_initial_weights(encoder: nn.Module, path: str, modality: str) -> None:
    """Copy the weights of ``path`` into ``encoder``; every key must match in name and shape."""
    state = read_state(path, modality)
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} (the encoder's: {list(own[k].shape)})"
              for k in own if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    found = []
    if missing:
        found.append(f"missing keys {_listed(missing)}")
    if unexpected:
        found.append(f"unexpected keys {_listed(unexpected)}")
    if shapes:
        found.append(f"other shapes: {_listed(shapes)}")
    if found:
        raise EncoderProblem(f"init: {path} does not fit this modality's encoder: " + "; ".join(found))
    encoder.load_state_dict(state)


def frozen_names(encoder: nn.Module, freeze: Any) -> list[str]:
    """Names of the parameters ``freeze`` chooses (see the module docstring)."""
    names = [n for n, _ in encoder.named_parameters()]
    if freeze is True:
        return names
    if freeze is False or freeze is None:
        return []
    stages = getattr(encoder, "stages", None) if hasattr(encoder, "stage_shapes") else None
    if isinstance(freeze, int):
        if stages is None:
            raise EncoderProblem(f"freeze: this encoder has no stages; name parameter prefixes instead, e.g. "
                                 f"freeze = [\"{_prefixes(encoder)[0] if _prefixes(encoder) else 'name'}\"] "
                                 f"(its top-level parts: {', '.join(_prefixes(encoder)) or 'none'})")
        if not 0 <= freeze <= len(stages):
            raise EncoderProblem(f"freeze: {freeze} stages asked, but this encoder has {len(stages)} (0..{len(stages)})")
        return _stage_names(encoder, stages, range(freeze))
    chosen: list[str] = []
    for item in freeze:
        match = _stage_index(item)
        if match is not None and stages is not None and match < len(stages):
            chosen += _stage_names(encoder, stages, [match])
            continue
        hits = [n for n in names if n == item or n.startswith(item + ".")]
        if not hits:
            extra = f"; stages stage0..stage{len(stages) - 1}" if stages else ""
            raise EncoderProblem(f"freeze: '{item}' names no parameter of this encoder (its top-level parts: "
                                 f"{', '.join(_prefixes(encoder)) or 'none'}{extra})")
        chosen += hits
    return list(dict.fromkeys(chosen))


def _stage_index(item: str) -> int | None:
    return int(item[5:]) if item.startswith("stage") and item[5:].isdigit() else None


def _stage_names(encoder: nn.Module, stages: list[nn.Module], which) -> list[str]:
    ids = {id(p) for i in which for p in stages[i].parameters()}
    return [n for n, p in encoder.named_parameters() if id(p) in ids]


def _prefixes(encoder: nn.Module) -> list[str]:
    return list(dict.fromkeys(n.split(".")[0] for n, _ in encoder.named_parameters()))


def freeze_parameters(encoder: nn.Module, freeze: Any) -> int:
    """Set ``requires_grad = False`` on the parameters ``freeze`` chooses; returns how many."""
    chosen = set(frozen_names(encoder, freeze))
    for n, p in encoder.named_parameters():
        if n in chosen:
            p.requires_grad_(False)
    return len(chosen)


def freeze_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a ``freeze`` setting (from TOML), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if value >= 0 else f"expected a number of leading stages (0 or more), got {value}"
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return None
    return (f"expected true/false, a number of leading stages, or a non-empty list of stage names "
            f"(\"stage0\") and parameter-name prefixes, got {value!r}")


__all__ = ["freeze_parameters", "freeze_problem", "frozen_names", "load_initial_weights", "read_state"]
