"""``joint``: plain joint training with the fused cross-entropy, the baseline every method is compared to."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import METHODS
from .base import Method


@dataclass(frozen=True)
class JointConfig:
    """``joint`` has no options."""


@METHODS.register("joint", config=JointConfig, help="plain joint training: fused cross-entropy only (baseline)",
                  paper="", optimizer="adam", cost="1F + 1B",
                  live={"coef/<m>": "1: every modality's loss coefficient (nothing is re-weighted)"})
class Joint(Method):
    """Joint (early/late-fusion) training: minimise CE(fused logits, y); every coefficient is 1."""

    step_compile_ok = True   # the default step with a pure-tensor loss: train.compile = "step" captures it

    def loss(self, out, y, step):
        loss, live = super().loss(out, y, step)
        return loss, {f"coef/{m}": self._one(y.device) for m in self.ctx.modalities}

    def _one(self, device: torch.device) -> torch.Tensor:
        """The constant coefficient: one tensor kept between eager steps (no op per step); a fresh one
        inside a compiled step, whose outputs should not alias a tensor held outside the graph."""
        if torch.compiler.is_compiling():
            return torch.ones((), device=device)
        one = getattr(self, "_one_tensor", None)
        if one is None or one.device != device:
            one = self._one_tensor = torch.ones((), device=device)
        return one
