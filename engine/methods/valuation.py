"""``valuation``: sample-level modality valuation and re-sampling (Wei, Feng, Wang, Hu, "Enhancing Multimodal
Cooperation via Sample-level Modality Valuation", CVPR 2024; release GeWu-Lab/Valuate-and-Enhance-Multimodal-
Cooperation ``code/sample_level.py``, ``code/modality_level.py``; BalanceMM "Modality-valuation",
``Sample_trainer.py``).

A data-level method: the training step is plain joint training (fused cross-entropy); what changes is the
data of each epoch, through the epoch plan (:meth:`Valuation.epoch_plan`, :class:`~engine.data.plan.EpochPlan`).

1. **Valuation** (every epoch, before its first step; :meth:`Valuation.valuate`): for every training sample
   and every coalition S of modalities, the value v(S) = |S| if the fused prediction with only the
   modalities of S present is the true class, else 0 (the paper's value; the release's ``value_all = 2``,
   ``value_a = 1`` for two modalities), v(empty) = 0. The per-sample Shapley value of modality m is

       phi_m = sum_{S not containing m} |S|! (M - |S| - 1)! / M! * (v(S + m) - v(S)),

   for two modalities phi_a = (v_a + v_all - v_v) / 2, the release's ``contrib_a``. phi_m lies in
   [-(M - 1) / 2, (M + 1) / 2] and sum_m phi_m = M for a sample the full model gets right (0 else), so 1 is
   a modality's fair share. An absent modality's input is replaced by zeros (the standardised train mean),
   as the plan drops it during training (and as the release's ``exec_drop`` / BalanceMM's zero padding).
   The 2^M - 1 non-empty coalitions are **one stacked no-grad batch** per data batch, in eval mode (the
   release valuates in ``model.eval()``): each encoder runs once on the batch plus one zero row and only the
   fusion head runs on the stacked coalitions (``engine/methods/agm.py``'s stacking; with mid-fusion the
   stacked zero-masked input copies go through the whole model). The pass covers the whole training split
   (``ctx.data.eval_batches("train")``, row order = train ids); every rank of a multi-process run takes rank
   0's values (one broadcast per epoch).
2. **Re-sampling** (epochs >= ``warmup_epochs``; the release warms up 5 epochs on the plain data), by
   ``level``:

   * ``"sample"`` (the paper's sample-level method, ``sample_level.py``; the default): each sample keeps its
     ordinary row, and for every modality m it gets c(phi_m) extra copies in which *only m is kept* (every
     other modality dropped), so m must carry them: c = the number of ``thresholds`` above phi_m, with the
     release's thresholds (0.9, 0.4, -0.1): phi in [0.4, 0.9) one copy, [-0.1, 0.4) two, below -0.1 three,
     0.9 and above none. For two modalities these are exactly the release's copies (its phi are multiples of
     1/2); with M modalities the rule applies to each modality on its own (a sample may be copied for several
     modalities), and since the fair share is 1 for any M the thresholds keep their meaning.
   * ``"modality"`` (the paper's modality-level method, ``modality_level.py``, BalanceMM's configured variant
     with ``part_ratio`` 0.2): the mean phi_m over a random ``part_ratio`` of the training samples (drawn
     with replacement, as the release) estimates each modality's contribution; the gaps g_m = 1 - mean phi_m
     give the re-sampled fraction p = alpha * 2/3 * (max_m g_m - min_m g_m) (the release's
     |g_a - g_v| * 2/3 * alpha for two modalities), and int(p * N) random training rows (with replacement)
     are added with only the weakest modality (largest gap) kept.

   The plan (rows and per-row modality masks) is shuffled by the run's (seed, epoch) permutation like an
   ordinary epoch; the trainer keeps it in its checkpoint, so a resumed epoch replays it exactly. The data
   source zeroes the dropped inputs before the step (``Batch.masks`` / ``step.masks``).

Deviations from the releases, on purpose:

* Half-open thresholds (phi < t) instead of the release's open intervals, which give no copy at a phi equal
  to a threshold (never reached with two modalities; reachable with five).
* Valuation from the same model at the start of epoch e rather than at the end of epoch e - 1 (the same
  weights), so it also runs before epoch 0 (the release's last valuation, after the final epoch, is unused).
* The modality-level variant follows the paper's release, not BalanceMM: BalanceMM sums |g_i - g_j| over
  ordered pairs (twice the release's fraction for two modalities) and adds, for each chosen sample, one copy
  per modality (the stronger one with nothing dropped). Its random draws come from a generator seeded by
  (run seed, epoch), so a plan is a function of the model, the seed and the epoch.
* BalanceMM truncates the valuated samples to a multiple of 64 (its ``drop_last``) and reads a misspelled
  ``model.pridiction`` in ``Calculate_Shapley_Sample``; neither is reproduced.
* Everything is on the device and batched (the releases loop over samples in Python).
* Streamed data cannot follow a plan (it reads row groups in a fixed order): the method needs resident data.

Live values per step (0-d device tensors, constant within an epoch): ``coef/<m>`` (modality m's data weight:
(N + copies keeping m) / N, 1 in the warm-up), ``score/<m>`` (mean phi_m over the training split, from this
epoch's valuation), ``method/duplicated`` (rows added to this epoch by the
re-sampling; 0 in the warm-up) and ``method/duplicated_<m>`` (those in which only m is kept).
Cost vs ``joint``: per epoch one no-grad encoder pass over the training split and the fusion head on
(2^M - 1) x N rows (with mid-fusion: 2^M - 1 whole forwards), and a longer epoch (the duplicated rows).

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``level`` "modality", the paper's
modality-level method (BalanceMM's configured variant), beside the sample-level default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..collectives import broadcast_tensors
from ..data.plan import EpochPlan, resident_only
from ..monitor.shapley import coalition_masks, shapley_matrix
from ..schema import opt
from . import METHODS
from .agm import stacked_coalitions, with_zero_row
from .base import Method

MODALITY_SALT = 0x5A4D   # separates the modality-level draws from the run's other (seed, epoch) streams


@dataclass(frozen=True)
class ValuationConfig:
    warmup_epochs: int = opt(5, ge=0, help="epochs of plain joint training before the re-sampling starts "
                                           "(release --warmup 5)")
    level: Literal["sample", "modality"] = opt(
        "sample", help="'sample': copies of each sample per low-contributing modality (the paper's sample-level "
                       "method); 'modality': random copies for the globally weakest modality, estimated on a "
                       "part_ratio subset (the paper's modality-level method, BalanceMM's setting)")
    thresholds: list[float] = opt([0.9, 0.4, -0.1],
                                  help="sample level: a sample gets one copy for modality m per threshold above "
                                       "phi_m (release: 0.9, 0.4, -0.1 -> 1, 2 or 3 copies)")
    part_ratio: float = opt(0.2, gt=0.0, le=1.0, help="modality level: the fraction of training samples "
                                                      "(drawn with replacement) whose mean phi estimates each "
                                                      "modality's contribution (release and BalanceMM 0.2)")
    alpha: float = opt(1.0, ge=0.0, help="modality level: re-sampled fraction p = alpha * 2/3 * (max gap - min "
                                         "gap) (release --alpha 1)")

    def __post_init__(self):
        t = list(self.thresholds)
        if any(a <= b for a, b in zip(t, t[1:])):
            raise ValueError(f"thresholds must be strictly decreasing (one copy per threshold above phi), "
                             f"got {t}")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def nonempty_coalitions(n_modalities: int, device=None) -> torch.Tensor:
    """(2^M - 1, M) bool: every coalition but the empty one, in :func:`coalition_masks` order (the last is all)."""
    return coalition_masks(n_modalities, device)[1:]


def valuation_matrix(n_modalities: int, device=None) -> torch.Tensor:
    """(M, 2^M - 1) float32 W with phi = W @ v over the non-empty coalitions (v(empty) = 0 drops its column)."""
    return shapley_matrix(n_modalities)[:, 1:].float().to(device)


def coalition_values(correct: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(K, B) v(S) = |S| * [S's fused prediction is right], from ``correct`` (K, B) bool and ``keep`` (K, M)."""
    return correct.float() * keep.sum(1, keepdim=True).float()


def sample_shapley(matrix: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(B, M) per-sample Shapley values from the non-empty coalitions' values (K, B)."""
    return (matrix @ values).t()


def copies_per_modality(phi: torch.Tensor, thresholds: list[float]) -> torch.Tensor:
    """(N, M) int64: how many thresholds lie above each phi (the extra copies of that sample for that modality)."""
    t = torch.tensor(thresholds, dtype=phi.dtype, device=phi.device)
    return (phi.unsqueeze(-1) < t).sum(-1)


def sample_level_extra(phi: torch.Tensor, thresholds: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample level's extra rows and their keep masks: for every sample i and modality m, c(phi_im) rows
    i keeping only m, ordered by sample then modality. ((D,) int64, (D, M) bool)."""
    n, m = phi.shape
    copies = copies_per_modality(phi, thresholds).reshape(-1)
    flat = torch.repeat_interleave(torch.arange(n * m, device=phi.device), copies)
    return flat // m, F.one_hot(flat % m, m).bool()


def modality_level_extra(phi: torch.Tensor, part_ratio: float, alpha: float,
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The modality level's extra rows and keep masks: int(p * N) random rows (with replacement) keeping only
    the modality with the lowest mean phi over a random ``part_ratio`` subset, p = alpha * 2/3 * (max gap -
    min gap), gaps 1 - mean phi. Draws from ``generator`` (CPU). One host read (the number of rows)."""
    n, m = phi.shape
    subset = torch.randint(n, (max(1, int(n * part_ratio)),), generator=generator).to(phi.device)
    gap = 1.0 - phi.index_select(0, subset).double().mean(0)
    fraction = alpha * 2.0 / 3.0 * float(gap.max() - gap.min())
    count = int(fraction * n)
    rows = torch.randint(n, (count,), generator=generator).to(phi.device)
    keep = F.one_hot(gap.argmax(), m).bool().expand(count, m)
    return rows, keep


# -- the method ---------------------------------------------------------------------------------------
@METHODS.register("valuation", config=ValuationConfig,
                  help="sample-level modality valuation: per-sample Shapley contributions each epoch; samples "
                       "where a modality contributes little are duplicated with the other modalities dropped "
                       "(Wei et al. 2024)",
                  paper="Wei, Feng, Wang, Hu: Enhancing Multimodal Cooperation via Sample-level Modality "
                        "Valuation, CVPR 2024",
                  optimizer="adam",
                  cost="1F + 1B on an enlarged epoch; per epoch a no-grad encoder pass over the training split "
                       "and the fusion head on (2^M - 1) x N coalition rows (with mid-fusion: 2^M - 1 no-grad "
                       "whole forwards)",
                  live={"coef/<m>": "data weight of modality m this epoch: training rows in which m is present "
                                    "(every ordinary row plus the copies keeping m) over the training split's "
                                    "size (1 in the warm-up)",
                        "score/<m>": "mean per-sample Shapley value phi_m of modality m over the training split "
                                     "(value |S| * correct; fair share 1), from this epoch's valuation",
                        "method/duplicated": "training rows the re-sampling added to this epoch (0 in the warm-up)",
                        "method/duplicated_<m>": "added rows in which only modality m is kept (the others "
                                                 "dropped)",
                        "method/head_ce": "cross-entropy training the per-modality heads on detached features "
                                          "(non-additive fusions)"},
                  tune={"level": ("modality",)})
class Valuation(Method):
    """Modality valuation: per-epoch Shapley valuation and a re-sampled epoch plan; see the module docstring."""

    def __init__(self, cfg: ValuationConfig, ctx):
        super().__init__(cfg, ctx)
        n = len(ctx.modalities)
        self.require_modalities("balances modalities against each other")
        if ctx.data is not None and _streamed(ctx.data):
            raise resident_only(getattr(ctx.data, "source", "the data"),
                                "an epoch plan (valuation re-samples the training rows)")
        self.keep = nonempty_coalitions(n, ctx.device)
        self.matrix = valuation_matrix(n, ctx.device)
        self.scores = torch.zeros(n, device=ctx.device)              # mean phi_m of the last valuation
        self.added = torch.zeros(n + 1, device=ctx.device)           # rows added: in all, then per kept modality
        self.coef = torch.ones(n, device=ctx.device)                 # (N + rows added keeping m) / N

    # -- valuation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def coalition_phi(self, model, x: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """(B, M) phi of one batch, all non-empty coalitions as one stacked forward (in the model's current
        mode; :meth:`valuate` sets eval mode)."""
        mods = self.ctx.modalities
        tables = with_zero_row(x)
        if model.mid_fusion_stages:
            fused = model(stacked_coalitions(tables, self.keep, mods)).fused
        else:
            fused, _ = self.head(model, stacked_coalitions(model.encode(tables), self.keep, mods))
        correct = fused.reshape(self.keep.shape[0], y.shape[0], -1).argmax(-1) == y
        return sample_shapley(self.matrix, coalition_values(correct, self.keep))

    @torch.no_grad()
    def valuate(self, model) -> torch.Tensor:
        """(N, M) phi of every training sample (rows in train-id order), in eval mode; rank 0's on every rank."""
        data, k = self.ctx.data, self.keep.shape[0]
        batch = self.ctx.eval_batch_size if not model.mid_fusion_stages else max(1, self.ctx.eval_batch_size // k)
        training = model.training
        model.eval()
        try:
            phi = torch.cat([self.coalition_phi(model, x, y) for x, y in data.eval_batches("train", batch)])
        finally:
            model.train(training)
        broadcast_tensors([phi])
        return phi

    # -- the epoch's plan ---------------------------------------------------------------------------
    def epoch_plan(self, epoch, model):
        phi = self.valuate(model)
        self.scores = phi.mean(0)
        n, m = phi.shape
        if epoch < self.cfg.warmup_epochs:
            self.added = torch.zeros(m + 1, device=self.ctx.device)
            self.coef = torch.ones(m, device=self.ctx.device)
            return None
        rows, keep = self.extra_rows(phi, epoch)
        per_modality = keep.sum(0).float()
        self.added = torch.cat([per_modality.sum().reshape(1), per_modality])
        self.coef = (n + per_modality) / n
        order = [self.ctx.modalities.index(name) for name in self.data_modalities()]
        rows = torch.cat([torch.arange(n, device=phi.device), rows])
        masks = torch.cat([torch.ones(n, m, dtype=torch.bool, device=phi.device), keep])[:, order]
        return EpochPlan(rows, masks)

    def extra_rows(self, phi: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The re-sampled rows of ``epoch`` and their keep masks (columns in ``ctx.modalities`` order)."""
        if self.cfg.level == "sample":
            return sample_level_extra(phi, list(self.cfg.thresholds))
        gen = torch.Generator(device="cpu").manual_seed(_seed(self.ctx.seed, epoch))
        return modality_level_extra(phi, self.cfg.part_ratio, self.cfg.alpha, gen)

    def data_modalities(self) -> list[str]:
        """The data's modality order (the plan's mask columns); the run's when the data do not say."""
        names = getattr(self.ctx.data, "modality_names", None)
        return list(names) if names is not None else list(self.ctx.modalities)

    # -- one step -----------------------------------------------------------------------------------
    def loss(self, out, y, step):
        live = {f"coef/{m}": self.coef[i] for i, m in enumerate(self.ctx.modalities)}
        live.update({f"score/{m}": self.scores[i] for i, m in enumerate(self.ctx.modalities)})
        live["method/duplicated"] = self.added[0]
        live.update({f"method/duplicated_{m}": self.added[i + 1] for i, m in enumerate(self.ctx.modalities)})
        return F.cross_entropy(out.fused.float(), y), live

    # -- resume -------------------------------------------------------------------------------------
    def state_dict(self):
        return {**super().state_dict(), "scores": self.scores.clone(), "added": self.added.clone(),
                "coef": self.coef.clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.scores = state["scores"].to(self.ctx.device)
        self.added = state["added"].to(self.ctx.device)
        self.coef = state["coef"].to(self.ctx.device)


def _seed(seed: int, epoch: int) -> int:
    """A 63-bit seed from (run seed, epoch) for the modality level's draws (numpy SeedSequence: stable)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, epoch & 0xFFFFFFFFFFFFFFFF, MODALITY_SALT])
    words = state.generate_state(2)
    return int((int(words[0]) << 32 | int(words[1])) & 0x7FFFFFFFFFFFFFFF)


def _streamed(data) -> bool:
    """Whether ``data`` (or the source a sharded view wraps) streams from disk."""
    from ..data.stream import StreamData
    return isinstance(data, StreamData) or isinstance(getattr(data, "data", None), StreamData)
