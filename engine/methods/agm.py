"""``agm``: Adaptive Gradient Modulation (Li, Li, Hu, Lei, Li, Zhou, "Boosting Multi-modal Model
Performance with Adaptive Gradient Modulation", ICCV 2023; release lihong2303/AGM_ICCV2023,
``model/*_net.py::GradMod`` and ``run/*_main.py::train``).

Each step, besides the ordinary forward and backward of the fused cross-entropy (:meth:`AGM.train_step`):

1. **Mono-modal responses** by a Shapley decomposition of the fused output over zero-masked inputs
   (the paper's mono-modal responses, after SHAPE, Hu, Li, Zhou 2022). With V(S) the fused logits when only the
   modalities in S keep their input (the others' inputs replaced by zeros),

       o_m = sum_{S not containing m} |S|! (M - |S| - 1)! / M! * (V(S + m) - V(S)),   V(empty) := 0,

   so sum_m o_m = V(all), the fused output. For two modalities o_a = 1/2 (V(a,b) - V(b) + V(a)), the
   release's ``Modality_Audio``; for three, the release's UR-Funny ``Modality_Text`` etc. (which also
   take V(empty) as 0). V(all) is the training forward's fused output (train mode, detached); the
   2^M - 2 other coalitions run as **one stacked batch** (each masked copy of the batch along the
   batch dimension) under ``torch.no_grad`` in eval mode, as the release runs its padded forwards in
   eval mode (dropout off, BatchNorm on its running statistics, which the masked copies do not update).
   Without mid-fusion an encoder sees only its own input, so each encoder runs once, on the batch plus
   one zero row, and only the fusion head runs on the stacked coalitions (the zero row's features
   standing in for an absent modality): the logits of zero-masked input copies at about one forward's
   cost. With mid-fusion (MMTM) the stacked masked input copies go through the whole model.
2. **Score** s_m = mean over the batch of -log softmax(o_m)_y, each term at most -log 1e-8 (the
   release's guard against p = 0): a cross-entropy, so lower is stronger. The sums and the row count go
   through :func:`engine.collectives.all_reduce_sum`, so every rank of a multi-process run has the
   global batch's scores.
3. **Ratio** r_m = exp(M / (M - 1) * (mean_j s_j - s_m)) = exp(mean_{j != m} s_j - s_m): above 1 for
   a modality better than the others. M / (M - 1) is the release's factor (2 for two modalities, 3/2
   for UR-Funny's three); it makes the exponent "the others' mean score minus m's" for any M >= 2, so
   the rule needs no other generalisation.
4. **Reference** r*_m: the same ratio of the running means of s_m over every earlier training step
   (all epochs; 0 before the first step, so r*_m = 1 there), updated after the coefficient each step,
   in every epoch, as the release's ``train_score_*``.
5. **Coefficient** c_m = exp(alpha * min(r*_m - r_m, cap)), both ways: a modality whose ratio runs
   ahead of its reference is slowed (c < 1), one that falls behind is sped up (c > 1). The direction
   is the one the release computes (a cross-entropy score with exp(mean - s_m)); the ``cap`` on the
   exponent is the release's CREMA-D value (10; UR-Funny 7; AV-MNIST none); alpha * cap is refused
   above 80, where the largest coefficient would overflow float32.
6. **Modulation**, in epochs [modulation_start, modulation_end) (0-based; the release modulates epochs
   1-20, ``--modulation_ends 20``): encoder m's update is multiplied by c_m (``modulate``: under SGD,
   the paper's optimiser, its gradients, in place, before the trainer's clipping; under Adam/AdamW its
   parameter group's learning rate for the step, ``step.scale_lr``, since Adam divides a constant
   gradient factor out; ``"auto"`` chooses by optimiser). Scores and references are updated in every
   epoch.

Deviations from the release code, on purpose:

* The release scales the gradient reaching o_m with a backward hook, and its coalition forwards keep
  their graphs, so the hooks' gradient flows through every padded forward. Here the coalitions are
  no-grad (one backward) and c_m scales encoder m's update. For an additive head
  (``concat``, ``sum``) this is the release's encoder gradient, up to the terms of the encoders' own
  zero-input passes; the fusion head's gradient is not scaled (the release's hook also scales the
  head's block of o_m). With ``film``/``gated`` fusions the same encoder rule applies, and their
  per-modality heads are trained on detached features (``modality_head_loss``, ``method/head_ce``).
* The release clips the global gradient norm to 1 when an element of the head's weight gradient
  exceeds 1; here clipping is the preset's ``train.grad_clip`` (unconditional; the method's presets
  set 1.0).
* Scores, ratios and coefficients stay on the device (no ``.item()`` or ``math.exp`` per step; the
  release loops over the batch in Python), and the running means are saved in the method's state, so
  a resumed run continues them exactly.

Live values per step (0-d device tensors): ``coef/<m>`` (c_m applied, 1 outside the window),
``score/<m>`` (s_m), ``method/ratio/<m>`` (r_m), ``method/ref_ratio/<m>`` (r*_m) and
``method/ref_score/<m>`` (the running mean of s_m the reference is made of, before this step's update).
Cost vs ``joint``: one eval-mode encoder pass of B + 1 rows and the fusion head on (2^M - 2) x B rows,
without gradients (with mid-fusion: 2^M - 2 whole forwards as one batch), and the same one backward.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``alpha``, 0.1 (BalanceBenchmark's
setting) and 2.5 (the release README's value for AV-MNIST).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..collectives import all_reduce_sum
from ..monitor.shapley import coalition_masks, shapley_matrix
from ..schema import opt
from . import METHODS
from .base import Method, StepResult
from .ogm import in_window

LOG_P_MIN = math.log(1e-8)   # the release's floor on a true-class probability
MAX_EXPONENT = 80.0          # alpha * cap above this: exp overflows float32 (at 88.7)


@dataclass(frozen=True)
class AGMConfig:
    alpha: float = opt(1.0, ge=0.0, help="modulation strength alpha in c = exp(alpha * min(r* - r, cap)) (release "
                                         "default 1.0; README 2.5 for AV-MNIST)")
    cap: float = opt(10.0, gt=0.0, help="upper bound on r* - r in the exponent (release: 10 CREMA-D, 7 UR-Funny)")
    modulation_start: int = opt(0, ge=0, help="first epoch (0-based) with modulation (release 0)")
    modulation_end: int = opt(20, ge=1, help="epoch at which modulation stops (exclusive; release: epochs 1-20, "
                                             "i.e. 20 here); scores and references are updated in every epoch")
    modulate: Literal["auto", "gradient", "lr"] = opt(
        "auto", help="how c_m acts: 'gradient' scales encoder m's gradients (the paper, under SGD); 'lr' scales "
                     "its learning rate for the step (acts under Adam too); 'auto': gradient under SGD, lr otherwise")

    def __post_init__(self):
        if self.alpha * self.cap > MAX_EXPONENT:
            raise ValueError(f"alpha * cap ({self.alpha:g} * {self.cap:g}) must be at most {MAX_EXPONENT:g}: the "
                             f"largest coefficient exp(alpha * cap) would overflow; lower alpha or cap")
        if self.modulation_end <= self.modulation_start:
            raise ValueError(f"modulation_end ({self.modulation_end}) must be greater than modulation_start "
                             f"({self.modulation_start})")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def partial_coalitions(n_modalities: int, device=None) -> torch.Tensor:
    """(2^M - 2, M) bool: every coalition but the empty and the full one, in :func:`coalition_masks` order."""
    return coalition_masks(n_modalities, device)[1:-1]


def response_matrix(n_modalities: int, device=None) -> torch.Tensor:
    """(M, 2^M - 1) float32 A with o = A @ V over the coalitions 1 .. 2^M - 1 (partial ones, then the full
    one): the Shapley weights with V(empty) = 0, so its column drops out."""
    return shapley_matrix(n_modalities)[:, 1:].float().to(device)


def with_zero_row(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each modality's batch with one all-zero input appended (B + 1 rows)."""
    return {m: torch.cat([v, v.new_zeros((1, *v.shape[1:]))]) for m, v in x.items()}


def stacked_coalitions(tables: dict[str, torch.Tensor], keep: torch.Tensor,
                       modalities: list[str]) -> dict[str, torch.Tensor]:
    """The batch once per coalition, stacked along the batch dimension: {m: (K * B, ...)} from
    ``tables[m]`` of B + 1 rows, the last standing for an absent modality, taken in the copies whose
    coalition lacks m (``keep``: (K, M) bool). One ``index_select`` per modality."""
    n = next(iter(tables.values())).shape[0] - 1
    rows = torch.arange(n, device=keep.device)
    index = torch.where(keep[:, :, None], rows, n)   # (K, M, B)
    return {m: tables[m].index_select(0, index[:, i].reshape(-1)) for i, m in enumerate(modalities)}


def mono_modal_responses(matrix: torch.Tensor, partial: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """(M, B, C) o_m from the partial coalitions' logits (K, B, C) and the full one's (B, C)."""
    values = torch.cat([partial.float(), full.float().unsqueeze(0)])
    return torch.einsum("mk,kbc->mbc", matrix, values)


def score_sums(responses: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(M,) sum over the batch of -log softmax(o_m)_y, each term at most -log 1e-8."""
    logp = F.log_softmax(responses, dim=-1)
    true = logp.gather(-1, y.expand(responses.shape[0], -1).unsqueeze(-1)).squeeze(-1)
    return -true.clamp_min(LOG_P_MIN).sum(-1)


def ratios(s: torch.Tensor) -> torch.Tensor:
    """r_m = exp(M / (M - 1) * (mean(s) - s_m)), (M,)."""
    m = s.shape[0]
    return torch.exp(m / (m - 1) * (s.mean() - s))


def coefficients(reference: torch.Tensor, ratio: torch.Tensor, alpha: float, cap: float) -> torch.Tensor:
    """c_m = exp(alpha * min(r*_m - r_m, cap))."""
    return torch.exp(alpha * (reference - ratio).clamp_max(cap))


# -- the method ---------------------------------------------------------------------------------------
@METHODS.register("agm", config=AGMConfig,
                  help="adaptive gradient modulation: Shapley mono-modal responses from zero-masked forwards; "
                       "each encoder's update scaled up or down by how its score ratio departs from its running "
                       "reference (Li et al. 2023)",
                  paper="Li, Li, Hu, Lei, Li, Zhou: Boosting Multi-modal Model Performance with Adaptive Gradient "
                        "Modulation, ICCV 2023",
                  optimizer="sgd",
                  cost="1F + 1B + one no-grad encoder pass + (2^M - 2) no-grad fusion-head passes "
                       "(with mid-fusion: (2^M - 2) no-grad whole forwards)",
                  live={"coef/<m>": "coefficient c_m = exp(alpha * min(r*_m - r_m, cap)) applied to encoder m's "
                                    "update (1 outside the modulation window)",
                        "score/<m>": "cross-entropy of modality m's Shapley mono-modal response o_m on the batch "
                                     "(lower: stronger)",
                        "method/ratio/<m>": "r_m = exp(M/(M-1) * (mean score - s_m)): above 1 when m is better "
                                            "than the others",
                        "method/ref_ratio/<m>": "reference r*_m: the same ratio of the running-mean scores",
                        "method/ref_score/<m>": "running mean of s_m over all earlier steps (the reference's input)",
                        "method/head_ce": "cross-entropy training the per-modality heads on detached features "
                                          "(non-additive fusions)"},
                  tune={"alpha": (0.1, 2.5)})
class AGM(Method):
    """AGM: Shapley mono-modal scores and two-way encoder modulation; see the module docstring."""

    def __init__(self, cfg: AGMConfig, ctx):
        super().__init__(cfg, ctx)
        n = len(ctx.modalities)
        self.require_modalities("balances modalities against each other")
        self.keep = partial_coalitions(n, ctx.device)
        self.matrix = response_matrix(n, ctx.device)
        self.ref_scores = torch.zeros(n, device=ctx.device)   # running means of s_m
        self.seen = 0                                          # steps in the running means
        self.by_lr = cfg.modulate == "lr"
        self._ones = torch.ones(n, device=ctx.device)

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

    # -- one step -------------------------------------------------------------------------------------
    def train_step(self, x, y, step):
        model = step.model
        with step.autocast():
            out = model(x)
            partial = self.coalition_logits(model, x)
        loss = F.cross_entropy(out.fused.float(), y)
        heads = self.modality_head_loss(out, y, step)
        step.backward(loss if heads is None else loss + heads)
        live = self.modulate(model, mono_modal_responses(self.matrix, partial, out.fused.detach()), y, step)
        if heads is not None:
            live["method/head_ce"] = heads.detach()
        step.step_optimizer()
        return StepResult(loss.detach(), out, live)

    @torch.no_grad()
    def coalition_logits(self, model, x) -> torch.Tensor:
        """(K, B, C) fused logits of the partial coalitions, in eval mode (the training mode is restored
        after). Without mid-fusion the encoders see their own input only, so each runs once on the batch
        plus one zero row and the fusion head runs on the stacked coalitions' features (the same logits
        as zero-masked input copies, at about one forward's cost); with mid-fusion the stacked masked
        copies of the batch go through the whole model."""
        training = model.training
        model.eval()
        try:
            tables = with_zero_row(x)
            if model.mid_fusion_stages:
                fused = model(stacked_coalitions(tables, self.keep, self.ctx.modalities)).fused
            else:
                fused, _ = model.head(stacked_coalitions(model.encode(tables), self.keep, self.ctx.modalities))
        finally:
            model.train(training)
        return fused.reshape(self.keep.shape[0], -1, fused.shape[-1])

    def modulate(self, model, responses, y, step) -> dict[str, torch.Tensor]:
        """Scores, ratios and coefficients of this step; scales the encoders' updates inside the window,
        then folds the step's scores into the running means. Returns the live values."""
        mods = self.ctx.modalities
        count = torch.full((1,), y.shape[0], dtype=torch.float32, device=y.device)
        sums = all_reduce_sum(torch.cat([score_sums(responses, y), count]))  # one collective: scores and rows
        s = sums[:-1] / sums[-1]
        r, ref_r = ratios(s), ratios(self.ref_scores)
        c = self._ones
        if in_window(step.epoch, self.cfg.modulation_start, self.cfg.modulation_end):
            c = coefficients(ref_r, r, self.cfg.alpha, self.cfg.cap)
            for i, m in enumerate(mods):
                if self.by_lr:
                    step.scale_lr(m, c[i])
                else:
                    grads = [p.grad for p in model.encoder_parameters(m) if p.grad is not None]
                    if grads:
                        torch._foreach_mul_(grads, c[i])
        live = {f"coef/{m}": c[i] for i, m in enumerate(mods)}
        live.update({f"score/{m}": s[i] for i, m in enumerate(mods)})
        live.update({f"method/ratio/{m}": r[i] for i, m in enumerate(mods)})
        live.update({f"method/ref_ratio/{m}": ref_r[i] for i, m in enumerate(mods)})
        live.update({f"method/ref_score/{m}": self.ref_scores[i] for i, m in enumerate(mods)})
        self.seen += 1
        self.ref_scores = self.ref_scores * ((self.seen - 1) / self.seen) + s / self.seen
        return live

    # -- resume -----------------------------------------------------------------------------------------
    def state_dict(self):
        return {**super().state_dict(), "ref_scores": self.ref_scores.clone(), "seen": self.seen}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.ref_scores = state["ref_scores"].to(self.ctx.device)
        self.seen = int(state["seen"])
