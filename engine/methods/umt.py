"""``umt``: Uni-Modal Teacher (Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao, "On Uni-Modal Feature Learning in
Supervised Multi-Modal Learning", ICML 2023; first as Du et al., "Improving Multi-Modal Learning with Uni-Modal
Teachers", arXiv 2106.11059, 2021).

The paper's remedy for *modality laziness* when cross-modal interaction matters: train uni-modal teachers
first, then train the multimodal late-fusion model with its fused cross-entropy plus a feature distillation
of each encoder towards its frozen teacher's encoder::

    L = CE(fused, y) + lambda * sum_m MSE(z_m, z_m^teacher)

Both stages run inside one run, in absolute epochs (:class:`~engine.methods.stages.Stages`, announced by
``stage`` events)::

    [0, teacher_epochs)      "teachers"  L = sum_m CE(logits_m, y): each encoder and its own head alone
                                         (:mod:`.unimodal_teachers`); prediction: the teachers' ensemble
    [teacher_epochs, ...)    "student"   the model re-initialised to its initial weights and the optimiser
                                         state reset; L as above, the teachers frozen

* **Teachers.** Modality m's teacher is its encoder trained alone in the first stage. With
  ``teacher_select = "best"`` (default) it is the encoder of the teacher-stage epoch with the best
  validation accuracy of m's own head (the first on ties; every epoch without a validation split), as
  separately trained uni-modal models would be selected; ``"last"``: the stage's last epoch. Each teacher
  is kept in the run directory (``checkpoints/kept/umt-teacher-<i>.pt`` through ``ctx.kept``) when it is
  chosen, and rebuilt from there as a frozen eval-mode copy (no gradient, no dropout, BatchNorm running
  statistics) at the student stage's start or on a resume inside it. BalanceMM's ``UMT_trainer.py`` instead
  loads the newest checkpoint of separate ``unimodalTrainer`` runs found by directory convention, and runs
  those teachers in train mode (dropout and BatchNorm updates in the targets).
* **Student.** The multimodal model starts the student stage from the weights the run started with
  (kept as ``umt-init`` at epoch 0), as the paper's multimodal model is trained from its initialisation,
  not from the teachers; its optimiser state (momentum, Adam moments) is reset. The run's learning-rate
  schedule runs on across the stages (a warm-up is not repeated).
* **Distillation** per modality: the mean squared error between the student's encoder features z_m (its
  encoder in the model, mid-fusion included) and the teacher's features of the same input, over rows and
  feature dimensions (``nn.MSELoss()``, as BalanceMM). lambda = ``distill_weight`` = 10, BalanceMM's
  ``scaling``; the paper's own weight could not be checked in the sources available to us. BalanceMM
  distils only between ``modulation_starts`` and ``modulation_ends``; here every student epoch is distilled.
* **Selection.** Only student-stage epochs can become the run's selected checkpoint
  (:meth:`~engine.methods.base.Method.selectable`): the teacher stage's model is not the method's model. A
  run that ends inside the teacher stage has no selected checkpoint (its last state is tested).
* **Optimiser.** SGD with momentum, as in the audio-visual setting the paper compares in (OGM-GE's, Peng
  et al. 2022); the paper's own optimiser settings could not be checked in the sources available to us.

Any number of modalities M >= 2: one teacher and one distillation term per modality. A resumed run keeps
the stage boundaries it started with (they are in the method's state); only the student stage grows when
a finished run is extended.

Live values per step: ``method/stage`` (0 teachers, 1 student), ``coef/<m>`` (the weight of modality m's own
loss term: 1 for its cross-entropy in the teacher stage, lambda for its distillation in the student stage),
``method/ce_<m>`` (teacher stage), ``method/distill_<m>`` (student stage, unweighted MSE) and
``method/ce_fused`` (student stage). Per epoch: ``method/stage`` and, once a teacher is kept, ``score/<m>``
(its validation accuracy, the selection score).

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``distill_weight``, 1 and 100. The
sources give only BalanceMM's 10 (the paper's weight could not be checked), so these are our decade brackets
around it, not the authors' values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..models import ModelOutput
from ..schema import opt
from . import METHODS
from .base import Method
from .stages import Stage, Stages
from .unimodal_teachers import (KeptTeachers, ensemble, feature_distillation, reset_optimizer_state,
                                unimodal_features, unimodal_losses)

TEACHERS, STUDENT = "teachers", "student"
INIT = "umt-init"


@dataclass(frozen=True)
class UmtConfig:
    teacher_epochs: int = opt(10, ge=1, help="epochs of the teacher stage (each modality trained alone), from the "
                                             "run's first epoch; the student stage follows")
    distill_weight: float = opt(10.0, ge=0.0, help="lambda: weight of each modality's feature MSE to its teacher "
                                                   "(BalanceMM's scaling 10)")
    teacher_select: Literal["best", "last"] = opt(
        "best", help="teacher of modality m: its encoder at the teacher-stage epoch of best validation accuracy, "
                     "or at the stage's last epoch")


@METHODS.register("umt", config=UmtConfig,
                  help="uni-modal teachers: each modality trained alone first, then the multimodal model with "
                       "fused cross-entropy plus feature distillation to the frozen teachers (Du et al.)",
                  paper="Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao: On Uni-Modal Feature Learning in Supervised "
                        "Multi-Modal Learning, ICML 2023",
                  optimizer="sgd",
                  cost="teacher stage: 1F + 1B (each encoder alone); student stage: 1F + M teacher F (no grad) + 1B",
                  live={"coef/<m>": "weight of modality m's own loss term: 1 for its cross-entropy (teacher stage), "
                                    "distill_weight for its feature distillation (student stage)",
                        "score/<m>": "validation accuracy of modality m's kept teacher (its selection score)",
                        "method/stage": "stage: 0 uni-modal teachers, 1 student with distillation",
                        "method/ce_<m>": "cross-entropy of modality m's uni-modal model (teacher stage)",
                        "method/distill_<m>": "MSE between modality m's student and teacher features",
                        "method/ce_fused": "cross-entropy of the fused logits (student stage)",
                        "method/head_ce": "cross-entropy training the per-modality heads on detached features "
                                          "(film / gated fusion, student stage)"},
                  tune={"distill_weight": (1.0, 100.0)})
class Umt(Method):
    """See the module docstring: stages, teachers, student, deviations and logged values."""

    def __init__(self, cfg: UmtConfig, ctx):
        super().__init__(cfg, ctx)
        self.mods = list(ctx.modalities)
        self.stages = Stages([Stage(TEACHERS, cfg.teacher_epochs), Stage(STUDENT)])
        self.bank = KeptTeachers(self.mods)
        n, dev = len(self.mods), ctx.device
        self.epoch = 0                                   # the epoch being trained (or evaluated)
        self.epoch_done = -1
        self.teacher_epoch = [-1] * n                    # the epoch each kept teacher comes from
        self.teacher_score = [float("-inf")] * n         # its validation accuracy (-inf: none yet)
        self.teachers: dict[str, torch.nn.Module] | None = None   # frozen copies, built when needed
        self._teacher_features: dict[str, torch.Tensor] | None = None
        self._stage_t = torch.tensor([0.0, 1.0], device=dev)
        self._coef_t = torch.tensor([1.0, cfg.distill_weight], device=dev)

    # -- schedule -------------------------------------------------------------------------------
    def stage_of(self, epoch: int) -> str:
        return self.stages.at(epoch).name

    @property
    def student_start(self) -> int:
        return self.stages.starts[1]

    def selectable(self, epoch):
        return self.stage_of(epoch) == STUDENT

    def on_epoch_start(self, epoch, model):
        self.epoch = epoch
        events = self.stages.start_events(epoch)
        if epoch == 0:
            self.ctx.kept.save(INIT, model.state_dict())
            events[0]["epochs"] = self.student_start
        if epoch == self.student_start:
            events[0].update(self.begin_student(model))
        return events

    def begin_student(self, model) -> dict:
        """The student stage's start: the model back to its initial weights, a fresh optimiser state, the
        teachers rebuilt from the kept files; returns the stage event's fields."""
        model.load_state_dict(self.ctx.kept.load(INIT))
        reset_optimizer_state(self.optimizer)
        self.teachers = self.bank.load(self.ctx.kept, model)
        return {"teachers": {m: {"epoch": self.teacher_epoch[i],
                                 "val_acc": None if self.teacher_score[i] == float("-inf") else self.teacher_score[i]}
                             for i, m in enumerate(self.mods)},
                "distill_weight": self.cfg.distill_weight}

    def on_epoch_end(self, epoch, model, val):
        self.epoch_done = epoch
        if self.stage_of(epoch) == TEACHERS:
            last = epoch == self.student_start - 1
            for i, m in enumerate(self.mods):
                score = val.get(f"val/acc/{m}")
                if self.cfg.teacher_select == "best":
                    keep = score is None or score > self.teacher_score[i]
                else:
                    keep = last
                if keep:
                    self.bank.save(self.ctx.kept, i, model.encoders[m], epoch,
                                   float("-inf") if score is None else float(score))
                    self.teacher_epoch[i] = epoch
                    self.teacher_score[i] = float("-inf") if score is None else float(score)
        return []

    def epoch_values(self):
        stage = self.stages.index(max(self.epoch_done, 0))
        values = {"method/stage": float(stage)}
        values.update({f"score/{m}": s for m, s in zip(self.mods, self.teacher_score) if s != float("-inf")})
        return values

    # -- one step (the base train_step with a stage-dependent forward and loss) ----------------------
    def train_step(self, x, y, step):
        self.epoch = step.epoch
        return super().train_step(x, y, step)

    def forward(self, model, x):
        if self.stage_of(self.epoch) == TEACHERS:
            return self.predict(model, x)
        out = model(x)
        if self.teachers is None:   # a resume inside the student stage
            self.teachers = self.bank.load(self.ctx.kept, model)
        with torch.no_grad():
            self._teacher_features = {m: self.teachers[m](x[m]) for m in self.mods}
        return out

    def loss(self, out, y, step):
        if self.stage_of(step.epoch) == TEACHERS:
            ces = unimodal_losses(out.logits, y, self.mods)
            one = self._coef_t[0]
            live = {"method/stage": self._stage_t[0], **{f"coef/{m}": one for m in self.mods}}
            live.update({f"method/ce_{m}": ces[i].detach() for i, m in enumerate(self.mods)})
            return ces.sum(), live
        ce = F.cross_entropy(out.fused.float(), y)
        distill = feature_distillation(out.features, self._teacher_features, self.mods)
        self._teacher_features = None
        weight = self._coef_t[1]
        live = {"method/stage": self._stage_t[1], "method/ce_fused": ce.detach(),
                **{f"coef/{m}": weight for m in self.mods}}
        live.update({f"method/distill_{m}": distill[i].detach() for i, m in enumerate(self.mods)})
        return ce + self.cfg.distill_weight * distill.sum(), live

    def modality_head_loss(self, out, y, step):
        if self.stage_of(step.epoch) == TEACHERS:
            return None   # the uni-modal cross-entropies train every modality's head
        return super().modality_head_loss(out, y, step)

    # -- inference: the teachers' ensemble in the teacher stage, the model in the student stage -------
    def head(self, model, features):
        if self.stage_of(self.epoch) == TEACHERS:
            _, logits = model.head(features)
            return ensemble(logits, self.mods), logits
        return model.head(features)

    def predict(self, model, x):
        if self.stage_of(self.epoch) == TEACHERS:
            features = unimodal_features(model, x)
            fused, logits = self.head(model, features)
            return ModelOutput(fused=fused, logits=logits, features=features)
        return super().predict(model, x)

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        return {"modules": self.modules.state_dict(), "stages": self.stages.state_dict(), "epoch": self.epoch,
                "epoch_done": self.epoch_done, "teacher_epoch": list(self.teacher_epoch),
                "teacher_score": list(self.teacher_score)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.stages = Stages.from_state(state["stages"])
        self.epoch = state["epoch"]
        self.epoch_done = state["epoch_done"]
        self.teacher_epoch = list(state["teacher_epoch"])
        self.teacher_score = list(state["teacher_score"])
        self.teachers = None   # rebuilt from the kept files when a student step needs them
