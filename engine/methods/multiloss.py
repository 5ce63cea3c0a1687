"""``multiloss``: the fused cross-entropy plus weighted per-modality cross-entropies, the simplest
strong baseline (the fixed-weight multi-task loss whose weights G-Blending learns, Wang, Tran,
Feiszli, "What Makes Training Multi-modal Classification Networks Hard?", CVPR 2020; the "uniform
baseline" of MMPareto, Wei & Hu, ICML 2024).

    L = w_fused * CE(fused logits, y) + sum_m w_m * CE(logits_m, y)

``logits_m`` is modality m's own output (its slice of the ``concat`` head, its ``sum`` head, or its
own head under ``film`` / ``gated``), so every encoder also learns from its own prediction and
cannot lean on the dominant modality. With every w_m > 0 the loss trains every modality head, so no
extra head loss is added for non-additive fusions (``trains_modality_heads``). Any number of
modalities; nothing in the rule is specific to two.

Live values: ``coef/<m>`` (w_m), ``method/ce_fused`` and ``method/ce_<m>`` (the unweighted terms).

Declares no ``tune`` for ``mmbal advise``: its knob, the per-modality ``weights``, is a list whose length
depends on the preset, and ``fused_weight`` alone only rescales the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import PresetError
from ..schema import opt
from . import METHODS
from .base import Method


@dataclass(frozen=True)
class MultilossConfig:
    weights: list[float] = opt([], ge=0.0, help="w_m per modality in the preset's modality order; empty: 1 for "
                                                "every modality (the uniform baseline)")
    fused_weight: float = opt(1.0, ge=0.0, help="w_fused, the weight of the fused cross-entropy")


@METHODS.register("multiloss", config=MultilossConfig,
                  help="fused cross-entropy plus weighted per-modality cross-entropies (multi-task baseline)",
                  paper="Wang, Tran, Feiszli: What Makes Training Multi-modal Classification Networks Hard?, "
                        "CVPR 2020 (the fixed-weight loss G-Blending replaces)",
                  optimizer="sgd", cost="1F + 1B",
                  live={"coef/<m>": "weight w_m of modality m's own cross-entropy",
                        "method/ce_fused": "cross-entropy of the fused logits",
                        "method/ce_<m>": "cross-entropy of modality m's own logits"})
class Multiloss(Method):
    """See the module docstring."""

    step_compile_ok = True   # the default step with a pure-tensor loss: train.compile = "step" captures it

    def __init__(self, cfg: MultilossConfig, ctx):
        super().__init__(cfg, ctx)
        mods = ctx.modalities
        if cfg.weights and len(cfg.weights) != len(mods):
            raise PresetError("method", [f"method.weights: {len(cfg.weights)} weights for {len(mods)} modalities "
                                         f"({', '.join(mods)}); give one per modality, or none for 1 each"])
        weights = cfg.weights or [1.0] * len(mods)
        self.weights = torch.tensor(weights, device=ctx.device)
        self.trains_modality_heads = all(w > 0 for w in weights)

    def loss(self, out, y, step):
        mods = self.ctx.modalities
        ce_fused = F.cross_entropy(out.fused.float(), y)
        ce = torch.stack([F.cross_entropy(out.logits[m].float(), y) for m in mods])
        loss = self.cfg.fused_weight * ce_fused + (self.weights * ce).sum()
        live = {"method/ce_fused": ce_fused.detach()}
        for i, m in enumerate(mods):
            live[f"coef/{m}"] = self.weights[i]
            live[f"method/ce_{m}"] = ce[i].detach()
        return loss, live
