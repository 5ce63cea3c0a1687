"""``mikd``: mutual-information-guided cross-modal knowledge distillation, then calibrated multitask
training (Xie & Sanguinetti, "Balanced Multimodal Learning via Mutual Information", arXiv 2511.00987).

No code or hyper-parameters of the paper are public; this follows a reconstruction from the paper's
description (MI-gated cross-modal distillation from the strongest modality, then multitask training
re-weighted by macro-F1 and inter-modal MI), called "the reconstruction" below. Every choice the
sources leave open is listed below.

Schedule (epochs of one run; announced by a ``stage`` event at the first epoch of each stage)::

    [0, stage1_epochs)                       "unimodal"   L = sum_m CE(h_m(z_m), y)
    [stage1_epochs, stage1_epochs + kd)      "kd"         L = sum_{s != t} L_s   (teacher t frozen)
    [stage1_epochs + kd, train.epochs)       "multitask"  L = CE(F(z_1..z_M), y) + sum_m w_m CE(h_m(z_m), y)

* **Encoders and data.** The paper's r-GCN over an SNF patient graph is replaced by whatever
  encoders and fusion the preset names (any registry entry, any M >= 2): our data are not graphs.
  h_m is the modality's own logits from the fusion (its slice of the concat head, or its own head).
* **Stage 1a, unimodal training.** The reconstruction trains M unimodal networks separately; here they
  train in parallel inside one model: each encoder receives only its own CE's gradient (only head
  parameters shared by construction, e.g. concat's bias, see the sum). One optimiser, its state and
  the run's lr schedule continue across stages. No per-modality early stopping: the teacher is
  chosen from the validation macro-F1 at the end of stage 1a (the weights that then act as
  teacher); the run's own best-on-validation checkpoint selection still applies to the whole run.
* **Stage lengths** are absolute numbers of epochs, never fractions of ``train.epochs``: ``stage1_epochs``
  (default 3) and ``kd_epochs`` (default 3; 0 when ``stage1_epochs = 0``). A run's epochs therefore
  belong to the same stages whatever length it was planned for, and a finished run resumed with more
  epochs (``mmbal resume RUN --set train.epochs=N``) is the run planned for N epochs, bit for bit on
  the CPU. (Lengths of 20% of ``train.epochs`` each would make a 2-epoch run multitask-only and the
  run planned for 4 epochs 1 + 1 + 2, so extending a run would change its past.) A run
  shorter than ``stage1_epochs + kd_epochs`` ends in an earlier stage; resuming it with more epochs
  continues into the next ones. The boundaries are part of the method's state, so a resume keeps
  the stages the run started with.
* **Teacher.** t = argmax_m val macro-F1 (``val/f1/<m>``; ties go to the first modality in preset
  order). It is frozen as a snapshot: a deep copy of its encoder and of the fusion head, in eval mode
  (no dropout; BatchNorm running statistics). A snapshot is needed because the live teacher's logits
  would keep moving during distillation (optimiser momentum and weight decay on a shared concat head,
  the shared bias) and because the born-again targets should be deterministic. The snapshot exists
  only during the KD stage and is saved in the checkpoint then.
* **MI gate.** For each student s != t: distil only if MI(y_hat_t, y_hat_s) >= ``kd_threshold``
  (delta, default 0.1, the reconstruction's fixed option; its alternative "median pairwise NMI" is not
  used because for M = 2 the median of the single pair is the pair itself and the gate would always
  open).
  The estimate is the *chance-adjusted* NMI (adjusted mutual information, AMI, in [0, 1]) between the
  labels predicted by the two modalities' own heads on the validation split (the training split when
  there is no validation row), computed on the device from one joint histogram per pair; see
  :mod:`engine.methods.mikd_mi` for why this estimator (and not the reconstruction's plain NMI, which
  on a 120-row, 10-class split gives about 0.15 to *independent* predictions, nor an InfoNCE bound).
  The reconstruction says "train+val nodes"; predictions on the training rows of a trained model are
  close to the labels for every modality and would push the estimate towards 1, so only held-out rows
  are used.
* **KD loss** (Hinton et al. 2015), for a gated student s::

      L_s = (1 - alpha) * CE(h_s, y) + alpha * tau^2 * KL(softmax(h_t / tau) || softmax(h_s / tau))

  with the KL averaged over the batch rows, alpha = ``kd_alpha`` = 0.5 and tau = ``temperature`` = 4
  (the reconstruction says 2-4; 4 is the usual choice in KD benchmarks). Students that the gate
  rejects keep training with CE alone; the teacher and the fused-only head parameters (film/gated
  classifiers) get no loss in this stage. The live value ``method/kd`` is the mean tau^2 * KL over gated students.
* **Stage 2 weights** (recomputed at the end of every ``reweight_every``-th epoch from that epoch's
  validation, applied from the next epoch on; the first ones come from the last epoch before stage 2,
  or are 1 when stage 2 starts at epoch 0)::

      delta_m = max_k F1_k - F1_m                       (F1 = val macro-F1 of h_m)
      r_m     = mean_{m' != m} AMI(y_hat_m, y_hat_m')
      omega_m = exp(gamma * delta_m) * (1 - eta * r_m)
      w_m     = M * omega_m / sum_k omega_k,   w_f = 1

  gamma = 5, eta = 0.5 (the reconstruction's). eta is kept below 1 so that omega_m > 0. Note that
  for M = 2 both modalities have the same r_m, so the redundancy factor cancels in the normalisation: with two
  modalities MI acts through the KD gate only, and the weights follow the F1 deficit.
* **Gradient variant** (``calibrate = "gradient"``): the loss is CE_fused + sum_m CE_m with unit
  weights and each encoder's gradient is multiplied by k_m = clip(w_m, ``grad_min``, ``grad_max``)
  (0.5, 2) after the backward pass.
* **Not implemented:** the reconstruction's optional MI-informed fusion scaling beta_m of z_m before
  concatenation (our fusion heads come from the registry and must stay interchangeable).
* **Cost over joint:** one extra evaluation pass over the validation split per epoch (the MI estimate needs
  the predicted labels; the trainer hands methods only the aggregated metrics), one teacher forward
  per step in the KD stage, M + 1 cross-entropies per step.

Logged per epoch with the validation record: ``score/<m>`` (the F1 used), ``method/ami_<a>;<b>``
(the AMI of every pair in preset order), ``method/redundancy_<m>``, ``method/stage`` (0 unimodal, 1 kd,
2 multitask, the stage of the epoch just ended), from the teacher choice on ``method/teacher``
(index of the teacher in the preset's modality order; the ``teacher`` event names it) and
``method/kd_<m>`` (1 when m is distilled, 0 otherwise and for the teacher), and from the end of the
last epoch before stage 2 on ``coef/<m>``: the stage-2 weight (or k_m) that the *next* epoch uses,
computed from the same row's scores and AMIs. Train records carry ``coef/<m>``, the coefficient
each step applied (1 in stage 1a; 1 for students and 0 for the teacher in the KD stage; w_m or k_m
in stage 2) and, in the KD stage, ``method/kd``.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``temperature`` 2 (the low end of the
reconstruction's 2-4) and ``calibrate`` "gradient" (the reconstruction's gradient-level variant). The paper
publishes no values; both come from the reconstruction this module implements.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import torch
import torch.nn.functional as F

from ..models import ModelOutput
from ..schema import opt
from ..classification import confusion, macro_f1
from . import METHODS
from .base import Method
from .mikd_mi import pairwise_ami

STAGES = ("unimodal", "kd", "multitask")
DEFAULT_STAGE_EPOCHS = 3   # stage 1a and the KD stage, when not set


@dataclass(frozen=True)
class MikdConfig:
    stage1_epochs: int = opt(DEFAULT_STAGE_EPOCHS, ge=0,
                             help="epochs of unimodal training (stage 1a), from the run's first epoch")
    kd_epochs: int | None = opt(None, ge=0, help="epochs of MI-gated distillation from the teacher (stage 1b); "
                                                 "unset: 3, or 0 when stage1_epochs = 0")
    kd_alpha: float = opt(0.5, ge=0.0, le=1.0, help="weight of the distillation term in a student's loss")
    temperature: float = opt(4.0, ge=1e-3, help="softmax temperature tau of the distillation targets (logits / tau "
                                                "overflow float32 near 0)")
    kd_threshold: float = opt(0.1, ge=0.0, le=1.0,
                              help="MI gate: distil into a student only if AMI(teacher, student) >= this")
    gamma: float = opt(5.0, ge=0.0, help="stage 2: a modality's weight grows as exp(gamma * F1 deficit)")
    eta: float = opt(0.5, ge=0.0, lt=1.0,
                     help="stage 2: a modality's weight shrinks as 1 - eta * redundancy (mean AMI)")
    reweight_every: int = opt(1, ge=1, help="stage 2: recompute the weights every this many epochs")
    calibrate: Literal["loss", "gradient"] = opt(
        "loss", help="stage 2: weight the unimodal losses, or scale each encoder's gradient by clip(w_m)")
    grad_min: float = opt(0.5, gt=0.0, help="gradient variant: lower clip of the encoder gradient multiplier")
    grad_max: float = opt(2.0, gt=0.0, help="gradient variant: upper clip of the encoder gradient multiplier")

    def __post_init__(self) -> None:
        if self.grad_min > self.grad_max:
            raise ValueError(f"grad_min ({self.grad_min}) must not exceed grad_max ({self.grad_max})")
        if self.stage1_epochs == 0 and (self.kd_epochs or 0) > 0:
            raise ValueError("kd_epochs > 0 needs stage1_epochs >= 1: the teacher is the modality with the best "
                             "validation F1 after unimodal training")


# -- the algorithm's pieces (pure functions, tested on known values) ------------------------------
def stage_bounds(cfg: MikdConfig) -> tuple[int, int]:
    """(end of stage 1a, end of the KD stage) in epochs: absolute, independent of ``train.epochs``."""
    s1 = cfg.stage1_epochs
    kd = (DEFAULT_STAGE_EPOCHS if s1 > 0 else 0) if cfg.kd_epochs is None else cfg.kd_epochs
    return s1, s1 + kd


def choose_teacher(f1: list[float]) -> int:
    """Index of the modality with the best validation macro-F1 (the first one on ties)."""
    return max(range(len(f1)), key=lambda i: (f1[i], -i))


def kd_gate(mi_row: list[float], teacher: int, threshold: float) -> list[bool]:
    """Which modalities are distilled from ``teacher``: MI(teacher, s) >= threshold (never the teacher)."""
    return [i != teacher and v >= threshold for i, v in enumerate(mi_row)]


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, alpha: float,
                      tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 - alpha) CE(student, y) + alpha tau^2 KL(softmax(teacher/tau) || softmax(student/tau)); returns
    the loss and the tau^2 KL term (KL averaged over the batch rows)."""
    student, teacher = student.float(), teacher.float()
    kl = F.kl_div(F.log_softmax(student / tau, dim=1), F.log_softmax(teacher / tau, dim=1),
                  reduction="batchmean", log_target=True) * tau ** 2
    return (1 - alpha) * F.cross_entropy(student, y) + alpha * kl, kl


def redundancy(mi: torch.Tensor) -> torch.Tensor:
    """r_m: the mean (normalised) MI of modality m with every other modality, from the (M, M) matrix."""
    m = mi.shape[0]
    return (mi.sum(1) - mi.diagonal()) / max(m - 1, 1)


def calibration_weights(f1: torch.Tensor, mi: torch.Tensor, gamma: float, eta: float) -> torch.Tensor:
    """w_m = M omega_m / sum omega, omega_m = exp(gamma (max F1 - F1_m)) (1 - eta r_m),
    r_m = :func:`redundancy` of ``mi`` (M, M)."""
    omega = torch.exp(gamma * (f1.max() - f1)) * (1 - eta * redundancy(mi))
    return f1.numel() * omega / omega.sum()


@METHODS.register("mikd", config=MikdConfig,
                  help="MI-gated cross-modal distillation from the best modality, then multitask training with "
                       "losses re-weighted by F1 deficit and inter-modal MI (Xie & Sanguinetti)",
                  paper="Xie, Sanguinetti: Balanced Multimodal Learning via Mutual Information, arXiv 2511.00987",
                  optimizer="adam", cost="stage 1: M unimodal F/B; stage 2: 1F + 1B",
                  live={"coef/<m>": "stage-2 loss weight w_m of modality m's cross-entropy",
                        "score/<m>": "validation macro-F1 of modality m's own head (the calibration input)",
                        "method/kd": "mean distillation KL from the teacher to the gated students",
                        "method/ami_<pair>": "chance-adjusted MI between two modalities' predicted labels",
                        "method/redundancy_<m>": "redundancy r_m of modality m from the pairwise MI",
                        "method/stage": "stage index: 0 unimodal, 1 distillation, 2 multitask",
                        "method/teacher": "index of the teacher modality (distillation stage)",
                        "method/kd_<m>": "1 when modality m is distilled from the teacher"},
                  tune={"temperature": (2.0,), "calibrate": ("gradient",)})
class Mikd(Method):
    """See the module docstring: stages, formulas, design choices and logged values."""

    trains_modality_heads = True   # every stage's loss has each modality's own cross-entropy

    def __init__(self, cfg: MikdConfig, ctx):
        super().__init__(cfg, ctx)
        self.mods = list(ctx.modalities)
        self.stage1_end, self.kd_end = stage_bounds(cfg)
        n, dev = len(self.mods), ctx.device
        self.weights = torch.ones(n, device=dev)                              # stage-2 w_m in force
        self.f1 = torch.full((n,), float("nan"), dtype=torch.float64, device=dev)
        self.ami = torch.eye(n, dtype=torch.float64, device=dev)
        self.teacher = -1
        self.distil = [False] * n
        self.epoch_done = -1
        self.teacher_encoder: torch.nn.Module | None = None
        self.teacher_fusion: torch.nn.Module | None = None
        self.model = None
        self._teacher_batch: torch.Tensor | None = None

    def setup(self, model):
        self.model = model

    # -- schedule -------------------------------------------------------------------------------
    def stage_of(self, epoch: int) -> str:
        if epoch < self.stage1_end:
            return "unimodal"
        return "kd" if epoch < self.kd_end else "multitask"

    def stage_start(self, stage: str) -> int:
        return {"unimodal": 0, "kd": self.stage1_end, "multitask": self.kd_end}[stage]

    def on_epoch_start(self, epoch, model):
        stage = self.stage_of(epoch)
        if epoch != self.stage_start(stage):
            return []
        event = {"name": "stage", "stage": stage, "index": STAGES.index(stage)}
        if stage == "unimodal":
            event["epochs"] = self.stage1_end
        elif stage == "kd":
            event.update(epochs=self.kd_end - self.stage1_end, teacher=self.mods[self.teacher],
                         students=[m for m, d in zip(self.mods, self.distil) if d],
                         not_distilled=[m for i, m in enumerate(self.mods) if i != self.teacher and not self.distil[i]])
        else:
            event["calibrate"] = self.cfg.calibrate
        return [event]

    # -- one step (the base train_step: forward, loss, backward, after_backward, optimiser step) ---
    def forward(self, model, x):
        """The model's output; while a teacher snapshot exists (the KD stage with at least one gated
        student) also the teacher's logits for this batch, kept for :meth:`loss`."""
        out = model(x)
        self._teacher_batch = self.teacher_logits(x, out) if self.teacher_encoder is not None else None
        return out

    def loss(self, out, y, step):
        stage = self.stage_of(step.epoch)
        return self.stage_loss(stage, out, y, self._teacher_batch if stage == "kd" else None)

    @torch.no_grad()
    def teacher_logits(self, x: dict[str, torch.Tensor], out: ModelOutput) -> torch.Tensor:
        """The frozen teacher's logits; the snapshot fusion sees the live (detached) features of the other
        modalities, which per-modality logits do not depend on."""
        t = self.mods[self.teacher]
        features = {m: out.features[m].detach() for m in self.mods}
        features[t] = self.teacher_encoder(x[t])
        return self.teacher_fusion(features)[1][t]

    def stage_loss(self, stage: str, out: ModelOutput, y: torch.Tensor,
                   teacher: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ces = torch.stack([F.cross_entropy(out.logits[m].float(), y) for m in self.mods])
        if stage == "unimodal":
            return ces.sum(), self._coefs(torch.ones_like(ces))
        if stage == "kd":
            return self.kd_loss(out, y, ces, teacher)
        fused = F.cross_entropy(out.fused.float(), y)
        if self.cfg.calibrate == "gradient":
            return fused + ces.sum(), self._coefs(self.gradient_multipliers())
        return fused + (self.weights * ces).sum(), self._coefs(self.weights)

    def kd_loss(self, out, y, ces, teacher):
        losses, kls = [], []
        for i, m in enumerate(self.mods):
            if self.distil[i] and teacher is not None:
                loss_m, kl = distillation_loss(out.logits[m], teacher, y, self.cfg.kd_alpha, self.cfg.temperature)
                losses.append(loss_m)
                kls.append(kl)
            elif i != self.teacher:
                losses.append(ces[i])
        coef = torch.ones_like(ces)
        coef[self.teacher] = 0.0
        live = self._coefs(coef)
        if kls:
            live["method/kd"] = torch.stack(kls).mean().detach()
        return torch.stack(losses).sum(), live

    def gradient_multipliers(self) -> torch.Tensor:
        return self.weights.clamp(self.cfg.grad_min, self.cfg.grad_max)

    def after_backward(self, model, out, y, step):
        if self.cfg.calibrate != "gradient" or self.stage_of(step.epoch) != "multitask":
            return {}
        k = self.gradient_multipliers()
        for i, m in enumerate(self.mods):
            grads = [p.grad for p in model.encoder_parameters(m) if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, k[i])
        return {}

    def _coefs(self, values: torch.Tensor) -> dict[str, torch.Tensor]:
        values = values.detach()
        return {f"coef/{m}": values[i] for i, m in enumerate(self.mods)}

    # -- end of epoch: scores, MI, teacher and gate, stage-2 weights ----------------------------
    def on_epoch_end(self, epoch, model, val):
        preds, y = self.predictions(model)
        self.f1 = self.scores(val, preds, y)
        self.ami = pairwise_ami(preds, self.ctx.n_classes)
        self.epoch_done = epoch
        events = []
        nxt = epoch + 1
        if nxt == self.stage1_end and self.kd_end > self.stage1_end:
            events = self.choose_teacher_and_gate(model)
        if nxt >= self.kd_end and (nxt - self.kd_end) % self.cfg.reweight_every == 0:
            self.weights = calibration_weights(self.f1, self.ami, self.cfg.gamma, self.cfg.eta).float()
        if nxt == self.kd_end:
            self.teacher_encoder = self.teacher_fusion = None  # distillation is over
        return events

    @torch.no_grad()
    def predictions(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted labels (M, N) of every modality's own head and the labels (N,) on the validation split
        (the training split when the data have no validation rows), in eval mode, batched."""
        data = self.ctx.data
        split = "val" if data.split_size("val") else "train"
        was_training = model.training
        model.eval()
        preds, labels = [], []
        for x, y in data.eval_batches(split, self.ctx.eval_batch_size):
            out = self.predict(model, x)
            preds.append(torch.stack([out.logits[m].argmax(1) for m in self.mods]))
            labels.append(y)
        model.train(was_training)
        return torch.cat(preds, dim=1), torch.cat(labels)

    def scores(self, val: dict[str, float], preds: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """F1_m: ``val/f1/<m>`` from the trainer's evaluation, else macro-F1 of ``preds`` (no validation split)."""
        keys = [f"val/f1/{m}" for m in self.mods]
        if all(k in val for k in keys):
            return torch.tensor([val[k] for k in keys], dtype=torch.float64, device=preds.device)
        return torch.stack([macro_f1(confusion(p, y, self.ctx.n_classes)) for p in preds])

    def choose_teacher_and_gate(self, model) -> list[dict]:
        n = len(self.mods)
        host = torch.cat([self.f1, self.ami.flatten()]).tolist()  # one transfer
        f1, mi = host[:n], [host[n + i * n: n + (i + 1) * n] for i in range(n)]
        self.teacher = choose_teacher(f1)
        self.distil = kd_gate(mi[self.teacher], self.teacher, self.cfg.kd_threshold)
        if any(self.distil):
            self.snapshot_teacher(model)
        t = self.mods[self.teacher]
        return [{"name": "teacher", "modality": t, "f1": dict(zip(self.mods, f1))},
                {"name": "kd_gate", "teacher": t, "threshold": self.cfg.kd_threshold,
                 "ami": {m: mi[self.teacher][i] for i, m in enumerate(self.mods) if i != self.teacher},
                 "distil": [m for m, d in zip(self.mods, self.distil) if d]}]

    def snapshot_teacher(self, model) -> None:
        """Frozen eval-mode copies of the teacher's encoder and of the fusion head."""
        self.teacher_encoder = copy.deepcopy(model.encoders[self.mods[self.teacher]]).eval().requires_grad_(False)
        self.teacher_fusion = copy.deepcopy(model.fusion).eval().requires_grad_(False)

    def epoch_values(self):
        values = {f"score/{m}": self.f1[i] for i, m in enumerate(self.mods)}
        for i, j in combinations(range(len(self.mods)), 2):  # the order of mikd_mi.pair_index
            values[f"method/ami_{self.mods[i]};{self.mods[j]}"] = self.ami[i, j]
        r = redundancy(self.ami)
        values.update({f"method/redundancy_{m}": r[i] for i, m in enumerate(self.mods)})
        values["method/stage"] = float(STAGES.index(self.stage_of(max(self.epoch_done, 0))))
        if self.teacher >= 0:
            values["method/teacher"] = float(self.teacher)
            values.update({f"method/kd_{m}": float(d) for m, d in zip(self.mods, self.distil)})
        if self.epoch_done + 1 >= self.kd_end:
            applied = self.gradient_multipliers() if self.cfg.calibrate == "gradient" else self.weights
            values.update({f"coef/{m}": applied[i] for i, m in enumerate(self.mods)})
        return values

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        snapshot = self.teacher_encoder is not None
        return {
            "modules": self.modules.state_dict(),
            "bounds": [self.stage1_end, self.kd_end],
            "stage": self.stage_of(self.epoch_done + 1),  # the stage of the next epoch (informative)
            "epoch_done": self.epoch_done,
            "teacher": self.teacher,
            "distil": list(self.distil),
            "weights": self.weights,
            "f1": self.f1,
            "ami": self.ami,
            "teacher_encoder": self.teacher_encoder.state_dict() if snapshot else None,
            "teacher_fusion": self.teacher_fusion.state_dict() if snapshot else None,
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.stage1_end, self.kd_end = state["bounds"]
        self.epoch_done = state["epoch_done"]
        self.teacher = state["teacher"]
        self.distil = list(state["distil"])
        dev = self.ctx.device
        self.weights = state["weights"].to(dev)
        self.f1 = state["f1"].to(dev)
        self.ami = state["ami"].to(dev)
        self.teacher_encoder = self.teacher_fusion = None
        if state["teacher_encoder"] is not None:
            self.snapshot_teacher(self.model)
            self.teacher_encoder.load_state_dict(state["teacher_encoder"])
            self.teacher_fusion.load_state_dict(state["teacher_fusion"])

    @classmethod
    def live_names(cls, modalities):
        mods = list(modalities)
        pairs = [f"method/ami_{a};{b}" for i, a in enumerate(mods) for b in mods[i + 1:]]
        return [n for n in super().live_names(mods) if n != "method/ami_<pair>"] + pairs
