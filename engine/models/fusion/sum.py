"""Late (sum) fusion: each modality has its own Linear(d_m -> C) head and the fused logits are
the sum of the modality logits (e.g. the "sum" fusion of OGM-GE, Peng et al. 2022, and the
additive late fusion analysed by MLA, Zhang et al. 2024). Dropout, when set, acts on each
modality's features before its head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...schema import opt
from . import FUSIONS, unimodal_heads


@dataclass(frozen=True)
class SumConfig:
    dropout: float = opt(0.0, ge=0.0, lt=1.0, help="dropout on the modality features before each head")


class SumFusion(nn.Module):
    additive = True

    def __init__(self, cfg: SumConfig, in_dims: dict[str, int], n_classes: int):
        super().__init__()
        self.modalities = list(in_dims)
        self.heads = unimodal_heads(in_dims, n_classes)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = {m: self.heads[m](self.dropout(features[m])) for m in self.modalities}
        return torch.stack(list(logits.values())).sum(0), logits


@FUSIONS.register("sum", config=SumConfig, help="late fusion: one linear head per modality, logits summed")
def build_sum(cfg: SumConfig, in_dims: dict[str, int], n_classes: int) -> nn.Module:
    return SumFusion(cfg, in_dims, n_classes)
