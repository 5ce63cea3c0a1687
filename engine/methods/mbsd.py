"""``mbsd``: modality-balanced self-distillation (Liu, Li, Song, Yang, Zeng, "Multimodal Pre-Training with
Self-Distillation for Product Understanding in E-Commerce", WSDM 2023; BalanceMM ``MBSD_trainer.py``).

Every modality's own prediction is trained, and per sample the modality that is surer of the true class
distils its prediction into the one that is less sure, weighted by how far apart they are:

    L = CE(fused, y) + sum_m CE(logits_m, y) + sd_weight * L_sd

For a pair of modalities (a, b) and a row i, with q_m = softmax(logits_m)_y the true-class probability:

* the **teacher** s is the one with the larger q (a on ties, where the weight is 0 anyway), the
  **student** t the other; the teacher's logits are detached, so the term only moves the student;
* the **weight** w_i = |q_a - q_b| when at least one of the two predicts y (argmax), else 0 (the
  paper's gate: a pair that is wrong on both sides has nothing to teach); w is detached (a sample
  weight, not a path for gradients into the teacher);
* the **distillation** d_i = KL(p_s || p_t) + mse_weight * (1/C) * ||logits_t - logits_s||^2 over the C
  classes (the published code's KL term plus its squared-logit-difference term);
* L_sd(a, b) = (1/B) * sum_i w_i * d_i.

**M modalities** (the paper's rule is for two): L_sd is the mean of L_sd(a, b) over the M (M - 1) / 2
pairs, so in each pair the surer modality teaches the other; for three this is the published code's
average of its three pairwise terms, and for two it is the paper's single term. All pairs are one
batched computation ((P, B, C) tensors, no loop over pairs or rows).

Deviations from the published code (BalanceMM), on purpose, following the paper's description:

* The published trainer builds w, q_s and q_w in a Python loop over the batch (a host sync per row);
  here everything is vectorised on the device.
* Its KL term is ``F.kl_div(q_s, q_w)`` on the two true-class probabilities as plain numbers (``kl_div``
  expects log-probabilities as its input), i.e. q_w * (log q_w - q_s), which is not a divergence between
  the two predictions. Here it is the KL divergence of the student's predicted distribution from the
  teacher's over all classes, the strong-to-weak distillation the paper describes.
* Nothing is detached there (w is written into a tensor row by row and keeps the graph, and the
  teacher's logits take part in both terms), so the distillation also pulls the strong modality toward
  the weak one. Here the teacher's side and w are detached: the knowledge flows from the dominant
  modality to the weaker one only, as the paper intends.
* Its three-modality branch takes the squared difference of probabilities, its two-modality branch of
  logits; here logits for every M (the two-modality form, the paper's setting).
* The published trainer only adds the extra terms in an epoch window (``modulation_starts/ends``); here
  they apply in every epoch.

Live values (0-d device tensors, of the global batch in a multi-process run: one all-reduce of their
sums per step): ``method/w`` (mean w over the pairs and rows, the zeros of the gated rows included),
``coef/<m>`` (the mean weight with which modality m is distilled into, over the rows and its M - 1 pairs:
0 where it teaches or the pair is gated out), ``score/<m>`` (mean true-class probability q_m), and of
this process's rows ``method/sd`` (L_sd, before sd_weight) and ``method/ce_<m>`` (modality m's own
cross-entropy). The loss trains every modality's logits, so no separate head loss is added for
non-additive fusions. Cost: 1F + 1B (+ one all-reduce of 2M + 2 numbers with several processes).

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``sd_weight``, 0.5 and 2.0. The
published code adds the distillation term with weight 1 and the paper's values were not available to us, so
these are our brackets (half, double), not the authors'.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..collectives import all_reduce_sum
from ..schema import opt
from . import METHODS
from .base import Method


@dataclass(frozen=True)
class MBSDConfig:
    sd_weight: float = opt(1.0, ge=0.0, help="weight of the self-distillation term L_sd (published code: 1)")
    mse_weight: float = opt(1.0, ge=0.0, help="weight of the squared-logit-difference part of each distillation "
                                              "(published code: 1, next to the KL part)")
    gate: bool = opt(True, help="weight a pair's row only when at least one of the two modalities predicts the "
                                "label (the paper's rule); false: every row")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def pair_index(n_modalities: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(P,) and (P,): the first and second modality of every unordered pair (a < b)."""
    pairs = torch.combinations(torch.arange(n_modalities, device=device), r=2)
    return pairs[:, 0], pairs[:, 1]


def true_class_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(M, B) softmax(logits_m)_y from (M, B, C) logits."""
    p = logits.softmax(-1)
    return p.gather(-1, y.expand(logits.shape[0], -1).unsqueeze(-1)).squeeze(-1)


def pair_weights(q: torch.Tensor, correct: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                 gate: bool = True) -> torch.Tensor:
    """(P, B) w = |q_a - q_b|, zero where neither modality of the pair is correct (with ``gate``)."""
    w = (q[first] - q[second]).abs()
    if gate:
        w = w * (correct[first] | correct[second])
    return w


def distillation(logits: torch.Tensor, q: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                 mse_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, B) KL(p_s || p_t) + mse_weight * mean_c (logits_t - logits_s)^2 per pair and row, s the pair's
    modality with the larger q (the first on ties), t the other; the teacher's side is detached. Also the
    student's modality index t, (P, B)."""
    first_teaches = q[first] >= q[second]
    student_index = torch.where(first_teaches, second.unsqueeze(-1), first.unsqueeze(-1))
    a, b = logits[first], logits[second]
    teacher = torch.where(first_teaches.unsqueeze(-1), a, b).detach()
    student = torch.where(first_teaches.unsqueeze(-1), b, a)
    log_t, log_s = F.log_softmax(teacher, -1), F.log_softmax(student, -1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    return kl + mse_weight * (student - teacher).pow(2).mean(-1), student_index


def self_distillation(logits: torch.Tensor, y: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                      mse_weight: float = 1.0, gate: bool = True):
    """From (M, B, C) logits: L_sd (mean over pairs of (1/B) sum_i w_i d_i), the weights w (P, B), the
    true-class probabilities q (M, B) and each pair's student modality per row (P, B)."""
    q = true_class_probability(logits, y)
    correct = logits.argmax(-1) == y
    w = pair_weights(q.detach(), correct, first, second, gate)
    d, student = distillation(logits, q.detach(), first, second, mse_weight)
    return (w * d).mean(), w, q, student


def student_weights(w: torch.Tensor, student: torch.Tensor, n_modalities: int) -> torch.Tensor:
    """(M,) per modality m, the sum over the pairs and rows of the weights w with which m is the student."""
    return (F.one_hot(student, n_modalities).to(w.dtype) * w.unsqueeze(-1)).sum((0, 1))


# -- the method ---------------------------------------------------------------------------------------
@METHODS.register("mbsd", config=MBSDConfig,
                  help="modality-balanced self-distillation: per sample, in every pair of modalities the one surer "
                       "of the label distils into the other, weighted by their true-class probability gap "
                       "(Liu et al. 2023)",
                  paper="Liu, Li, Song, Yang, Zeng: Multimodal Pre-Training with Self-Distillation for Product "
                        "Understanding in E-Commerce, WSDM 2023",
                  optimizer="adamw", cost="1F + 1B",
                  live={"coef/<m>": "mean distillation weight modality m receives as the student, over the rows "
                                    "and its M - 1 pairs (0 where it teaches or the pair is gated out)",
                        "method/w": "mean per-sample distillation weight w = |q_a - q_b| (0 where neither of the "
                                    "pair predicts the label), over the pairs and rows",
                        "score/<m>": "mean true-class probability q_m = softmax(logits_m)_y of modality m over the "
                                     "batch (the larger q teaches)",
                        "method/sd": "self-distillation term L_sd (mean over pairs of the w-weighted KL + squared "
                                     "logit difference, unweighted by sd_weight)",
                        "method/ce_<m>": "cross-entropy of modality m's own logits"},
                  tune={"sd_weight": (0.5, 2.0)})
class MBSD(Method):
    """MBSD: unimodal cross-entropies plus pairwise strong-to-weak self-distillation; see the module docstring."""

    trains_modality_heads = True

    def __init__(self, cfg: MBSDConfig, ctx):
        super().__init__(cfg, ctx)
        n = len(ctx.modalities)
        self.require_modalities("distils between modalities")
        self.first, self.second = pair_index(n, ctx.device)

    def loss(self, out, y, step):
        mods = self.ctx.modalities
        n = len(mods)
        logits = torch.stack([out.logits[m].float() for m in mods])
        ce = F.cross_entropy(logits.flatten(0, 1), y.repeat(n), reduction="none").view(n, -1).mean(1)
        sd, w, q, student = self_distillation(logits, y, self.first, self.second, self.cfg.mse_weight, self.cfg.gate)
        loss = F.cross_entropy(out.fused.float(), y) + ce.sum() + self.cfg.sd_weight * sd
        # the live values of the global batch (one collective in a multi-process run): q sums, the
        # weights each modality receives as student, the weight sum and the row count
        rows = torch.full((1,), y.shape[0], dtype=torch.float32, device=y.device)
        sums = all_reduce_sum(torch.cat([q.detach().sum(1), student_weights(w, student, n), w.sum().view(1), rows]))
        count = sums[-1]
        q_mean, received = sums[:n] / count, sums[n:2 * n] / (count * (n - 1))
        live = {"method/w": sums[2 * n] / (count * self.first.shape[0]), "method/sd": sd.detach()}
        for i, m in enumerate(mods):
            live[f"coef/{m}"] = received[i]
            live[f"score/{m}"] = q_mean[i]
            live[f"method/ce_{m}"] = ce[i].detach()
        return loss, live
