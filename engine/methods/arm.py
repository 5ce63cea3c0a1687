"""``arm``: Asymmetric Reinforcing against multimodal representation bias (Gao, Cao, Zhu, Wang, Hu, "Asymmetric
Reinforcing against Multi-modal Representation Bias", AAAI 2025; release Gao-xiyuan/ARM, its MMPretrain
``LinearClsHead``). A feed-forward method: every step it estimates how much each modality contributes to the
fused representation with normalised mutual information, and re-weights the modalities' features before the
fusion head by the ratio of those contributions, so that the weak modality is reinforced.

Each training step (:meth:`ARM.train_step`):

1. **Unscaled pass.** The encoders' features z_m go through the fusion head once without gradient, in eval
   mode (no dropout draw), giving the fused logits f and each modality's logits l_m (``concat``: m's summand
   W_m z_m + b/M of f, the counterpart of the release's per-modality projection into the fused space).
2. **NMI / CNMI** (the release's histogram estimators, computed here on the device). As in the release, the
   (rows x dimensions) values are flattened and every coordinate is one sample; each variable is cut into
   equal-width bins over its own [min, max] (``numpy.histogram``'s default range):

   * NMI_m = 2 I(l_m; f) / (H(l_m) + H(f)) with ``bins`` bins per variable (release: 30);
   * CNMI_m = 2 I(l_m; f | o_m) / (H(l_m | o_m) + H(f | o_m)) with ``cmi_bins`` (release: 2), where o_m is
     what the other modalities contribute: sum_{k != m} l_k. For two modalities that is the other
     modality's logits, the release's conditioning variable; for M >= 3 it conditions on all the others
     together, as one variable, so the table stays cmi_bins^3 cells.

   Both are 0 when their denominator is 0 (a constant variable). All modalities are counted in one
   ``scatter_add`` per table, into float64 count tables on the device.
3. **Contribution** pcmi_m = p * NMI_m + p_m * (NMI_m - CNMI_m), with p and p_m the batch-mean softmax
   probability of the true class of f and of l_m (the release's ``train_predict``), and NMI_m - CNMI_m the
   catalog's "ii_m".
4. **Coefficients** (asymmetric reinforcement): coef_m = mean_{k != m} pcmi_k / pcmi_m. For two modalities
   this is the release's fusion, which multiplies each modality's features by the other's contribution over
   its own, so the modality with the smaller contribution is scaled up (and its encoder's gradient with it)
   and the dominant one down; for M >= 3 the others' contributions are averaged (mmbal's one-vs-mean-of-
   others generalisation, as in ``ogm``).
5. **Fusion.** The head runs on c_m * z_m (the features that reach the fusion are exactly coef_m times the
   encoder's); the loss is the fused cross-entropy. The estimates are constants (no gradient), as in the
   release (numpy).

In a multi-process run the estimates are taken on the global batch (the ranks' unscaled logits and labels
are gathered, :func:`engine.collectives.gather_rows`), so every rank applies the same coefficients and two
ranks with B/2 rows match one process with B.

**Evaluation** (``head`` / ``predict``, also used by the monitors): labels are not available, so the features
are scaled by the mean coefficient of the current epoch's training steps (of the previous epoch before the
first step of an epoch; 1 before any training), the coefficients the fusion head was trained with.

Deviations from the release, on purpose:

* **On the device, no host copy.** The release copies B x D features to the CPU every step and histograms
  them with numpy (the dominant cost, catalog section 4); here quantisation and counting are batched tensor
  ops (one ``scatter_add`` per table) with no host synchronisation.
* **Variables in the fused head's output space.** The release pairs 512-d unimodal features with a 512-d
  fused feature coordinate by coordinate; mmbal's encoders have different widths and its fusion heads have
  no fused feature, only fused logits, so the paired variables are each modality's logits l_m and the fused
  logits f (same width C for every modality, and f = sum_m l_m under ``concat``).
* **CNMI normalisation.** The release divides its CMI by H(X|Z) + H(Y|Z) without the factor 2 its NMI has
  (so identical variables give 0.5, not 1), and its conditional entropies broadcast p(z) along the wrong axis
  and do not weight by p(z). We use the textbook CMI, H(X,Z) + H(Y,Z) - H(X,Y,Z) - H(Z), normalised like NMI
  so that both lie in [0, 1] (1: each variable determines the other given z).
* **Un-crossed correctness weights.** The MMPretrain release weights modality a's ii by the *other*
  modality's confidence (``prediction[0] * nmi_a + prediction[1] * ii_a``, index 1 being the visual head),
  its ``train_armr.py`` the other way round (``value_a * ii_v``); the two releases disagree, so we weight
  each modality's own ii by its own confidence p_m, the reading of the catalog ("weight it by prediction
  correctness").
* **Guards.** pcmi_m can be 0 or negative (ii_m < 0), where the release's ratio divides by 0 or flips the
  features' sign; each contribution is floored at ``min_contribution`` and each coefficient is kept in
  [1 / ``max_coef``, ``max_coef``] (symmetric, so for two modalities coef_a = 1 / coef_b still holds); a
  coefficient that is NaN (non-finite logits, a step the trainer's guard skips) is 1.
* **No label leak at evaluation.** The release's head recomputes the coefficients on every test batch with
  its labels; we use the training coefficients (see Evaluation).
* **Scope.** The catalog's ARM (section 2.3) is the feature re-weighting in the fusion; the separate
  ``train_armr.py`` script's sample-level re-sampling by contribution is not part of this method.
* Non-additive fusions (``film``, ``gated``): their per-modality heads are trained on the detached *scaled*
  features (the base class's ``modality_head_loss``), the features they see at evaluation.

Live values per step (0-d device tensors): ``coef/<m>`` (the weight of z_m), ``score/<m>`` (NMI_m),
``method/cnmi_<m>`` (CNMI_m), ``method/pcmi_<m>`` (the contribution). Cost vs ``joint``: one extra fusion-
head forward without gradient and a few small histogram kernels per step.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``max_coef``, 3 and 100. ARM has no
strength coefficient and the paper's values are not in our sources; the release leaves the ratio unbounded
(100 comes close to that), 3 bounds the re-weighting more tightly than our default: our choices, not the
authors'.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..collectives import gather_rows
from ..models import ModelOutput
from ..schema import opt
from . import METHODS
from .base import Method, StepResult

DENOMINATOR_FLOOR = 1e-12   # entropies (nats) below this count as 0: the normalised quantity is then 0


@dataclass(frozen=True)
class ARMConfig:
    bins: int = opt(30, ge=2, le=256, help="equal-width bins per variable of the NMI_m histogram (the release's 30)")
    cmi_bins: int = opt(2, ge=2, le=64, help="bins per variable of the CNMI_m histogram, cmi_bins^3 cells "
                                      "(the release's 2)")
    min_contribution: float = opt(1e-3, gt=0.0, help="floor of each contribution pcmi_m before the ratios (ours: "
                                                     "the release divides by it unguarded)")
    max_coef: float = opt(10.0, ge=1.0, help="feature weights are kept in [1/max_coef, max_coef] (ours: the release "
                                             "has no bound)")


# -- the estimators (pure functions, tested on hand-made cases) --------------------------------------------
def quantise(v: torch.Tensor, bins: int) -> torch.Tensor:
    """(K, N) values -> (K, N) bin indices 0..bins-1: ``bins`` equal-width bins over each row's own
    [min, max] (``numpy.histogram``'s default range; the maximum falls in the last bin, a constant row in bin 0)."""
    v = v.double()
    lo = v.amin(-1, keepdim=True)
    width = v.amax(-1, keepdim=True) - lo
    width = torch.where(width > 0, width, 1.0)
    # non-finite values (a step the trainer's guard will skip) land in an edge bin instead of an invalid index
    return ((v - lo) / width * bins).floor().nan_to_num_(0.0).clamp_(0, bins - 1).long()


def joint_counts(codes: list[torch.Tensor], bins: int) -> torch.Tensor:
    """(K, bins, ..., bins) counts of the joint values of ``codes`` (each (K, N) bin indices), one table per row
    k, all K counted by one ``scatter_add`` (float64, exact integers)."""
    k, n = codes[0].shape
    flat = codes[0]
    for c in codes[1:]:
        flat = flat * bins + c
    cells = bins ** len(codes)
    flat = flat + torch.arange(k, device=flat.device).unsqueeze(1) * cells
    counts = torch.zeros(k * cells, dtype=torch.float64, device=flat.device)
    counts.scatter_add_(0, flat.reshape(-1), torch.ones(k * n, dtype=torch.float64, device=flat.device))
    return counts.view(k, *([bins] * len(codes)))


def entropy(counts: torch.Tensor) -> torch.Tensor:
    """(K,) plug-in entropies in nats of the K count tables (K, ...): log n - sum c log c / n."""
    c = counts.flatten(1)
    n = c.sum(1).clamp_min(1.0)
    return n.log() - (c * c.clamp_min(1.0).log()).sum(1) / n


def normalised(info: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """2 info / denominator, 0 where the denominator is 0 (and never below 0: rounding)."""
    ok = denominator > DENOMINATOR_FLOOR
    return torch.where(ok, 2.0 * info.clamp_min(0.0) / torch.where(ok, denominator, 1.0), 0.0)


def histogram_nmi(x: torch.Tensor, y: torch.Tensor, bins: int) -> torch.Tensor:
    """(K,) NMI(x_k; y_k) = 2 I / (H(x) + H(y)) of paired samples x, y (K, N), ``bins`` bins per variable."""
    counts = joint_counts([quantise(x, bins), quantise(y, bins)], bins)
    hx, hy = entropy(counts.sum(2)), entropy(counts.sum(1))
    return normalised(hx + hy - entropy(counts), hx + hy)


def histogram_ncmi(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, bins: int) -> torch.Tensor:
    """(K,) normalised conditional MI 2 I(x; y | z) / (H(x | z) + H(y | z)) of paired samples (K, N)."""
    counts = joint_counts([quantise(x, bins), quantise(y, bins), quantise(z, bins)], bins)   # axes: x, y, z
    hz = entropy(counts.sum((1, 2)))
    hxz, hyz = entropy(counts.sum(2)), entropy(counts.sum(1))
    cmi = hxz + hyz - entropy(counts) - hz
    return normalised(cmi, (hxz - hz) + (hyz - hz))


def contributions(nmi: torch.Tensor, ncmi: torch.Tensor, p_fused: torch.Tensor, p_own: torch.Tensor) -> torch.Tensor:
    """pcmi_m = p * NMI_m + p_m * (NMI_m - CNMI_m), (M,)."""
    return p_fused * nmi + p_own * (nmi - ncmi)


def feature_weights(pcmi: torch.Tensor, min_contribution: float, max_coef: float) -> torch.Tensor:
    """coef_m = mean_{k != m} pcmi_k / pcmi_m on contributions floored at ``min_contribution``, kept in
    [1/max_coef, max_coef]. For M = 2: coef_a = pcmi_b / pcmi_a and coef_b = 1 / coef_a."""
    c = pcmi.double().clamp_min(min_contribution)
    m = c.shape[0]
    others = ~torch.eye(m, dtype=torch.bool, device=c.device)
    mean_others = torch.where(others, c.unsqueeze(0), 0.0).sum(1) / max(m - 1, 1)
    coef = (mean_others / c).clamp(1.0 / max_coef, max_coef)
    return coef.nan_to_num(1.0).to(pcmi.dtype)   # NaN (non-finite logits): no re-weighting


def true_class_confidence(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(K,) batch mean of softmax(logits_k)_{i, y_i} from (N, K, C) logits."""
    p = F.softmax(logits.float(), dim=-1)
    index = y.view(-1, 1, 1).expand(-1, p.shape[1], 1)
    return p.gather(-1, index).squeeze(-1).mean(0)


@dataclass
class Estimates:
    nmi: torch.Tensor      # (M,)
    cnmi: torch.Tensor     # (M,)
    pcmi: torch.Tensor     # (M,)
    coef: torch.Tensor     # (M,) float32


def arm_estimates(stacked: torch.Tensor, y: torch.Tensor, cfg: ARMConfig) -> Estimates:
    """The step's estimates from (N, 1 + M, C) logits (fused first, then each modality's) and labels (N,)."""
    stacked = stacked.float()
    m = stacked.shape[1] - 1
    own = stacked[:, 1:].transpose(0, 1).reshape(m, -1)                  # (M, N*C): l_m, coordinates as samples
    fused = stacked[:, 0].reshape(1, -1).expand(m, -1)                    # (M, N*C): f for every m
    others = ~torch.eye(m, dtype=torch.bool, device=own.device)
    rest = torch.where(others.unsqueeze(-1), own.unsqueeze(0), 0.0).sum(1)  # (M, N*C): sum_{k != m} l_k
    nmi = histogram_nmi(own, fused, cfg.bins)
    cnmi = histogram_ncmi(own, fused, rest, cfg.cmi_bins)
    p = true_class_confidence(stacked, y).double()
    pcmi = contributions(nmi, cnmi, p[0], p[1:])
    return Estimates(nmi, cnmi, pcmi, feature_weights(pcmi, cfg.min_contribution, cfg.max_coef).float())


def scale_features(features: dict[str, torch.Tensor], coef: torch.Tensor,
                   modalities: list[str]) -> dict[str, torch.Tensor]:
    """{m: coef_m * z_m}: the features that reach the fusion head."""
    return {m: features[m] * coef[i].to(features[m].dtype) for i, m in enumerate(modalities)}


# -- the method ---------------------------------------------------------------------------------------------
@METHODS.register("arm", config=ARMConfig,
                  help="asymmetric reinforcing: per-step histogram NMI/CNMI of each modality with the fused output "
                       "re-weight the features in the fusion, scaling up the weaker modality (Gao et al. 2025)",
                  paper="Gao, Cao, Zhu, Wang, Hu: Asymmetric Reinforcing against Multi-modal Representation Bias, "
                        "AAAI 2025",
                  optimizer="sgd", cost="1F + 1B + 1 head F (no grad) + device histograms",
                  live={"coef/<m>": "weight of modality m's features in the fusion: mean of the other modalities' "
                                    "contributions over m's own (> 1 reinforces m)",
                        "score/<m>": "NMI_m: normalised MI (histogram, coordinates as samples) between modality m's "
                                     "logits and the fused logits",
                        "method/cnmi_<m>": "CNMI_m: normalised conditional MI of modality m's and the fused logits "
                                           "given the other modalities' summed logits",
                        "method/pcmi_<m>": "contribution pcmi_m = p_fused NMI_m + p_m (NMI_m - CNMI_m), p the mean "
                                           "true-class confidence",
                        "method/head_ce": "cross-entropy training the per-modality heads on the detached scaled "
                                          "features (non-additive fusions)"},
                  tune={"max_coef": (3.0, 100.0)})
class ARM(Method):
    """ARM: per-step MI-based feature re-weighting in the fusion; see the module docstring."""

    def __init__(self, cfg: ARMConfig, ctx):
        super().__init__(cfg, ctx)
        self.require_modalities("weighs modalities against each other")
        n = len(ctx.modalities)
        self.coef_sum = torch.zeros(n, dtype=torch.float64, device=ctx.device)   # this epoch's applied coefs
        self.coef_count = torch.zeros((), dtype=torch.float64, device=ctx.device)
        self.coef_previous = torch.ones(n, dtype=torch.float64, device=ctx.device)   # the last epoch's mean

    # -- training -------------------------------------------------------------------------------
    def train_step(self, x, y, step):
        model, mods = step.model, self.ctx.modalities
        with step.autocast():
            features = model.encode(x)
            est = self.estimate(model, features, y)
            scaled = scale_features(features, est.coef, mods)
            fused, logits = model.head(scaled)
        loss = F.cross_entropy(fused.float(), y)
        heads = self.modality_head_loss(ModelOutput(fused=fused, logits=logits, features=scaled), y, step)
        step.backward(loss if heads is None else loss + heads)
        self.coef_sum += est.coef.double()
        self.coef_count += 1.0
        # float32 like every method's live values: the interval's float64 sums of them are then exact, so they
        # do not depend on where a resume splits the interval
        nmi, cnmi, pcmi = est.nmi.float(), est.cnmi.float(), est.pcmi.float()
        live = {f"coef/{m}": est.coef[i] for i, m in enumerate(mods)}
        live.update({f"score/{m}": nmi[i] for i, m in enumerate(mods)})
        live.update({f"method/cnmi_{m}": cnmi[i] for i, m in enumerate(mods)})
        live.update({f"method/pcmi_{m}": pcmi[i] for i, m in enumerate(mods)})
        if heads is not None:
            live["method/head_ce"] = heads.detach()
        step.step_optimizer()
        return StepResult(loss.detach(), ModelOutput(fused=fused, logits=logits, features=features), live)

    @torch.no_grad()
    def estimate(self, model, features: dict[str, torch.Tensor], y: torch.Tensor) -> Estimates:
        """This step's NMI, CNMI, contributions and feature weights, from an unscaled pass of the fusion head
        in eval mode over the global batch (every rank's rows)."""
        mods = self.ctx.modalities
        training = model.fusion.training
        model.fusion.eval()
        try:
            fused, logits = model.head({m: z.detach() for m, z in features.items()})
        finally:
            model.fusion.train(training)
        stacked = torch.stack([fused, *(logits[m] for m in mods)], dim=1).float()
        return arm_estimates(gather_rows(stacked), gather_rows(y), self.cfg)

    def on_epoch_start(self, epoch, model):
        had = self.coef_count > 0
        self.coef_previous = torch.where(had, self.coef_sum / self.coef_count.clamp_min(1.0), self.coef_previous)
        self.coef_sum = torch.zeros_like(self.coef_sum)
        self.coef_count = torch.zeros_like(self.coef_count)
        return []

    # -- inference ------------------------------------------------------------------------------
    def evaluation_weights(self) -> torch.Tensor:
        """(M,) the mean coefficient of this epoch's training steps so far (the previous epoch's before the
        first, 1 before any training)."""
        had = self.coef_count > 0
        return torch.where(had, self.coef_sum / self.coef_count.clamp_min(1.0), self.coef_previous).float()

    def head(self, model, features):
        return model.head(scale_features(features, self.evaluation_weights(), self.ctx.modalities))

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        state = super().state_dict()
        state.update(coef_sum=self.coef_sum.clone(), coef_count=self.coef_count.clone(),
                     coef_previous=self.coef_previous.clone())
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        device = self.coef_sum.device
        self.coef_sum = state["coef_sum"].to(device, torch.float64).clone()
        self.coef_count = state["coef_count"].to(device, torch.float64).clone()
        self.coef_previous = state["coef_previous"].to(device, torch.float64).clone()
