"""``mmpareto``: conflict-aware integration of the multimodal and unimodal gradients of every encoder
(Wei & Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance", ICML 2024;
release GeWu-Lab/MMPareto_ICML2024, ``code/MMPareto.py``).

The losses are those of the multi-task "uniform baseline" (``multiloss`` with unit weights): the fused
cross-entropy L_mm and each modality's own cross-entropy L_m on ``logits[m]`` (its slice of the
``concat`` head, its ``sum`` head, or its own head under ``film`` / ``gated``). Each step
(:meth:`MMPareto.train_step`, one forward and two per-loss backward passes through ``step.grads``):

1. For every encoder m (parameters theta_m, flattened into one vector), g_mm = dL_mm/dtheta_m and
   g_u = dL_u/dtheta_m, with L_u = sum_k L_k. Without mid-fusion only L_m reaches encoder m, so g_u is
   exactly the gradient of m's own unimodal loss (one backward serves every encoder, instead of the
   release's one per loss); with a mid-fusion module the other modalities' unimodal losses reach it too
   and g_u is the gradient of the whole unimodal objective.
2. cos_m = cos(g_mm, g_u). No conflict (cos_m >= 0): weights (1/2, 1/2). Conflict (cos_m < 0): the
   min-norm point of the segment [g_u, g_mm] (MGDA with two tasks, closed form)
   lambda = clamp(((g_u - g_mm) . g_u) / |g_mm - g_u|^2, 0, 1), weights (lambda, 1 - lambda).
3. Direction: g_hat = 2 (lambda g_mm + (1 - lambda) g_u) (= g_mm + g_u without conflict). Magnitude: if
   |g_mm + g_u| > |g_hat|, g_hat is rescaled to |g_mm + g_u|; finally it is multiplied by gamma
   (``gamma``, 1.5, the paper's and the release's value), in both cases, as in the release.
   Encoder m's gradient is thus s_m g_hat = a_m g_mm + b_m g_u with a_m = s_m 2 lambda,
   b_m = s_m 2 (1 - lambda) and s_m = gamma max(1, |g_mm + g_u| / |g_hat|) (``method/boost_<m>``). The
   min-norm point is never longer than the segment's midpoint (g_mm + g_u) / 2, so the rescaling always
   reaches the sum's norm: |s_m g_hat| = gamma |g_mm + g_u|, in the common (non-conflicting) direction.
4. Every other parameter (the fusion head with the modality heads, mid-fusion modules) gets the gradient
   of L_mm + L_u, as after the release's ``loss.backward()``: a separate unimodal head its own loss's, the
   fusion head the multimodal loss's; under ``concat`` / ``sum`` a modality's head is part of the fused
   one and gets both. Then the optimiser steps (SGD, momentum 0.9, weight decay 1e-4 in the release).

Everything stays on the device: one ``torch.cat`` per loss flattens all encoders' gradients into a
(2, P) matrix, each encoder's 2x2 Gram matrix is one product of its column block, the rule above runs
batched over the M encoders (``torch.where``, no host read), and the combined gradients are written back
into ``.grad`` as views of one flat buffer. |g_hat| and |g_mm + g_u| are taken from the vectors (one
(2, 2) x (2, P_m) product per encoder), not from the Gram entries, which cannot resolve a small difference
of two large float32 vectors. Any number of modalities: the rule is per encoder, each
encoder having one unimodal loss.

**NaN guard** (NaN gradients, MMPareto issue #5). The release computes the cosine with
``F.cosine_similarity`` and divides by |g_hat| per parameter tensor, so a zero gradient (an encoder,
or one tensor of it, that a loss does not reach, a dead ReLU layer) or a conflict whose min-norm point is
0 (g_mm and g_u exactly opposite: a Pareto-stationary point) gives 0/0 or inf * 0, the likely sources of
the reported NaNs. Here a zero-norm
gradient has cosine 0 (no conflict: the plain sum), a vanishing |g_mm - g_u| keeps lambda = 1/2, and a
min-norm point that vanishes (|g_hat|^2 <= 1e-10 (|g_mm|^2 + |g_u|^2)) is not rescaled (no common descent
direction exists; the encoder gets gamma g_hat, about 0). ``method/guarded`` counts the encoders where
the guard acted in a step; an epoch in which it acted ends with a ``warning`` event saying how often.
Non-finite losses or gradients themselves are left to the run's non-finite guard (``step.grads``).

Deviations from the release, on purpose:

* **Norms per encoder.** The paper defines g_mm, g_u and the rescaling on an encoder's parameter vector;
  the release computes the cosine and the weights on the whole encoder but rescales each parameter
  tensor to its own summed-gradient norm (so one encoder's update is not a multiple of g_hat). Here the
  norms are the encoder's, as in the paper.
* **Conflict is cos < 0.** The paper calls a negative cosine a conflict; the release solves the min-norm
  problem also at cos = 0 exactly (``if cos > 0`` uniform, else MGDA). Orthogonal gradients (and a zero
  gradient) get the plain sum here.
* **One backward for the unimodal losses** (item 1); the release runs one per loss. Identical gradients
  without mid-fusion.
* The release's three-loss backward into ``.grad`` and per-tensor clones are replaced by ``step.grads``
  (averaged over the ranks of a multi-process run, checked by the non-finite guard), so every rank
  computes the same combination.

Not with ``train.compile = true`` (``compile_ok`` is False): the two per-loss backward passes share one
graph (``retain_graph``), which a compiled module's backward does not allow.

Under Adam / AdamW the constant gamma is divided out by the second-moment normalisation (as for every
gradient-scaling method); the direction rule and the per-step rescaling still act. The paper trained
with SGD, the registration's optimiser.

Live values per step (0-d device tensors): ``score/<m>`` cos(g_mm, g_u) of encoder m, ``coef/<m>``
lambda (the weight of the multimodal gradient before the factor 2; 1/2 without conflict),
``method/conflict_<m>`` (1 when cos < 0), ``method/boost_<m>`` (s_m), ``method/ce_fused``,
``method/ce_<m>`` and ``method/guarded``; the step's loss is L_mm + L_u (the uniform baseline's).

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``gamma``, 1.0 (no magnitude boost: the
conflict-aware mix alone) and 2.0 (ours, the same step above the paper's and release's 1.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..schema import opt
from . import METHODS
from .base import Method, StepResult

# A min-norm point this small relative to its two gradients is 0 up to float32 cancellation: not rescaled.
DEGENERATE = 1e-10


@dataclass(frozen=True)
class MMParetoConfig:
    gamma: float = opt(1.5, gt=0.0, help="magnitude boost: every encoder's integrated gradient is multiplied by "
                                         "gamma (paper and release: 1.5; 1: no boost)")


def gram(g_mm: torch.Tensor, g_u: torch.Tensor) -> torch.Tensor:
    """(M, 3) rows [g_mm.g_mm, g_mm.g_u, g_u.g_u] of M pairs of flat gradients given as (M, P) rows."""
    return torch.stack([(g_mm * g_mm).sum(-1), (g_mm * g_u).sum(-1), (g_u * g_u).sum(-1)], -1)


def pareto_weights(dots: torch.Tensor) -> dict[str, torch.Tensor]:
    """The direction rule for M encoders from their (M, 3) Gram entries [|g_mm|^2, g_mm.g_u, |g_u|^2]:
    (M,) tensors ``cos``, ``conflict`` (cos < 0, bool), ``lam`` (the multimodal gradient's weight: the
    min-norm weight under conflict, 1/2 otherwise) and ``valid`` (both gradients non-zero). No host sync.

    Under conflict g_mm.g_u < 0, so |g_mm - g_u|^2 >= |g_mm|^2 + |g_u|^2 and neither the numerator nor the
    denominator of lambda suffers cancellation; the ``torch.where`` guards only keep 0/0 out of the graph.
    """
    dots = dots.float()
    d11, d12, d22 = dots.unbind(-1)
    norms = (d11.clamp_min(0) * d22.clamp_min(0)).sqrt()
    valid = norms > 0
    cos = torch.where(valid, d12 / torch.where(valid, norms, torch.ones_like(norms)), torch.zeros_like(d12))
    conflict = cos < 0
    diff = d11 - 2 * d12 + d22                                  # |g_mm - g_u|^2
    spread = diff > 0
    lam_min_norm = ((d22 - d12) / torch.where(spread, diff, torch.ones_like(diff))).clamp(0, 1)
    lam = torch.where(conflict & spread, lam_min_norm, torch.full_like(d11, 0.5))
    return {"cos": cos, "conflict": conflict, "lam": lam, "valid": valid}


def magnitude(hat_sq: torch.Tensor, sum_sq: torch.Tensor, scale_sq: torch.Tensor, direction: dict[str, torch.Tensor],
              gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The factor s = gamma max(1, |g_mm + g_u| / |g_hat|) from the squared norms of g_hat and of the sum
    (computed from the vectors: under conflict both may be small differences of large vectors, which the
    Gram entries cannot resolve in float32) and scale_sq = |g_mm|^2 + |g_u|^2; and where the NaN guard acted
    (a zero gradient, or a min-norm point that vanishes: not rescaled). The min-norm point is never longer
    than the segment's midpoint, so |g_hat| <= |g_mm + g_u| and the rescaling always reaches the sum's norm."""
    nondegenerate = hat_sq > DEGENERATE * scale_sq
    ratio = (sum_sq / torch.where(nondegenerate, hat_sq, torch.ones_like(hat_sq))).sqrt()
    boost = gamma * torch.where(nondegenerate, ratio.clamp_min(1.0), torch.ones_like(ratio))
    guarded = ~direction["valid"] | (direction["conflict"] & ~nondegenerate)
    return boost, guarded


def pareto_rule(direction: dict[str, torch.Tensor], boost: torch.Tensor,
                guarded: torch.Tensor) -> dict[str, torch.Tensor]:
    """The step's values per encoder: ``a`` and ``b`` (its gradient is a g_mm + b g_u), ``cos``, ``lam``,
    ``conflict`` and ``guarded`` as 0/1, ``boost``."""
    lam = direction["lam"]
    return {"a": boost * 2 * lam, "b": boost * 2 * (1 - lam), "cos": direction["cos"], "lam": lam,
            "conflict": direction["conflict"].float(), "boost": boost, "guarded": guarded.float()}


def combine(g_mm: torch.Tensor, g_u: torch.Tensor, gamma: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The integrated gradients of M encoders given as (M, P) rows of g_mm and g_u (equal sizes here; the
    training step does the same per encoder block), with :func:`pareto_rule`'s values."""
    dots = gram(g_mm, g_u)
    direction = pareto_weights(dots)
    lam = direction["lam"].to(g_mm.dtype)[:, None]
    hat = 2 * (lam * g_mm + (1 - lam) * g_u)
    total = g_mm + g_u
    boost, guarded = magnitude(hat.square().sum(-1).float(), total.square().sum(-1).float(),
                               (dots[:, 0] + dots[:, 2]).float(), direction, gamma)
    return boost.to(hat.dtype)[:, None] * hat, pareto_rule(direction, boost, guarded)


@METHODS.register("mmpareto", config=MMParetoConfig,
                  help="per encoder: sum of multimodal and unimodal gradients, min-norm (Pareto) mix where they "
                       "conflict, magnitude boost",
                  paper="Wei, Hu: MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance, ICML 2024",
                  optimizer="sgd", cost="1F + 2B (per-loss gradients: multimodal, unimodal) + one (2, P) gradient "
                                        "copy and M Gram products",
                  live={"score/<m>": "cos(g_mm, g_u): cosine between encoder m's multimodal and unimodal gradients",
                        "coef/<m>": "lambda: weight of encoder m's multimodal gradient (1/2 without conflict, the "
                                    "min-norm weight under conflict)",
                        "method/conflict_<m>": "1 when encoder m's gradients conflict (cos < 0) and are mixed "
                                               "by the min-norm rule",
                        "method/boost_<m>": "factor s_m = gamma x max(1, |g_mm + g_u| / |g_hat|) on encoder m's "
                                            "min-norm direction g_hat (large where a conflict leaves g_hat short; "
                                            "the update's norm is gamma |g_mm + g_u|)",
                        "method/ce_fused": "cross-entropy of the fused logits (the multimodal loss)",
                        "method/ce_<m>": "cross-entropy of modality m's own logits (its unimodal loss)",
                        "method/guarded": "encoders whose NaN guard acted in the step (zero gradient, or a "
                                          "vanishing min-norm point)"},
                  tune={"gamma": (1.0, 2.0)})
class MMPareto(Method):
    """See the module docstring."""

    trains_modality_heads = True   # each unimodal loss trains its logits[m]
    # g_mm is taken with a backward that keeps the graph for g_u's (retain_graph); a compiled module's
    # backward frees its (donated) buffers after one use, so ``train.compile`` is refused (as for CGGM).
    compile_ok = False

    def __init__(self, cfg: MMParetoConfig, ctx):
        super().__init__(cfg, ctx)
        self.guarded = torch.zeros((), device=ctx.device)   # guard actions this epoch (warning at its end)

    def _parts(self, model):
        """Trainable encoder parameters per modality, and every other trainable model parameter."""
        encoders = [[p for p in model.encoder_parameters(m) if p.requires_grad] for m in self.ctx.modalities]
        seen = {id(p) for group in encoders for p in group}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
        return encoders, rest

    def train_step(self, x, y, step):
        model, mods = step.model, self.ctx.modalities
        with step.autocast():
            out = self.forward(model, x)
        ce_fused = F.cross_entropy(out.fused.float(), y)
        ce = torch.stack([F.cross_entropy(out.logits[m].float(), y) for m in mods])
        unimodal = ce.sum()
        encoders, rest = self._parts(model)
        flat = [p for group in encoders for p in group]
        g_mm = step.grads(ce_fused, flat + rest, retain_graph=True)
        g_u = step.grads(unimodal, flat + rest)
        rule = self._integrate(encoders, flat, g_mm[:len(flat)], g_u[:len(flat)])
        for p, g in zip(rest, torch._foreach_add(g_mm[len(flat):], g_u[len(flat):])):
            p.grad = g
        step.step_optimizer()
        self.guarded = self.guarded + rule["guarded"].sum()
        live = {"method/ce_fused": ce_fused.detach(), "method/guarded": rule["guarded"].sum()}
        for i, m in enumerate(mods):
            live[f"score/{m}"] = rule["cos"][i]
            live[f"coef/{m}"] = rule["lam"][i]
            live[f"method/conflict_{m}"] = rule["conflict"][i]
            live[f"method/boost_{m}"] = rule["boost"][i]
            live[f"method/ce_{m}"] = ce[i].detach()
        return StepResult((ce_fused + unimodal).detach(), out, live)

    def _integrate(self, encoders, flat, g_mm, g_u) -> dict[str, torch.Tensor]:
        """Write s_m g_hat_m into the ``.grad`` of encoder m's parameters, for every m at once."""
        sizes = [sum(p.numel() for p in group) for group in encoders]
        device = self.ctx.device
        if not flat:   # every encoder frozen: the rule on zero gradients (no conflict, nothing to write)
            zero = torch.zeros(len(encoders), device=device)
            direction = pareto_weights(torch.zeros(len(encoders), 3, device=device))
            return pareto_rule(direction, *magnitude(zero, zero, zero, direction, self.cfg.gamma))
        G = torch.empty(2, sum(sizes), dtype=g_mm[0].dtype, device=g_mm[0].device)
        torch.cat([g.reshape(-1) for g in g_mm], out=G[0])
        torch.cat([g.reshape(-1) for g in g_u], out=G[1])
        blocks = G.split(sizes, dim=1)                         # (2, P_m) views, one per encoder
        grams = torch.stack([b @ b.T for b in blocks])         # (M, 2, 2)
        direction = pareto_weights(torch.stack([grams[:, 0, 0], grams[:, 0, 1], grams[:, 1, 1]], -1))
        lam = direction["lam"].to(G.dtype)
        mix = torch.stack([torch.stack([2 * lam, 2 * (1 - lam)], -1), torch.ones_like(grams[:, 0])], 1)  # (M, 2, 2)
        combined = torch.empty(G.shape[1], dtype=G.dtype, device=G.device)
        hats = combined.split(sizes)
        squares = []
        for i, (block, hat) in enumerate(zip(blocks, hats)):
            pair = mix[i] @ block                              # rows g_hat_m and g_mm + g_u
            hat.copy_(pair[0])
            squares.append(pair.square().sum(1))
        squares = torch.stack(squares).float()                 # (M, 2): |g_hat|^2, |g_mm + g_u|^2
        boost, guarded = magnitude(squares[:, 0], squares[:, 1], grams[:, 0, 0] + grams[:, 1, 1], direction,
                                   self.cfg.gamma)
        for i, hat in enumerate(hats):
            hat.mul_(boost[i].to(G.dtype))
        for p, g in zip(flat, combined.split([p.numel() for p in flat])):
            p.grad = g.view_as(p)
        return pareto_rule(direction, boost, guarded)

    # -- schedule -------------------------------------------------------------------------------
    def on_epoch_end(self, epoch, model, val):
        count = int(self.guarded.item())   # once per epoch
        self.guarded = torch.zeros((), device=self.ctx.device)
        if not count:
            return []
        return [{"name": "warning",
                 "message": f"mmpareto: the NaN guard acted {count} time(s) in epoch {epoch} (an encoder with a "
                            f"zero gradient, or multimodal and unimodal gradients exactly opposite); those "
                            f"encoders got the plain sum or an unscaled min-norm gradient instead of NaN"}]

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        return {**super().state_dict(), "guarded": self.guarded.clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.guarded = state["guarded"].to(self.ctx.device)
