"""``dimml``: Detached and Interactive Multimodal Learning (Fan, Xu, Wang, Liu, Guo, "Detached and Interactive
Multimodal Learning", ACM MM 2024, arXiv 2407.19514; release fanyunfeng-bit/DI-MML, ``main_CFT.py`` and
``main_CFT_stage2.py``).

Modalities do not compete because no loss mixes them: every encoder learns from its own cross-entropies
(detached training). They interact through a classifier they all share, which puts their features in one
space, and through a dimension-decoupled unidirectional contrastive (DUC) loss that moves knowledge from
one modality to another only along the feature dimensions where the first is discriminative and the other
is not. At inference a certainty-aware logit weighting combines the predictions.

Schedule (absolute epochs, :class:`~engine.methods.stages.Stages`; a ``stage`` event starts each)::

    [0, detached_epochs)   "detached"  L = sum_m [ shared_weight CE(W z_m + c, y) + own_weight CE(h_m(z_m), y) ]
                                           + duc_weight L_DUC        (L_DUC from epoch duc_start on)
    [detached_epochs, ..)  "fusion"    L = CE(F(sg(z_1), ..., sg(z_M)), y)   encoders frozen (eval mode)

* **Shared classifier** ``W z + c``: one ``Linear(d, C)`` (the method's module ``shared``) applied to every
  modality's features, so all encoders must output the same size d. Modality m's shared-head logits
  ``s_m = W z_m + c`` are what ``logits[m]`` (and ``*/acc/<m>``) report.
* **Own head** h_m: the model's per-modality logits (concat: m's slice of the fused linear head plus b/M;
  sum: m's head in the sum; film/gated: m's own Linear head), each a function of z_m alone. The release
  trains such an own classifier per modality next to the shared one (``loss_a + weight * loss_align_a``);
  ``own_weight = 0`` drops it. Neither cross-entropy of modality a reaches encoder b: the loss is a sum
  of per-modality terms (shared parameters W, c and the concat bias get gradient from every modality).
* **Effective dimensions** (release ``get_indices``), selected at the start of epoch ``duc_start``
  (and every ``reselect_every`` epochs after it when > 0; the release selects once): one no-grad pass in
  eval mode over the training split gives the class centroids mu_m[k] of each modality's features; a
  second gives, per dimension d, the accuracy of the one-dimensional nearest-centroid rule
  ``argmin_k |z_m[i, d] - mu_m[k, d]|`` (ties to the lower class, as ``argmin``). E_m = the dimensions
  whose accuracy exceeds the mean over m's dimensions.
* **DUC loss** for an ordered pair teacher t -> student s, on the dimensions D_ts = E_t minus E_s
  (effective for t, not for s)::

      L_ts = -1/B sum_i log( exp(<z_s[i], sg(z_t[i])>_D / tau) / sum_j exp(<z_s[i], sg(z_t[j])>_D / tau) )

  with <u, v>_D the dot product over D_ts (raw features, no normalisation) and the batch's other rows as
  negatives; the teacher is detached (``sg``), so it is unidirectional: t's knowledge on its own
  dimensions flows into s only. An empty D_ts gives the constant log B (no gradient), as in the release.
  The release's class is called ``SupConLoss`` (the catalog's "SupCon-style") but uses no labels: the
  only positive is the same row's teacher features, as here.
  For two modalities L_DUC = L_ab + L_ba is the release's loss. **M >= 3 (ours):** every ordered pair,
  each student averaging over its teachers: ``L_DUC = 1/(M-1) sum_{t != s} L_ts`` (equal to the release
  for M = 2). All pairs are one batched product.
* **Fusion stage** (release stage 2, ``main_CFT_stage2.py``): the encoders are frozen (eval mode, no
  gradient: no update at all, see ``mses``) and the fusion head learns on their features with the fused
  cross-entropy. The shared classifier is not trained in it.
* **Prediction** (``head``/``predict``): the members are the shared-head logits s_1..s_M, plus the fusion
  head's fused logits f once the fusion stage has begun. ``inference = "certainty"`` (the paper's
  certainty-aware logit weighting, the release's stage-2 ``valid_combine_classifier``): per row, with
  conf_k = max softmax(l_k), ``w_k = softmax_k(conf_k / T)`` and the prediction ``sum_k w_k l_k``;
  ``"sum"``: the plain sum of the members (in the detached stage ``sum_m s_m``).

Sources: the paper's abstract (detached encoders with isolated objectives, a shared classifier defining a
common feature space, the DUC loss, certainty-aware logit weighting at inference), the catalog and the
release; the paper's full text was not available to us, so every formula above is the release's, and
where the release and the abstract could differ (the members of the weighting) the choice is stated.

Deviations from the release, on purpose:

* One run with one optimiser and learning-rate schedule instead of two scripts: the fusion stage
  continues from the detached stage's fusion head (concat/sum: the own heads trained in stage 1) rather
  than a freshly initialised one, and the release's 20 stage-2 epochs are ``train.epochs -
  detached_epochs``. The release selects the stage-1 checkpoint by either modality's test accuracy and
  the stage-2 one by test accuracy; here the run's usual best-on-validation selection applies.
* The unimodal members of the weighting are the shared classifier's logits; the release uses the own
  heads there (it does not even save the shared classifier). The shared head is the paper's common
  classifier; the own heads remain trained (``own_weight``) as in the release's loss.
* The release's DUC is a per-sample Python loop over the batch and the dimension selection a batch-1
  pass; here both are batched, with the same values.
* M >= 3 as above; features of unequal sizes or a mid-fusion module (which would pass one modality's
  loss into another's encoder) are refused.

Multi-process runs: L_DUC is a function of the batch (its negatives), so it is computed on the gathered
global batch (:func:`engine.collectives.gather_rows`, gradient scaled by
:func:`~engine.collectives.global_batch_term`); the effective dimensions are rank 0's.

Live values per step (0-d device tensors): ``method/ce_<m>`` (CE through the shared classifier),
``method/own_ce_<m>`` (CE through the own head), ``method/contrastive`` (L_DUC, unweighted, when it acts),
``method/ce_fused`` (fusion stage), ``score/<m>`` (mean confidence max softmax(s_m)), ``coef/<m>`` (mean
weight w_m of modality m in the prediction), ``method/coef_fused`` (mean weight of f, fusion stage). Per
epoch once selected: ``method/effective_<m>`` (|E_m|) and ``method/transfer_<t>;<s>`` (|D_ts|).
Cost: as unimodal training of every modality (one encoder pass) plus a B x B product per ordered pair;
per selection two no-grad passes over the training split; the fusion stage has no encoder backward.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``temperature`` 10 (the release's AVE
and UCF101 value, beside 50 on CREMA-D and ModelNet40) and ``certainty_temperature`` 3 (the release's stage 2
on AVE and ModelNet40, beside 1 on CREMA-D).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import collectives
from ..errors import PresetError
from ..models import ModelOutput
from ..schema import opt
from . import METHODS
from .base import Method, StepResult
from .pmr import class_sums
from .stages import Stage, Stages

DETACHED, FUSION = "detached", "fusion"


@dataclass(frozen=True)
class DIMMLConfig:
    detached_epochs: int = opt(150, ge=1, help="epochs of detached training from the run's first epoch, then the "
                                               "fusion stage (release: 150 epochs, then a 20-epoch stage-2 run)")
    duc_start: int = opt(20, ge=0, help="first epoch (0-based) with the DUC loss; the effective dimensions are "
                                        "selected at its start (release 20)")
    temperature: float = opt(50.0, gt=0.0, help="tau of the DUC loss on raw feature dot products (release: 50 "
                                                "CREMA-D and ModelNet40, 10 AVE and UCF101)")
    duc_weight: float = opt(1.0, ge=0.0, help="weight of the DUC loss (release 1); 0 turns it off")
    shared_weight: float = opt(1.0, gt=0.0, help="weight of each modality's CE through the shared classifier "
                                                 "(release --weight 1)")
    own_weight: float = opt(1.0, ge=0.0, help="weight of each modality's CE through its own head (the model's "
                                              "logits_m; release 1); 0 drops it")
    reselect_every: int = opt(0, ge=0, help="select the effective dimensions again every this many epochs after "
                                            "duc_start (0: once, the release)")
    inference: Literal["certainty", "sum"] = opt(
        "certainty", help="prediction: 'certainty' weights the members' logits by softmax(max prob / T) per row "
                          "(the paper); 'sum' adds them")
    certainty_temperature: float = opt(1.0, gt=0.0, help="T of the certainty-aware weighting (release stage 2: 1 "
                                                         "CREMA-D and UCF101, 3 AVE and ModelNet40)")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def ordered_pairs(n: int) -> list[tuple[int, int]]:
    """Every (teacher, student) pair of modality indices, teacher-major."""
    return [(t, s) for t in range(n) for s in range(n) if t != s]


@torch.no_grad()
def nearest_centroid_hits(z: torch.Tensor, y: torch.Tensor, centroids: torch.Tensor, present: torch.Tensor,
                          chunk: int = 1 << 22) -> torch.Tensor:
    """Per dimension d, how many rows i have argmin_k |z[i, d] - centroids[k, d]| == y_i, (D,) int64; classes
    not ``present`` are never nearest. Rows in chunks of about ``chunk`` distance entries."""
    n_classes, dims = centroids.shape
    rows = max(1, chunk // max(1, n_classes * dims))
    absent = (~present)[None, :, None]
    hits = torch.zeros(dims, dtype=torch.int64, device=z.device)
    for a in range(0, z.shape[0], rows):
        dist = (z[a:a + rows, None, :] - centroids[None]).abs().masked_fill(absent, float("inf"))
        hits += (dist.argmin(1) == y[a:a + rows, None]).sum(0)
    return hits


def effective_dims(accuracy: torch.Tensor) -> torch.Tensor:
    """E_m: the dimensions whose accuracy exceeds the mean of m's, (M, D) bool from (M, D) accuracies."""
    return accuracy > accuracy.mean(-1, keepdim=True)


def transfer_masks(effective: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """D_ts = E_t minus E_s for every (t, s) pair, (P, D) float."""
    t = torch.tensor([p[0] for p in pairs], device=effective.device)
    s = torch.tensor([p[1] for p in pairs], device=effective.device)
    return (effective[t] & ~effective[s]).float()


def duc_pair_losses(features: torch.Tensor, masks: torch.Tensor, pairs: list[tuple[int, int]],
                    temperature: float) -> torch.Tensor:
    """L_ts for every pair, (P,), from stacked features (M, B, D): InfoNCE of the student's rows against the
    detached teacher's rows over the pair's dimensions (module docstring)."""
    t = torch.tensor([p[0] for p in pairs], device=features.device)
    s = torch.tensor([p[1] for p in pairs], device=features.device)
    students = features[s] * masks[:, None, :]               # (P, B, D): only D_ts counts
    teachers = features[t].detach()
    logits = torch.bmm(students, teachers.transpose(1, 2)) / temperature   # (P, B, B)
    n_pairs, b = logits.shape[:2]
    target = torch.arange(b, device=features.device).repeat(n_pairs)
    return F.cross_entropy(logits.reshape(n_pairs * b, b), target, reduction="none").view(n_pairs, b).mean(1)


def certainty_weights(members: torch.Tensor, temperature: float) -> torch.Tensor:
    """w_k = softmax_k(max softmax(l_k) / T) per row, (K, ...) from stacked logits (K, ..., C)."""
    confidence = members.float().softmax(-1).amax(-1)
    return (confidence / temperature).softmax(0)


# -- the method ---------------------------------------------------------------------------------------
@METHODS.register("dimml", config=DIMMLConfig,
                  help="detached per-modality training through a shared classifier, dimension-decoupled "
                       "unidirectional contrastive transfer, then fusion on frozen encoders (DI-MML)",
                  paper="Fan, Xu, Wang, Liu, Guo: Detached and Interactive Multimodal Learning, ACM MM 2024",
                  optimizer="sgd",
                  cost="detached stage: 1F + 1B (each encoder by its own losses) + a B x B product per ordered "
                       "pair; per selection 2 no-grad passes over the training split; fusion stage: 1F (no grad) "
                       "+ fusion-head B",
                  live={"method/ce_<m>": "cross-entropy of modality m through the shared classifier",
                        "method/own_ce_<m>": "cross-entropy of modality m through its own head (logits_m of the "
                                             "fusion)",
                        "method/contrastive": "dimension-decoupled unidirectional contrastive loss L_DUC "
                                              "(unweighted, from duc_start)",
                        "method/ce_fused": "cross-entropy of the fusion head on the frozen features (fusion stage)",
                        "score/<m>": "mean confidence max softmax of modality m's shared-classifier logits",
                        "coef/<m>": "mean weight of modality m's shared-classifier logits in the prediction "
                                    "(certainty-aware weighting; 1 with inference = 'sum')",
                        "method/coef_fused": "mean weight of the fusion head's logits in the prediction "
                                             "(fusion stage)",
                        "method/effective_<m>": "number of effective dimensions of modality m (1-D nearest-"
                                                "centroid accuracy above m's mean)",
                        "method/transfer_<pair>": "number of dimensions on which the first modality of the pair "
                                                  "teaches the second (effective for it, not for the second)"},
                  tune={"temperature": (10.0,), "certainty_temperature": (3.0,)})
class DIMML(Method):
    """DI-MML; see the module docstring."""

    trains_modality_heads = True   # the reported logits[m] are the shared classifier's, trained by every step

    def __init__(self, cfg: DIMMLConfig, ctx):
        super().__init__(cfg, ctx)
        mods = list(ctx.modalities)
        self.require_modalities("transfers knowledge between modalities")
        self.stages = Stages([Stage(DETACHED, cfg.detached_epochs), Stage(FUSION)])
        self.pairs = ordered_pairs(len(mods))
        self.effective: torch.Tensor | None = None   # (M, D) bool, once selected
        self.masks: torch.Tensor | None = None       # (P, D) float, D_ts per pair
        self.selected_at = -1                        # the epoch whose start selected them
        self.epoch = -1                              # the current epoch (which members the prediction has)

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self, model):
        dims = {m: int(model.encoders[m].out_dim) for m in self.ctx.modalities}
        problems = []
        if len(set(dims.values())) > 1:
            sizes = ", ".join(f"{m} {d}" for m, d in dims.items())
            problems.append(f"modalities: dimml classifies every modality with one shared classifier and "
                            f"contrasts their features dimension by dimension, so every encoder must output the "
                            f"same size ({sizes}); set the encoders' dim equal")
        if len(model.mid_fusions):
            problems.append("model.mid_fusion: dimml trains each encoder by its own losses only; a mid-fusion "
                            "module would pass one modality's loss into the other encoders; remove it")
        if problems:
            raise PresetError("method", problems)
        self.modules["shared"] = nn.Linear(next(iter(dims.values())), self.ctx.n_classes)

    def stage_of(self, epoch: int) -> str:
        return self.stages.at(max(epoch, 0)).name

    def duc_active(self, epoch: int) -> bool:
        return self.cfg.duc_weight > 0 and epoch >= self.cfg.duc_start and self.stage_of(epoch) == DETACHED

    # -- schedule -------------------------------------------------------------------------------
    def on_epoch_start(self, epoch, model):
        self.epoch = epoch
        events = self.stages.start_events(epoch)
        if self.duc_active(epoch) and self.selection_due(epoch):
            self.select(model, epoch)
            events.append({"name": "duc_dims", "effective": self.effective_counts(),
                           "transfer": self.transfer_counts()})
        return events

    def selection_due(self, epoch: int) -> bool:
        if self.selected_at == epoch:   # already done at this epoch's start (never twice)
            return False
        if self.effective is None:
            return True
        every = self.cfg.reselect_every
        return every > 0 and epoch - self.selected_at >= every

    @torch.no_grad()
    def select(self, model, epoch: int) -> None:
        """E_m for every modality from the training split (module docstring), rank 0's on every rank."""
        accuracy = self.dimension_accuracy(model)
        collectives.broadcast_tensors([accuracy])
        self.effective = effective_dims(accuracy)
        self.masks = transfer_masks(self.effective, self.pairs)
        self.selected_at = epoch

    @torch.no_grad()
    def dimension_accuracy(self, model) -> torch.Tensor:
        """(M, D): per dimension, the training-split accuracy of the 1-D nearest-centroid rule, in eval mode."""
        mods, n_classes, data = self.ctx.modalities, self.ctx.n_classes, self.ctx.data
        size = self.ctx.eval_batch_size
        was_training = model.training
        model.eval()
        sums: dict[str, torch.Tensor] = {}
        counts = torch.zeros(n_classes, device=self.ctx.device)
        for x, y in data.eval_batches("train", size):
            features = model.encode(x)
            for m in mods:
                part = class_sums(features[m].float(), y, n_classes)
                sums[m] = part if m not in sums else sums[m] + part
            counts += torch.bincount(y, minlength=n_classes).to(counts.dtype)
        present = counts > 0
        centroids = {m: sums[m] / counts.clamp_min(1.0).unsqueeze(1) for m in mods}
        hits = {m: torch.zeros(centroids[m].shape[1], dtype=torch.int64, device=self.ctx.device) for m in mods}
        for x, y in data.eval_batches("train", size):
            features = model.encode(x)
            for m in mods:
                hits[m] += nearest_centroid_hits(features[m].float(), y, centroids[m], present)
        model.train(was_training)
        return torch.stack([hits[m] for m in mods]).float() / counts.sum().clamp_min(1.0)

    def effective_counts(self) -> dict[str, int]:
        return {m: int(n) for m, n in zip(self.ctx.modalities, self.effective.sum(1).tolist())}

    def transfer_counts(self) -> dict[str, int]:
        mods = self.ctx.modalities
        return {f"{mods[t]};{mods[s]}": int(n) for (t, s), n in zip(self.pairs, self.masks.sum(1).tolist())}

    def epoch_values(self):
        if self.effective is None:
            return {}
        values = {f"method/effective_{m}": float(n) for m, n in self.effective_counts().items()}
        values.update({f"method/transfer_{p}": float(n) for p, n in self.transfer_counts().items()})
        return values

    # -- the pieces of a step -------------------------------------------------------------------
    def shared_logits(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """s_m = W z_m + c for every modality, stacked (M, ..., C), in one call."""
        return self.modules["shared"](torch.stack([features[m] for m in self.ctx.modalities]))

    def fusion_member(self, epoch: int) -> bool:
        """Whether the fusion head's logits are a member of the prediction (the fusion stage has begun)."""
        return epoch >= 0 and self.stage_of(epoch) == FUSION

    def combine(self, members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The prediction from stacked members (K, ..., C) and the weights (K, ...) it used."""
        if self.cfg.inference == "sum":
            weights = torch.ones(members.shape[:-1], device=members.device, dtype=torch.float32)
        else:
            weights = certainty_weights(members, self.cfg.certainty_temperature)
        return (weights.unsqueeze(-1) * members.float()).sum(0), weights

    def prediction(self, model, features, shared: torch.Tensor, epoch: int):
        members = shared.float()
        if self.fusion_member(epoch):
            fused, _ = model.head(features)
            members = torch.cat([members, fused.float().unsqueeze(0)])
        return self.combine(members)

    def head(self, model, features):
        shared = self.shared_logits(features)
        fused, _ = self.prediction(model, features, shared, self.epoch)
        return fused, dict(zip(self.ctx.modalities, shared.unbind(0)))

    # -- one step -------------------------------------------------------------------------------
    def train_step(self, x, y, step):
        if self.stage_of(step.epoch) == FUSION:
            return self.fusion_step(x, y, step)
        return self.detached_step(x, y, step)

    def per_modality_ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(M,) cross-entropies of stacked logits (M, B, C) against y, in one call."""
        n, b = logits.shape[:2]
        ce = F.cross_entropy(logits.float().reshape(n * b, -1), y.repeat(n), reduction="none")
        return ce.view(n, b).mean(1)

    def detached_loss(self, out: ModelOutput, shared: torch.Tensor, y: torch.Tensor, epoch: int,
                      model=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The detached stage's loss and live values (module docstring)."""
        mods, cfg = self.ctx.modalities, self.cfg
        ce = self.per_modality_ce(shared, y)
        own = self.per_modality_ce(torch.stack([out.logits[m] for m in mods]), y)
        loss = cfg.shared_weight * ce.sum() + cfg.own_weight * own.sum()
        live = {}
        for i, m in enumerate(mods):
            live[f"method/ce_{m}"] = ce[i].detach()
            live[f"method/own_ce_{m}"] = own[i].detach()
        if self.duc_active(epoch):
            if self.masks is None:   # a hand-driven step without the epoch's start; runs select there
                self.select(model, epoch)
            con = self.duc_loss(out.features)
            loss = loss + cfg.duc_weight * collectives.global_batch_term(con)
            live["method/contrastive"] = con.detach()
        return loss, live

    def duc_loss(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_DUC = 1/(M-1) sum over ordered pairs of L_ts, on the global batch."""
        stacked = torch.stack([features[m].float() for m in self.ctx.modalities], 1)   # (B, M, D)
        stacked = collectives.gather_rows(stacked).transpose(0, 1)                      # (M, N*B, D)
        pair = duc_pair_losses(stacked, self.masks, self.pairs, self.cfg.temperature)
        return pair.sum() / (len(self.ctx.modalities) - 1)

    def detached_step(self, x, y, step) -> StepResult:
        model = step.model
        with step.autocast():
            out = model(x)
            shared = self.shared_logits(out.features)
        loss, live = self.detached_loss(out, shared, y, step.epoch, model)
        step.backward(loss)
        step.step_optimizer()
        with torch.no_grad():
            shared = shared.detach()
            fused, weights = self.combine(shared)
        live.update(self.member_live(shared, weights))
        logits = dict(zip(self.ctx.modalities, shared.unbind(0)))
        return StepResult(loss.detach(), ModelOutput(fused=fused, logits=logits, features=out.features), live)

    def fusion_step(self, x, y, step) -> StepResult:
        """The fusion head learns on the frozen encoders' features (eval mode, no gradient)."""
        model = step.model
        model.encoders.eval()   # the frozen encoders' own function: no dropout, fixed BatchNorm statistics
        with torch.no_grad(), step.autocast():
            features = model.encode(x)
        with step.autocast():
            fused, _ = model.head(features)
        loss = F.cross_entropy(fused.float(), y)
        step.backward(loss)
        step.step_optimizer()
        with torch.no_grad(), step.autocast():
            shared = self.shared_logits(features)
        with torch.no_grad():
            members = torch.cat([shared.float(), fused.detach().float().unsqueeze(0)])
            prediction, weights = self.combine(members)
        live = {"method/ce_fused": loss.detach(), **self.member_live(shared, weights)}
        logits = dict(zip(self.ctx.modalities, shared.unbind(0)))
        return StepResult(loss.detach(), ModelOutput(fused=prediction, logits=logits, features=features), live)

    def member_live(self, shared: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """``score/<m>``, ``coef/<m>`` (and ``method/coef_fused`` when the weights have a fusion member): means
        over the global batch (one collective with the row count), so every rank logs the same values."""
        rows = torch.full((1,), shared.shape[1], dtype=torch.float32, device=shared.device)
        confidence = shared.float().softmax(-1).amax(-1).sum(-1)    # (M,)
        sums = collectives.all_reduce_sum(torch.cat([confidence, weights.float().sum(-1), rows]))
        n_mods = len(self.ctx.modalities)
        means = sums[:-1] / sums[-1]
        live = {}
        for i, m in enumerate(self.ctx.modalities):
            live[f"score/{m}"] = means[i]
            live[f"coef/{m}"] = means[n_mods + i]
        if weights.shape[0] > n_mods:
            live["method/coef_fused"] = means[-1]
        return live

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        state = super().state_dict()
        state["stages"] = self.stages.state_dict()
        state["epoch"] = self.epoch
        state["selected_at"] = self.selected_at
        state["effective"] = None if self.effective is None else self.effective.clone()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.stages = Stages.from_state(state["stages"])
        self.epoch = int(state["epoch"])
        self.selected_at = int(state["selected_at"])
        effective = state["effective"]
        self.effective = None if effective is None else effective.to(self.ctx.device)
        self.masks = None if effective is None else transfer_masks(self.effective, self.pairs)

    # -- description ----------------------------------------------------------------------------
    @classmethod
    def live_names(cls, modalities):
        names = super().live_names(modalities)
        mods = list(modalities)
        return names + [f"method/transfer_{mods[t]};{mods[s]}" for t, s in ordered_pairs(len(mods))]
