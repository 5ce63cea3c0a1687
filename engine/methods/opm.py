"""``opm``: On-the-fly Prediction Modulation (Wei, Hu, Du, Wen, "On-the-fly Modulation for Balanced
Multimodal Learning", IEEE TPAMI 2024, Sec. 4; release GeWu-Lab/BML_TPAMI2024, where it is called
``adam_drop``: ``code/models/Classifier.py`` and ``code/main.py``).

OPM weakens the dominant modality in the *feed-forward* stage: its encoder feature is dropped (set to
zero) before the fusion head with a probability that grows with how far it leads. Each training step
(:meth:`OPM.train_step`):

1. **Scores** s_m = sum_i softmax(l_m)_{i, y_i} of every modality's own logits on the clean (undropped)
   features, as OGM computes them (:func:`engine.methods.ogm.score_sums`; with ``concat`` fusion l_m is
   the head's slice W[:, m] z_m + b / M, as in the release). The sums and the row count go through one
   :func:`engine.collectives.all_reduce_sum`, so every rank of a multi-process run draws with the same q.
2. **Discrepancy** r_m = tanh(relu(rho_m - 1)) with rho_m = s_m / mean_{j != m} s_j
   (:func:`engine.methods.ogm.discrepancy_ratios`). For two modalities this is the paper's and the
   release's s_a / s_v and s_v / s_a (``calcu_q``). For M >= 3 it is mmbal's generalisation, the one
   ``ogm`` uses: each modality against the *mean* score of the others. (BalanceBenchmark's
   ``OPM_trainer.py`` divides by the *sum* of the other two scores, so with three comparable modalities
   rho is about 1/2 and nothing is ever dropped.)
3. **Drop probability** q_m = clip(q_base * (1 + lambda * r_m), 0, 1) where r_m > 0, else 0 (the paper's
   rule: q jumps from 0 to q_base as rho_m crosses 1, then grows to q_base (1 + lambda)).
4. **Drop**: with probability ``p_exe`` per batch (the release's ``exe_drop``) every sample's feature z_m
   is kept with probability 1 - q_m (one Bernoulli draw per sample and modality) and set to zero
   otherwise; the features are then rescaled by 1 / (1 - theta), theta = sum_m d_m q_m / sum_m d_m with
   d_m the feature width (the expected dropped fraction of the concatenated feature, as inverted
   dropout). The fusion head runs again on these features and the loss is the fused cross-entropy of
   that prediction. Without a drop (the p_exe draw failed) the features pass unchanged, so the step is
   joint training's bit for bit.
5. **Warm-up**: no drop in the first ``warmup_epochs`` epochs (0-based epochs < warmup_epochs).

Evaluation never drops (the release's ``warm_up=1`` at validation): :meth:`Method.predict` is unchanged.

Defaults (the release's ``scripts/train_opm.sh`` and ``main.py``): q_base 0.5 (``config.py`` says 0.4, but
its argparse default 0.5 overrides it; BalanceBenchmark uses 0.4), lambda 0.5, p_exe 0.7, 5 warm-up
epochs; the paper trains with AdamW (lr 1e-3 in the paper's setting, 5e-5 in the release's Kinetics-Sounds
config; weight decay 0.01).

Deviations from the release, on purpose:

* **The weakest modality is never dropped.** Its ratio is at most 1, so q = 0 already; we also set
  q = 0 for the modality with the lowest score explicitly, so that rounding at a tie cannot give it a
  tiny q. Hence no sample ever loses every modality, and the release's removal of such samples from the
  batch (``update_flag``; it also skips the step when none is left) never applies: the batch keeps its
  rows and the loss is the mean over all of them, as in the release whenever it trains.
* **One random stream on the device**: the per-batch p_exe draw and the per-sample masks come from the
  method's own generator (seeded from the run seed, saved in the method's state), not numpy's global RNG
  on the host. Resume is exact, nothing is moved to the host, and the model's dropout stream is
  unchanged. In a multi-process run every rank draws the masks of the *global* batch and keeps its own
  rows, so N ranks of B / N rows drop exactly the samples one process of B rows drops.
* **No host synchronisation**: the release sums a Python list of per-sample probabilities
  (``.item()`` per sample) and branches on ``exe_drop`` on the host; here scores, q, the draws and the
  rescaling are device tensors and the drop is a multiplication by a 0/1 mask (all ones without a drop).
* The release's ``Classifier.py`` as published does not parse (a stray ``]`` after
  ``torch.chunk(cleaned_fea, num_mod, dim=0)``); its custom autograd function divides the gradient by
  1 - theta, which is what the plain multiplication by the constant 1 / (1 - theta) does here.
* Warm-up: the release tests ``epoch <= 5`` on 0-based epochs (six epochs); the option counts epochs,
  default 5.
* Non-additive fusions (``film``, ``gated``): the per-modality heads, whose logits give the scores, take no
  part in the fused prediction; they are trained on the *detached* clean features by the base class's
  ``modality_head_loss`` (``method/head_ce``), so the scores are those of trained classifiers.

Live values per step (0-d device tensors): ``coef/<m>`` (the probability that m's feature is kept in this
step: 1 - q_m when the drop runs, else 1), ``score/<m>`` (s_m / batch size), ``method/ratio/<m>`` (rho_m),
``method/q/<m>`` (q_m by the rule, also in steps and epochs without a drop), ``method/dropped/<m>`` (the
fraction of the batch whose m feature was dropped), ``method/executed`` (1 when the drop ran).
Cost vs ``joint`` (after warm-up): the fusion head runs a second time (on the clean features, without gradient,
for the scores and the train metrics) and one uniform draw per sample and modality.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``q_base``, 0.4 (the release's
``config.py`` and BalanceBenchmark) and 0.6 (ours, the same step above the release's 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..collectives import all_reduce_sum, rank, world_size
from ..models import ModelOutput
from ..schema import opt
from . import METHODS
from .base import Method, StepResult
from .ogm import discrepancy_ratios, score_sums


@dataclass(frozen=True)
class OPMConfig:
    q_base: float = opt(0.5, ge=0.0, le=1.0, help="base drop probability of a dominant modality's feature "
                                                 "(release script and argparse default 0.5; BalanceBenchmark 0.4)")
    lam: float = opt(0.5, ge=0.0, help="lambda in q = q_base * (1 + lambda * tanh(relu(rho - 1))) (release 0.5)")
    p_exe: float = opt(0.7, ge=0.0, le=1.0, help="probability that a batch is modulated at all (release 0.7)")
    warmup_epochs: int = opt(5, ge=0, help="epochs of plain joint training before dropping starts (release: 5)")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def drop_probabilities(s: torch.Tensor, rho: torch.Tensor, q_base: float, lam: float) -> torch.Tensor:
    """q_m = clip(q_base (1 + lam tanh(relu(rho_m - 1))), 0, 1) where rho_m > 1, else 0; (M,).

    The modality with the lowest score s gets 0 whatever rounding does to its ratio, so every sample
    keeps at least one modality's feature."""
    r = torch.tanh(F.relu(rho - 1.0))
    q = torch.where(r > 0, (q_base * (1.0 + lam * r)).clamp(0.0, 1.0), torch.zeros_like(r))
    return torch.where(s > s.min(), q, torch.zeros_like(q))


def draw_keep(u: torch.Tensor, q: torch.Tensor, executed: torch.Tensor) -> torch.Tensor:
    """(N, M) bool: sample i keeps modality m's feature (u[i, m] >= q_m: probability 1 - q_m), everywhere
    when the drop does not run (``executed`` False)."""
    return (u >= q) | ~executed


def rescale_factor(q: torch.Tensor, dims: torch.Tensor, executed: torch.Tensor) -> torch.Tensor:
    """1 / (1 - theta), theta = sum_m d_m q_m / sum_m d_m, when the drop runs; 1 otherwise (0-d)."""
    theta = (dims * q).sum() / dims.sum()
    return torch.where(executed, 1.0 / (1.0 - theta), torch.ones_like(theta))


def dropped_features(features: dict[str, torch.Tensor], keep: torch.Tensor,
                     scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """z_m * keep[:, m] * scale per modality (``keep`` (B, M) in the features' modality order)."""
    out = {}
    for i, (m, z) in enumerate(features.items()):
        factor = (keep[:, i].to(torch.float32) * scale).to(z.dtype)
        out[m] = z * factor.view(-1, *([1] * (z.dim() - 1)))
    return out


# -- the method -------------------------------------------------------------------------------------
@METHODS.register("opm", config=OPMConfig,
                  help="on-the-fly prediction modulation: the dominant modality's features are dropped before "
                       "the fusion with a probability from its score ratio (Wei et al. 2024, OPM)",
                  paper="Wei, Hu, Du, Wen: On-the-fly Modulation for Balanced Multimodal Learning, IEEE TPAMI 2024",
                  optimizer="adamw", cost="1F + 1B + 1 fusion-head call",
                  live={"coef/<m>": "probability that modality m's feature is kept in this step (1 - q_m when the "
                                    "drop runs, 1 otherwise and during warm-up)",
                        "score/<m>": "mean true-class confidence softmax(l_m)_y of modality m's own logits on the "
                                     "clean features",
                        "method/ratio/<m>": "discrepancy ratio rho_m: m's score over the mean score of the others",
                        "method/q/<m>": "drop probability q_m = q_base (1 + lambda tanh(rho_m - 1)) when m leads, "
                                        "else 0 (by the rule, also when no drop runs)",
                        "method/dropped/<m>": "fraction of the batch whose modality-m feature was dropped",
                        "method/executed": "1 when this batch was modulated (probability p_exe after warm-up)",
                        "method/head_ce": "cross-entropy training the per-modality heads on detached features "
                                          "(non-additive fusions)"},
                  tune={"q_base": (0.4, 0.6)})
class OPM(Method):
    """OPM: per-step dropping of the dominant modality's features; see the module docstring."""

    def __init__(self, cfg: OPMConfig, ctx):
        super().__init__(cfg, ctx)
        self.require_modalities("balances modalities against each other")
        self.generator: torch.Generator | None = None
        self._ones = torch.ones(len(ctx.modalities), device=ctx.device)

    def setup(self, model):
        device = next(model.parameters()).device
        self.dims = torch.tensor([float(model.encoders[m].out_dim) for m in self.ctx.modalities], device=device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed((self.ctx.seed * 1_000_003 + 104_729) % (2 ** 62))

    def train_step(self, x, y, step):
        model, mods = step.model, self.ctx.modalities
        active = step.epoch >= self.cfg.warmup_epochs
        with step.autocast():
            features = model.encode(x)
            with torch.set_grad_enabled(torch.is_grad_enabled() and not active):
                fused, logits = model.head(features)   # clean: scores, train metrics (and the loss in warm-up)
        out = ModelOutput(fused=fused, logits=logits, features=features)
        count = torch.full((1,), y.shape[0], dtype=torch.float32, device=y.device)
        sums = all_reduce_sum(torch.cat([score_sums(torch.stack([logits[m] for m in mods]), y), count]))
        s, n = sums[:-1], sums[-1]
        rho = discrepancy_ratios(s)
        q = drop_probabilities(s, rho, self.cfg.q_base, self.cfg.lam)
        if active:
            keep, executed, dropped = self._draw(q, y.shape[0])
            with step.autocast():
                prediction, _ = model.head(dropped_features(features, keep, rescale_factor(q, self.dims, executed)))
            coef = torch.where(executed, 1.0 - q, self._ones)
        else:
            prediction, executed = fused, torch.zeros((), dtype=torch.bool, device=q.device)
            coef, dropped = self._ones, torch.zeros_like(q)
        loss = F.cross_entropy(prediction.float(), y)
        heads = self.modality_head_loss(out, y, step)
        step.backward(loss if heads is None else loss + heads)
        self.optimizer_step(step)
        live = {f"coef/{m}": coef[i] for i, m in enumerate(mods)}
        live.update({f"score/{m}": s[i] / n for i, m in enumerate(mods)})
        live.update({f"method/ratio/{m}": rho[i] for i, m in enumerate(mods)})
        live.update({f"method/q/{m}": q[i] for i, m in enumerate(mods)})
        live.update({f"method/dropped/{m}": dropped[i] for i, m in enumerate(mods)})
        live["method/executed"] = executed.to(torch.float32)
        if heads is not None:
            live["method/head_ce"] = heads.detach()
        return StepResult(loss.detach(), out, live)

    def _draw(self, q: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's keep mask (rows, M), whether the drop runs (0-d bool) and the dropped fraction per
        modality (M,). One draw covers the global batch (every rank's rows, in rank order), so every rank
        and a single process of the same global batch agree."""
        world, m = world_size(), q.shape[0]
        u = torch.rand(1 + world * rows * m, generator=self.generator, device=q.device)
        executed = u[0] < self.cfg.p_exe
        keep = draw_keep(u[1:].view(world * rows, m), q, executed)
        dropped = 1.0 - keep.to(torch.float32).mean(0)
        mine = keep.narrow(0, rank() * rows, rows)
        return mine, executed, dropped

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        state = super().state_dict()
        state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.generator.set_state(state["generator"].cpu())
