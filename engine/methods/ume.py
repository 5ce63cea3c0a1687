"""``ume``: Uni-Modal Ensemble (Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao, "On Uni-Modal Feature Learning in
Supervised Multi-Modal Learning", ICML 2023).

The paper's remedy for *modality laziness* when cross-modal interaction matters little: train each
modality's model alone, on its own cross-entropy, and predict with the ensemble of the uni-modal models::

    L = sum_m CE(logits_m, y)                 each encoder gets the gradient of its own term only
    prediction = mean_m logits_m              (combine = "logits", default)
               | log mean_m softmax(logits_m) (combine = "probs")

* **Members inside the run.** Modality m's member is its encoder on its own input alone followed by its
  own logits from the fusion head (:mod:`engine.methods.unimodal_teachers`). The M members train in parallel
  in one model for the whole run, the run's one stage, so no prior unimodal runs are needed and resume,
  checkpoint selection and the run's checkpoints cover the members. Training them together gives each the
  gradient of its own loss only; what they still share is stated in :mod:`.unimodal_teachers` (concat's
  bias, a global gradient-norm clip).
* **Prediction** through the ``head`` / ``predict`` hooks: the fused output is the ensemble, the
  per-modality outputs are the members', so ``*/fused`` metrics score the ensemble and ``*/acc/<m>`` each
  member. The fusion-only parts of ``film`` / ``gated`` heads and mid-fusion modules take no part and stay
  as initialised.
* **Deviations.** The paper trains each uni-modal model to its own best validation checkpoint before
  ensembling; here the run selects one epoch for the whole ensemble, by the ensemble's validation metric
  (``train.select_metric``). Whether the paper averages logits or probabilities could not be checked in the
  sources available to us; averaging logits is the default and the probability average is an option.
* **Optimiser.** SGD with momentum, as in the audio-visual setting the paper compares in (OGM-GE's, Peng
  et al. 2022); the paper's own optimiser settings could not be checked in the sources available to us.

Any number of modalities M >= 2: every member is trained and weighted alike.

Live values per step: ``coef/<m>`` (member m's weight in the ensemble, 1/M) and ``method/ce_<m>`` (member m's
cross-entropy).

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``combine`` "probs", the other ensemble
rule (the paper's own could not be checked, see above; no values in our sources).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import ModelOutput
from ..schema import opt
from . import METHODS
from .base import Method
from .unimodal_teachers import Combine, ensemble, unimodal_features, unimodal_losses


@dataclass(frozen=True)
class UmeConfig:
    combine: Combine = opt("logits", help="ensemble of the uni-modal models: the mean of their logits, or the "
                                          "log of the mean of their softmax probabilities")


@METHODS.register("ume", config=UmeConfig,
                  help="uni-modal ensemble: each modality's encoder and head trained alone on its own "
                       "cross-entropy, predictions averaged over the modalities (Du et al.)",
                  paper="Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao: On Uni-Modal Feature Learning in Supervised "
                        "Multi-Modal Learning, ICML 2023",
                  optimizer="sgd", cost="1F + 1B (each encoder alone, M heads); inference: M uni-modal forwards",
                  live={"coef/<m>": "weight of modality m's uni-modal model in the ensemble (1/M)",
                        "method/ce_<m>": "cross-entropy of modality m's uni-modal model"},
                  tune={"combine": ("probs",)})
class Ume(Method):
    """See the module docstring."""

    trains_modality_heads = True   # every member's own cross-entropy is in the loss

    def __init__(self, cfg: UmeConfig, ctx):
        super().__init__(cfg, ctx)
        self.mods = list(ctx.modalities)
        self.weights = torch.full((len(self.mods),), 1.0 / len(self.mods), device=ctx.device)

    def forward(self, model, x):
        return self.predict(model, x)

    def loss(self, out, y, step):
        ces = unimodal_losses(out.logits, y, self.mods)
        live = {f"coef/{m}": self.weights[i] for i, m in enumerate(self.mods)}
        live.update({f"method/ce_{m}": ces[i].detach() for i, m in enumerate(self.mods)})
        return ces.sum(), live

    def head(self, model, features):
        _, logits = model.head(features)
        return ensemble(logits, self.mods, self.cfg.combine), logits

    def predict(self, model, x):
        features = unimodal_features(model, x)
        fused, logits = self.head(model, features)
        return ModelOutput(fused=fused, logits=logits, features=features)
