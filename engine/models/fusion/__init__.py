"""Fusion-head registry: modality features -> (fused logits, per-modality logits).

Every builder has the signature ``build_x(cfg: XConfig, in_dims: dict[str, int], n_classes: int)
-> nn.Module`` (the dict's order is the modality order). The module's
``forward(features: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]`` returns the fused
logits (..., C) and each modality's logits {m: (..., C)}; any leading shape is accepted, so a
method can evaluate stacked permuted or zeroed copies of the features in one call. ``additive``
is True when the fused logits are exactly the sum of the per-modality logits. A builder raises
``ValueError`` with a message naming the option for options that do not fit the modalities.
"""

from __future__ import annotations

from torch import nn

from ...registry import Registry

FUSIONS = Registry("fusion")


def unimodal_heads(in_dims: dict[str, int], n_classes: int) -> nn.ModuleDict:
    """One Linear(d_m -> C) classifier per modality (the unimodal heads of late fusion and of MCR/MLA-style methods)."""
    return nn.ModuleDict({m: nn.Linear(d, n_classes) for m, d in in_dims.items()})


from . import concat, film, gated, sum  # noqa: E402,F401  (registers the fusions)

__all__ = ["FUSIONS", "unimodal_heads"]
