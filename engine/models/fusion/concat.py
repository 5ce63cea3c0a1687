"""Concatenation fusion: one Linear over [z_1, ..., z_M], decomposed exactly per modality.

The linear head of MCR (``cls_type = "linear"``) and of OGM-GE (Peng et al. 2022): with
W = [W_1 | ... | W_M] and bias b, W [z_1; ...; z_M] + b = sum_m (W_m z_m + b / M). The module keeps
one ``nn.Linear`` (so its initialisation is that of a Linear over the concatenation) and computes
the M bias-free products with the weight's column slices, each plus b / M; the fused logits are
their sum, so ``fused == sum(logits.values())`` holds by construction. Dropout, when set, acts on
each modality's features before the product.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch import nn

from ...schema import opt
from . import FUSIONS


@dataclass(frozen=True)
class ConcatConfig:
    dropout: float = opt(0.0, ge=0.0, lt=1.0, help="dropout on the modality features before the linear head")


class ConcatFusion(nn.Module):
    additive = True

    def __init__(self, cfg: ConcatConfig, in_dims: dict[str, int], n_classes: int):
        super().__init__()
        self.modalities = list(in_dims)
        ends = list(accumulate(in_dims.values()))
        starts = [0] + ends[:-1]
        self.columns = {m: (s, e) for m, s, e in zip(self.modalities, starts, ends)}
        self.linear = nn.Linear(ends[-1], n_classes)
        self.dropout = nn.Dropout(cfg.dropout)

    def weight_of(self, m: str) -> torch.Tensor:
        """W_m: the columns of the shared weight that multiply modality ``m`` (a view, so gradients flow)."""
        start, end = self.columns[m]
        return self.linear.weight[:, start:end]

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        share = self.linear.bias / len(self.modalities)
        logits = {m: F.linear(self.dropout(features[m]), self.weight_of(m), share) for m in self.modalities}
        return torch.stack(list(logits.values())).sum(0), logits


@FUSIONS.register("concat", config=ConcatConfig,
                  help="linear head over the concatenated features (additive per modality)")
def build_concat(cfg: ConcatConfig, in_dims: dict[str, int], n_classes: int) -> nn.Module:
    return ConcatFusion(cfg, in_dims, n_classes)
