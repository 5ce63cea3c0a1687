"""``cggm``: Classifier-Guided Gradient Modulation (Guo, Jin, Chen, Zhao, "Classifier-guided Gradient
Modulation for Enhanced Multimodal Learning", NeurIPS 2024; release zrguo/CGGM, ``src/msatrain.py``,
``src/foodtrain.py``, ``src/segtrain.py``).

Each modality m gets an auxiliary classifier f_m (ours: an MLP on the encoder's feature vector z_m; the
release uses two transformer layers on token features) trained with its own cross-entropy on the
*detached* features, so it measures how far modality m has learned without changing its encoder, and is
discarded at inference. Each step (:meth:`CGGM.train_step`):

1. **Accuracy change** (paper Sec. 3.2): eps_m = accuracy of f_m on the batch (before its update);
   Delta_m = eps_m - eps_m(previous step). The previous accuracies start at 0 (as the release's
   ``acc1 = [0] * num_mod``) and carry over epoch boundaries; they are saved in the method's state.
2. **Balance term**: B_m = (sum_k Delta_k - Delta_m) / sum_k Delta_k, for any number of modalities (the
   paper's rule is written for M modalities; sum_m B_m = M - 1). A modality whose classifier improved
   most gets the smallest B. B_m is negative when the others' accuracy fell while m's rose.
3. **Magnitude** (paper: theta_m <- theta_m - eta * rho * B_m * grad): encoder m's update is scaled by
   k_m = rho * B_m. Under SGD its gradients are multiplied by k_m before clipping and the step; under
   Adam/AdamW (the paper's optimiser, release default ``--optim Adam``) a gradient factor is divided out by
   the second-moment normalisation, so encoder m's *learning rate* is multiplied by k_m for the step
   (``step.scale_lr``), which scales the update as the paper's equation does. ``modulate = "auto"``
   chooses by optimiser; ``"gradient"`` with Adam is refused (:meth:`CGGM.check_preset`).
4. **Direction** (paper Sec. 3.3): L_gm = sum_m |B_m| - sum_m B_m cos(g_mul_m, g_uni_m), with weight lambda.
   The classifiers stand in for the unimodal gradients: g_uni_m is the gradient modality m's classifier loss
   sends to m's features, dCE(f_m(z_m), y)/dz_m, and g_mul_m the gradient the fused loss sends there,
   dL_task/dz_m, both over the batch's rows and features. L_gm acts on the direction of g_mul_m: the gradient
   that reaches encoder m is d_m = g_mul_m - lambda |g_mul_m|^2 dL_gm/dg_mul_m
   = g_mul_m + lambda B_m |g_mul_m| (u_hat_m - cos_m g_hat_m) (:func:`direction_steps`). d_m keeps the
   component along g_mul_m and is turned towards m's classifier gradient where B_m > 0 (m learns more slowly
   than the others) and away where B_m < 0, by the angle atan(lambda B_m sin(g_mul_m, g_uni_m)). It is applied
   through the one backward of the step (a term whose gradient at z_m is d_m - g_mul_m and whose value is 0),
   so the fusion head's gradient is the task loss's.

Deviations from the release code, on purpose:

* **Gradients, not weights, in the cosine.** The paper compares the classifiers' and the fusion module's
  *gradients*; the release's ``cal_cos(cls_grad, fusion_grad)`` is handed the ``out_layer.weight``
  *parameters* (``fusion_grad = para``, not ``para.grad``), so it aligns the fused output layer's weights
  with the classifiers'. We compare gradients, at each modality's features, where the two live in the same
  space for every fusion head (the output layers of our fusions and of the classifiers read different
  hidden units, whose coordinates do not correspond).
* **L_gm steers the gradient instead of being differentiated.** The paper adds lambda L_gm to the loss. With
  gradients in the cosine, its exact derivative is a second derivative of the task loss (a double backward
  through the head, which compiled modules do not support), and it is ill-suited as a loss term: a cosine is
  scale-free, so its gradient grows as 1/|g_mul| while the task gradient shrinks during training, and its
  path through the fused prediction rewards the fused head for erring where a unimodal classifier errs. The
  step in 4 applies L_gm to what it is written over, the multimodal gradient's direction, at no extra
  backward. The release adds the previous step's L_gm (a graph over last step's weights); here B and the
  gradients are this step's. The release also divides L_gm by the number of modalities; here it is the
  plain sum over the modalities.
* **A vanishing sum of changes.** The release divides by sum(Delta) + 1e-8, so when the changes cancel
  (e.g. +1/64 and -1/64) B is of the order of 1e6. Where |sum Delta| < 1e-6 (no net change at the
  resolution of a batch accuracy) we set B = 1 for every modality (no modulation; what the release gives
  when every Delta is 0). ``max_coef`` (off by default) bounds |rho B_m| for users who want the update
  scale bounded; the paper's rule is unbounded.
* **Under Adam the coefficient scales the learning rate** (see 3); the release multiplies gradients also
  under Adam, where the normalisation mostly cancels the factor.
* **Every encoder is modulated.** The BraTS release (``segtrain.py``) scales only two of its four encoders
  (the names ``vision_encoder``/``text_encoder`` copied from the Food-101 script).
* **One optimiser.** The classifiers are a parameter group ("classifiers") of the run's optimiser, at
  ``classifier_lr_ratio`` times the scheduled learning rate (release: a second optimiser of the same
  kind at ``cls_lr`` 5e-4 beside ``lr`` 1e-3); they follow the run's schedule and clipping norm.
* Accuracies are counted on the device and summed over the ranks of a multi-process run with the
  cosine's three sums in one collective (the release computes them with numpy on the host each step).

Non-additive fusions (``film``, ``gated``): their per-modality heads (``*/acc/<m>``) take no part in the
fused logits; the base class's ``modality_head_loss`` trains them on detached features (``method/head_ce``).

Live values per step (0-d device tensors): ``coef/<m>`` (rho B_m, applied to encoder m's update),
``score/<m>`` (eps_m), ``method/delta_<m>`` (Delta_m), ``method/cos_<m>`` (cos(g_mul_m, g_uni_m)),
``method/gm`` (L_gm), ``method/cls_ce`` (the classifiers' summed cross-entropy); the step's loss
(``train/loss/method``) is L_task + lambda L_gm.
Cost vs ``joint``: the classifiers' forward and backward and one extra backward through the fusion head
(the task loss's gradient at the features); no extra encoder pass.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``rho`` 1.0 (the release's BraTS
setting) and ``lambda_gm`` 0.05 (Food-101) and 0.1 (BraTS), the release's per-dataset values beside the MOSI /
IEMOCAP defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..collectives import all_reduce_sum
from ..schema import opt
from . import METHODS
from .base import Method, StepResult

NO_CHANGE = 1e-6   # |sum_k Delta_k| below this: no net accuracy change, B = 1 (see the module docstring)


@dataclass(frozen=True)
class CGGMConfig:
    rho: float = opt(1.3, ge=0.0, help="rho: encoder m's update is scaled by rho * B_m (release: 1.3 for MOSI, "
                                       "IEMOCAP and Food-101, 1.0 for BraTS)")
    lambda_gm: float = opt(0.2, ge=0.0, help="lambda: weight of the direction loss L_gm (release: 0.2 MOSI and "
                                             "IEMOCAP, 0.05 Food-101, 0.1 BraTS)")
    classifier_hidden: int = opt(256, ge=0, help="hidden width of each auxiliary classifier (Linear, ReLU, Linear); "
                                                 "0: a linear classifier")
    classifier_lr_ratio: float = opt(0.5, gt=0.0, help="the classifiers' learning rate over the model's (release: "
                                                       "cls_lr 5e-4 with lr 1e-3)")
    modulate: Literal["auto", "gradient", "lr"] = opt(
        "auto", help="how rho * B_m acts: 'gradient' scales encoder m's gradients (the paper's equation, under "
                     "SGD); 'lr' scales its learning rate for the step (acts under Adam too); 'auto': gradient "
                     "under SGD, lr otherwise")
    max_coef: float | None = opt(None, gt=0.0, help="bound on |rho * B_m| (unset: unbounded, as in the paper)")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def balance_terms(delta: torch.Tensor) -> torch.Tensor:
    """B_m = (sum_k Delta_k - Delta_m) / sum_k Delta_k, (M,); 1 for every modality where |sum_k Delta_k| is
    below ``NO_CHANGE``."""
    total = delta.sum()
    moved = total.abs() >= NO_CHANGE
    safe = torch.where(moved, total, torch.ones_like(total))
    return torch.where(moved, (total - delta) / safe, torch.ones_like(delta))


def magnitude_coefficients(balance: torch.Tensor, rho: float, max_coef: float | None = None) -> torch.Tensor:
    """k_m = rho * B_m, bounded to [-max_coef, max_coef] when given."""
    k = rho * balance
    return k if max_coef is None else k.clamp(-max_coef, max_coef)


def cosines(sums: torch.Tensor) -> torch.Tensor:
    """cos per modality from (M, 3) sums [<g_mul, g_uni>, |g_mul|^2, |g_uni|^2]; 0 where a gradient is zero."""
    dot, mul, uni = sums.unbind(-1)
    return dot * torch.rsqrt((mul * uni).clamp_min(torch.finfo(sums.dtype).tiny))


def direction_loss(balance: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """L_gm = sum_m |B_m| - sum_m B_m cos_m (paper Sec. 3.3)."""
    return balance.abs().sum() - (balance * cos).sum()


def gradient_sums(g_mul: list[torch.Tensor], g_uni: list[torch.Tensor]) -> torch.Tensor:
    """(M, 3): per modality <g_mul, g_uni>, |g_mul|^2 and |g_uni|^2 over all rows and features (float32)."""
    rows = []
    for a, u in zip(g_mul, g_uni):
        a, u = a.detach().float(), u.detach().float()
        rows.append(torch.stack([(a * u).sum(), a.square().sum(), u.square().sum()]))
    return torch.stack(rows)


def direction_steps(g_mul: list[torch.Tensor], g_uni: list[torch.Tensor], sums: torch.Tensor,
                    balance: torch.Tensor, lam: float) -> list[torch.Tensor]:
    """What L_gm adds to each modality's feature gradient: d_m - g_mul_m with
    d_m = g_mul_m - lam * |g_mul_m|^2 * dL_gm/dg_mul_m = g_mul_m + lam B_m |g_mul_m| (u_hat_m - cos_m g_hat_m),
    norms and cosines from the batch-wide ``sums`` (:func:`gradient_sums`, summed over the ranks). The step
    keeps d_m's component along g_mul_m and turns it towards (B_m > 0) or away from (B_m < 0) the unimodal
    gradient g_uni_m by atan(lam B_m sin angle)."""
    tiny = torch.finfo(sums.dtype).tiny
    _, mul, uni = sums.unbind(-1)
    cos = cosines(sums)
    reach = torch.sqrt(mul) * torch.rsqrt(uni.clamp_min(tiny))   # |g_mul| / |g_uni|
    scale = lam * balance
    return [scale[i] * (reach[i] * u.detach().float() - cos[i] * a.detach().float())
            for i, (a, u) in enumerate(zip(g_mul, g_uni))]


def classifier(d_in: int, hidden: int, n_classes: int) -> nn.Module:
    """An auxiliary classifier: Linear(d_in, hidden), ReLU, Linear(hidden, C); a Linear(d_in, C) when hidden is 0."""
    if hidden == 0:
        return nn.Linear(d_in, n_classes)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


@METHODS.register("cggm", config=CGGMConfig,
                  help="classifier-guided gradient modulation: auxiliary classifiers' accuracy changes scale each "
                       "encoder's update and weight a gradient-direction loss (Guo et al. 2024)",
                  paper="Guo, Jin, Chen, Zhao: Classifier-guided Gradient Modulation for Enhanced Multimodal "
                        "Learning, NeurIPS 2024",
                  optimizer="adam",
                  cost="1F + 1B + classifiers F/B + fusion-head backward",
                  live={"coef/<m>": "rho * B_m: the factor applied to encoder m's update (B_m: the other "
                                    "classifiers' accuracy change over the total change)",
                        "score/<m>": "batch accuracy of modality m's auxiliary classifier (before its update)",
                        "method/delta_<m>": "change of modality m's classifier accuracy since the previous step",
                        "method/cos_<m>": "cosine between the gradients the fused loss and m's classifier send "
                                          "to m's features",
                        "method/gm": "direction loss L_gm = sum |B_m| - sum B_m cos_m",
                        "method/cls_ce": "summed cross-entropy of the auxiliary classifiers (detached features)",
                        "method/head_ce": "cross-entropy training the per-modality heads on detached features "
                                          "(non-additive fusions)"},
                  tune={"rho": (1.0,), "lambda_gm": (0.05, 0.1)})
class CGGM(Method):
    """CGGM; see the module docstring."""

    # g_mul is taken with a backward through the fusion head that keeps its graph for the step's backward
    # (retain_graph); a compiled head's backward frees its buffers after one use.
    compile_ok = False

    def __init__(self, cfg: CGGMConfig, ctx):
        super().__init__(cfg, ctx)
        self.require_modalities("balances modalities against each other")
        self.by_lr = cfg.modulate == "lr"
        self.previous = torch.zeros(len(ctx.modalities), device=ctx.device)   # eps_m of the previous step

    @classmethod
    def check_preset(cls, cfg, train):
        if cfg.modulate == "gradient" and train.optimizer != "sgd":
            return [f"method.modulate: \"gradient\" scales encoder gradients, which {train.optimizer} divides out "
                    f"(its update is normalised by the running gradient scale), so the magnitude modulation would "
                    f"do almost nothing; use modulate = \"auto\" or \"lr\" (scales the encoder's learning rate), "
                    f"or train.optimizer = \"sgd\""]
        return []

    def setup(self, model):
        self.modules["classifiers"] = nn.ModuleDict({
            m: classifier(int(model.encoders[m].out_dim), self.cfg.classifier_hidden, self.ctx.n_classes)
            for m in self.ctx.modalities})

    def parameter_groups(self, model):
        groups = [{"params": model.encoder_parameters(m), "name": m} for m in self.ctx.modalities]
        groups.append({"params": model.head_parameters(), "name": "fusion"})
        groups.append({"params": list(self.modules.parameters()), "name": "classifiers"})
        return groups

    def bind_optimizer(self, optimizer):
        super().bind_optimizer(optimizer)
        self.by_lr = self.cfg.modulate == "lr" or (self.cfg.modulate == "auto"
                                                   and not isinstance(optimizer, torch.optim.SGD))

    # -- one step ---------------------------------------------------------------------------------
    def train_step(self, x, y, step):
        model, mods, cfg = step.model, self.ctx.modalities, self.cfg
        with step.autocast():
            out = model(x)
        task = F.cross_entropy(out.fused.float(), y)
        features = [out.features[m] for m in mods]
        guide_in = [z.detach().requires_grad_(True) for z in features]
        with step.autocast():
            cls_logits = [self.modules["classifiers"][m](z) for m, z in zip(mods, guide_in)]
        cls_ce = torch.stack([F.cross_entropy(logits.float(), y) for logits in cls_logits])
        g_uni = torch.autograd.grad(cls_ce.sum(), guide_in, retain_graph=True)
        g_mul = self._multimodal_gradients(task, features)
        local = gradient_sums(g_mul, g_uni)
        correct = torch.stack([(logits.detach().argmax(-1) == y).sum() for logits in cls_logits]).float()
        rows = torch.full((1,), y.shape[0], dtype=torch.float32, device=y.device)
        totals = all_reduce_sum(torch.cat([correct, rows, local.flatten()]))   # one collective
        M = len(mods)
        accuracy = totals[:M] / totals[M]
        sums = totals[M + 1:].view(M, 3)
        delta = accuracy - self.previous
        balance = balance_terms(delta)
        cos = cosines(sums)
        gm = direction_loss(balance, cos)
        steer = direction_steps(g_mul, g_uni, sums, balance, cfg.lambda_gm)
        steered = sum((z.float() * s).sum() for z, s in zip(features, steer))   # d/dz_m = steer_m
        heads = self.modality_head_loss(out, y, step)
        extra = cls_ce.sum() if heads is None else cls_ce.sum() + heads
        step.backward(task + (steered - steered.detach()) + extra)
        k = magnitude_coefficients(balance, cfg.rho, cfg.max_coef)
        self._modulate(model, k, step)
        step.scale_lr("classifiers", cfg.classifier_lr_ratio)
        step.step_optimizer()
        self.previous = accuracy
        live = {"method/gm": gm, "method/cls_ce": cls_ce.sum().detach()}
        if heads is not None:
            live["method/head_ce"] = heads.detach()
        for i, m in enumerate(mods):
            live[f"coef/{m}"] = k[i]
            live[f"score/{m}"] = accuracy[i]
            live[f"method/delta_{m}"] = delta[i]
            live[f"method/cos_{m}"] = cos[i]
        return StepResult((task + cfg.lambda_gm * gm).detach(), out, live)

    @staticmethod
    def _multimodal_gradients(task: torch.Tensor, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """g_mul_m = dL_task/dz_m for every modality (a backward through the fusion head only)."""
        found = torch.autograd.grad(task, features, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(z) if g is None else g for z, g in zip(features, found)]

    def _modulate(self, model, k: torch.Tensor, step) -> None:
        """Encoder m's update times k_m: its learning rate for this step (Adam) or its gradients (SGD)."""
        for i, m in enumerate(self.ctx.modalities):
            if self.by_lr:
                step.scale_lr(m, k[i])
                continue
            grads = [p.grad for p in model.encoder_parameters(m) if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, k[i])

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        return {**super().state_dict(), "previous": self.previous.clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.previous = state["previous"].to(self.ctx.device)
