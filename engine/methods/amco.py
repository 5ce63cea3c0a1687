"""``amco``: Adaptive Mask Co-optimisation (Zhou et al., "Adaptive Mask Co-Optimization for Modal
Dependence in Multimodal Learning", ICASSP 2023 (IEEE doc 10096641; the awesome list says 2024);
BalanceBenchmark ``AMCo_trainer.py``; catalog section 2.3). No official release exists.

When the network comes to depend on one modality, AMCo masks part of that modality's features before the
fusion, so the fused prediction must use the others, while every modality keeps learning from its own
unimodal loss ("co-optimisation"). Each training step (:meth:`AMCo.train_step`):

1. **Mask ratio** on a sine warm-up (:func:`mask_ratio`): p_t = sin(pi/2 * min(eps, l_t) / eps), with
   l_t = (epochs done, fractional) / T the training progress measured against a horizon of T =
   ``horizon_epochs`` epochs. p_t rises from 0 to 1 over the first eps * T epochs and stays at 1.
2. **Mask** (:func:`keep_units`): for every modality m, N_m = floor(p_t d_m) of its d_m feature units,
   chosen uniformly at random (one mask per step, shared by the batch, as BalanceBenchmark's U-unit mask), are
   zeroed and the rest rescaled by min(1 / (1 - p_t), ``max_scale``) (inverted dropout, capped as in
   BalanceBenchmark's first port: 1 / (1 - p_t) below p_t = 0.9, 10 above). The mask applies only to the
   modalities flagged *dependent*; the others pass unchanged.
3. **Forward and loss**: the fusion head runs on the masked features; the loss is the fused cross-entropy
   plus every modality's own cross-entropy on ``logits[m]`` (from the same masked features), one backward.
   BalanceBenchmark runs that as M + 1 backward calls with ``retain_graph`` (the catalog's "M extra backward
   calls"); their gradients add up to the gradient of the summed loss, so one backward gives exactly the
   same update at 1F + 1B. A fully masked dependent modality (p_t = 1) sends no gradient to its encoder in
   that step.
4. **Dependence detection** (:func:`dependence_shares`): the per-modality logits of the step are
   concatenated, (B, M * C), and a softmax is taken over all M * C entries; modality m's share s_m is the
   batch mean of its block's probability mass (sum_m s_m = 1). m is *dependent* when s_m > sigma (the
   default ``rule``; see below for M > 2). The flags decide the masking of the **next** step (step 0 of a
   run masks nothing). The shares are summed over the ranks of a multi-process run (one all-reduce), so
   every rank masks the same modalities.

**Any number of modalities** (``rule``). Default ``"share"``, the catalog's rule for any M (and
BalanceBenchmark's for three): a modality is dependent when it holds more than sigma of the joint softmax
mass. With sigma >= 0.5 at most one modality is dependent at a time (as in BalanceBenchmark's first
port, which flags the first modality over sigma with ``elif``). For M > 2 a modality must then dominate
the joint mass clearly to be masked (its fair share is 1/M; with six views and sigma = 0.5 this rarely
happens, and AMCo reduces to the fused plus unimodal losses). ``"ratio"`` (ours) compares each share
with the mean share of the others: s_m / mean_{j != m} s_j > sigma / (1 - sigma), i.e.
s_m (M - 1)(1 - sigma) > sigma (1 - s_m) (:func:`dependence_flags`); for M = 2 it is exactly s_m > sigma,
and for M > 2 it flags every modality well above the others' mean (possibly several). The uci_mfeat
preset (six views) uses it.

**What is masked, and U.** The catalog's defaults are sigma = 0.5, U = 512, eps = 0.3. U is the length of
the mask; in BalanceBenchmark's first AMCo port (April 2024, ``models/avclassify_model.py``) the mask has
U = 512 units and multiplies the dependent modality's encoder feature (ResNet-18's 512-wide output) before
the fusion, rescaled as in step 2. So U is the feature width: here it is each modality's own d_m, taken
from its encoder (no option). BalanceBenchmark's refactor (September 2024) instead masks the dependent
modality's C class logits and adds a learnable C x C layer (``linear_star``) on the summed logits; we
follow the feature mask of the first port, which matches U = 512, and add no extra layer (the paper's
text is not available to us; the catalog's description is followed where it is unambiguous).

Deviations from BalanceBenchmark, on purpose:

* **Progress l_t.** BalanceBenchmark sets l_t = 0 at every epoch start and adds ``current_epoch / 10`` after
  each batch, so epoch 0 never masks and from epoch 1 on p_t reaches 1 within a few batches of every epoch.
  The catalog describes a sine *warm-up*; here l_t is the training progress t / T, measured against a fixed
  horizon T (``horizon_epochs``, default 30: BalanceBenchmark's training length), not the run's planned
  epochs, so that extending a finished run does not change the schedule it was trained with.
* **Flags per step.** BalanceBenchmark's first port only ever sets flags within an epoch (a modality once
  dependent stays masked until the epoch ends) and resets them at every epoch start; its refactor
  recomputes them at every step. Here they are recomputed at every step (from that step's shares) and
  carried across epoch boundaries; they are part of the method's state.
* **One backward** of the summed loss instead of M + 1 (step 3; identical gradients).
* **One random stream on the device**: the masks come from the method's own generator (seeded from the
  run seed, saved in the method's state) instead of numpy's global RNG on the host; a mask is drawn for
  every modality at every step (whether it is applied or not), so the stream does not depend on the flags.
  Every rank of a multi-process run draws the same masks.
* **No host synchronisation**: BalanceBenchmark compares the shares with sigma on the host (``bool(...)``);
  here the flags are device tensors and the masking is a ``torch.where``.

Non-additive fusions (``film``, ``gated``): the masked features go through the fusion as usual, and the
per-modality heads (not part of the fused logits) are trained by the unimodal losses (so no detached head
loss is added: ``trains_modality_heads``). The train metrics of a step are those of the masked forward.

Optimiser: SGD (the registration's). The paper's own optimiser could not be checked (its text is not in
the sources we had); SGD with momentum 0.9 is the setting of the audio-visual balancing papers of its time (OGM-GE,
MMCosine). BalanceBenchmark trains every method with AdamW.

Live values per step (0-d device tensors): ``score/<m>`` the share s_m of the joint softmax mass (which
sets the next step's flags), ``method/dependent_<m>`` 1 when m was masked in this step (its flag from the
previous step), ``coef/<m>`` the fraction of m's feature units that reach the fusion in this step
(1 - N_m / d_m when masked, else 1), ``method/mask_ratio`` p_t, ``method/ce_fused`` and ``method/ce_<m>``.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``sigma``, 0.4 and 0.6. The sources
give only 0.5 (catalog, BalanceBenchmark) and the paper's text was not available to us, so these are our
one-step brackets around it, not the authors' values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..collectives import all_reduce_sum
from ..models import ModelOutput
from ..schema import opt
from . import METHODS
from .base import Method, StepResult


@dataclass(frozen=True)
class AMCoConfig:
    sigma: float = opt(0.5, ge=0.0, le=1.0, help="dependence threshold: modality m is masked when its share of the "
                                                 "joint softmax mass exceeds sigma (catalog and BalanceBenchmark: 0.5)")
    eps: float = opt(0.3, gt=0.0, le=1.0, help="progress at which the mask ratio p_t = sin(pi/2 min(eps, l_t)/eps) "
                                               "reaches 1 (catalog and BalanceBenchmark: 0.3)")
    horizon_epochs: float = opt(30.0, gt=0.0, help="T: the progress is l_t = epochs done / T, so p_t reaches 1 after "
                                                   "eps * T epochs (BalanceBenchmark trains 30 epochs)")
    rule: Literal["share", "ratio"] = opt("share", help="dependence rule: \"share\" s_m > sigma (catalog, any M); "
                                                         "\"ratio\" s_m over the mean share of the others > "
                                                         "sigma / (1 - sigma) (ours; the same rule for M = 2)")
    max_scale: float = opt(10.0, ge=1.0, help="cap on the rescaling 1 / (1 - p_t) of the kept units "
                                              "(BalanceBenchmark's first port: 10)")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def mask_ratio(progress: float, eps: float) -> float:
    """p_t = sin(pi/2 * min(eps, l_t) / eps) for the training progress l_t >= 0 (a host float)."""
    return math.sin(math.pi / 2 * min(eps, max(progress, 0.0)) / eps)


def masked_count(p: float, width: int) -> int:
    """N = floor(p * width): how many of ``width`` units the ratio p masks (all of them at p = 1)."""
    return min(width, int(math.floor(p * width + 1e-9)))


def keep_units(keys: torch.Tensor, n_masked: int) -> torch.Tensor:
    """(d,) bool: False for the ``n_masked`` units with the smallest random keys (a uniformly random subset)."""
    rank = keys.argsort().argsort()
    return rank >= n_masked


def dependence_flags(shares: torch.Tensor, sigma: float, rule: str = "share") -> torch.Tensor:
    """(M,) bool: the dependence flags from the shares s_m (summing to 1). "share": s_m > sigma. "ratio":
    s_m / mean_{j != m} s_j > sigma / (1 - sigma), evaluated without division as
    s_m (M - 1)(1 - sigma) > sigma (1 - s_m); for M = 2 both are s_m > sigma."""
    if rule == "share":
        return shares > sigma
    return shares * (shares.shape[0] - 1) * (1.0 - sigma) > sigma * (1.0 - shares)


def dependence_shares(logits: list[torch.Tensor]) -> torch.Tensor:
    """(M,): per modality, the batch *sum* of its block's mass in the softmax over the concatenated logits
    (B, M * C); divided by the batch size these are the shares s_m (summing to 1)."""
    joint = torch.cat([z.detach().float() for z in logits], dim=-1).softmax(-1)
    return joint.view(joint.shape[0], len(logits), -1).sum(-1).sum(0)


# -- the method -------------------------------------------------------------------------------------
@METHODS.register("amco", config=AMCoConfig,
                  help="adaptive mask co-optimisation: the dependent modality's features are masked before the "
                       "fusion on a sine schedule, plus unimodal losses (Zhou et al. 2023, AMCo)",
                  paper="Zhou, Liang, Zheng, Xuan, Kumada: Adaptive Mask Co-Optimization for Modal Dependence in "
                        "Multimodal Learning, ICASSP 2023",
                  optimizer="sgd", cost="1F + 1B (BalanceBenchmark's M + 1 backward calls are one here)",
                  live={"score/<m>": "share s_m of modality m in the softmax over all modalities' concatenated "
                                     "logits (m is dependent, masked in the next step, when s_m > sigma; "
                                     "rule \"ratio\": when s_m / mean of the others' > sigma / (1 - sigma))",
                        "method/dependent_<m>": "1 when modality m was flagged dependent and masked in this step",
                        "coef/<m>": "fraction of modality m's feature units that reach the fusion in this step "
                                    "(1 - N_m / d_m when masked, else 1)",
                        "method/mask_ratio": "mask ratio p_t = sin(pi/2 min(eps, l_t) / eps) of this step",
                        "method/ce_fused": "cross-entropy of the fused logits (masked features)",
                        "method/ce_<m>": "cross-entropy of modality m's own logits"},
                  tune={"sigma": (0.4, 0.6)})
class AMCo(Method):
    """AMCo: masking of the dependent modality's features plus unimodal losses; see the module docstring."""

    trains_modality_heads = True

    def __init__(self, cfg: AMCoConfig, ctx):
        super().__init__(cfg, ctx)
        self.require_modalities("balances modalities against each other")
        self.dependent = torch.zeros(len(ctx.modalities), dtype=torch.bool, device=ctx.device)
        self.generator: torch.Generator | None = None

    def setup(self, model):
        self.widths = [int(model.encoders[m].out_dim) for m in self.ctx.modalities]
        self.generator = torch.Generator(device=self.ctx.device)
        self.generator.manual_seed((self.ctx.seed * 1_000_003 + 314_159) % (2 ** 62))

    # -- the schedule and the masks ------------------------------------------------------------------
    def progress(self, epoch: int, batch_in_epoch: int) -> float:
        """l_t: epochs done (fractional) over the horizon T."""
        return (epoch + batch_in_epoch / max(1, self.ctx.steps_per_epoch)) / self.cfg.horizon_epochs

    def draw_masks(self, p: float) -> tuple[list[torch.Tensor], list[int]]:
        """This step's multiplier per modality ((d_m,) float: 0 on the masked units, the rescaling on the others)
        and the masked counts N_m. One draw of sum_m d_m uniform keys from the method's generator."""
        keys = torch.rand(sum(self.widths), generator=self.generator, device=self.ctx.device)
        scale = min(1.0 / (1.0 - p), self.cfg.max_scale) if p < 1.0 else self.cfg.max_scale
        counts = [masked_count(p, d) for d in self.widths]
        masks = [keep_units(k, n).to(torch.float32) * scale
                 for k, n in zip(keys.split(self.widths), counts)]
        return masks, counts

    # -- one training step ------------------------------------------------------------------------------
    def train_step(self, x, y, step):
        model, mods = step.model, self.ctx.modalities
        p = mask_ratio(self.progress(step.epoch, step.batch_in_epoch), self.cfg.eps)
        masks, _ = self.draw_masks(p)
        flags = self.dependent
        with step.autocast():
            features = model.encode(x)
            masked = {m: torch.where(flags[i], features[m] * masks[i].to(features[m].dtype), features[m])
                      for i, m in enumerate(mods)}
            fused, logits = model.head(masked)
        out = ModelOutput(fused=fused, logits=logits, features=features)
        ce_fused = F.cross_entropy(fused.float(), y)
        ce = torch.stack([F.cross_entropy(logits[m].float(), y) for m in mods])
        loss = ce_fused + ce.sum()
        step.backward(loss)
        self.optimizer_step(step)

        count = torch.full((1,), y.shape[0], dtype=torch.float32, device=y.device)
        sums = all_reduce_sum(torch.cat([dependence_shares([logits[m] for m in mods]), count]))
        shares = sums[:-1] / sums[-1]
        self.dependent = dependence_flags(shares, self.cfg.sigma, self.cfg.rule)

        kept = torch.stack([(mask != 0).to(torch.float32).mean() for mask in masks])   # 1 - N_m / d_m
        coef = torch.where(flags, kept, torch.ones_like(kept))
        live = {"method/mask_ratio": torch.full((), p, device=y.device), "method/ce_fused": ce_fused.detach()}
        for i, m in enumerate(mods):
            live[f"score/{m}"] = shares[i]
            live[f"method/dependent_{m}"] = flags[i].to(torch.float32)
            live[f"coef/{m}"] = coef[i]
            live[f"method/ce_{m}"] = ce[i].detach()
        return StepResult(loss.detach(), out, live)

    # -- resume ---------------------------------------------------------------------------------------
    def state_dict(self):
        state = super().state_dict()
        state["dependent"] = self.dependent.detach().clone()
        state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.dependent = state["dependent"].to(device=self.ctx.device, dtype=torch.bool).clone()
        self.generator.set_state(state["generator"].cpu())
