"""``cml``: Calibrating Multimodal Learning (Ma, Zhang, Zhang, Wu, Fu, Zhou, Hu, "Calibrating Multimodal
Learning", ICML 2023; BalanceMM ``CML_trainer.py``).

The paper's principle: the confidence of a prediction must not rise when a modality is removed. CML adds
a penalty on the rows that break it. Each step:

1. **Removal chains.** Every row gets its own pseudo-random removal order of the M modalities, a
   function of the run's seed, the step number and the row's train-split id (a 32-bit integer hash,
   ranked on the device): the same for a row on one process or on any rank of several, replayed by a
   resumed run, and drawing nothing from the run's RNG. Level 0 is the full input; level k removes the
   first k modalities of the row's order, down to level M - 1 where one modality is left. Each level
   k >= 1 is compared with level k - 1: the M - 1 comparisons of a row each remove **one** modality
   from the previous coalition, so every coalition size from M down to 1 is visited once per row (not
   every single-modality removal from the full set, not every subset: the chain of the paper's code,
   with the per-row orders of the authors' release QingyangZhang/CML rather than BalanceMM's one order
   for the whole epoch).
2. **Partial outputs.** A removed modality's features are replaced by zeros (``removal = "features"``,
   the default) or its input is (``"input"``).
   * Additive late fusion (``concat``, ``sum``) without mid-fusion: no extra forward. The logits of a
     coalition are the sum of the per-modality logits of the training forward, a removed modality's
     term replaced by the head's logits for the absent features (zero features: its bias share, b / M of
     the ``concat`` head, the published ``out - logits_m + b / M``; zero input: the head on its
     encoder's output for a zero input, eval mode, no gradient through the encoder, one row).
   * Other fusions (``film``, ``gated``) without mid-fusion: the encoders see their own inputs only, so
     the training forward's features are reused and the fusion head runs once on the M - 1 levels'
     features stacked along the batch (absent modalities' features replaced as above): one head pass on
     (M - 1) x B rows.
   * With mid-fusion the encoders exchange tensors, so the M - 1 levels' zero-masked input copies go
     through the whole model as one stacked batch (train mode, with gradients; BatchNorm layers, if
     any, see the masked copies as the published code's padded forwards would).
3. **Loss.** With conf = the largest softmax probability of a level's logits and d_k = conf_k - conf_{k-1}
   per row,

       L = (1/M) * sum_{k=0}^{M-1} CE(level k, y) + lam * sum_{k=1}^{M-1} mean_rows ReLU(d_k)

   (the published code's cross-entropy on every partial output, averaged over the M levels, plus lam
   times the confidence penalty; gradients flow through both sides of d_k).

Deviations from the published code, on purpose:

* BalanceMM's ``conf_loss`` returns ``max(0, sum_rows(conf_x - conf))``: the ReLU of the batch sum, so a
  row whose confidence falls offsets another's violation. The paper's regulariser penalises each row's
  violation; here the ReLU is per row, then averaged over the rows (a batch mean rather than the
  published batch sum, so lam does not scale with the batch size).
* Its "sign" mask (no penalty where the full input is right and the reduced one wrong) is computed but
  not used there; it is not used here either.
* The published order is shuffled once per epoch and shared by every row; here each row has its own.
* BalanceMM applies CML in an epoch window (``modulation_starts/ends``); here in every epoch.

Live values (0-d device tensors, of this process's rows): ``coef/<m>`` (1: no modality is weighted),
``method/violation_rate`` (fraction of the (row, removal) comparisons
whose confidence rose, d_k > 0), ``method/penalty`` (the confidence penalty sum_k mean_rows ReLU(d_k),
before lam), ``method/ce_partial`` (mean cross-entropy of the partial levels 1 .. M - 1) and
``method/head_ce`` (non-additive fusions: the per-modality heads' cross-entropy on detached features).
Cost: 1F + 1B for additive fusion; + one fusion-head pass on (M - 1) x B rows for ``film``/``gated``; with
mid-fusion + (M - 1) whole forwards as one stacked batch.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``lam``, 0.01 and 1.0. The sources give
only 0.1 (BalanceMM) and no ablation, so these are our decade brackets around it, not the authors' values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..schema import opt
from . import METHODS
from .base import Method, StepResult


@dataclass(frozen=True)
class CMLConfig:
    lam: float = opt(0.1, ge=0.0, help="weight lambda of the confidence penalty (paper / BalanceMM: 0.1)")
    removal: Literal["features", "input"] = opt(
        "features", help="what removing a modality means without mid-fusion: its features replaced by zeros (the "
                         "published late-fusion formula, logits - logits_m + b/M) or its input replaced by zeros "
                         "(its encoder's output for a zero input); with mid-fusion always the input")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def removal_levels(rank: torch.Tensor) -> torch.Tensor:
    """(M - 1, B, M) bool: whether modality m is still present in row b at level k = 1 .. M - 1, from
    ``rank`` (B, M), each row a permutation of 0 .. M - 1 (modality m is removed at level rank + 1)."""
    k = torch.arange(1, rank.shape[1], device=rank.device)
    return rank.unsqueeze(0) >= k.view(-1, 1, 1)


MASK32 = 0xFFFFFFFF


def hash32(x):
    """A 32-bit integer mix (two multiply-xorshift rounds) of int64 values in [0, 2^32) (a tensor or an int);
    the products stay below 2^59, so int64 arithmetic is exact on every device."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & MASK32
    return (x >> 16) ^ x


def row_ranks(ids: torch.Tensor, step: int, seed: int, n_modalities: int) -> torch.Tensor:
    """(B, M): a pseudo-random permutation of 0 .. M - 1 per row, a function of (seed, step, the row's
    train-split id) only: the same for a row wherever it is sharded (one process or several ranks), and
    replayed by a resumed run, without drawing from the run's RNG."""
    base = hash32((hash32(seed & MASK32) ^ (step & MASK32)) & MASK32)
    row = hash32((ids.to(torch.int64) & MASK32) ^ base)
    salt = hash32(torch.arange(1, n_modalities + 1, device=ids.device, dtype=torch.int64) * 0x9E3779B1 & MASK32)
    return hash32(row.unsqueeze(1) ^ salt).argsort(dim=1, stable=True)


def random_ranks(n_rows: int, n_modalities: int, device) -> torch.Tensor:
    """(B, M): a uniformly random permutation of 0 .. M - 1 per row from the run's RNG (for batches
    without row ids, e.g. a step called by hand)."""
    return torch.rand(n_rows, n_modalities, device=device).argsort(dim=1)


def step_ranks(ids: torch.Tensor | None, step: int, seed: int, n_rows: int, n_modalities: int, device) -> torch.Tensor:
    """The removal ranks of a training step: :func:`row_ranks` of the rows' ids, or :func:`random_ranks`."""
    if ids is None:
        return random_ranks(n_rows, n_modalities, device)
    return row_ranks(ids, step, seed, n_modalities)


def additive_levels(logits: torch.Tensor, absent: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(K, B, C) logits of K coalitions of an additive head: sum over m of modality m's logits (M, B, C)
    where ``present`` (K, B, M) and of its absent-modality logits ``absent`` (M, C) elsewhere."""
    keep = present.permute(0, 2, 1).unsqueeze(-1)                        # (K, M, B, 1)
    return torch.where(keep, logits.unsqueeze(0), absent[None, :, None, :]).sum(1)


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """The largest softmax probability along the last axis."""
    return logits.softmax(-1).amax(-1)


def calibration_penalty(conf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From the confidences (L, B) of a row's levels (0 = all modalities, each next level one fewer):
    sum over the L - 1 removals of the batch mean of ReLU(conf_k - conf_{k-1}), and the violation rate
    (the fraction of the (L - 1) x B comparisons whose confidence rose), detached."""
    rise = conf[1:] - conf[:-1]
    return F.relu(rise).mean(-1).sum(), (rise > 0).float().mean().detach()


# -- the method ---------------------------------------------------------------------------------------
@METHODS.register("cml", config=CMLConfig,
                  help="calibrating multimodal learning: removing a modality must not raise the confidence; "
                       "penalises rises along a random per-row removal chain, plus cross-entropy on every partial "
                       "output (Ma et al. 2023)",
                  paper="Ma, Zhang, Zhang, Wu, Fu, Zhou, Hu: Calibrating Multimodal Learning, ICML 2023",
                  optimizer="adam",
                  cost="1F + 1B (additive fusion); film/gated: + 1 fusion-head pass on (M - 1) x B rows; "
                       "mid-fusion: + (M - 1) whole forwards as one stacked batch",
                  live={"coef/<m>": "1: CML weights no modality (the penalty acts on the coalitions' confidences)",
                        "method/violation_rate": "fraction of the (row, one-modality removal) comparisons along the "
                                                 "removal chains whose confidence rose",
                        "method/penalty": "calibration penalty: sum over the M - 1 removals of the batch mean of "
                                          "ReLU(conf without - conf with), before lam",
                        "method/ce_partial": "mean cross-entropy of the partial outputs (levels 1 .. M - 1)",
                        "method/head_ce": "cross-entropy training the per-modality heads on detached features "
                                          "(non-additive fusions)"},
                  tune={"lam": (0.01, 1.0)})
class CML(Method):
    """CML: cross-entropy on every level of a random removal chain plus the confidence penalty; see the module
    docstring."""

    def __init__(self, cfg: CMLConfig, ctx):
        super().__init__(cfg, ctx)
        n = len(ctx.modalities)
        self.require_modalities("removes modalities from the input")
        self._one = torch.ones((), device=ctx.device)

    # -- one step -------------------------------------------------------------------------------------
    def train_step(self, x, y, step):
        model = step.model
        mods = self.ctx.modalities
        present = removal_levels(step_ranks(step.ids, step.step, self.ctx.seed, y.shape[0], len(mods), y.device))
        with step.autocast():
            out = model(x)
            partial = self.partial_logits(model, x, out, present)
        levels = torch.cat([out.fused.float().unsqueeze(0), partial.float()])          # (M, B, C)
        ce = F.cross_entropy(levels.flatten(0, 1), y.repeat(len(mods)), reduction="none").view(len(mods), -1)
        ce = ce.mean(1)
        penalty, rate = calibration_penalty(confidence(levels))
        loss = ce.mean() + self.cfg.lam * penalty
        heads = self.modality_head_loss(out, y, step)
        step.backward(loss if heads is None else loss + heads)
        live = {f"coef/{m}": self._one for m in mods}
        live.update({"method/violation_rate": rate, "method/penalty": penalty.detach(),
                     "method/ce_partial": ce[1:].mean().detach()})
        if heads is not None:
            live["method/head_ce"] = heads.detach()
        step.step_optimizer()
        return StepResult(loss.detach(), out, live)

    def partial_logits(self, model, x, out, present: torch.Tensor) -> torch.Tensor:
        """(M - 1, B, C) fused logits of the removal levels 1 .. M - 1 (``present``: (M - 1, B, M))."""
        mods = self.ctx.modalities
        k, b = present.shape[0], present.shape[1]
        if model.mid_fusion_stages:
            stacked = {m: torch.where(present[:, :, i].reshape(k, b, *([1] * (x[m].dim() - 1))), x[m].unsqueeze(0),
                                      torch.zeros((), dtype=x[m].dtype, device=x[m].device)).flatten(0, 1)
                       for i, m in enumerate(mods)}
            return model(stacked).fused.reshape(k, b, -1)
        absent = self.absent_features(model, x, out)
        if getattr(model.fusion, "additive", False):
            training = model.fusion.training
            model.fusion.eval()   # dropout off: of no effect on an absent row, and no RNG drawn
            try:
                _, absent_logits = model.head(absent)
            finally:
                model.fusion.train(training)
            logits = torch.stack([out.logits[m].float() for m in mods])          # summed in float32
            table = torch.cat([absent_logits[m].float() for m in mods])         # (M, C)
            return additive_levels(logits, table, present)
        stacked = {m: torch.where(present[:, :, i, None], out.features[m].unsqueeze(0), absent[m]).flatten(0, 1)
                   for i, m in enumerate(mods)}
        fused, _ = model.head(stacked)
        return fused.reshape(k, b, -1)

    def absent_features(self, model, x, out) -> dict[str, torch.Tensor]:
        """{m: (1, d_m)}: the features standing for a removed modality (zeros, or its encoder's output on a zero
        input in eval mode without gradients)."""
        if self.cfg.removal == "features":
            return {m: torch.zeros_like(z[:1]) for m, z in out.features.items()}
        absent = {}
        with torch.no_grad():
            for m in self.ctx.modalities:
                encoder = model.encoders[m]
                training = encoder.training
                encoder.eval()
                try:
                    absent[m] = encoder(torch.zeros_like(x[m][:1])).to(out.features[m].dtype)
                finally:
                    encoder.train(training)
        return absent
