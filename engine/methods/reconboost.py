"""``reconboost``: modality-alternating boosting with a reconcilement term and global rectification (Hua, Xu,
Bao, Yang, Huang, "ReconBoost: Boosting Can Achieve Modality Reconcilement", ICML 2024; official code
huacong/ReconBoost, ``train.py`` / ``train_MSA.py`` / ``models/dynamic_net.py``, called "the release" below).

Each modality m has one learner phi_m: its encoder and its own linear classifier, logits o_m. The ensemble is

    Phi(x) = beta * sum_m o_m(x)        (beta: the learnable ``boost_rate`` of the release, initially 1)

and it is the prediction: ``head`` / ``predict`` return it as the fused logits and o_m as modality m's logits,
so ``*/fused`` metrics score the ensemble and ``*/acc/<m>`` each learner. Only the newest learner of each
modality is kept (the paper's difference from classic gradient boosting).

**Schedule** (absolute epochs, a pure function of the epoch, :func:`phase_of`; a ``stage`` event at the first
epoch of each phase)::

    [0, P)                               "pretrain"   optional warm start: L = sum_m CE(o_m, y), every learner
    then stage k = 0, 1, 2, ...:
      E epochs                           "boost"      modality m_k = order[k mod M] (round robin, preset order)
      R epochs                           "rectify"    global rectification: L = CE(Phi, y), every learner + beta

with P = ``pretrain_epochs``, E = ``epochs_per_stage``, R = ``correct_epoch``. Because the phase of an epoch
depends only on the epoch and the options, a run resumed inside a phase or at a boundary, or a finished run
extended to more epochs, continues the same schedule (the method keeps no schedule state).

**Boosting stage** (learner m, the others frozen). With p = softmax, y the label, Phi_{-m} = beta * sum_{j != m}
o_j the ensemble of the other learners (no gradient) and, from the second stage on, o_prev the learner boosted
in the previous stage (the other modality when M = 2)::

    L_boost = mean_b [ -w1 log p_m,y + w2 sg(p(Phi_{-m})_y) log p_m,y ] / C     (= (w1 CE - w2 D) / C + const)
    D       = mean_b [ p(Phi_{-m})_y (log p(Phi_{-m})_y - log p_m,y) ]           (``method/kl``)
    L       = L_boost + alpha * MSE(p(o_m), sg p(o_prev))                        (``method/ga``; k >= 1)

The first term fits the learner to the label, the second (the reconcilement term) rewards disagreeing with
the others where they are already right: the weight of a sample's cross-entropy is w1 - w2 p(Phi_{-m})_y, so
with w1 = w2 the learner fits the boosting residual 1 - p(Phi_{-m})_y at the label (the paper's link to
Friedman's gradient boosting: the learner minimises L(phi_m, -grad L(Phi_{-m}, y))). ``w1 >= w2`` is required:
otherwise a sample's weight can be negative and the loss has no minimum. Only learner m updates: the other
learners' encoders and classifiers, beta and any mid-fusion modules have their gradients *removed* before the
optimiser step (``p.grad = None``, as ``mses`` freezes), so SGD's momentum and weight decay (and Adam's moments)
do not move them at all; they also run in eval mode (fixed BatchNorm statistics, no dropout), so the targets
they give are the functions they compute at evaluation.

**Global rectification**: every learner and beta fine-tune on CE(Phi, y) (the release's ``correct_epoch``).

Defaults (the paper's / release's CREMA-D settings): w1 = 5, w2 = 1, alpha = 0.5, epochs_per_stage = 4,
correct_epoch = 4, boost_rate 1 (learnable); optimiser SGD (lr 0.01, momentum 0.9, weight decay 5e-4).

Choices where the sources differ, and deviations from the release, on purpose (the paper's text was not
available to us beyond its abstract and its pipeline figure; the rest follows the method catalogue and the
release):

* **Reconcilement term on the label (the release's form).** The paper's pipeline figure writes the stage
  objective as L(phi_m, y) - lambda D_KL(Phi_{-m} || phi_m); with the KL over every class the off-label terms
  p(Phi_{-m})_k log p_m,k push every off-label logit to -infinity without end (the loss has no minimum). We use
  the release's and the method catalogue's form, restricted to the true class (y * p(Phi_{-m}) * log p_m): the
  residual at the label, a bounded weighted cross-entropy.
* **The 1/C scale is kept (the release's).** The release averages the one-hot-masked terms over the C classes
  (``.mean(-1)``), so its boosting loss is the weighted cross-entropy divided by C; the method catalogue writes
  the sums. The defaults w1 = 5, w2 = 1 were tuned at the release's scale, so we keep it: with the plain sums
  the boosting phase trains at 5x the rate of plain cross-entropy, and on cub10 with SGD at 0.01 it diverged
  within three stages. (w1 = 5 C, w2 = C give the sums.)
* **The GA term acts (deviation).** The release computes MSE(softmax(o_m).detach(), softmax(o_prev).detach()):
  both sides detached, so the term has no gradient and changes nothing. We let it act as the method describes
  it: the gradient reaches learner m (o_prev stays a fixed target). Its target, the learner of the previous
  stage, is the release's (``pre_model``).
* **Frozen learners (deviation)** run in eval mode and get no update at all; the release keeps them in train
  mode (their BatchNorm statistics move and dropout randomises the ensemble's targets) and its shared-head
  option (``common_space``) lets a stage update the classifier of every modality.
* **Own classifiers (deviation).** phi_m's classifier is the method's own Linear(d_m, C) (a per-modality head,
  like the ``sum`` fusion's); the preset's ``[model] fusion`` head is built but neither used nor optimised (as with
  ``aug``): ``concat`` shares one layer among the modalities and ``film`` / ``gated`` fuse features, so none of
  them gives learners that can be trained one at a time. The release's ``common_space`` head (one 2-layer
  classifier shared by every modality) needs equal feature widths and is not offered.
* **One optimiser (deviation)** for the whole run, its state and the run's learning-rate schedule continuing across
  phases; the release builds a new SGD (momentum reset) for every phase, with the same rate for both.
* **Warm start (deviation).** The release loads unimodal models trained apart (``--use_pretrain``, recommended in its
  README), and all learners are in the ensemble from the first stage. Here every learner is in the ensemble
  from the start as well (an untrained one gives a near-uniform prediction), and ``pretrain_epochs`` trains the
  unimodal learners in the run first (default 0: random initialisation). Without ``--use_pretrain`` the
  release starts from an empty ensemble, a constant broadcast to a (B, 1) column whose softmax is 1, which
  makes its first stage's loss (w1 - w2) CE.
* The release runs 1001 stages and tests after each rectification; here ``train.epochs`` bounds the run and
  the trainer evaluates the ensemble after every epoch (the selected checkpoint is the best epoch's).

Any number of modalities M >= 2: the stages go round the modalities in preset order, the ensemble of the
others sums M - 1 learners, and the GA target is the previous stage's learner.

Cost: a boosting step is one no-grad forward of the M - 1 frozen learners plus F_m + B_m (with mid-fusion,
every encoder runs with gradients, which are then dropped); a rectification step 1F + 1B.

Live values per step: ``coef/<m>`` (1 when learner m updates in this step: the boosted one in a boosting
stage, all in rectification and pretraining), ``method/stage`` (the boosting stage k, -1 while pretraining),
``method/phase`` (0 pretrain, 1 boost, 2 rectify), ``method/boost_rate`` (beta); in boosting steps
``method/boost_loss`` (L_boost), ``method/kl`` (D) and, from the second stage on, ``method/ga`` (the MSE,
unweighted); in rectification steps ``method/ce`` (CE of the ensemble).

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``w1``, 4 (the release's AVE and
ModelNet40 value) and 1 (its MOSI / MOSEI / SIMS value; with w2 = 1 the learner fits the plain boosting
residual).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models import ModelOutput
from ..schema import opt
from . import METHODS
from .base import Method, StepResult
from .mses import drop_gradients

PHASES = ("pretrain", "boost", "rectify")


@dataclass(frozen=True)
class ReconBoostConfig:
    w1: float = opt(5.0, gt=0.0, help="weight of the learner's cross-entropy in the boosting loss (release 5; "
                                      "AVE / ModelNet40 4, MOSI / MOSEI / SIMS 1)")
    w2: float = opt(1.0, ge=0.0, help="weight of the reconcilement term sg(p_ens,y) log p_m,y (release 1; MSA 0.25); "
                                      "at most w1")
    alpha: float = opt(0.5, ge=0.0, help="weight of the GA term MSE(p_m, sg p_prev) from the second stage on "
                                         "(release 0.5; 0 turns it off)")
    epochs_per_stage: int = opt(4, ge=1, help="epochs of one boosting stage (one modality's learner trained)")
    correct_epoch: int = opt(4, ge=0, help="epochs of global rectification after each boosting stage (0: none)")
    pretrain_epochs: int = opt(0, ge=0, help="epochs of unimodal warm start before the first stage, every learner "
                                             "on its own cross-entropy (the release loads pretrained unimodal "
                                             "models instead)")
    boost_rate: float = opt(1.0, gt=0.0, help="initial ensemble weight beta in Phi = beta sum_m o_m (release 1.0)")
    learn_boost_rate: bool = opt(True, help="train beta in the rectification phases (release: yes)")

    def __post_init__(self) -> None:
        if self.w2 > self.w1:
            raise ValueError(f"w2 ({self.w2}) must not exceed w1 ({self.w1}): a sample's weight w1 - w2 p_ens,y could "
                             f"turn negative and the boosting loss would have no minimum")


# -- the algorithm's pieces (pure functions, tested on known values) ------------------------------------
@dataclass(frozen=True)
class Phase:
    """What an epoch does: ``kind`` ("pretrain", "boost", "rectify"), the boosting stage ``stage`` (-1 while
    pretraining), the boosted modality's index ``learner`` (-1 while pretraining), the phase's first epoch
    ``start`` and its running number ``index`` (0 for the first phase of the run)."""

    kind: str
    stage: int
    learner: int
    start: int
    index: int


def phase_of(epoch: int, n_modalities: int, epochs_per_stage: int, correct_epoch: int,
             pretrain_epochs: int = 0) -> Phase:
    """The phase of ``epoch`` (0-based): pretraining for the first ``pretrain_epochs`` epochs, then stages of
    ``epochs_per_stage`` boosting epochs of modality ``stage mod M`` followed by ``correct_epoch`` rectification
    epochs."""
    if epoch < pretrain_epochs:
        return Phase("pretrain", -1, -1, 0, 0)
    first = 1 if pretrain_epochs else 0
    period = epochs_per_stage + correct_epoch
    k, into = divmod(epoch - pretrain_epochs, period)
    start = pretrain_epochs + k * period
    per_stage = 2 if correct_epoch else 1
    if into < epochs_per_stage:
        return Phase("boost", k, k % n_modalities, start, first + per_stage * k)
    return Phase("rectify", k, k % n_modalities, start + epochs_per_stage, first + per_stage * k + 1)


def ensemble(logits: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """Phi = rate * sum of the learners' logits stacked along the first dimension ((M, ..., C) -> (..., C))."""
    return rate * logits.sum(0)


def boosting_loss(logits: torch.Tensor, others: torch.Tensor, y: torch.Tensor, w1: float,
                  w2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_boost, D) of the module docstring for the boosted learner's ``logits`` (B, C) and the ensemble of the
    other learners ``others`` (B, C, no gradient taken): L_boost = mean_b[-(w1 - w2 p_ens,y) log p_m,y] / C
    and D = mean_b[p_ens,y (log p_ens,y - log p_m,y)]."""
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
    p_ens = F.softmax(others.detach().float(), dim=1).gather(1, y[:, None]).squeeze(1)
    loss = (-(w1 - w2 * p_ens) * log_p).mean() / logits.shape[-1]
    kl = (torch.special.xlogy(p_ens, p_ens) - p_ens * log_p).mean()
    return loss, kl


def ga_loss(logits: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """MSE(softmax(logits), sg softmax(previous)), the mean over rows and classes (``nn.MSELoss``)."""
    return F.mse_loss(F.softmax(logits.float(), dim=1), F.softmax(previous.detach().float(), dim=1))


def linear_head(d_in: int, d_out: int, seed: int) -> nn.Linear:
    """Linear(d_in, d_out) with PyTorch's default initialisation (uniform in +-1/sqrt(d_in)) from its own
    generator, so building the method leaves the run's random stream alone."""
    layer = nn.Linear(d_in, d_out)
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(d_in)
    with torch.no_grad():
        nn.init.uniform_(layer.weight, -bound, bound, generator=gen)
        nn.init.uniform_(layer.bias, -bound, bound, generator=gen)
    return layer


# -- the method -----------------------------------------------------------------------------------------
@METHODS.register("reconboost", config=ReconBoostConfig,
                  help="modality-alternating boosting: one modality's learner at a time fits the residual of the "
                       "others' ensemble (reconcilement term), then all are rectified on the ensemble (ReconBoost)",
                  paper="Hua, Xu, Bao, Yang, Huang: ReconBoost: Boosting Can Achieve Modality Reconcilement, "
                        "ICML 2024",
                  optimizer="sgd",
                  cost="boosting: 1F (no-grad, M-1 frozen learners) + F_m + B_m; rectification: 1F + 1B",
                  live={"coef/<m>": "1 when learner m updates in this step (the boosted modality in a boosting "
                                    "stage; every learner in rectification and pretraining), else 0",
                        "method/boost_loss": "boosting loss of the boosted learner: mean of -(w1 - w2 p_ens,y) "
                                             "log p_m,y / C, p_ens from the other learners' ensemble",
                        "method/kl": "reconcilement divergence on the label between the others' ensemble and the "
                                     "boosted learner, mean p_ens,y (log p_ens,y - log p_m,y) (maximised, weight w2)",
                        "method/ga": "MSE between the boosted learner's probabilities and those of the learner "
                                     "boosted in the previous stage (weight alpha)",
                        "method/ce": "cross-entropy of the ensemble in the global rectification phase",
                        "method/stage": "boosting stage k (modality k mod M is boosted); -1 while pretraining",
                        "method/phase": "phase of the epoch: 0 pretraining, 1 boosting, 2 global rectification",
                        "method/boost_rate": "ensemble weight beta in Phi = beta sum_m o_m"},
                  tune={"w1": (1.0, 4.0)})
class ReconBoost(Method):
    """See the module docstring: schedule, losses, freezing, deviations and logged values."""

    trains_modality_heads = True   # the learners' own classifiers are the reported logits[m], trained by every phase

    def __init__(self, cfg: ReconBoostConfig, ctx):
        super().__init__(cfg, ctx)
        self.mods = list(ctx.modalities)
        self.require_modalities("alternates between modalities")
        dev = ctx.device
        self._one, self._zero = torch.ones((), device=dev), torch.zeros((), device=dev)
        self._phase_value = {k: torch.full((), float(i), device=dev) for i, k in enumerate(PHASES)}
        self._stage_value: dict[int, torch.Tensor] = {}

    # -- modules and optimiser ------------------------------------------------------------------
    def setup(self, model):
        seed = (self.ctx.seed * 1_000_003 + 271_828) % (2 ** 62)
        self.modules["heads"] = nn.ModuleDict({
            m: linear_head(int(model.encoders[m].out_dim), self.ctx.n_classes, seed + i)
            for i, m in enumerate(self.mods)})
        rate = nn.Parameter(torch.tensor(float(self.cfg.boost_rate)), requires_grad=self.cfg.learn_boost_rate)
        self.modules["ensemble"] = nn.ParameterDict({"boost_rate": rate})

    @property
    def rate(self) -> torch.Tensor:
        return self.modules["ensemble"]["boost_rate"]

    def learner_parameters(self, model, m: str) -> list[nn.Parameter]:
        """Learner m: its encoder and its classifier."""
        return model.encoder_parameters(m) + list(self.modules["heads"][m].parameters())

    def parameter_groups(self, model):
        """One group: every learner, the mid-fusion modules if any, and beta when it learns. The model's
        fusion head is not optimised (not used, see the module docstring)."""
        params = [p for m in self.mods for p in self.learner_parameters(model, m)] + model.mid_fusion_parameters()
        if self.cfg.learn_boost_rate:
            params.append(self.rate)
        return [{"params": params, "name": "all"}]

    # -- schedule -------------------------------------------------------------------------------
    def phase(self, epoch: int) -> Phase:
        cfg = self.cfg
        return phase_of(epoch, len(self.mods), cfg.epochs_per_stage, cfg.correct_epoch, cfg.pretrain_epochs)

    def on_epoch_start(self, epoch, model):
        ph = self.phase(epoch)
        if epoch != ph.start:
            return []
        event = {"name": "stage", "stage": ph.kind, "index": ph.index}
        if ph.kind != "pretrain":
            event["round"] = ph.stage
        if ph.kind == "boost":
            event["modality"] = self.mods[ph.learner]
        return [event]

    # -- inference ------------------------------------------------------------------------------
    def logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: self.modules["heads"][m](features[m]) for m in self.mods}

    def head(self, model, features):
        logits = self.logits(features)
        return ensemble(torch.stack([logits[m] for m in self.mods]), self.rate), logits

    # -- one training step ----------------------------------------------------------------------
    def train_step(self, x, y, step):
        ph = self.phase(step.epoch)
        if ph.kind == "boost":
            return self.boost_step(x, y, step, ph)
        with step.autocast():
            features = step.model.encode(x)
            logits = self.logits(features)
        stacked = torch.stack([logits[m] for m in self.mods])
        fused = ensemble(stacked, self.rate)
        live = {f"coef/{m}": self._one for m in self.mods}
        if ph.kind == "rectify":
            loss = F.cross_entropy(fused.float(), y)
            live["method/ce"] = loss.detach()
        else:
            loss = sum(F.cross_entropy(logits[m].float(), y) for m in self.mods)
        step.backward(loss)
        step.step_optimizer()
        live.update(self.common_live(ph))
        out = ModelOutput(fused=fused.detach(), logits={m: o.detach() for m, o in logits.items()},
                          features={m: z.detach() for m, z in features.items()})
        return StepResult(loss.detach(), out, live)

    def boost_step(self, x, y, step, ph: Phase) -> StepResult:
        """One step of learner ``ph.learner`` against the frozen others (see the module docstring)."""
        model, mods = step.model, self.mods
        m = mods[ph.learner]
        for j in mods:
            if j != m:   # frozen learners compute the function they are frozen with
                model.encoders[j].eval()
        heads = self.modules["heads"]
        with step.autocast():
            features = self.boost_features(model, x, m)
            own = heads[m](features[m])
            with torch.no_grad():
                frozen = {j: heads[j](features[j].detach()) for j in mods if j != m}
        with torch.no_grad():
            others = ensemble(torch.stack([frozen[j] for j in mods if j != m]), self.rate)
        loss, kl = boosting_loss(own, others, y, self.cfg.w1, self.cfg.w2)
        live = {"method/boost_loss": loss.detach(), "method/kl": kl.detach()}
        total = loss
        if ph.stage >= 1 and self.cfg.alpha > 0:
            ga = ga_loss(own, frozen[mods[(ph.stage - 1) % len(mods)]])
            total = loss + self.cfg.alpha * ga
            live["method/ga"] = ga.detach()
        step.backward(total)
        for j in mods:
            if j != m:
                drop_gradients(self.learner_parameters(model, j))
        drop_gradients(model.mid_fusion_parameters() + [self.rate])
        step.step_optimizer()
        live.update({f"coef/{j}": self._one if j == m else self._zero for j in mods})
        live.update(self.common_live(ph))
        all_logits = {j: own.detach() if j == m else frozen[j] for j in mods}
        with torch.no_grad():
            fused = ensemble(torch.stack([all_logits[j] for j in mods]), self.rate)
        out = ModelOutput(fused=fused, logits=all_logits, features={j: z.detach() for j, z in features.items()})
        return StepResult(total.detach(), out, live)

    @staticmethod
    def boost_features(model, x, m: str) -> dict[str, torch.Tensor]:
        """Every modality's features, with gradients for ``m`` only (without mid-fusion); with mid-fusion the
        encoders exchange tensors, so all run with gradients and the frozen ones' are dropped later."""
        if model.mid_fusion_stages:
            return model.encode(x)
        features = {}
        for j in model.modalities:
            if j == m:
                features[j] = model.encoders[j](x[j])
            else:
                with torch.no_grad():
                    features[j] = model.encoders[j](x[j])
        return features

    def common_live(self, ph: Phase) -> dict[str, torch.Tensor]:
        if ph.stage not in self._stage_value:
            self._stage_value[ph.stage] = torch.full((), float(ph.stage), device=self.ctx.device)
        return {"method/stage": self._stage_value[ph.stage], "method/phase": self._phase_value[ph.kind],
                "method/boost_rate": self.rate.detach().clone()}

    def epoch_values(self):
        return {"method/boost_rate": self.rate.detach().clone()}
