"""What UME and UMT share (Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao, "On Uni-Modal Feature Learning in
Supervised Multi-Modal Learning", ICML 2023): uni-modal models trained inside the run's own model, their
ensemble, the feature distillation loss and the teachers kept in the run directory.

* **Uni-modal models inside the multimodal model.** Modality m's uni-modal model is its encoder applied to
  its own input alone (no mid-fusion exchange, :func:`unimodal_features`) followed by its own logits from
  the fusion head (``logits[m]``: its slice of the ``concat`` head, its ``sum`` head, or its own head under
  ``film`` / ``gated``). Trained with :func:`unimodal_losses` summed over the modalities, each encoder gets
  the gradient of its own cross-entropy only, so the M models train in parallel as if alone; the one
  coupling left is a parameter two heads share (``concat``'s bias b, of which each modality's logits get
  b / M) and a global gradient-norm clip (``train.grad_clip``), if set.
* **Ensemble** (:func:`ensemble`): the mean of the M uni-modal logits, or the log of the mean of their
  softmax probabilities (then a log-probability vector, which the metrics and the cross-entropy take as
  logits).
* **Feature distillation** (:func:`feature_distillation`): per modality, the mean squared error between the
  student's encoder features and the frozen teacher's, averaged over the batch rows and feature
  dimensions (``nn.MSELoss()``'s mean, as BalanceMM's ``UMT_trainer.py``).
* **Kept teachers** (:class:`KeptTeachers`): one file per modality in the run directory
  (``checkpoints/kept/umt-teacher-<i>.pt``, through ``ctx.kept``, :mod:`engine.methods.stages`) holding the
  encoder's weights, the epoch they come from and their validation accuracy. Frozen copies are rebuilt
  from them wherever they are needed (the first student epoch, a resume inside the student stage), so the
  method's own checkpoint state stays small.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..models import MultimodalModel

Combine = Literal["logits", "probs"]


def unimodal_features(model: MultimodalModel, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each encoder on its own input alone: the uni-modal models' features (no mid-fusion exchange)."""
    return {m: model.encoders[m](x[m]) for m in model.modalities}


def ensemble(logits: dict[str, torch.Tensor], mods: list[str], combine: Combine = "logits") -> torch.Tensor:
    """The uni-modal ensemble's prediction: mean_m logits_m ("logits"), or log(mean_m softmax(logits_m))
    ("probs"), in float32."""
    stacked = torch.stack([logits[m].float() for m in mods])
    if combine == "logits":
        return stacked.mean(0)
    return torch.logsumexp(F.log_softmax(stacked, dim=-1), dim=0) - math.log(len(mods))


def unimodal_losses(logits: dict[str, torch.Tensor], y: torch.Tensor, mods: list[str]) -> torch.Tensor:
    """(M,) cross-entropy of each modality's own logits."""
    return torch.stack([F.cross_entropy(logits[m].float(), y) for m in mods])


def feature_distillation(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                         mods: list[str]) -> torch.Tensor:
    """(M,) mean squared error between each modality's student and teacher features (mean over rows and
    feature dimensions); the teacher side carries no gradient."""
    return torch.stack([F.mse_loss(student[m].float(), teacher[m].detach().float()) for m in mods])


def reset_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """The optimiser as if new: every per-parameter state tensor (SGD momentum, Adam moments and step
    counts) set to zero in place. With mmbal's SGD (dampening 0) a zero momentum buffer gives the first
    update of a fresh one, and Adam's counter restarts at 0 with zero moments, as a fresh Adam's does; the
    state keeps its structure (the fused SGD kernel needs a buffer for every parameter, see
    :func:`engine.train.optim.prime_momentum_buffers`)."""
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                value.zero_()


class KeptTeachers:
    """The teachers' weights in ``ctx.kept`` (one entry per modality, by index in the preset's order) and
    their frozen copies."""

    def __init__(self, mods: list[str], prefix: str = "umt-teacher"):
        self.mods = list(mods)
        self.prefix = prefix

    def name(self, i: int) -> str:
        return f"{self.prefix}-{i}"

    def save(self, kept, i: int, encoder: nn.Module, epoch: int, score: float) -> None:
        kept.save(self.name(i), {"modality": self.mods[i], "epoch": epoch, "score": score,
                                 "encoder": encoder.state_dict()})

    def load(self, kept, model: MultimodalModel) -> dict[str, nn.Module]:
        """Frozen eval-mode copies of the encoders holding the kept teachers' weights (no parameter
        requires a gradient; BatchNorm uses its running statistics and dropout is off)."""
        teachers = {}
        for i, m in enumerate(self.mods):
            name = self.name(i)
            if name not in kept:
                raise FileNotFoundError(f"the teacher of modality '{m}' ({name}) was never kept: the student "
                                        f"stage needs the teacher stage's models")
            state = kept.load(name)
            teacher = copy.deepcopy(model.encoders[m])
            teacher.load_state_dict(state["encoder"])
            for p in teacher.parameters():
                p.grad = None
            teachers[m] = teacher.eval().requires_grad_(False)
        return teachers
