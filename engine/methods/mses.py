"""``mses``: Modality-Specific Early Stopping (Fujimori et al., "Modality-Specific Learning Rate Control for
Multimodal Classification", ACPR 2019; re-implemented as the "MSES" baseline of the AGM release, Li et al.,
"Boosting Multi-modal Model Performance with Adaptive Gradient Modulation", ICCV 2023, repository
AGM_ICCV2023, ``run/CREMAD_main.py`` and its siblings, called "the release" below).

The paper trains a multimodal classifier together with modality-specific classifiers (multitask
learning), watches each modality's own classifier on the validation split to detect when *that*
modality starts to overfit, and stops the modality there while the others go on. At the end of every
epoch (:meth:`MSES.on_epoch_end`, from the trainer's validation metrics ``val/<metric>/<m>``):

1. **Smoothing** (release): s_t = w v_{t-1} + (1 - w) v_t with w = ``smoothing`` = 0.6, where v is the
   *raw* per-modality validation value (the release smooths with the previous raw value, not with the
   previous smoothed one: a two-epoch weighted mean, not an exponential average); s_0 = v_0.
2. **Best**: s_t improves on the modality's best so far (strictly lower for ``metric = "loss"``, the
   release's and the default; strictly higher for ``"acc"`` / ``"f1"``); the first epoch is the first best.
3. **Stop** when t - (best epoch) > ``patience`` (the release's ``epoch - argmin_epoch > 80``): the modality
   is frozen for the rest of the run and, with ``restore_best`` (default), its encoder is rolled back to
   its weights at its best epoch (the release's "roll back to the best checkpoint").
4. **End**: when every modality has stopped, :meth:`~engine.methods.base.Method.end_run` ends the run
   after this epoch (the release calls ``exit()``).

**Loss** (paper: multitask): L = CE(fused, y) + ``unimodal_weight`` * sum_m CE(logits_m, y), where logits_m
is modality m's own output (its slice of the ``concat`` head, its ``sum`` head, its own head under
``film`` / ``gated``). The paper's loss weights were not available to us; equal weights (1) are the
default. ``unimodal_weight = 0`` is the release's loss (the fused cross-entropy only; the base class then
trains the film/gated side heads on detached features, see ``Method.modality_head_loss``).

**Frozen means no update at all.** A stopped modality's encoder parameters get their gradient *removed*
(``p.grad = None``) right before ``step.step_optimizer()``, which by its contract applies the optimiser
only to parameters that have gradients: SGD's momentum and weight decay, Adam's moments and AdamW's
decoupled decay then never touch them, and they are bitwise unchanged. Two tempting alternatives do not
freeze: a zero gradient (the release multiplies the gradients by 0) still lets SGD's momentum buffer and
weight decay move the weights; a learning rate of 0 for the step (``step.scale_lr(group, 0)``) leaves the
values equal but not the bits (p - 0 * buf turns -0.0 into +0.0; measured with the fused SGD, Adam and
AdamW kernels), still feeds the frozen gradients into ``train.grad_clip``'s global norm, and would turn a
non-finite momentum buffer into NaN weights. The frozen encoder also runs in eval mode during training
(its BatchNorm running statistics stop moving, its dropout is off), so it computes exactly the function
it was frozen with. The fusion head keeps learning: under ``concat`` it is one linear layer shared by all
modalities, so a per-modality freeze cannot take its slice out, and a head that keeps adapting to the
frozen features can only help the fused prediction.

Deviations from the release, on purpose:

* Only the stopped modality is rolled back, to its own best-epoch encoder weights (and BatchNorm
  statistics), kept in memory and in the method's checkpoint state. The release reloads a checkpoint of
  the *whole* model and optimiser, which also rewinds the modalities still training (and the fusion head).
  The release also saves no checkpoint for the first epoch although that epoch can be the best, and then
  reloads a file that may not exist; here the first epoch is kept like any best epoch.
* A stopped modality stays frozen to the end of the run. The release applies its zero multiplier only
  inside its modulation window (``modulation_starts <= epoch <= modulation_ends``, default 0-20 of 10
  epochs) and trains a "stopped" modality normally outside it.
* Frozen means no update (see above), not a zero gradient under SGD with momentum and weight decay.
* The release freezes the modality's own classifier (``audio_cls``) of its sum-fusion model with its
  encoder; here the fusion head keeps training for every fusion (see above).
* Any number of modalities (the release hard-codes audio and visual, or three for URFunny): each has its
  own stopper, and nothing in the rule compares modalities with each other.

Defaults: ``patience`` 80 (the release's only value; for runs of tens of epochs set it in the preset, as
``presets/avdigits_hard_mses.toml`` does), ``smoothing`` 0.6 (release), ``metric`` "loss" (release: the
validation cross-entropy of each modality's own logits), ``restore_best`` true. Optimiser: the release's
SGD (momentum 0.9, weight decay 1e-4).

Live values per step: ``coef/<m>`` (1 while m trains, 0 once frozen), with ``unimodal_weight > 0``
``method/ce_fused`` and ``method/ce_<m>``. Per epoch (logged with validation): ``score/<m>`` (the smoothed
validation metric s_t), ``method/best_<m>``, ``method/wait_<m>`` (epochs since m's best) and
``method/frozen_<m>`` (1 once stopped). A ``modality_stopped`` event names the modality, its best epoch
and value, and whether its encoder was rolled back.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``patience`` 10 and 20 (ours: the
release's only value, 80, is for runs of 100 epochs and more and never acts in runs of tens of epochs) and
``unimodal_weight`` 0 (the release's fused-only loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import PresetError
from ..schema import opt
from . import METHODS
from .base import Method


@dataclass(frozen=True)
class MSESConfig:
    metric: Literal["loss", "acc", "f1"] = opt("loss", help="each modality's own validation metric the rule watches: "
                                                            "'loss' (release; lower is better), 'acc' or 'f1'")
    patience: int = opt(80, ge=0, help="a modality stops once its best epoch lies more than this many epochs back "
                                       "(release: 80)")
    smoothing: float = opt(0.6, ge=0.0, lt=1.0, help="w in s_t = w v_(t-1) + (1 - w) v_t, the smoothed metric from the "
                                                     "last two raw values (release 0.6; 0: no smoothing)")
    restore_best: bool = opt(True, help="roll a stopped modality's encoder back to its weights at its best epoch "
                                        "(release: the whole model is reloaded)")
    unimodal_weight: float = opt(1.0, ge=0.0, help="w in CE(fused) + w sum_m CE(logits_m): the paper's multitask "
                                                   "modality classifiers; 0: the fused loss only (release)")


# -- the rule (host values, once per epoch) -------------------------------------------------------------
@dataclass
class ModalityStopper:
    """One modality's early stopping on its smoothed validation metric (see the module docstring)."""

    lower_is_better: bool
    patience: int
    smoothing: float
    previous: float | None = None     # last epoch's raw value
    score: float | None = None        # this epoch's smoothed value
    best: float | None = None
    best_epoch: int = -1
    stopped_at: int | None = None     # the epoch at whose end it stopped

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def smooth(self, value: float) -> float:
        """s_t from the raw value v_t and the previous raw value (s_0 = v_0)."""
        self.score = value if self.previous is None else self.smoothing * self.previous + (1 - self.smoothing) * value
        self.previous = value
        return self.score

    def observe(self, epoch: int, value: float) -> str:
        """The epoch's decision: "improved", "waiting" or "stopped" (a stopped stopper only smooths)."""
        score = self.smooth(value)
        if self.stopped:
            return "stopped"
        if self.best is None or (score < self.best if self.lower_is_better else score > self.best):
            self.best, self.best_epoch = score, epoch
            return "improved"
        if epoch - self.best_epoch > self.patience:
            self.stopped_at = epoch
            return "stopped"
        return "waiting"

    def waited(self, epoch: int) -> int:
        """Epochs since the best one (at the end of ``epoch``)."""
        return epoch - self.best_epoch

    def state(self) -> dict:
        return {"previous": self.previous, "score": self.score, "best": self.best, "best_epoch": self.best_epoch,
                "stopped_at": self.stopped_at}

    def load(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def drop_gradients(params) -> None:
    """Freeze ``params`` for the coming ``step.step_optimizer()``: without a gradient a parameter is left
    out of the optimiser's step entirely (no momentum, no weight decay, no Adam moments), so it is
    bitwise unchanged; a zero gradient or a zero learning rate are not enough (module docstring)."""
    for p in params:
        p.grad = None


# -- the method -----------------------------------------------------------------------------------------
@METHODS.register("mses", config=MSESConfig,
                  help="modality-specific early stopping: each modality stops (frozen, rolled back to its best "
                       "epoch) when its own smoothed validation loss stops improving; the run ends when all have",
                  paper="Fujimori et al.: Modality-Specific Learning Rate Control for Multimodal Classification, "
                        "ACPR 2019 (MSES, as re-implemented in the AGM release, Li et al., ICCV 2023)",
                  optimizer="sgd", cost="1F + 1B; per epoch: one encoder copy per improving modality",
                  live={"coef/<m>": "update multiplier of modality m's encoder: 1 while it trains, 0 once it has "
                                    "stopped (frozen: no optimiser update at all)",
                        "score/<m>": "smoothed validation metric of m's own logits, 0.6 x last epoch's + 0.4 x this "
                                     "epoch's (the value its early stopping watches)",
                        "method/best_<m>": "best smoothed validation metric of modality m so far",
                        "method/wait_<m>": "epochs since modality m's best epoch (it stops beyond the patience)",
                        "method/frozen_<m>": "1 once modality m has stopped early, else 0",
                        "method/ce_fused": "cross-entropy of the fused logits",
                        "method/ce_<m>": "cross-entropy of modality m's own logits (the multitask term)",
                        "method/head_ce": "cross-entropy training the per-modality heads on detached features "
                                          "(film/gated fusion with unimodal_weight = 0)"},
                  tune={"patience": (10, 20), "unimodal_weight": (0.0,)})
class MSES(Method):
    """See the module docstring."""

    def __init__(self, cfg: MSESConfig, ctx):
        super().__init__(cfg, ctx)
        mods = ctx.modalities
        self.require_modalities("stops modalities separately inside a multimodal model")
        if ctx.data is not None and ctx.data.split_size("val") == 0:
            raise PresetError("method", ["method.name: mses stops each modality on its validation metric, and this "
                                         "dataset has no validation rows; give it a validation split"])
        self.trains_modality_heads = cfg.unimodal_weight > 0
        self.stoppers = {m: ModalityStopper(cfg.metric == "loss", cfg.patience, cfg.smoothing) for m in mods}
        self.best_encoders: dict[str, dict[str, torch.Tensor]] = {}   # m -> its encoder's state at its best epoch
        self._coef = {m: torch.ones((), device=ctx.device) for m in mods}
        self._epoch_values: dict[str, float] = {}

    @property
    def frozen(self) -> list[str]:
        """The modalities that have stopped, in preset order."""
        return [m for m in self.ctx.modalities if self.stoppers[m].stopped]

    # -- one step -------------------------------------------------------------------------------
    def forward(self, model, x):
        for m in self.frozen:  # the function it was frozen with: BatchNorm statistics fixed, no dropout
            model.encoders[m].eval()
        return model(x)

    def loss(self, out, y, step):
        mods = self.ctx.modalities
        ce_fused = F.cross_entropy(out.fused.float(), y)
        live = {f"coef/{m}": self._coef[m] for m in mods}
        if not self.cfg.unimodal_weight:
            return ce_fused, live
        ce = torch.stack([F.cross_entropy(out.logits[m].float(), y) for m in mods])
        live["method/ce_fused"] = ce_fused.detach()
        live.update({f"method/ce_{m}": ce[i].detach() for i, m in enumerate(mods)})
        return ce_fused + self.cfg.unimodal_weight * ce.sum(), live

    def optimizer_step(self, step):
        for m in self.frozen:
            drop_gradients(step.model.encoder_parameters(m))
        step.step_optimizer()

    # -- per epoch ------------------------------------------------------------------------------
    def on_epoch_end(self, epoch, model, val):
        events = []
        for m in self.ctx.modalities:
            stopper = self.stoppers[m]
            if stopper.stopped:
                stopper.smooth(val[f"val/{self.cfg.metric}/{m}"])
                continue
            decision = stopper.observe(epoch, val[f"val/{self.cfg.metric}/{m}"])
            if decision == "improved" and self.cfg.restore_best:
                self.best_encoders[m] = {k: v.detach().clone() for k, v in model.encoders[m].state_dict().items()}
            elif decision == "stopped":
                events.append(self.stop(m, model))
        if all(s.stopped for s in self.stoppers.values()) and self.end_reason is None:
            self.end_run("every modality stopped early: " + ", ".join(
                f"{m} at epoch {s.stopped_at} (best {s.best_epoch})" for m, s in self.stoppers.items()))
        self._epoch_values = self.values(epoch)
        return events

    def stop(self, m: str, model) -> dict:
        """Freeze modality m from now on (its stopper has stopped) and roll its encoder back to its best epoch."""
        stopper = self.stoppers[m]
        restored = self.cfg.restore_best and m in self.best_encoders
        if restored:
            model.encoders[m].load_state_dict(self.best_encoders.pop(m))
        self._coef[m] = torch.zeros((), device=self.ctx.device)
        return {"name": "modality_stopped", "modality": m, "best_epoch": stopper.best_epoch,
                "best": stopper.best, "restored": restored}

    def values(self, epoch: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for m, s in self.stoppers.items():
            out[f"score/{m}"] = s.score
            out[f"method/best_{m}"] = s.best
            out[f"method/wait_{m}"] = float(s.waited(s.stopped_at if s.stopped else epoch))
            out[f"method/frozen_{m}"] = float(s.stopped)
        return out

    def epoch_values(self):
        return dict(self._epoch_values)

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        return {"modules": self.modules.state_dict(),
                "stoppers": {m: s.state() for m, s in self.stoppers.items()},
                "best_encoders": {m: dict(enc) for m, enc in self.best_encoders.items()}}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        for m, saved in state["stoppers"].items():
            self.stoppers[m].load(saved)
        self.best_encoders = {m: {k: v.to(self.ctx.device) for k, v in enc.items()}
                              for m, enc in state["best_encoders"].items()}
        self._coef = {m: torch.full((), 0.0 if s.stopped else 1.0, device=self.ctx.device)
                      for m, s in self.stoppers.items()}
