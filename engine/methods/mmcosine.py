"""``mmcosine``: modality-wise cosine logits (Xu, Feng, Zhang, Hu, "MMCosine: Multi-Modal Cosine Loss
Towards Balanced Audio-Visual Fine-Grained Learning", ICASSP 2023; release GeWu-Lab/MMCosine_ICASSP23;
BalanceBenchmark ``MMCosine_trainer.py``; catalog section 2.2).

A modality with larger features (or larger classifier weights) wins the fused logits by magnitude alone.
MMCosine removes magnitudes from the classifier: modality m's logit for class c is the cosine between its
L2-normalised feature z_m and the L2-normalised class weight w_{m,c} of its own classifier, scaled by s,
and the fused logits are their sum:

    l_m[c] = s * cos(z_m, w_{m,c}) = s * <z_m / |z_m|, w_{m,c} / |w_{m,c}|>,      f = sum_m l_m,

trained with the cross-entropy of f (no bias). Every modality's contribution to a logit is bounded by s,
so no modality can dominate by norm. Any number of modalities: the rule is per modality.

**The cosine head is the method's own module** (:class:`CosineHead`: one weight W_m (C x d_m) per
modality, i.e. the per-modality slices of a linear head over the concatenated features). The paper's
fusion is the additive one in which each modality has its own weight slice (the release normalises the
column slices of its concat head's ``fc_out`` and drops the bias); ``concat`` and ``sum`` heads both
have that form, and once the bias is dropped and the slices are normalised they are the same function.
So mmbal's MMCosine always classifies with its own cosine head, which is that head, and the model's
``[model] fusion`` head is built but **neither used nor optimised** (as for ``aug``). A preset may name
any fusion: with ``film`` or ``gated`` their feature interaction is not used (MMCosine has no
formulation for it); the prediction is still the sum of the per-modality cosine logits. We chose this
over refusing those fusions so that the method behaves the same with every ``[model] fusion`` (and
passes the suites that run every method with every fusion); the docs of the preset say so.
``logits[m]`` (what ``*/acc/<m>`` scores) is l_m, a part of the fused sum, so the fused loss trains
every modality head (``trains_modality_heads``: no detached head loss is added).

The head's weights start as ``nn.Linear``'s (uniform in +-1/sqrt(d_m)), drawn from a generator seeded by
the run seed, so building the method does not move the run's RNG stream. Mid-fusion modules are
optimised as usual.

Defaults: s = 10, the paper's and the official release's scaling (BalanceBenchmark uses 15); the paper
trains with SGD (momentum 0.9, lr 1e-3, batch 32), the registration's optimiser.

Live values per step (0-d device tensors, over the global batch of a multi-process run): ``score/<m>`` the
mean true-class cosine logit s * cos(z_m, w_{m,y}) of modality m (in [-s, s]; the catalog's "per-modality
mean cosine logit"), ``coef/<m>`` the scale s applied to modality m's cosine (the same for every
modality: MMCosine equalises magnitudes rather than weighting modalities). Cost: that of ``joint``
(1F + 1B; two normalisations per modality).

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``scale``, 15 (BalanceBenchmark, beside
the paper's and release's 10) and 5 (ours, the same step below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..collectives import all_reduce_sum
from ..models import ModelOutput
from ..schema import opt
from . import METHODS
from .base import Method


@dataclass(frozen=True)
class MMCosineConfig:
    scale: float = opt(10.0, gt=0.0, help="s, the scale of the cosine logits (paper and official release: 10; "
                                          "BalanceBenchmark: 15)")


class CosineHead(nn.Module):
    """Per-modality cosine classifiers: ``forward(features)`` gives (f, {m: l_m}) with
    l_m = s * normalize(z_m) normalize(W_m)^T (rows of W_m normalised) and f = sum_m l_m, for features of
    any leading shape (the monitors stack permuted copies)."""

    def __init__(self, in_dims: dict[str, int], n_classes: int, scale: float, seed: int):
        super().__init__()
        self.scale = float(scale)
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.ParameterDict()
        for m, d in in_dims.items():
            w = torch.empty(n_classes, d)
            nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)   # nn.Linear's initialisation
            self.weight[m] = nn.Parameter(w)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = {m: self.scale * F.linear(F.normalize(features[m], dim=-1), F.normalize(w, dim=-1))
                  for m, w in self.weight.items()}
        return torch.stack(list(logits.values())).sum(0), logits


def true_class_sums(logits: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """(M,): sum over the batch of each modality's true-class logit l_m[i, y_i]."""
    return torch.stack([lm.detach().float().gather(1, y[:, None]).sum() for lm in logits.values()])


@METHODS.register("mmcosine", config=MMCosineConfig,
                  help="modality-wise cosine logits: normalised features and class weights per modality, "
                       "scaled and summed (Xu et al. 2023, MMCosine)",
                  paper="Xu, Feng, Zhang, Hu: MMCosine: Multi-Modal Cosine Loss Towards Balanced Audio-Visual "
                        "Fine-Grained Learning, ICASSP 2023",
                  optimizer="sgd", cost="1F + 1B",
                  live={"score/<m>": "mean true-class cosine logit s * cos(z_m, w_m,y) of modality m (in [-s, s])",
                        "coef/<m>": "scale s of modality m's cosine logits (the same for every modality)"},
                  tune={"scale": (5.0, 15.0)})
class MMCosine(Method):
    """MMCosine: the fused cross-entropy of summed per-modality cosine logits; see the module docstring."""

    trains_modality_heads = True

    def __init__(self, cfg: MMCosineConfig, ctx):
        super().__init__(cfg, ctx)
        self.require_modalities("balances modalities against each other")
        self._scale = torch.full((), float(cfg.scale), device=ctx.device)

    def setup(self, model):
        dims = {m: int(model.encoders[m].out_dim) for m in self.ctx.modalities}
        seed = (self.ctx.seed * 1_000_003 + 271_828) % (2 ** 62)
        self.modules["cosine"] = CosineHead(dims, self.ctx.n_classes, self.cfg.scale, seed)

    def parameter_groups(self, model):
        """The encoders, the mid-fusion modules and the cosine head; not the model's fusion head (unused)."""
        params = [p for m in self.ctx.modalities for p in model.encoder_parameters(m)]
        params += model.mid_fusion_parameters() + list(self.modules.parameters())
        return [{"params": params, "name": "all"}]

    def head(self, model, features):
        return self.modules["cosine"](features)

    def forward(self, model, x):
        features = model.encode(x)
        fused, logits = self.head(model, features)
        return ModelOutput(fused=fused, logits=logits, features=features)

    def loss(self, out, y, step):
        loss = F.cross_entropy(out.fused.float(), y)
        count = torch.full((1,), y.shape[0], dtype=torch.float32, device=y.device)
        sums = all_reduce_sum(torch.cat([true_class_sums(out.logits, y), count]))
        score = sums[:-1] / sums[-1]
        live = {}
        for i, m in enumerate(self.ctx.modalities):
            live[f"score/{m}"] = score[i]
            live[f"coef/{m}"] = self._scale
        return loss, live
