"""``unimodal``: one modality trained alone, the reference each balancing method must reach."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..schema import opt
from . import METHODS
from .base import Method


@dataclass(frozen=True)
class UnimodalConfig:
    modality: str = opt(help="the modality trained alone (a name from [modalities])")


@METHODS.register("unimodal", config=UnimodalConfig,
                  help="one modality trained alone through its own logits (the unimodal reference)",
                  paper="", optimizer="adam", cost="F_m + B_m",
                  live={"coef/<m>": "1 for the modality trained alone, 0 for the others"})
class Unimodal(Method):
    """Trains the named modality's encoder and its logits only: loss = CE(logits_m, y).

    The other encoders get no gradient (their coefficient is 0). At evaluation the fused
    prediction *is* modality m's prediction, so ``*/fused`` metrics report the unimodal model.
    """

    step_compile_ok = True   # the default step with a pure-tensor loss: train.compile = "step" captures it

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        if cfg.modality not in ctx.modalities:
            raise ValueError(f"method.modality '{cfg.modality}' is not one of the run's modalities "
                             f"({', '.join(ctx.modalities)})")

    @property
    def trained_modalities(self):
        return [self.cfg.modality]

    def parameter_groups(self, model):
        params = model.encoder_parameters(self.cfg.modality) + model.head_parameters()
        return [{"params": params, "name": self.cfg.modality}]

    def loss(self, out, y, step):
        m = self.cfg.modality
        loss = F.cross_entropy(out.logits[m].float(), y)
        one, zero = torch.ones((), device=y.device), torch.zeros((), device=y.device)
        return loss, {f"coef/{k}": (one if k == m else zero) for k in self.ctx.modalities}

    def head(self, model, features):
        _, logits = model.head(features)
        return logits[self.cfg.modality], logits
