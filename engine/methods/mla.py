"""``mla``: Multimodal Learning with Alternating unimodal adaptation (Zhang, Yoon, Bansal, Yao,
"Multimodal Representation Learning by Alternating Unimodal Adaptation", CVPR 2024; release
Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation, ``main.py::train_epoch`` with
``--gs_flag`` and ``utils/utils.py::GSPlugin``).

The modalities never share a loss. Each batch is learnt **modality by modality**, in the preset's
modality order (:meth:`MLA.train_step`): for modality m, its encoder alone runs on its input, a linear
classifier **shared by every modality** (``self.modules["head"]``, Linear(d -> C)) gives its logits,
CE_m is back-propagated (it reaches only encoder m and the shared head) and the optimiser steps. So a
batch makes M optimiser steps at about joint training's FLOPs; encoder m moves once, the head M times.

**Gradient modification (OWM).** So that learning modality m does not overwrite what the earlier
modalities taught the shared head, the head's weight gradient G (C x d) is replaced by G P before the
step, with the orthogonal-weight-modification projector P (d x d; Zeng, Chen, Cui, Yu, "Continual
learning of context-dependent processing in neural networks", Nature Machine Intelligence 2019). P
starts as the identity and is updated recursively, after each modality step, from the mean head input
h of that step (the batch mean of modality m's features):

    k = P h,      P <- P - k k^T / (alpha + h^T k)           (:func:`owm_update`)

so the next modality's step (the first modality of a batch: after the last one of the previous batch)
is projected away from the inputs of the modalities learnt before it, as the paper states it with the
previous modality's mean feature. With P_0 = I this is recursive least squares, P = alpha (alpha I +
sum_t h_t h_t^T)^-1, and for the latest input P h = alpha / (alpha + h^T P_old h) P_old h: the head's
update G P changes its output on h by only that fraction (0 as alpha -> 0). The update costs O(d^2)
per modality step, on the device, in float32 under ``torch.no_grad``; P is part of the method's state
(resumed exactly). ``alpha`` follows the release's schedule alpha^(1 + b/B) over an epoch's batches
(0.1 -> 0.01; ``alpha_decay = false``: constant). In a multi-process run h is averaged over the ranks
(one all-reduce per modality step), so every rank holds the same P. The head's bias is not projected
(OWM acts on the weights, as in the release).

**Test-time dynamic fusion** (:meth:`MLA.head`, used by ``predict`` and the monitors): each
modality's logits o_m come from the shared head on its own features; per sample, with H_m the entropy
of softmax(o_m) over the classes, the weights are

    w_m = exp(max_k H_k - H_m) / sum_j exp(max_k H_k - H_j)   (= softmax over m of -H_m)

and the fused logits are sum_m w_m o_m (:func:`entropy_weights`), so a confident modality counts
more. ``fusion = "fixed"`` uses constant weights instead (``fusion_weights``, normalised; empty: equal;
the release's av_alpha 0.5 for two modalities). ``val/acc/<m>`` is o_m's accuracy, ``*/acc/fused``
the fused one. Any M >= 2: the rules above do not depend on M (the paper runs three on IEMOCAP).

The model's own ``[model]`` fusion head is built but **not used** (not optimised, not used to
predict), as AUG does with its classifiers: MLA needs one classifier for every modality, which the
concat head's per-modality column slices are not. Any fusion type may therefore be named. Encoders
of different widths are zero-padded to the widest before the shared head (ours; the paper's encoders
share a width). Mid-fusion is refused: it would let CE_m reach the other encoders.

Deviations from the release code, on purpose (following the paper):

1. The projection is applied. ``GSPlugin.before_update`` projects only a parameter named
   ``"module.weight"``, which ``fc_out.named_parameters()`` never yields (it gives ``"weight"``), so the
   release trains with plain alternating updates; ``owm = false`` reproduces that.
2. P is updated with the *previous* modality's mean feature before a step (the paper); the release
   would update it with the current step's own features first (it would suppress the step's own
   gradient along its mean input), normalises P to unit Frobenius norm after each update (not in the
   paper or OWM; it would divide the head's learning rate by about sqrt(d)), and keeps P attached to
   the autograd graph (a memory leak). Here P is updated without a graph and not normalised.
3. The entropy is per sample over the classes (the paper). The release's ``calculate_entropy``
   applies softmax over the *batch* axis (dim 0) and sums over the whole batch: one weight pair per
   evaluation batch that depends on the batch's composition.
4. The release encodes every modality before the alternation; here encoder m runs inside its own step
   (the other encoders do not change in that step, so only the order of dropout draws differs).

Live values per step (0-d device tensors, on the training batch): ``method/ce_<m>`` (CE_m, before its
update), ``score/<m>`` (batch mean entropy H_m of the shared head's prediction, the quantity the
dynamic fusion compares), ``coef/<m>`` (a running estimate of the fusion weight: the batch mean of w_m
from the logits of the modalities' steps; the fixed weight with ``fusion = "fixed"``) and
``method/owm_trace`` (trace(P) / d after the batch: 1 at the start; how much of the head's input space
is still free to learn). ``train/loss/method`` is sum_m CE_m. In a multi-process run ``score/<m>`` and
``coef/<m>`` are the global batch's (averaged over the ranks' equal shards, one all-reduce per step).
Cost vs ``joint``: the same encoder forwards and backwards, M head forwards, M optimiser steps and
M O(d^2) updates of P per batch.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``fusion`` "fixed" (the paper's
fixed-weight test-time fusion, beside its entropy-based dynamic one) and ``owm`` false (the plain alternating
updates the release code runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..collectives import all_reduce_mean
from ..errors import PresetError
from ..models import ModelOutput
from ..schema import opt
from . import METHODS
from .base import Method, StepResult


@dataclass(frozen=True)
class MLAConfig:
    fusion: Literal["dynamic", "fixed"] = opt(
        "dynamic", help="test-time fusion of the modalities' shared-head logits: \"dynamic\" weights each sample's "
                        "modalities by exp(-entropy) (paper); \"fixed\" uses fusion_weights")
    fusion_weights: list[float] = opt([], ge=0.0,
                                      help="fixed fusion: one weight per modality in the preset's order, normalised "
                                           "to sum 1; empty: equal (release: av_alpha 0.5)")
    owm: bool = opt(True, help="project the shared head's weight gradient with the OWM projector P (paper); false: "
                               "plain alternating updates, which is what the release code runs (module docstring)")
    alpha: float = opt(0.1, gt=0.0, help="OWM regulariser alpha in P's update k k^T / (alpha + h^T P h) "
                                         "(release GSPlugin: 0.1 at the start of each epoch)")
    alpha_decay: bool = opt(True, help="alpha^(1 + b/B) over the epoch's batches b of B, 0.1 -> 0.01 (release); "
                                       "false: alpha throughout")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def owm_update(P: torch.Tensor, h: torch.Tensor, alpha: float) -> torch.Tensor:
    """One recursive OWM update of the projector with the mean input ``h`` (d,):
    k = P h, P - k k^T / (alpha + h^T k). Symmetric when P is (k k^T is exactly symmetric)."""
    k = P @ h
    return P - torch.outer(k, k) / (alpha + h @ k)


def project(grad: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """The weight gradient (C, d) with each row projected by P: G P (P is symmetric)."""
    return grad @ P


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last axis, in float32: (...)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def entropy_weights(stacked: torch.Tensor) -> torch.Tensor:
    """Dynamic fusion weights from stacked logits (M, ..., C): w_m = exp(max_k H_k - H_m) / sum_j
    exp(max_k H_k - H_j) per sample, i.e. softmax over the modalities of -H: (M, ...)."""
    return torch.softmax(-entropy(stacked), dim=0)


def alpha_at(alpha: float, decay: bool, batch: int, n_batches: int) -> float:
    """The release's schedule alpha^(1 + b/B) (``GSPlugin.before_update``), or ``alpha`` without decay."""
    if not decay:
        return alpha
    return alpha ** (1.0 + min(batch, n_batches) / max(n_batches, 1))


@METHODS.register("mla", config=MLAConfig,
                  help="alternating unimodal steps through one shared head with OWM gradient projection, "
                       "entropy-weighted fusion at test time (MLA)",
                  paper="Zhang, Yoon, Bansal, Yao: Multimodal Representation Learning by Alternating Unimodal "
                        "Adaptation, CVPR 2024",
                  optimizer="sgd", cost="M x (F_m + B_m + optimiser step) + M O(d^2) projector updates",
                  live={"method/ce_<m>": "cross-entropy of modality m's shared-head logits in its own step",
                        "score/<m>": "mean entropy of modality m's shared-head prediction on the batch (what the "
                                     "dynamic fusion compares; lower is more confident)",
                        "coef/<m>": "modality m's test-time fusion weight: the batch mean of its entropy weight "
                                    "exp(-H_m) / sum_j exp(-H_j) (a running estimate), or its fixed weight",
                        "method/owm_trace": "trace(P) / d of the OWM projector: the fraction of the shared "
                                            "head's input space still free to learn (1 at the start)"},
                  tune={"fusion": ("fixed",), "owm": (False,)})
class MLA(Method):
    """See the module docstring."""

    trains_modality_heads = True   # every logits[m] is the shared head's, trained by CE_m

    def __init__(self, cfg: MLAConfig, ctx):
        super().__init__(cfg, ctx)
        mods = list(ctx.modalities)
        self.require_modalities("alternates between modalities through a shared head")
        given = list(cfg.fusion_weights)
        if given and (len(given) != len(mods) or sum(given) <= 0):
            why = (f"{len(given)} weights for {len(mods)} modalities ({', '.join(mods)})"
                   if len(given) != len(mods) else "the weights sum to 0")
            raise PresetError("method", [f"method.fusion_weights: {why}; give one weight >= 0 per modality in the "
                                         f"order of the preset's modalities, or leave it empty for equal weights"])
        weights = [w / sum(given) for w in given] if given else [1.0 / len(mods)] * len(mods)
        self.fixed = torch.tensor(weights, dtype=torch.float32, device=ctx.device)
        self.dims: dict[str, int] = {}
        self.width = 0
        self.P: torch.Tensor | None = None

    # -- modules and optimiser ------------------------------------------------------------------
    def setup(self, model):
        if model.mid_fusion_stages:
            raise PresetError("method", ["model.mid_fusion: mla trains each modality's encoder alone through the "
                                         "shared head, and a mid-fusion module would carry a modality's loss into "
                                         "the other encoders; remove model.mid_fusion"])
        self.dims = {m: int(model.encoders[m].out_dim) for m in self.ctx.modalities}
        self.width = max(self.dims.values())
        self.modules["head"] = self._shared_head(self.width, self.ctx.n_classes)
        self.P = torch.eye(self.width, dtype=torch.float32, device=self.ctx.device)

    def _shared_head(self, d: int, n_classes: int) -> nn.Linear:
        """Linear(d -> C) with PyTorch's default distribution, drawn from a generator seeded by the run
        seed (the global RNG stream is not touched, so building the method again, as ``finish`` does,
        changes nothing)."""
        layer = nn.utils.skip_init(nn.Linear, d, n_classes)
        gen = torch.Generator().manual_seed((self.ctx.seed * 1_000_003 + 4_242) % (2 ** 62))
        bound = 1.0 / math.sqrt(d)
        with torch.no_grad():
            layer.weight.copy_(torch.empty(n_classes, d).uniform_(-bound, bound, generator=gen))
            layer.bias.copy_(torch.empty(n_classes).uniform_(-bound, bound, generator=gen))
        return layer

    def parameter_groups(self, model):
        """One group per modality's encoder and one for the shared head; the model's fusion head is not
        optimised (MLA does not use it)."""
        groups = [{"params": model.encoder_parameters(m), "name": m} for m in self.ctx.modalities]
        groups.append({"params": list(self.modules["head"].parameters()), "name": "mla/head"})
        return groups

    # -- the shared head and the fusion -----------------------------------------------------------
    def pad(self, m: str, z: torch.Tensor) -> torch.Tensor:
        """Modality m's features zero-padded to the shared head's input width."""
        extra = self.width - self.dims[m]
        return F.pad(z, (0, extra)) if extra else z

    def shared_logits(self, m: str, z: torch.Tensor) -> torch.Tensor:
        return self.modules["head"](self.pad(m, z))

    def fusion_weights(self, stacked: torch.Tensor) -> torch.Tensor:
        """(M, ...) weights of stacked logits (M, ..., C): entropy weights, or the fixed ones broadcast."""
        if self.cfg.fusion == "dynamic":
            return entropy_weights(stacked)
        return self.fixed.view(-1, *([1] * (stacked.dim() - 2))).expand(stacked.shape[:-1])

    def fuse(self, logits: dict[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack([logits[m].float() for m in self.ctx.modalities])
        return (self.fusion_weights(stacked).unsqueeze(-1) * stacked).sum(0)

    def head(self, model, features):
        logits = {m: self.shared_logits(m, features[m]) for m in self.ctx.modalities}
        return self.fuse(logits), logits

    # -- one training step: alternating unimodal steps -------------------------------------------
    def train_step(self, x, y, step):
        """For each modality in turn: its encoder, the shared head, CE_m, backward (reaching encoder m and
        the head only), the head's weight gradient projected by P, the optimiser step (the other
        parameters have no gradient and are skipped), then P updated with this step's mean feature."""
        model, mods = step.model, self.ctx.modalities
        weight = self.modules["head"].weight
        alpha = alpha_at(self.cfg.alpha, self.cfg.alpha_decay, step.batch_in_epoch, self.ctx.steps_per_epoch)
        logits, features, ces = {}, {}, []
        for m in mods:
            with step.autocast():
                z = model.encoders[m](x[m])
                out = self.shared_logits(m, z)
            ce = F.cross_entropy(out.float(), y)
            step.backward(ce)
            if self.cfg.owm and weight.grad is not None:
                with torch.no_grad():
                    weight.grad.copy_(project(weight.grad, self.P))
            step.step_optimizer()
            if self.cfg.owm:
                self.P = self._updated(self.P, m, z, alpha)
            logits[m], features[m] = out.detach(), z.detach()
            ces.append(ce.detach())
        stacked = torch.stack([logits[m].float() for m in mods])
        H = entropy(stacked).mean(-1)                                     # (M,)
        w = self.fusion_weights(stacked).reshape(len(mods), -1).mean(-1)  # (M,)
        H, w = all_reduce_mean(torch.cat([H, w])).split(len(mods))       # the global batch's (one all-reduce)
        live = {"method/owm_trace": torch.diagonal(self.P).mean()}
        for i, m in enumerate(mods):
            live.update({f"method/ce_{m}": ces[i], f"score/{m}": H[i], f"coef/{m}": w[i]})
        out = ModelOutput(fused=self.fuse(logits), logits=logits, features=features)
        return StepResult(torch.stack(ces).sum(), out, live)

    @torch.no_grad()
    def _updated(self, P: torch.Tensor, m: str, z: torch.Tensor, alpha: float) -> torch.Tensor:
        """P after the OWM update with the mean of modality m's features (over the global batch); kept
        unchanged when that mean is not finite (a step the non-finite guard skips)."""
        h = all_reduce_mean(self.pad(m, z.detach().float()).mean(0))
        return torch.where(torch.isfinite(h).all(), owm_update(P, h, alpha), P)

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        return {"modules": self.modules.state_dict(), "P": self.P.clone()}

    def load_state_dict(self, state):
        self.modules.load_state_dict(state["modules"])
        self.P = state["P"].to(self.ctx.device, torch.float32).clone()
