"""``lfm``: dynamically learning the modality gap (Yang, Wan, Jiang, Xu, "Facilitating Multimodal
Classification via Dynamically Learning Modality Gap", NeurIPS 2024; release njustkmg/NeurIPS24-LFM:
``Crema_epoch.py`` (heuristic) and ``Crema_epoch_learnable.py`` (learned); BalanceMM ``LFM_trainer.py``).

The paper traces modality imbalance to how fast each modality fits the category labels and lets an
unsupervised alignment between the modalities intervene in that fitting, with a trade-off that moves
during training. Per step (one forward, one backward, the trainer's optimiser step)::

    L = 2 * (alpha1 * CE(fused logits, y) + alpha2 * JS(p_1, ..., p_M)),     alpha1 = 1 - alpha2

with p_m = softmax(logits_m) the prediction of modality m's own logits, JS averaged over the batch.

* **Classification term.** The release classifies with the mean of the unimodal logits,
  CE(1/2 l_a + 1/2 l_v, y) (late fusion by averaging). Here it is the cross-entropy of the model's own
  fused logits, which is what mmbal evaluates: for the ``sum`` and ``concat`` fusions these are
  sum_m logits_m, the release's average up to the factor M (a temperature, same argmax); for ``film``
  and ``gated`` the per-modality heads take no part in the fused logits, so a CE on their average would
  not train the predicting head. No per-modality cross-entropy is added (the paper has none); for
  ``film``/``gated`` the base class trains the modality heads on detached features, as for any method.
* **Alignment term, any M >= 2** (``js``): ``"generalised"`` (default) is the Jensen-Shannon divergence
  of the M predictions around their mean, JS = (1/M) sum_m KL(p_m || p_bar), p_bar = (1/M) sum_m p_m
  (= H(p_bar) - mean_m H(p_m)): for M = 2 exactly the paper's JS(p_a || p_v), bounded by log M, one
  batched call whatever M, and zero exactly when every modality predicts the same distribution.
  ``"pairwise"`` is the mean of the M(M-1)/2 pairwise JS (BalanceMM's generalisation; also the paper's
  JS for M = 2; bounded by log 2). Computed in float32 from log-softmax (no log of a rounded zero).
* **Trade-off** (``tradeoff``):

  - ``"learned"`` (default; the paper's main variant, "Ours-LB"): alpha2 is a learnable scalar, updated
    once per epoch before the epoch's steps (the release: at the start of every epoch, epoch 0
    included) by one hypergradient step, clipped to [0.05, 0.95], alpha1 = 1 - alpha2. The outer
    objective is the validation cross-entropy after one step of the inner (training) loss; unrolling
    theta' = theta - eta * grad_theta L_train(theta, alpha2) gives, per unit of the model's learning
    rate eta::

        dL_val(theta') / d alpha2  =  - grad_theta L_val(theta) . d/d alpha2 grad_theta L_train(theta, alpha2)
                                   =  - h,    h = 2 * grad L_val . (grad JS_train - grad CE_train)

    computed with one double backward: grad_theta L_train is taken with ``create_graph=True`` and
    alpha2 as a tensor requiring grad, then the gradient of its dot product with the (constant)
    validation gradient with respect to alpha2 (the mixed second derivative times a vector). The
    update is alpha2 <- clip(alpha2 + lr_e * h, 0.05, 0.95): alpha2 grows when the alignment gradient
    serves the validation loss better than the classification gradient does. lr_e = ``lr_alpha`` *
    0.5 ** (epoch // ``lr_alpha_halve_every``) (the release halves it every 20 epochs); ``lr_alpha``
    absorbs eta.
  - ``"heuristic"`` ("Ours-H"): alpha1 follows the release's 5th-order polynomial of the epoch
    (``getAlpha_Learnable_Fitted``, fitted to a learned trajectory of a 200-epoch CREMA-D run: alpha1
    0.205 at epoch 0, 0.54 at 100, 0.90 at 200), alpha2 = 1 - alpha1. The polynomial is evaluated at
    t = epoch * 200 / ``heuristic_span``, held at t = 200 after that, and clipped to [0.05, 0.95] like
    the learned weights (the raw polynomial peaks at 1.008 near t = 180: the release then gives the
    alignment a negative weight). ``heuristic_span = 200`` is the release (absolute epochs); a preset
    with another number of epochs stretches the fitted curve over them (the paper plots alpha against
    #epoch / #total epochs). The span is an option, never
    ``train.epochs``, so a finished run resumed with more epochs is the run planned for them.

* **Hypergradient batches.** The validation gradient is taken on ``hyper_rows`` rows of the validation
  split spread evenly over it (datasets are often stored sorted by class; the release uses a fixed
  batch of 8 held-out rows, BalanceMM a quarter of the first validation batch), the same rows every
  epoch; the training term on the first ``hyper_rows`` rows of the epoch's own shuffled training order
  (seeded by (seed, epoch): no draw from the run's RNG). Without a validation split both terms use the
  training rows. The model is in eval mode (no dropout, BatchNorm running statistics untouched) and
  float32 (no autocast); attention runs its math kernel there (the fused kernels have no double
  backward). In a multi-process run every rank computes h on the same rows and h is averaged over
  the ranks, so alpha stays identical everywhere.

Deviations from the published code, on purpose (the paper's algorithm is followed):

* **JS.** Both releases compute ``F.kl_div(p.log(), m)``, which is KL(m || p), not KL(p || m): their
  "JS" is 1/2 (KL(m || p_a) + KL(m || p_v)), unbounded when a prediction is confident. Here it is the
  Jensen-Shannon divergence the paper names (log 2 for two disjoint predictions).
* **Hypergradient.** The release computes the Hessian-vector product H_total . grad L_cls on one batch
  and steps alpha2 by the mean of its *first parameter tensor's* entries (``hessian_vector_prod[0].mean()``,
  a host read), a number that is not a derivative with respect to alpha. Here it is the derivative of
  the one-step-unrolled validation loss (above), on the device, over every model parameter.
* **Initial value.** The authors' release starts the classification weight at 0.05 (``cls_k = [0.05,
  0.95]``: alpha1 = 0.05, alpha2 = 0.95), as the fitted heuristic does (alpha1 0.20 -> 0.90): alignment
  first, label fitting later. BalanceMM swaps them (alpha2 = 0.05; the methods catalog repeats that);
  ``alpha2_init`` defaults to the authors' 0.95.
* **Loss scale.** The factor 2 of the release is kept (L = CE + JS at alpha = 1/2).

Live values (0-d device tensors): ``method/alpha1`` and ``method/alpha2`` (the weights of the step;
``coef/<m>`` is alpha2 too, the weight of the alignment term on modality m's own prediction),
``method/js`` (the alignment term, unweighted), ``method/ce`` (the fused cross-entropy, unweighted); per
epoch ``method/hypergrad`` (h of the epoch's update; 0 under the heuristic). Optimiser: SGD (the
release: momentum 0.9, lr 1e-2, weight decay 1e-4). Cost: 1F + 1B per step; per epoch, with
``tradeoff = "learned"``, two forwards and one double backward on 2 x ``hyper_rows`` rows.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``tradeoff`` "heuristic" (the paper's
Ours-H variant, beside Ours-LB) and ``alpha2_init`` 0.05 (BalanceMM's starting alignment weight, which swaps
the authors' 0.95 and 0.05).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .. import collectives
from ..schema import opt
from . import METHODS
from .base import Method

# The release's getAlpha_Learnable_Fitted: alpha1(t) = sum_i c_i t^i, t in epochs of a 200-epoch run.
HEURISTIC_COEFFS = (2.04623704e-01, 3.35472727e-03, 1.22989557e-04, -2.92947416e-06, 2.23835486e-08,
                    -5.39717505e-11)
HEURISTIC_EPOCHS = 200
ALPHA2_MIN, ALPHA2_MAX = 0.05, 0.95   # the release's clip of the learned alpha2


@dataclass(frozen=True)
class LFMConfig:
    tradeoff: Literal["learned", "heuristic"] = opt(
        "learned", help="'learned': alpha2 by a hypergradient step each epoch (the paper's main variant, Ours-LB); "
                        "'heuristic': the release's fitted polynomial of the epoch (Ours-H)")
    js: Literal["generalised", "pairwise"] = opt(
        "generalised", help="alignment over M modalities: 'generalised' JS of the M predictions around their mean, "
                            "or 'pairwise', the mean JS over pairs (both the paper's JS for M = 2)")
    alpha2_init: float = opt(0.95, ge=ALPHA2_MIN, le=ALPHA2_MAX,
                             help="learned: the alignment weight alpha2 before the first update (the authors' "
                                  "release: classification weight 0.05, alignment 0.95)")
    lr_alpha: float = opt(1e-4, ge=0.0, help="learned: step size of the hypergradient update of alpha2 (release 1e-4)")
    lr_alpha_halve_every: int = opt(20, ge=0, help="learned: lr_alpha halves every this many epochs (release 20; "
                                                   "0: never)")
    hyper_rows: int = opt(64, ge=1, help="learned: validation rows (spread over the split) and training rows of the "
                                         "epoch's hypergradient (the paper: a validation batch)")
    heuristic_span: int = opt(HEURISTIC_EPOCHS, ge=1,
                              help="heuristic: the epochs over which the fitted 200-epoch curve runs (200: the "
                                   "release's absolute epochs), held at its end after them")


def js_divergence(logp: torch.Tensor, mode: str = "generalised") -> torch.Tensor:
    """Jensen-Shannon divergence of M predictive distributions, averaged over the rows.

    ``logp``: (M, B, C) log-probabilities (log-softmax of each modality's logits; -inf for an exact 0).
    ``"generalised"``: (1/M) sum_m KL(p_m || p_bar) with p_bar the mean of the p_m (in [0, log M]);
    ``"pairwise"``: the mean over pairs i < j of JS(p_i, p_j) (in [0, log 2]). Both are the usual
    JS(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2, for M = 2. Returns a 0-d tensor.
    """
    n = logp.shape[0]
    if mode == "pairwise":
        i, j = torch.triu_indices(n, n, offset=1, device=logp.device)
        pairs = torch.stack([logp[i], logp[j]])                # (2, P, B, C)
        return _generalised_js(pairs).mean()
    if mode != "generalised":
        raise ValueError(f"unknown JS mode {mode!r} (generalised or pairwise)")
    return _generalised_js(logp).mean()


def _generalised_js(logp: torch.Tensor) -> torch.Tensor:
    """(1/M) sum_m KL(p_m || p_bar) along dimension 0, summed over classes: shape ``logp.shape[1:-1]``."""
    n = logp.shape[0]
    log_mean = torch.logsumexp(logp, dim=0) - math.log(n)     # log p_bar, stable
    p = logp.exp()
    term = p * (logp - log_mean)
    term = torch.where(p > 0, term, torch.zeros_like(term))   # 0 log 0 = 0 (exact zeros of hand-made inputs)
    return term.sum(-1).mean(0)


def heuristic_alpha1(epoch: int, span: int = HEURISTIC_EPOCHS) -> float:
    """The release's fitted alpha1 at ``epoch`` with the curve's 200 epochs stretched over ``span``, clipped
    to [0.05, 0.95]."""
    t = min(epoch * HEURISTIC_EPOCHS / span, float(HEURISTIC_EPOCHS))
    value = sum(c * t ** i for i, c in enumerate(HEURISTIC_COEFFS))
    return min(max(value, 1.0 - ALPHA2_MAX), 1.0 - ALPHA2_MIN)


@METHODS.register("lfm", config=LFMConfig,
                  help="CE plus Jensen-Shannon alignment of the modalities' predictions, with a heuristic or "
                       "hypergradient-learned trade-off",
                  paper="Yang, Wan, Jiang, Xu: Facilitating Multimodal Classification via Dynamically Learning "
                        "Modality Gap, NeurIPS 2024",
                  optimizer="sgd",
                  cost="1F + 1B; learned: per epoch 2F + 1 double backward on 2 x hyper_rows rows",
                  live={"coef/<m>": "alpha2, the weight of the alignment term that pulls modality m's prediction "
                                    "towards the others' (the same for every modality)",
                        "method/alpha1": "weight alpha1 of the fused cross-entropy (1 - alpha2)",
                        "method/alpha2": "weight alpha2 of the Jensen-Shannon alignment term",
                        "method/js": "Jensen-Shannon divergence between the modalities' predictions (unweighted)",
                        "method/ce": "cross-entropy of the fused logits (unweighted)",
                        "method/hypergrad": "per epoch: h, minus the derivative of the one-step-unrolled "
                                            "validation loss in alpha2 (alpha2 moves by lr_alpha * h; 0 under "
                                            "the heuristic)"},
                  tune={"tradeoff": ("heuristic",), "alpha2_init": (0.05,)})
class LFM(Method):
    """See the module docstring."""

    def __init__(self, cfg: LFMConfig, ctx):
        super().__init__(cfg, ctx)
        dev = ctx.device
        first = (1.0 - heuristic_alpha1(0, cfg.heuristic_span)) if cfg.tradeoff == "heuristic" else cfg.alpha2_init
        self.alpha2 = torch.tensor(first, dtype=torch.float32, device=dev)
        self.hypergrad = torch.zeros((), dtype=torch.float32, device=dev)
        self._val_positions: list[int] | None = None

    @classmethod
    def check_preset(cls, cfg, train):
        if cfg.tradeoff == "learned" and getattr(train, "compile", False) is True:   # "step": eager, with a warning
            return ["method.tradeoff: \"learned\" takes a double backward through the model once per epoch, which "
                    "compiled modules do not support; set train.compile = false or tradeoff = \"heuristic\""]
        return []

    # -- the loss ---------------------------------------------------------------------------------
    def terms(self, out, y) -> tuple[torch.Tensor, torch.Tensor]:
        """(fused cross-entropy, JS alignment of the modalities' predictions), both float32 0-d."""
        ce = F.cross_entropy(out.fused.float(), y)
        logp = torch.stack([F.log_softmax(out.logits[m].float(), dim=-1) for m in self.ctx.modalities])
        return ce, js_divergence(logp, self.cfg.js)

    def loss(self, out, y, step):
        ce, js = self.terms(out, y)
        alpha2 = self.alpha2
        alpha1 = 1.0 - alpha2
        loss = 2.0 * (alpha1 * ce + alpha2 * js)
        live = {"method/alpha1": alpha1.detach(), "method/alpha2": alpha2.detach(),
                "method/js": js.detach(), "method/ce": ce.detach()}
        live.update({f"coef/{m}": alpha2.detach() for m in self.ctx.modalities})
        return loss, live

    # -- the trade-off ----------------------------------------------------------------------------
    def epoch_lr_alpha(self, epoch: int) -> float:
        every = self.cfg.lr_alpha_halve_every
        return self.cfg.lr_alpha * (0.5 ** (epoch // every) if every > 0 else 1.0)

    def hypergradient(self, model, train_batch, val_batch) -> torch.Tensor:
        """h = -d L_val(theta') / d alpha2 per unit learning rate (module docstring), a 0-d float32 tensor:
        one double backward. ``*_batch``: ``(x, y)``. The model's mode is left as it was."""
        params = [p for p in model.parameters() if p.requires_grad]
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad(), _double_backward_kernels():
                (xv, yv), (xt, yt) = val_batch, train_batch
                val_loss = F.cross_entropy(model(xv).fused.float(), yv)
                v = _grads(val_loss, params)
                alpha2 = self.alpha2.detach().clone().requires_grad_(True)
                ce, js = self.terms(model(xt), yt)
                train_loss = 2.0 * ((1.0 - alpha2) * ce + alpha2 * js)
                g = torch.autograd.grad(train_loss, params, create_graph=True, allow_unused=True)
                dot = sum((gi * vi).sum() for gi, vi in zip(g, v) if gi is not None)
                if not isinstance(dot, torch.Tensor) or not dot.requires_grad:
                    return torch.zeros_like(self.hypergrad)
                (h,) = torch.autograd.grad(dot, alpha2)
        finally:
            model.train(was_training)
        return collectives.all_reduce_mean(h.detach().float())

    def on_epoch_start(self, epoch, model):
        if self.cfg.tradeoff == "heuristic":
            self.alpha2 = torch.full_like(self.alpha2, 1.0 - heuristic_alpha1(epoch, self.cfg.heuristic_span))
            return []
        if self.ctx.data is None:
            return []
        train_batch = self._train_rows(epoch)
        val_batch = self._val_rows() or train_batch
        h = self.hypergradient(model, train_batch, val_batch)
        self.hypergrad = h
        self.alpha2 = (self.alpha2 + self.epoch_lr_alpha(epoch) * h).clamp(ALPHA2_MIN, ALPHA2_MAX)
        return []

    def _train_rows(self, epoch: int):
        """The first ``hyper_rows`` rows of the epoch's shuffled training order, as ``(x, y)``."""
        data = self.ctx.data
        batches = data.train_epoch(self.ctx.seed, epoch, min(self.cfg.hyper_rows, data.split_size("train")), False)
        it = batches.iterate(0)
        try:
            batch = next(it)
        finally:
            it.close()
        return batch.x, batch.y

    def _val_rows(self):
        """``hyper_rows`` validation rows spread evenly over the split (the same every epoch), or None."""
        data = self.ctx.data
        total = data.split_size("val")
        if total == 0:
            return None
        k = min(self.cfg.hyper_rows, total)
        if self._val_positions is None:
            self._val_positions = [i * total // k for i in range(k)]
        wanted, xs, ys, start, j = self._val_positions, [], [], 0, 0
        for x, y in data.eval_batches("val", self.ctx.eval_batch_size):
            n = y.shape[0]
            local = []
            while j < len(wanted) and wanted[j] < start + n:
                local.append(wanted[j] - start)
                j += 1
            if local:
                idx = torch.tensor(local, dtype=torch.long, device=y.device)
                xs.append({m: t.index_select(0, idx) for m, t in x.items()})
                ys.append(y.index_select(0, idx))
            start += n
        return {m: torch.cat([x[m] for x in xs]) for m in xs[0]}, torch.cat(ys)

    def epoch_values(self):
        return {"method/alpha1": 1.0 - self.alpha2, "method/alpha2": self.alpha2, "method/hypergrad": self.hypergrad}

    # -- resume -----------------------------------------------------------------------------------
    def state_dict(self):
        return {**super().state_dict(), "alpha2": self.alpha2.clone(), "hypergrad": self.hypergrad.clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.alpha2 = state["alpha2"].to(self.ctx.device, torch.float32)
        self.hypergrad = state["hypergrad"].to(self.ctx.device, torch.float32)


def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    found = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, found)]


def _double_backward_kernels():
    """Attention on its math kernel (the fused ones have no double backward) where PyTorch offers the switch."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - older PyTorch
        return nullcontext()
    return sdpa_kernel([SDPBackend.MATH])
