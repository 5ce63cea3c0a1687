"""``gblending``: Gradient-Blending (Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification
Networks Hard?", CVPR 2020), online variant.

The loss is a weighted multi-task loss over the fused head and every modality's own head (the loss of
``multiloss``, which this method reuses with weights it re-estimates)::

    L = w_fused * CE(fused logits, y) + sum_m w_m * CE(logits_m, y)

The weights come from each branch's overfitting-to-generalisation behaviour, measured by training copies:

1. **Held-out split.** Once, at the start, a fraction ``v_rate`` of the *training* rows (8 %, MultiBench's
   ``v_rate``) is held out, drawn by a generator seeded by the run seed alone. The main run never trains on
   those rows (its epochs follow an :class:`~engine.data.plan.EpochPlan` over the other rows, in the usual
   (seed, epoch) order); the validation split stays untouched for checkpoint selection. The rows are in the
   method's state, so a resumed run keeps them.
2. **Estimate** (before epochs 0, ``super_epoch``, 2 ``super_epoch``, ...; ``mode = "offline"``: before epoch 0
   only). For every branch k (each modality m: encoder m with its own head, trained on CE(logits_m) alone, the
   other encoders untouched; ``fused``: the whole model on CE(fused)) a copy of the current model trains for
   n = ``estimate_epochs`` (default: ``super_epoch``) epochs on the remaining training rows, with the run's
   ``[train]`` options and a fresh optimiser, through ``ctx.train_nested`` (its own RNG stream seeded by
   (run seed, epoch); the run's RNG streams and model are left exactly as they were). The copy's
   cross-entropy on those training rows (L^T) and on the held-out rows (L^V) are measured before (N) and
   after (N + n) its training (clean evaluation passes, eval mode). Then (the paper's rule)::

       G_k = L^V_k(N) - L^V_k(N + n)                                       (generalisation gained)
       O_k = (L^V_k(N + n) - L^T_k(N + n)) - (L^V_k(N) - L^T_k(N))        (overfitting gained)
       w_k = (1 / Z) * G_k / O_k^2,   Z such that sum_k w_k = 1

   O_k^2 is the paper's estimate of sigma_k^2 (the second moment of the branch's gradient error), and the
   default. With ``sampling_variance = true`` (ours, off by default: defaults are the paper's) the
   sampling variance of O_k on the held-out rows is added to it,
   w_k ~ G_k / (O_k^2 + s_k^2), s_k^2 = var_i(l_i(N + n) - l_i(N)) / n_held over the held-out rows' losses
   l_i of the branch (the train-row part of O_k, on many more rows, is left out). A held-out set of a few
   dozen rows gives O_k with a standard error as large as O_k itself (on the test suite's synthetic data
   s_k ~ 0.1-0.2 against O_k ~ 0.01-0.25), and 1 / O_k^2 then hands nearly all the weight to the branch
   whose O_k happened to come out nearest 0, starving the others of gradient for a whole super-epoch; with
   many held-out rows s_k -> 0 and the rule is the paper's. Consider it for small training splits.

3. The main model trains the next ``super_epoch`` epochs with those weights.

Any number of modalities M >= 2: there are M + 1 branches, each weighed on its own measurements.

Choices where the paper leaves a gap (ours, stated):

* A branch whose held-out loss did not improve (G_k <= 0) gets weight 0 (the formula would give a negative
  loss weight; the catalog and both published codes take |G_k|, which rewards a branch whose held-out loss
  *rose* as much as one whose loss fell by the same amount). |O_k| is floored at ``min_overfit`` (1e-4,
  MultiBench's floor) so that a branch that neither over- nor under-fits does not get an infinite weight;
  a non-finite estimate (a diverged copy) counts as 0. If no branch gets a positive weight, the previous
  weights are kept (before the first estimate: 1 / (M + 1) each) and the event says so.
* The modality branches are the modality heads of the multimodal model (``logits_m``: its slice of the
  ``concat`` head, its ``sum`` head, its own ``film`` / ``gated`` head), trained with their encoder; in the
  paper they are the uni-modal networks, which these heads and encoders are.
* With ``film`` / ``gated`` fusion the modality heads are outside the fused logits and a small w_m would
  leave head m nearly untrained, so, as for every method (``Method.modality_head_loss``), they also learn on
  detached features (``method/head_ce``; head m then learns at (1 + w_m) x the rate of its cross-entropy):
  their accuracies describe trained heads, and what reaches the encoders and the fused head is G-Blending's
  blend alone. ``multiloss`` instead drops that loss whenever every weight is positive.
* Each copy gets a fresh optimiser and the run's learning-rate schedule over its n epochs (the paper does not
  say; MultiBench also builds a new optimiser per copy).

Deviations from the published code, on purpose (MultiBench ``training_structures/gradient_blend.py``;
BalanceMM ``GBlending_trainer.py``), following the paper:

* MultiBench's default (``delta = False``) weighs by the final val loss over the squared final gap, not by
  the *changes* G and O of the paper; it holds out the *first* 8 % of the training rows in dataset order
  (class-ordered data give a biased held-out set), and fine-tunes the fusion head for 25 more epochs on
  cached features after every round (not in the paper; not done here).
* BalanceMM estimates on the validation split (the *test* split when a dataset has none), so the weights
  see the data that selects, or tests, the model; here the held-out part of the training split is used.
  Its "start" losses are taken after the copy's first training epoch and its training losses are running
  sums over the training batches; here both are clean passes before and after. Its modality branches are
  the fused output with the other modalities zeroed.
* Neither saves the weights with the model (resume restarts them); here the weights, the held-out rows,
  the next estimate's epoch and the last estimate's measurements are in the method's state (exact resume).

Cost (the largest of the catalog's methods): 1F + 1B per step, plus per estimate (M + 1) copies x n epochs
on (1 - v_rate) of the training rows, each with two evaluation passes over those rows and the held-out
ones (and M + 2 no-grad passes over the held-out rows for s_k^2). The catalog's example: 30 epochs at
super_epoch 10 is 3 estimates x 3 branches x 10 epochs = 90 extra epochs. To bound it: a longer
``super_epoch``, fewer ``estimate_epochs``, or ``mode = "offline"`` (one estimate). Needs resident data
(streamed data refuse a held-out split).

Live values per step: ``coef/<m>`` (w_m), ``method/w_fused``, ``method/ce_fused``, ``method/ce_<m>``
(the unweighted terms). Per epoch, with the validation record, from the last estimate (branch b = each
modality and ``fused``): ``method/gain_<b>`` (G_b), ``method/overfit_<b>`` (O_b),
``method/overfit_var_<b>`` (s_b^2), ``method/est_train_loss_<b>`` and ``method/est_val_loss_<b>`` (the
copy's L^T and L^V after its training). Each estimate also records a ``gblend_estimate`` event with every
loss before and after, G, O, s^2 and the weights.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``super_epoch`` 20 (MultiBench's
gb_epoch, beside BalanceMM's 10) and ``mode`` "offline" (the paper's offline G-Blend, one estimate, beside its
online one).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..data.plan import EpochPlan
from ..errors import PresetError
from ..schema import opt
from . import METHODS
from .base import Method
from .multiloss import Multiloss, MultilossConfig

FUSED = "fused"
_SPLIT_SALT = 0x6B1E_5D   # the held-out rows' generator: seed * 1_000_003 + salt
_NESTED_SALT = 0x6B1E_7A  # the copies' RNG stream: (seed * 1_000_003 + salt) * 1009 + epoch


@dataclass(frozen=True)
class GblendingConfig:
    super_epoch: int = opt(10, ge=1, help="epochs between weight estimates (BalanceMM online super_epoch 10; "
                                          "MultiBench gb_epoch 20)")
    estimate_epochs: int = opt(0, ge=0, help="epochs each branch copy trains per estimate; 0: super_epoch (the "
                                             "paper's online G-Blend); fewer bound the cost")
    v_rate: float = opt(0.08, gt=0.0, lt=1.0, help="fraction of the training rows held out for the estimate "
                                                   "(MultiBench v_rate 0.08)")
    mode: Literal["online", "offline"] = opt("online", help="'online' re-estimates every super_epoch epochs; "
                                                            "'offline' estimates once, before the first epoch")
    min_overfit: float = opt(1e-4, gt=0.0, help="floor of |O_k| in w_k ~ G_k / O_k^2 (MultiBench floors O "
                                                "at 1e-4)")
    sampling_variance: bool = opt(False, help="add O_k's sampling variance on the held-out rows to O_k^2 (ours, "
                                              "against a small held-out set's noise); false: the paper's O_k^2")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def gain_and_overfit(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, float]:
    """(G, O) of one branch from its (train loss, held-out loss) before and after the copy's training:
    G = L^V(N) - L^V(N + n), O = (L^V(N + n) - L^T(N + n)) - (L^V(N) - L^T(N))."""
    (train0, val0), (train1, val1) = before, after
    return val0 - val1, (val1 - train1) - (val0 - train0)


def blend_weights(gain: list[float], overfit: list[float], min_overfit: float,
                  noise: list[float] | None = None) -> list[float] | None:
    """w_k = max(G_k, 0) / max(O_k^2 + noise_k, min_overfit^2), normalised to sum 1 (a non-finite term
    counts 0); ``noise_k``: the sampling variance of O_k (0 when not given). None when no branch gets a
    positive weight."""
    raw = []
    for g, o, v in zip(gain, overfit, noise if noise is not None else [0.0] * len(gain)):
        if math.isfinite(g) and math.isfinite(o) and math.isfinite(v):
            r = max(g, 0.0) / max(o * o + max(v, 0.0), min_overfit ** 2)
        else:
            r = 0.0
        raw.append(r if math.isfinite(r) else 0.0)
    total = sum(raw)
    if not (total > 0.0 and math.isfinite(total)):
        return None
    return [r / total for r in raw]


def difference_variance(before: torch.Tensor, after: torch.Tensor) -> float:
    """The sampling variance of the mean of ``after - before`` (per-row losses of the same rows):
    var(after_i - before_i) / n (0 for fewer than two rows)."""
    n = before.numel()
    if n < 2:
        return 0.0
    return float((after.double() - before.double()).var() / n)


def held_out_rows(n_train: int, v_rate: float, seed: int) -> torch.Tensor:
    """The held-out training rows (sorted int64, on the CPU): ``max(1, round(v_rate * n_train))`` rows of a
    permutation drawn by a generator seeded by ``seed`` alone."""
    k = max(1, int(round(v_rate * n_train)))
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return perm[:k].sort().values


def _seed(seed: int, salt: int) -> int:
    return (seed * 1_000_003 + salt) % (2 ** 62)


class _Branch(Method):
    """A branch copy's training: the cross-entropy of one head alone (a modality's, or the fused one), so
    the other encoders get no gradient (a separate uni-modal network, as in the paper). Not registered."""

    trains_modality_heads = True   # the modality heads outside the branch play no part in its losses

    def __init__(self, branch: str, ctx):
        super().__init__(None, ctx)
        self.branch = branch
        self.name = f"gblending/{branch}"

    def loss(self, out, y, step):
        logits = out.fused if self.branch == FUSED else out.logits[self.branch]
        return F.cross_entropy(logits.float(), y), {}


@METHODS.register("gblending", config=GblendingConfig,
                  help="Gradient-Blending: fused + per-modality cross-entropies weighted by each branch's "
                       "generalisation / overfitting^2, re-estimated every super_epoch on held-out train rows",
                  paper="Wang, Tran, Feiszli: What Makes Training Multi-modal Classification Networks Hard?, "
                        "CVPR 2020",
                  optimizer="sgd",
                  cost="1F + 1B; every super_epoch epochs (M + 1) model copies x estimate_epochs epochs on "
                       "(1 - v_rate) of the training rows, plus 2 evaluation passes per copy",
                  live={"coef/<m>": "weight w_m of modality m's own cross-entropy (G-Blending estimate)",
                        "method/w_fused": "weight w_fused of the fused cross-entropy (G-Blending estimate)",
                        "method/ce_fused": "cross-entropy of the fused logits (unweighted)",
                        "method/ce_<m>": "cross-entropy of modality m's own logits (unweighted)",
                        "method/head_ce": "cross-entropy training the per-modality heads on detached features "
                                          "(film / gated fusion)",
                        "method/gain_<m>": "last estimate: G of modality m's copy, its held-out loss decrease",
                        "method/gain_fused": "last estimate: G of the fused copy, its held-out loss decrease",
                        "method/overfit_<m>": "last estimate: O of modality m's copy, its held-out minus train "
                                              "loss gap increase",
                        "method/overfit_fused": "last estimate: O of the fused copy, its held-out minus train "
                                                "loss gap increase",
                        "method/overfit_var_<m>": "last estimate: sampling variance of O of modality m's copy "
                                                  "on the held-out rows (added to O^2)",
                        "method/overfit_var_fused": "last estimate: sampling variance of O of the fused copy on "
                                                    "the held-out rows (added to O^2)",
                        "method/est_train_loss_<m>": "last estimate: modality m's copy's loss on the training "
                                                     "rows after its training",
                        "method/est_train_loss_fused": "last estimate: the fused copy's loss on the training "
                                                       "rows after its training",
                        "method/est_val_loss_<m>": "last estimate: modality m's copy's loss on the held-out "
                                                   "training rows after its training",
                        "method/est_val_loss_fused": "last estimate: the fused copy's loss on the held-out "
                                                     "training rows after its training"},
                  tune={"super_epoch": (20,), "mode": ("offline",)})
class Gblending(Method):
    """See the module docstring."""

    def __init__(self, cfg: GblendingConfig, ctx):
        super().__init__(cfg, ctx)
        self.mods = list(ctx.modalities)
        self.branches = [*self.mods, FUSED]
        problems = []
        if len(self.mods) < 2:
            problems.append(f"method.name: gblending blends modality branches and needs at least two modalities; "
                            f"this run has {len(self.mods)} ({', '.join(self.mods)})")
        if FUSED in self.mods:
            problems.append(f"modalities: gblending names the fused branch '{FUSED}'; rename that modality")
        self.n_train = ctx.data.split_size("train") if ctx.data is not None else 0
        if ctx.data is not None and self.n_train - max(1, int(round(cfg.v_rate * self.n_train))) < 1:
            problems.append(f"method.v_rate: holding out {cfg.v_rate} of {self.n_train} training rows leaves none "
                            f"to train on; lower v_rate")
        if problems:
            raise PresetError("method", problems)
        self.weights = [1.0 / len(self.branches)] * len(self.branches)   # until the first estimate
        self.next_estimate = 0
        self.estimates = 0
        self.stats: dict[str, list[float]] | None = None   # the last estimate's measurements, per branch
        self.held = held_out_rows(self.n_train, cfg.v_rate, _seed(ctx.seed, _SPLIT_SALT)) if self.n_train else None
        self._rows: torch.Tensor | None = None   # the main run's training rows on the device (cached)
        self._use_weights()

    # -- the weighted loss (multiloss with the current weights) ------------------------------------
    def _use_weights(self) -> None:
        """The multiloss of the current weights (made outside the steps: at an estimate and on resume)."""
        *w_mods, w_fused = self.weights
        self.blend = Multiloss(MultilossConfig(weights=list(w_mods), fused_weight=w_fused), self.ctx)
        self._w_fused = torch.tensor(w_fused, dtype=torch.float32, device=self.ctx.device)

    def loss(self, out, y, step):
        loss, live = self.blend.loss(out, y, step)
        live["method/w_fused"] = self._w_fused
        return loss, live

    # -- the held-out split ----------------------------------------------------------------------------
    def train_rows(self) -> torch.Tensor:
        """The training rows the main run and the copies train on: every row but the held-out ones."""
        keep = torch.ones(self.n_train, dtype=torch.bool)
        keep[self.held] = False
        return keep.nonzero().flatten()

    def epoch_plan(self, epoch, model):
        if self._rows is None:
            self._rows = self.train_rows().to(self.ctx.device)
        return EpochPlan(self._rows)

    # -- the estimate ----------------------------------------------------------------------------------
    def due(self, epoch: int) -> bool:
        if self.cfg.mode == "offline":
            return self.estimates == 0
        return epoch >= self.next_estimate

    def on_epoch_start(self, epoch, model):
        return [self.estimate(epoch, model)] if self.due(epoch) else []

    def estimate(self, epoch: int, model) -> dict:
        """Train a copy of ``model`` per branch, measure G and O, set the weights; returns the event."""
        cfg = self.cfg
        n = cfg.estimate_epochs or cfg.super_epoch
        data = self.ctx.data.subset(self.train_rows(), self.held)
        seed = (_seed(self.ctx.seed, _NESTED_SALT) * 1009 + epoch) % (2 ** 62)
        start = self.held_losses(model, data) if cfg.sampling_variance else None   # for the noise of O_k
        before, after, noise = [], [], []
        for b in self.branches:
            copy_of_model = copy.deepcopy(model)
            result = self.ctx.train_nested(copy_of_model, _Branch(b, self.ctx), data, n, seed)
            before.append((result.before[f"train/loss/{b}"], result.before[f"val/loss/{b}"]))
            after.append((result.after[f"train/loss/{b}"], result.after[f"val/loss/{b}"]))
            noise.append(difference_variance(start[b], self.held_losses(copy_of_model, data)[b])
                         if cfg.sampling_variance else 0.0)
            del copy_of_model
        gain, overfit = zip(*(gain_and_overfit(b0, b1) for b0, b1 in zip(before, after)))
        weights = blend_weights(list(gain), list(overfit), cfg.min_overfit, noise)
        if weights is not None:
            self.weights = weights
            self._use_weights()
        self.stats = {"gain": list(gain), "overfit": list(overfit), "noise": list(noise),
                      "train_before": [t for t, _ in before], "val_before": [v for _, v in before],
                      "train_after": [t for t, _ in after], "val_after": [v for _, v in after]}
        self.next_estimate = epoch + cfg.super_epoch
        self.estimates += 1
        per_branch = {key: dict(zip(self.branches, values)) for key, values in self.stats.items()}
        return {"name": "gblend_estimate", "epochs": n, "held_out": int(self.held.numel()),
                "weights": dict(zip(self.branches, self.weights)), "kept_previous": weights is None, **per_branch}

    @torch.no_grad()
    def held_losses(self, model, data) -> dict[str, torch.Tensor]:
        """Each branch's cross-entropy on every held-out row (the "val" split of ``data``; float32, eval
        mode, no autocast; the model's mode is restored)."""
        was_training = model.training
        model.eval()
        losses: dict[str, list[torch.Tensor]] = {b: [] for b in self.branches}
        for x, y in data.eval_batches("val", self.ctx.eval_batch_size):
            out = model(x)
            for b in self.branches:
                logits = out.fused if b == FUSED else out.logits[b]
                losses[b].append(F.cross_entropy(logits.float(), y, reduction="none"))
        model.train(was_training)
        return {b: torch.cat(v) for b, v in losses.items()}

    def epoch_values(self):
        if self.stats is None:
            return {}
        values = {}
        for i, b in enumerate(self.branches):
            values[f"method/gain_{b}"] = self.stats["gain"][i]
            values[f"method/overfit_{b}"] = self.stats["overfit"][i]
            values[f"method/overfit_var_{b}"] = self.stats["noise"][i]
            values[f"method/est_train_loss_{b}"] = self.stats["train_after"][i]
            values[f"method/est_val_loss_{b}"] = self.stats["val_after"][i]
        return values

    # -- resume ----------------------------------------------------------------------------------------
    def state_dict(self):
        return {"modules": self.modules.state_dict(), "weights": list(self.weights),
                "held": None if self.held is None else self.held.clone(), "next_estimate": self.next_estimate,
                "estimates": self.estimates,
                "stats": None if self.stats is None else {k: list(v) for k, v in self.stats.items()}}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.weights = list(state["weights"])
        self.held = None if state["held"] is None else state["held"].cpu().clone()
        self.next_estimate = int(state["next_estimate"])
        self.estimates = int(state["estimates"])
        self.stats = None if state["stats"] is None else {k: list(v) for k, v in state["stats"].items()}
        self._rows = None
        self._use_weights()
