"""Per-modality gradient norm of the encoder, ``grad/<m>``: ||grad of encoder m's parameters||_2.

One fused ``torch._foreach_norm`` over every encoder gradient (or the trainer's, shared with the
non-finite guard), then per-modality root-sum-of-squares
of the stacked norms; no host synchronisation and no host-to-device copy. A parameter whose
``.grad`` is None counts as 0 (an encoder with no gradient at all reports 0). The value is what
the gradients hold when it is called (after a method's gradient modulation if called after
``after_backward``).
"""

from __future__ import annotations

import torch
from torch import nn


def grad_name(m: str) -> str:
    return f"grad/{m}"


def encoder_grad_norms(encoders: dict[str, nn.Module] | nn.ModuleDict, modalities: list[str],
                       device: torch.device, known: dict[int, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """{"grad/<m>": 0-d float32 tensor} for each modality's encoder. ``known``: norms already taken of
    some parameters' gradients, by ``id`` of the parameter (the trainer's one fused norm at a logging
    step); only the others' are taken here."""
    known = known or {}
    grads = {m: [p for p in encoders[m].parameters() if p.grad is not None] for m in modalities}
    missing = [p for m in modalities for p in grads[m] if id(p) not in known]
    if missing:
        known = {**known, **dict(zip(map(id, missing), torch._foreach_norm([p.grad for p in missing])))}
    out = {}
    for m in modalities:
        own = [known[id(p)].float() for p in grads[m]]
        out[grad_name(m)] = (torch.stack(own).square().sum().sqrt() if own
                             else torch.zeros((), dtype=torch.float32, device=device))
    return out
