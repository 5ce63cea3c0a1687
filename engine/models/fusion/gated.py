"""Gated multimodal unit (Arevalo et al., "Gated Multimodal Units for Information Fusion", ICLR-W 2017),
generalised to M modalities.

Each modality gives h_m = tanh(W_m z_m) in ``hidden`` units; the gates come from the concatenated
features, g = softmax over modalities of reshape(G [z_1, ..., z_M], (M, hidden)), one distribution
per hidden unit; h = sum_m g_m * h_m and the fused logits are Linear(dropout(h)). For M = 2 the
softmax over two gate logits equals the paper's sigmoid gate z, (1 - z) (with W_z = G_1 - G_2).
Per-modality logits come from each modality's own Linear head on z_m; they take no part in the
fused logits (``additive`` is False).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...schema import opt
from . import FUSIONS, unimodal_heads


@dataclass(frozen=True)
class GatedConfig:
    hidden: int = opt(256, ge=1, help="width of each modality's gated representation")
    dropout: float = opt(0.0, ge=0.0, lt=1.0, help="dropout before the fused classifier")


class GatedFusion(nn.Module):
    additive = False

    def __init__(self, cfg: GatedConfig, in_dims: dict[str, int], n_classes: int):
        super().__init__()
        self.modalities = list(in_dims)
        self.hidden = cfg.hidden
        self.values = nn.ModuleDict({m: nn.Linear(d, cfg.hidden, bias=False) for m, d in in_dims.items()})
        self.gate = nn.Linear(sum(in_dims.values()), len(in_dims) * cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.hidden, n_classes)
        self.heads = unimodal_heads(in_dims, n_classes)

    def gates(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """(..., M, hidden): per hidden unit, a distribution over the modalities (sums to 1 along -2)."""
        z = torch.cat([features[m] for m in self.modalities], dim=-1)
        return self.gate(z).unflatten(-1, (len(self.modalities), self.hidden)).softmax(dim=-2)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = torch.stack([torch.tanh(self.values[m](features[m])) for m in self.modalities], dim=-2)
        h = (self.gates(features) * values).sum(dim=-2)
        fused = self.classifier(self.dropout(h))
        return fused, {m: self.heads[m](features[m]) for m in self.modalities}


@FUSIONS.register("gated", config=GatedConfig,
                  help="gated multimodal unit: softmax gates over modalities per hidden unit")
def build_gated(cfg: GatedConfig, in_dims: dict[str, int], n_classes: int) -> nn.Module:
    return GatedFusion(cfg, in_dims, n_classes)
