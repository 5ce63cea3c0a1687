"""``ogm`` and ``ogm_ge``: On-the-fly Gradient Modulation, without and with Generalisation Enhancement
(Peng, Wei, Deng, Wang, Hu, "Balanced Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022;
release GeWu-Lab/OGM-GE_CVPR2022 ``main.py``).

Each step, after the ordinary backward of the fused cross-entropy (:meth:`OGM.after_backward`):

1. **Discrepancy scores** (paper Eq. 8-9): s_m = sum_i softmax(l_m)_{i, y_i} over the batch, from modality
   m's own logits l_m. With ``concat`` fusion these are the OGM-GE slice of the shared head,
   W[:, slice_m] z_m + b / M (``MultimodalModel.head`` returns them); with ``sum``, each modality's head.
   The sums (and the batch size) go through :func:`engine.collectives.all_reduce_sum` first, so every rank of a
   multi-process run computes the same coefficients.
2. **Ratio** rho_m = s_m / mean_{j != m} s_j. For two modalities this is the paper's rho_a = s_a / s_v and
   rho_v = 1 / rho_a. For M >= 3 it is mmbal's own generalisation, after the maintainers' answer in
   OGM-GE issue #16 ("one-to-others discrepancy ratios ... then average"): we compare a modality with the
   *mean score* of the others (as ``aug`` and OPM's s_m / s_others do) rather than averaging the pairwise
   ratios s_m / s_j, which blows up when one weak modality's score is near 0. Every modality with
   rho_m > 1 is modulated with its own coefficient (for M = 2 exactly one is, unless they tie).
3. **Coefficient** (paper Eq. 10), ``rule = "paper"`` (default): k_m = 1 - tanh(alpha * rho_m) if
   rho_m > 1, else 1. This is what the paper and both GeWu-Lab releases compute (the CVPR release writes
   ``1 - tanh(alpha * relu(ratio))`` in the ``ratio > 1`` branch, BML_TPAMI2024 the same), so k jumps
   from 1 to 1 - tanh(alpha) as rho crosses 1. ``rule = "shifted"``: k_m = 1 - tanh(alpha * relu(rho_m - 1)),
   continuous at rho = 1 (k = 1 for balanced modalities). Note: a description of the MCR codebase's copy
   (``Bias_Infusion_OGM``) says "the original uses relu(ratio - 1)" and calls the missing ``- 1`` there
   a bug; the releases we read (CVPR main.py, BML_TPAMI2024 main.py) do not subtract 1, so the default
   follows the paper and the releases and the shifted form is an option, not a bug fix.
4. **Modulation** (``modulate``): under SGD (the paper's optimiser: SGD, momentum 0.9), every gradient
   of modality m's encoder (``model.encoder_parameters(m)``) is multiplied by k_m, in place, before the
   trainer's clipping and optimiser step, as the paper does. Under Adam/AdamW a gradient factor is
   divided out by the second-moment normalisation (a constant 0.5 changed the update by 5e-8), so there
   the *learning rate* of encoder m's parameter group is multiplied by k_m for the step
   (``step.scale_lr``): the update shrinks by k_m, which is what the paper's modulation achieves under
   SGD. ``modulate = "auto"`` (default) chooses by optimiser; ``"gradient"`` with Adam is refused.
5. **GE** (``ogm_ge`` only, paper Sec. 3.3 and Algorithm 1): each modulated encoder gradient tensor g gets
   Gaussian noise N(0, std(g)^2), std over the tensor's elements of the gradient *before* scaling (the
   release's current ``parms.grad = parms.grad * coeff + zeros_like(grad).normal_(0, grad.std() + 1e-8)``
   evaluates std before the assignment; the paper's noise restores the SGD noise covariance of the
   unscaled gradient). ``noise_on = "all"`` (default) adds it to every encoder's gradients, as the release
   and the paper's algorithm do (the weak modality is "modulated" with k = 1); ``"dominant"`` only to the
   modalities with rho > 1 (a masked draw, so the random stream does not depend on which modality leads).

Modulation and noise act only in epochs [modulation_start, modulation_end) (0-based; ``modulation_end``
unset: to the end). The release defaults are 0-50 of 100 epochs (README: alpha 0.1 VGGSound, 0.8
CREMA-D); BalanceMM uses alpha 0.3 with epochs 10-80; our defaults (alpha 0.3, all epochs) suit short runs.
Scores and ratios are computed and logged in every epoch.

Deviations from the release code, on purpose:

* All encoder parameters are modulated, not only 4-d (conv kernel) gradients: mmbal's encoders include
  MLPs and transformers, where the conv-only rule would modulate nothing (BalanceMM scales all non-bias
  weights). Parameters with a single element get no noise (their std is undefined).
* No ``+ 1e-8`` on the noise std (it only keeps ``normal_`` from rejecting std = 0) and no ``.item()``:
  scores, ratios, coefficients and stds stay on the device (no host sync per step; the release sums a
  Python list of per-sample probabilities).
* The noise comes from the method's own generator, seeded from the run seed and saved in the method's
  state: resume is exact, and every rank of a multi-process run draws the same noise (their gradients
  are identical after the all-reduce, so their weights stay identical).
* At an exact tie (rho = 1) nothing is modulated; the release's ``else`` branch modulates audio.
* Non-additive fusions (``film``, ``gated``): the fused loss does not train their unimodal heads, so
  their scores would be those of random classifiers. Each head is trained by a cross-entropy on the
  *detached* encoder features (the encoders' gradients are unchanged; the base class's
  ``modality_head_loss``), logged as ``method/head_ce``. The release reads the concat slice for every
  fusion, which does not fit these heads.
* Under Adam/AdamW the coefficient scales encoder m's learning rate instead of its gradient (see 4).

Live values per step (0-d device tensors): ``coef/<m>`` (k_m applied, 1 outside the window),
``score/<m>`` (s_m / batch size: the mean true-class confidence), ``method/ratio/<m>`` (rho_m).
Cost vs ``joint``: one softmax over the per-modality logits and one ``_foreach_mul_`` scaling every
encoder gradient; ``ogm_ge`` adds one std per encoder parameter tensor, one normal draw for all of them
and one ``_foreach_addcmul_`` (:func:`modulate_`).

Declared sensitive for ``mmbal advise`` (the registrations' ``tune``, both methods): ``alpha``, 0.1 (VGGSound)
and 0.8 (CREMA-D), the release README's values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..collectives import all_reduce_sum
from ..schema import opt
from . import METHODS
from .base import Method


@dataclass(frozen=True)
class OGMConfig:
    alpha: float = opt(0.3, ge=0.0, help="modulation strength alpha in k = 1 - tanh(alpha * rho) "
                                         "(release README: 0.1 VGGSound, 0.8 CREMA-D; BalanceMM 0.3)")
    rule: Literal["paper", "shifted"] = opt("paper", help="coefficient of a dominant modality (rho > 1): 'paper' "
                                                          "1 - tanh(alpha * rho) (Eq. 10, the releases); 'shifted' "
                                                          "1 - tanh(alpha * (rho - 1)), continuous at rho = 1")
    modulation_start: int = opt(0, ge=0, help="first epoch (0-based) with modulation (release 0, BalanceMM 10)")
    modulation_end: int | None = opt(None, ge=1, help="epoch at which modulation stops (exclusive); unset: the "
                                                      "last epoch (release 50 of 100, BalanceMM 80)")
    modulate: Literal["auto", "gradient", "lr"] = opt(
        "auto", help="how k_m acts: 'gradient' scales encoder m's gradients (the paper, under SGD); 'lr' scales "
                     "its learning rate for the step (acts under Adam too); 'auto': gradient under SGD, lr otherwise")

    def __post_init__(self):
        if self.modulation_end is not None and self.modulation_end <= self.modulation_start:
            raise ValueError(f"modulation_end ({self.modulation_end}) must be greater than modulation_start "
                             f"({self.modulation_start}), or unset to modulate to the end")


@dataclass(frozen=True)
class OGMGEConfig(OGMConfig):
    noise_on: Literal["all", "dominant"] = opt("all", help="encoders whose gradients get the GE noise: 'all' (the "
                                                           "release and the paper's algorithm) or 'dominant' "
                                                           "(rho > 1) only")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def score_sums(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """s_m = sum_i softmax(logits_m)_{i, y_i}: (M,) from stacked per-modality logits (M, B, C)."""
    p = F.softmax(logits.detach().float(), dim=-1)
    return p.gather(-1, y.expand(p.shape[0], -1).unsqueeze(-1)).squeeze(-1).sum(-1)


def discrepancy_ratios(s: torch.Tensor) -> torch.Tensor:
    """rho_m = s_m / mean_{j != m} s_j, (M,). The mean of the others is a product with an off-diagonal
    matrix, so for M = 2 it is exactly s_b / s_a and s_a / s_b."""
    m = s.shape[0]
    others = (torch.ones(m, m, dtype=s.dtype, device=s.device) - torch.eye(m, dtype=s.dtype, device=s.device))
    mean_others = (others @ s) / max(m - 1, 1)
    return s / mean_others.clamp_min(torch.finfo(s.dtype).tiny)


def modulation_coefficients(rho: torch.Tensor, alpha: float, rule: str = "paper") -> torch.Tensor:
    """k_m per modality: ``paper`` 1 - tanh(alpha rho) where rho > 1, else 1; ``shifted`` 1 - tanh(alpha relu(rho - 1))."""
    if rule == "shifted":
        return 1.0 - torch.tanh(alpha * F.relu(rho - 1.0))
    return torch.where(rho > 1.0, 1.0 - torch.tanh(alpha * rho), torch.ones_like(rho))


def modulate_(grads: list[torch.Tensor], k, noise_gate=None, generator: torch.Generator | None = None) -> None:
    """In place: g <- k g (+ gate * N(0, std(g)^2) with std of g before scaling, when ``noise_gate`` is given).

    ``k`` and ``noise_gate`` are one 0-d tensor for every gradient or a list of one 0-d tensor per gradient
    (the modalities' coefficients for all encoders at once); ``k = None`` leaves the scale (noise only).
    Batched: one std per tensor, then one ``_foreach_mul_`` for the scaling, one normal draw for every
    element of every noisy gradient (in the gradients' order) and one ``_foreach_addcmul_`` adding it
    times each std. The gradients share one dtype and device (a model's do)."""
    if not grads:
        return
    chosen = [i for i, g in enumerate(grads) if g.numel() > 1] if noise_gate is not None else []
    noisy = [grads[i] for i in chosen]
    if noisy:
        gates = torch.stack([noise_gate[i] for i in chosen]) if isinstance(noise_gate, list) else noise_gate
        stds = (torch.stack([g.std() for g in noisy]) * gates).unbind()
    if k is not None:
        torch._foreach_mul_(grads, k)
    if noisy:
        sizes = [g.numel() for g in noisy]
        draw = torch.randn(sum(sizes), generator=generator, device=noisy[0].device, dtype=noisy[0].dtype)
        torch._foreach_addcmul_(noisy, [d.view_as(g) for d, g in zip(draw.split(sizes), noisy)], list(stds))


def in_window(epoch: int, start: int, end: int | None) -> bool:
    return epoch >= start and (end is None or epoch < end)


# -- the methods ------------------------------------------------------------------------------------
OGM_PAPER = "Peng, Wei, Deng, Wang, Hu: Balanced Multimodal Learning via On-the-fly Gradient Modulation, CVPR 2022"
OGM_LIVE = {
    "coef/<m>": "modulation coefficient k_m applied to encoder m's update (1 - tanh(alpha rho_m) when it "
                "leads, 1 otherwise and outside the modulation window)",
    "score/<m>": "mean true-class confidence softmax(l_m)_y of modality m's own logits on the batch",
    "method/ratio/<m>": "discrepancy ratio rho_m: m's score over the mean score of the other modalities",
    "method/head_ce": "cross-entropy training the per-modality heads on detached features (non-additive fusions)",
}

@METHODS.register("ogm", config=OGMConfig,
                  help="on-the-fly gradient modulation: the dominant modality's encoder gradients are scaled by "
                       "1 - tanh(alpha * rho) (Peng et al. 2022, OGM)",
                  paper=OGM_PAPER,
                  optimizer="sgd", cost="1F + 1B + gradient scaling", live=OGM_LIVE,
                  tune={"alpha": (0.1, 0.8)})
class OGM(Method):
    """OGM: per-step gradient modulation of the dominant encoders; see the module docstring."""

    noise = False   # OGM-GE's Gaussian gradient noise

    def __init__(self, cfg: OGMConfig, ctx):
        super().__init__(cfg, ctx)
        self.require_modalities("balances modalities against each other")
        self.generator: torch.Generator | None = None
        self.by_lr = cfg.modulate == "lr"
        self._ones = torch.ones(len(ctx.modalities), device=ctx.device)

    @classmethod
    def check_preset(cls, cfg, train):
        if cfg.modulate == "gradient" and train.optimizer != "sgd":
            return [f"method.modulate: \"gradient\" scales encoder gradients, which {train.optimizer} divides out "
                    f"(its update is normalised by the running gradient scale), so the modulation would do almost "
                    f"nothing; use modulate = \"auto\" or \"lr\" (scales the encoder's learning rate), or "
                    f"train.optimizer = \"sgd\" as in the paper"]
        return []

    def parameter_groups(self, model):
        return self.modality_groups(model)

    def bind_optimizer(self, optimizer):
        super().bind_optimizer(optimizer)
        self.by_lr = self.cfg.modulate == "lr" or (self.cfg.modulate == "auto"
                                                   and not isinstance(optimizer, torch.optim.SGD))

    def setup(self, model):
        if self.noise:
            device = next(model.parameters()).device
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed((self.ctx.seed * 1_000_003 + 7_919) % (2 ** 62))

    def after_backward(self, model, out, y, step):
        mods = self.ctx.modalities
        logits = torch.stack([out.logits[m] for m in mods])
        count = torch.full((1,), y.shape[0], dtype=torch.float32, device=y.device)
        sums = all_reduce_sum(torch.cat([score_sums(logits, y), count]))  # one collective: scores and rows
        s, n = sums[:-1], sums[-1]
        rho = discrepancy_ratios(s)
        k = self._ones
        if in_window(step.epoch, self.cfg.modulation_start, self.cfg.modulation_end):
            k = modulation_coefficients(rho, self.cfg.alpha, self.cfg.rule)
            self._modulate(model, step, k, self._noise_gates(rho))
        live = dict(zip((f"coef/{m}" for m in mods), k.unbind()))
        live.update(zip((f"score/{m}" for m in mods), (s / n).unbind()))
        live.update(zip((f"method/ratio/{m}" for m in mods), rho.unbind()))
        return live

    def _modulate(self, model, step, k: torch.Tensor, gates: torch.Tensor | None) -> None:
        """k_m on every encoder at once: learning rates (``by_lr``) or gradients, then the GE noise
        (one :func:`modulate_` call over all encoders' gradients)."""
        grads, scales, noise = [], [], []
        k_m = k.unbind()
        gate_m = None if gates is None else gates.unbind()
        for i, m in enumerate(self.ctx.modalities):
            if self.by_lr:
                step.scale_lr(m, k_m[i])
            own = [p.grad for p in model.encoder_parameters(m) if p.grad is not None]
            grads += own
            scales += [k_m[i]] * len(own)
            noise += [] if gate_m is None else [gate_m[i]] * len(own)
        if self.by_lr and gates is None:
            return  # the gradients keep their scale: nothing to do
        modulate_(grads, None if self.by_lr else scales, None if gates is None else noise, self.generator)

    def _noise_gates(self, rho: torch.Tensor) -> torch.Tensor | None:
        """Per modality, 1 where the GE noise is added and 0 where not (None: no noise at all)."""
        if not self.noise:
            return None
        if self.cfg.noise_on == "dominant":
            return (rho > 1.0).to(rho.dtype)
        return torch.ones_like(rho)

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        state = super().state_dict()
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"].cpu())



@METHODS.register("ogm_ge", config=OGMGEConfig,
                  help="OGM with generalisation enhancement: gradient modulation plus Gaussian noise "
                       "N(0, std(grad)^2) on the encoder gradients (Peng et al. 2022, OGM-GE)",
                  paper=OGM_PAPER,
                  optimizer="sgd", cost="1F + 1B + gradient scaling + noise per parameter", live=OGM_LIVE,
                  tune={"alpha": (0.1, 0.8)})
class OGMGE(OGM):
    """OGM-GE: :class:`OGM` plus the Gaussian gradient noise; see the module docstring."""

    noise = True
