"""``aug``: sustained boosting with adaptive classifier assignment (Jiang, Huang, Yang, arXiv 2502.20120).

Each modality m has its encoder and a growing ensemble of classifiers whose logits are summed, as in
boosting (release code ``model/AudioVideo.py::AVGBShareClassifier``):

* the base classifier ``base[m]``: Linear(d_m -> hidden) + ReLU, then ``fc_out``;
* added classifier j: Linear(d_m -> hidden) + ReLU, then ``fc_out``; it reads the encoder feature z_m;
* ``fc_out`` = Linear(hidden -> C) is **one layer shared by every classifier of every modality**.

Modality m's output is the ensemble o_m = sum of its classifiers' logits (``fc_out``'s bias counted once
per classifier, as in the release). Training minimises per modality the sustained-boosting loss
(:func:`boosting_loss`, the release's ``train_CREMAD.py::train_audio_video``) with **alternating
updates**: one backward and one optimiser step per modality and batch, as in the release. Every
``check_every`` epochs (and after epoch 0) *adaptive classifier assignment* compares the modalities'
mean true-class confidence on the epoch's training batches and adds a classifier to the weakest
(:func:`assign_head`). At inference the fused logits are the fixed weighted sum sum_m w_m o_m
(``fusion_weights``; the release's ``merge_alpha``).

The model's own ``[model] fusion`` head is built but **not used** (not optimised, not used to predict):
AUG needs its classifiers to share ``fc_out`` across modalities and a hidden layer, which the concat
head's per-modality column slices cannot provide, so AUG keeps its classifiers in ``self.modules``
and any fusion type may be named in the preset.

Generalisation to M >= 2 modalities (ours; the release has two): the modalities are stepped in
``[modalities]`` order; ratio_m = s_m / mean_{m' != m} s_{m'}; a classifier goes to argmin_m s_m when
its ratio is below ``target_ratio - tolerance``. For M = 2 and target 1 this is the release's rule up
to the threshold on the other side (the release adds to the second modality when s_1/s_2 > 1.01, here
when s_2/s_1 < 0.99).

Deviations from the release code, on purpose:

1. Added classifiers are **trained** (the paper's description): each is added to the optimiser with
   ``add_param_group`` (same lr as its modality's encoder). The release builds its optimiser before
   adding them, so they stay at their random initialisation; ``train_new_heads = false`` reproduces
   that (they are frozen: the encoder and ``fc_out`` still learn through them).
2. The learning-rate schedule is the trainer's (the release steps a StepLR before the first epoch).
3. Model selection uses the validation split (the release selects on the test set).
4. Every AUG linear layer starts Xavier-normal with zero bias, drawn from a generator seeded by the run
   seed and the classifier's position, so adding a classifier never disturbs the training RNG stream.

Cost vs ``joint``: one forward per encoder (as joint), M backward calls over disjoint
subgraphs (about the same backward FLOPs as joint's one), **M optimiser steps** per batch, and
1 + k_m small classifiers per modality; at most ``max_heads`` added Linear(d_m, hidden) per modality.
Measured on avdigits_hard's conv encoders (CPU, one thread): 0.94-0.96x joint's CPU time per step.

Multi-process runs: every backward's gradients are averaged over the ranks by the trainer, so the
alternating steps stay identical everywhere; the epoch's confidence sums and sample count are summed
over the ranks (one all-reduce, :meth:`AUG.global_scores`) before the assignment rule, and saved that
way, so every rank adds the same classifier.

Logged: ``train/loss/method`` is the sum of the modality losses; ``coef/<m>`` is the modality's
(normalised) fusion weight w_m; ``score/<m>`` its mean true-class confidence sigma(o_m)_y (per step:
the batch's, before that batch's update; with validation: the epoch's, which the assignment rule
uses); ``method/loss_<m>`` its boosting loss; ``method/residual_weight_<m>`` the mean newest-classifier
weight E[1 - lambda_r p_prev(y)] (1 with no added classifier); per epoch ``method/ratio_<m>`` and
``method/heads_<m>`` (classifiers in the ensemble, base included); a ``head_added`` event (modality,
heads, score, ratio) when a classifier is added.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``lambda_r``, 0.2 (the value an inline
comment of the release's ``train_CREMAD.py`` gives beside its 0.5) and 0.8 (ours, the same step above 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import collectives
from ..errors import PresetError
from ..models import ModelOutput
from ..schema import opt
from . import METHODS
from .base import Method, StepResult


@dataclass(frozen=True)
class AUGConfig:
    lambda_r: float = opt(0.5, ge=0.0, le=1.0,
                          help="residual weight: the newest classifier's per-sample CE weight is "
                               "1 - lambda_r * p_prev(y) (release 0.5)")
    target_ratio: float = opt(1.0, gt=0.0, le=1.0,
                              help="assignment: add a classifier to the weakest modality when its confidence "
                                   "over the others' mean is below target_ratio - tolerance (release --lam 1.0)")
    tolerance: float = opt(0.01, ge=0.0, lt=1.0, help="dead band of the assignment rule (release 0.01)")
    check_every: int = opt(0, ge=0, help="assignment check interval in epochs (after epoch 0 and every "
                                         "check_every-th epoch); 0: max(1, epochs // 10) as in the release")
    max_heads: int = opt(10, ge=0, help="most classifiers added to one modality (0 turns the assignment off)")
    hidden: int = opt(256, ge=1, help="hidden width of every classifier: Linear(d_m, hidden) + ReLU, then the "
                                      "shared Linear(hidden, classes)")
    fusion_weights: list[float] = opt([], ge=0.0,
                                      help="inference weights of the modality ensembles, in the order of the "
                                           "preset's modalities, normalised to sum 1; empty: equal "
                                           "(release: [0.4, 0.6])")
    train_new_heads: bool = opt(True, help="optimise added classifiers (paper); false leaves them at their random "
                                           "initialisation, as the release code does")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def boosting_loss(head_logits: torch.Tensor, y: torch.Tensor, lambda_r: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sustained-boosting loss of one modality and the mean residual weight.

    ``head_logits`` is (H, B, C): the base classifier's logits then each added classifier's. With
    f_all = sum of all, f_prev = all but the newest, f_new = the newest:
    ``H == 1``: CE(f_all, y); else CE(f_all, y) + CE(f_prev, y) + CE(f_new, y)
    - lambda_r * CE_soft(f_new, onehot(y) * sg(softmax(f_prev))). The last two terms are computed in
    their equal form mean_i -(1 - lambda_r p_prev(y_i)) log softmax(f_new)_{y_i}. f_prev is not
    detached in its own CE term, so earlier classifiers keep training ("sustained").
    """
    f_all = head_logits.sum(0)
    loss = F.cross_entropy(f_all, y)
    if head_logits.shape[0] == 1:
        return loss, torch.ones((), device=y.device, dtype=f_all.dtype)
    f_prev, f_new = head_logits[:-1].sum(0), head_logits[-1]
    p_prev_y = F.softmax(f_prev.detach(), dim=-1).gather(-1, y[:, None]).squeeze(-1)
    weight = 1.0 - lambda_r * p_prev_y
    log_new_y = F.log_softmax(f_new, dim=-1).gather(-1, y[:, None]).squeeze(-1)
    residual = -(weight * log_new_y).mean()
    return loss + F.cross_entropy(f_prev, y) + residual, weight.mean()


def true_class_confidence(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sigma(logits)_y per sample: (B,) from (B, C) logits, or (M, B) from stacked (M, B, C)."""
    p = F.softmax(logits.detach().float(), dim=-1)
    return p.gather(-1, y.expand(p.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def confidence_ratios(scores: dict[str, float]) -> dict[str, float]:
    """ratio_m = s_m / mean_{m' != m} s_{m'} (for two modalities: s_a / s_b and s_b / s_a)."""
    total, n = sum(scores.values()), len(scores)
    return {m: s / max((total - s) / max(n - 1, 1), 1e-12) for m, s in scores.items()}


def assign_head(scores: dict[str, float], target_ratio: float, tolerance: float) -> str | None:
    """The modality that gets a new classifier: the least confident one when its ratio to the others'
    mean is below ``target_ratio - tolerance``; None when the modalities are balanced enough."""
    weakest = min(scores, key=scores.get)
    return weakest if confidence_ratios(scores)[weakest] < target_ratio - tolerance else None


def is_check_epoch(epoch: int, check_every: int) -> bool:
    """The release checks after epoch 0 and after every ``check_every``-th epoch (0-based ``epoch``)."""
    return epoch == 0 or (epoch + 1) % check_every == 0


def xavier_linear(d_in: int, d_out: int, seed: int) -> nn.Linear:
    """Linear(d_in, d_out) with a Xavier-normal weight from its own generator and a zero bias."""
    layer = nn.Linear(d_in, d_out)
    gen = torch.Generator().manual_seed(seed)
    std = math.sqrt(2.0 / (d_in + d_out))
    with torch.no_grad():
        layer.weight.copy_(torch.randn(d_out, d_in, generator=gen) * std)
        layer.bias.zero_()
    return layer


@METHODS.register("aug", config=AUGConfig,
                  help="sustained boosting: growing per-modality classifier ensembles, alternating updates, "
                       "a classifier added to the least confident modality (AUG)",
                  paper="Jiang, Huang, Yang: Rethinking Multimodal Learning from the Perspective of Mitigating "
                        "Classification Ability Disproportion (sustained boosting, AUG), arXiv 2502.20120, 2025",
                  optimizer="sgd",
                  cost="M x (F_m + B_m + optimiser step) + F/B of modality m's 1 + k_m classifiers (d_m x hidden + "
                       "hidden x C each; k_m grows by one per assignment, up to max_heads)",
                  live={"coef/<m>": "inference weight w_m of modality m's ensemble in the fused prediction",
                        "score/<m>": "mean true-class confidence of modality m's ensemble (the assignment score)",
                        "method/loss_<m>": "modality m's sustained-boosting loss",
                        "method/residual_weight_<m>": "mean residual weight 1 - lambda_r p_prev(y) of m's newest "
                                                      "classifier",
                        "method/ratio_<m>": "m's epoch confidence over the other modalities' mean",
                        "method/heads_<m>": "number of classifiers in m's ensemble"},
                  tune={"lambda_r": (0.2, 0.8)})
class AUG(Method):
    """Sustained boosting with adaptive classifier assignment; see the module docstring."""


    def __init__(self, cfg: AUGConfig, ctx):
        super().__init__(cfg, ctx)
        mods = ctx.modalities
        self.weights = self._fusion_weights(cfg.fusion_weights, mods)
        self.check_every = cfg.check_every or max(1, ctx.epochs // 10)
        self.history: list[str] = []            # modality of each added classifier, in order of addition
        self._coef = {m: torch.tensor(self.weights[m], device=ctx.device) for m in mods}
        self._reset_scores(ctx.device)
        self._epoch_values: dict[str, float] = {}

    @staticmethod
    def _fusion_weights(given: list[float], mods: list[str]) -> dict[str, float]:
        if not given:
            return {m: 1.0 / len(mods) for m in mods}
        if len(given) != len(mods) or sum(given) <= 0:
            n = len(given)
            why = (f"{n} weight{'s' if n != 1 else ''} for {len(mods)} modalities ({', '.join(mods)})"
                   if n != len(mods) else "the weights sum to 0")
            raise PresetError("method", [f"method.fusion_weights: {why}; give one weight >= 0 per modality in "
                                         f"the order of the preset's modalities, or leave it empty for equal weights"])
        return {m: w / sum(given) for m, w in zip(mods, given)}

    def _reset_scores(self, device) -> None:
        self.conf_sum = torch.zeros(len(self.ctx.modalities), dtype=torch.float64, device=device)
        self.count = 0

    # -- modules and optimiser ------------------------------------------------------------------
    def setup(self, model):
        self.in_dims = {m: int(model.encoders[m].out_dim) for m in self.ctx.modalities}
        h, seed = self.cfg.hidden, self._seed_base()
        self.modules["fc_out"] = xavier_linear(h, self.ctx.n_classes, seed)
        self.modules["base"] = nn.ModuleDict({m: xavier_linear(d, h, seed + 1 + i)
                                              for i, (m, d) in enumerate(self.in_dims.items())})
        self.modules["added"] = nn.ModuleDict({m: nn.ModuleList() for m in self.ctx.modalities})

    def _seed_base(self) -> int:
        return (self.ctx.seed * 1_000_003 + 12_345) % (2 ** 62)

    def parameter_groups(self, model):
        """One group per modality (its encoder and base classifier) and one for the shared ``fc_out``;
        the model's fusion head is not optimised (AUG does not use it)."""
        groups = [{"params": model.encoder_parameters(m) + list(self.modules["base"][m].parameters()), "name": m}
                  for m in self.ctx.modalities]
        groups.append({"params": list(self.modules["fc_out"].parameters()), "name": "aug/fc_out"})
        return groups

    def add_head(self, m: str) -> int:
        """Append a classifier to modality ``m`` (on the classifiers' device; with its own optimiser group
        when ``train_new_heads``); returns the modality's number of classifiers, base included."""
        heads = self.modules["added"][m]
        k = len(self.history)
        head = xavier_linear(self.in_dims[m], self.cfg.hidden, self._seed_base() + 1_000 + k)
        head = head.to(self.modules["fc_out"].weight.device)
        head.requires_grad_(self.cfg.train_new_heads)
        heads.append(head)
        self.history.append(m)
        if self.cfg.train_new_heads and getattr(self, "optimizer", None) is not None:
            ref = next(g for g in self.optimizer.param_groups if g.get("name") == m)
            group = {"params": list(head.parameters()), "name": f"aug/{m}/{len(heads)}"}
            group.update({key: ref[key] for key in ("lr", "base_lr") if key in ref})
            self.optimizer.add_param_group(group)
        return 1 + len(heads)

    def n_heads(self, m: str) -> int:
        return 1 + len(self.modules["added"][m])

    # -- classifiers ----------------------------------------------------------------------------
    def head_logits(self, m: str, z: torch.Tensor) -> torch.Tensor:
        """Each classifier's logits for modality ``m``, stacked: (H, ..., C), base first, newest last."""
        hidden = [F.relu(self.modules["base"][m](z))] + [F.relu(a(z)) for a in self.modules["added"][m]]
        return self.modules["fc_out"](torch.stack(hidden))

    def fuse(self, logits: dict[str, torch.Tensor]) -> torch.Tensor:
        """The fixed weighted sum sum_m w_m o_m of the modality ensembles."""
        return sum(self.weights[m] * logits[m] for m in self.ctx.modalities)

    def head(self, model, features):
        logits = {m: self.head_logits(m, features[m]).sum(0) for m in self.ctx.modalities}
        return self.fuse(logits), logits

    # -- one training step: alternating per-modality updates -------------------------------------
    def train_step(self, x, y, step):
        """Encode every modality once, then for each modality in turn: its classifiers' logits (built
        after the previous modality's update, since ``fc_out`` is shared), its boosting loss, backward,
        optimiser step. A step touches only the stepped modality's encoder and classifiers and
        ``fc_out``: the other parameters have no gradient, and the optimisers skip them."""
        with step.autocast():
            features = step.model.encode(x)
        mods = self.ctx.modalities
        logits, losses, residual = {}, [], []
        for m in mods:
            with step.autocast():
                heads = self.head_logits(m, features[m])
            loss, residual_weight = boosting_loss(heads.float(), y, self.cfg.lambda_r)
            logits[m] = heads.detach().sum(0)
            step.backward(loss)
            step.step_optimizer()
            losses.append(loss.detach())
            residual.append(residual_weight.detach())
        # the step's bookkeeping batched over the modalities: each modality's logits are those before its update
        conf = true_class_confidence(torch.stack([logits[m] for m in mods]), y)   # (M, B)
        self.conf_sum += conf.sum(1).double()
        self.count += int(y.shape[0])
        losses_t, residual_t = torch.stack(losses), torch.stack(residual)
        live = {}
        for m, score, loss, weight in zip(mods, conf.mean(1).unbind(), losses_t.unbind(), residual_t.unbind()):
            live.update({f"coef/{m}": self._coef[m], f"score/{m}": score, f"method/loss_{m}": loss,
                         f"method/residual_weight_{m}": weight})
        out = ModelOutput(fused=self.fuse(logits), logits=logits,
                          features={m: z.detach() for m, z in features.items()})
        return StepResult(losses_t.sum(), out, live)

    # -- adaptive classifier assignment ---------------------------------------------------------
    def global_scores(self) -> tuple[torch.Tensor, int]:
        """The confidence sums and sample count of the epoch so far over all ranks of a multi-process
        run (one all-reduce; this rank's own in a single process), so every rank assigns alike."""
        if not collectives.is_distributed():
            return self.conf_sum, self.count
        total = collectives.all_reduce_sum(torch.cat([self.conf_sum, self.conf_sum.new_tensor([float(self.count)])]))
        return total[:-1], int(round(total[-1].item()))

    def on_epoch_end(self, epoch, model, val):
        mods = self.ctx.modalities
        conf_sum, count = self.global_scores()
        scores = dict(zip(mods, (conf_sum / max(count, 1)).tolist()))  # one transfer per epoch
        ratios = confidence_ratios(scores)
        events = []
        if count and self.cfg.max_heads and is_check_epoch(epoch, self.check_every):
            m = assign_head(scores, self.cfg.target_ratio, self.cfg.tolerance)
            if m is not None and self.n_heads(m) - 1 < self.cfg.max_heads:
                heads = self.add_head(m)
                events.append({"name": "head_added", "modality": m, "heads": heads,
                               "score": scores[m], "ratio": ratios[m]})
        self._epoch_values = {**{f"score/{m}": scores[m] for m in mods},
                              **{f"method/ratio_{m}": ratios[m] for m in mods},
                              **{f"method/heads_{m}": float(self.n_heads(m)) for m in mods}}
        self._reset_scores(self.conf_sum.device)
        return events

    def epoch_values(self):
        return dict(self._epoch_values)

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        """The epoch's confidence sums are stored over all ranks (a collective: every rank saves)."""
        conf_sum, count = self.global_scores()
        return {"modules": self.modules.state_dict(), "history": list(self.history),
                "conf_sum": conf_sum.clone(), "count": count}

    def load_state_dict(self, state):
        """Rebuild the added classifiers (and their optimiser groups, in the order they were added)
        before loading their weights, so that the optimiser's own state loads after this. In a
        multi-process run rank 0 carries the saved (global) confidence sums, the others start at 0."""
        saved = list(state["history"])
        if saved[:len(self.history)] != self.history:
            raise ValueError(f"AUG state has classifiers added as {saved}, which does not extend this "
                             f"method's {self.history}")
        for m in saved[len(self.history):]:
            self.add_head(m)
        self.modules.load_state_dict(state["modules"])
        self.conf_sum = state["conf_sum"].to(self.conf_sum.device, torch.float64).clone()
        self.count = int(state["count"])
        if not collectives.is_main():
            self._reset_scores(self.conf_sum.device)

