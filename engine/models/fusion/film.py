"""FiLM fusion (Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer", AAAI 2018),
generalised to M >= 2 modalities.

The target modality t (option ``target``, default the first) is projected to ``hidden``:
h = P z_t. Every other modality m, in modality order, is a FiLM generator: a Linear maps z_m to
(delta_gamma_m, beta_m) and h <- (1 + delta_gamma_m) * h + beta_m. The fused logits are
Linear(dropout(ReLU(h))). With two modalities this is MCR's ``film`` head (z_a makes gamma,
beta that modulate z_v, then a linear layer), up to the projection of the target.

Deviations, stated: gamma is parametrised as 1 + delta_gamma (the FiLM paper's remark that
predicting the change in gamma trains better), so a zero generator leaves h unmodulated; a
generator maps z_m to (delta_gamma, beta) with a single Linear (a projection to ``hidden`` followed
by another Linear would be the same affine map, factorised). Per-modality logits come from each
modality's own Linear head on z_m; they take no part in the fused logits and are trained only by
the methods that use them (``additive`` is False).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...registry import did_you_mean
from ...schema import opt
from . import FUSIONS, unimodal_heads


@dataclass(frozen=True)
class FiLMConfig:
    hidden: int = opt(256, ge=1, help="width of the modulated representation")
    target: str = opt("", help="modality that is modulated by the others ('' = the first modality)")
    dropout: float = opt(0.0, ge=0.0, lt=1.0, help="dropout before the fused classifier")


def resolve_target(target: str, modalities: list[str]) -> str:
    if not target:
        return modalities[0]
    if target not in modalities:
        raise ValueError(f"target: unknown modality '{target}'{did_you_mean(target, modalities)}; "
                         f"modalities: {', '.join(modalities)}")
    return target


class FiLMFusion(nn.Module):
    additive = False

    def __init__(self, cfg: FiLMConfig, in_dims: dict[str, int], n_classes: int):
        super().__init__()
        self.modalities = list(in_dims)
        self.target = resolve_target(cfg.target, self.modalities)
        self.hidden = cfg.hidden
        self.project = nn.Linear(in_dims[self.target], cfg.hidden)
        self.generators = nn.ModuleDict(
            {m: nn.Linear(d, 2 * cfg.hidden) for m, d in in_dims.items() if m != self.target})
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.hidden, n_classes)
        self.heads = unimodal_heads(in_dims, n_classes)

    def modulated(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """h: the target's projection after every generator's (1 + delta_gamma) * h + beta, in modality order."""
        h = self.project(features[self.target])
        for m, generator in self.generators.items():
            delta_gamma, beta = generator(features[m]).chunk(2, dim=-1)
            h = (1 + delta_gamma) * h + beta
        return h

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fused = self.classifier(self.dropout(torch.relu(self.modulated(features))))
        return fused, {m: self.heads[m](features[m]) for m in self.modalities}


@FUSIONS.register("film", config=FiLMConfig, help="FiLM: the other modalities scale and shift the target's features")
def build_film(cfg: FiLMConfig, in_dims: dict[str, int], n_classes: int) -> nn.Module:
    return FiLMFusion(cfg, in_dims, n_classes)
