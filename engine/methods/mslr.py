"""``mslr``: Modality-Specific Learning Rates for additive late fusion (Yao & Mihalcea, "Modality-specific
Learning Rates for Effective Multimodal Additive Late-fusion", Findings of ACL 2022, pp. 1824-1834).

The paper's observation: the best unimodal models of different modalities train at very different learning
rates, so one global rate for the late-fusion model starves some branches of updates. MSLR builds the
late-fusion model from fine-tuned unimodal branches and trains each branch at its own learning rate eta_m,
with three strategies to set eta_m during the fused training: **keep** (the rate its unimodal model was
tuned with), **smooth** and **dynamic** (adjusted from each branch's validation score).

One run here goes through (stages in absolute epochs, announced by ``stage`` events)::

    before epoch 0           search      only with an lr_grid: for each factor c, a copy of the initial model
                                         trains every branch on its own cross-entropy at c x train.lr for
                                         search_epochs (apart from the run, ctx.train_nested); c_m = the factor
                                         whose copy gave branch m the best validation accuracy (then the lowest
                                         validation loss, then the factor closest to 1); an ``lr_search`` event
    [0, unimodal_epochs)     "unimodal"  L = sum_m CE(logits_m, y), encoder m at eta_m = c_m x train.lr: the
                                         fine-tuned unimodal branches the late fusion starts from
    [unimodal_epochs, ...)   "fusion"    L = CE(fused, y), encoder m at eta_m x the strategy's factor

Encoder m's rate is the scheduled rate (train.lr with the preset's warm-up and schedule) times
``coef/<m>``, applied through ``step.scale_lr`` on :meth:`Method.modality_groups`, so it acts under Adam too:

* **keep**: coef_m = c_m, the unimodal rate kept through the fused training.
* **smooth**: coef_m = c_m ** (1 - smooth): each rate moved towards the global one in log space, the
  geometric mean of the two at ``smooth`` = 0.5 (0: keep, 1: one global rate). The exact Smooth formula of
  the paper could not be checked in the sources available to us; this is our reading of a rule that keeps
  the modalities' order of rates but narrows their spread, and is stated as ours.
* **dynamic**: coef_m = c_m x r_m, r_m = acc_m(e) / mean(acc_m over the ``memory`` fusion epochs before e),
  acc_m the validation accuracy of branch m's own head (``val/acc/<m>``) at the end of fusion epoch e,
  applied to epoch e + 1; r_m = 1 until ``memory`` fusion epochs have been seen (a branch still improving
  gets a larger rate, one getting worse a smaller one). This is the rule of the two public
  re-implementations (lihong2303/AGM_ICCV2023 ``run/*_main.py``, branch "MSLR"; kkontras/MCR
  ``Bias_Infusion_MSLR``), with their memory of 5 epochs; the ratio is recomputed each epoch, not compounded.

``lr_factors`` sets c_m directly (in the preset's modality order), e.g. from unimodal runs tuned apart;
the search then does not run. With neither every c_m is 1 (kkontras/MCR's default), and ``dynamic``, the
default strategy, scales each branch by its ratio alone. The search is opt-in because it trains
len(lr_grid) x search_epochs epochs of copies before the run's first step.

Defaults: ``strategy = "dynamic"``, ``memory = 5`` (both re-implementations); ``unimodal_epochs = 2``,
``search_epochs = 2``, ``smooth = 0.5`` are ours (the paper fine-tunes each unimodal model to its best
validation score, which a fixed epoch count stands in for).

Any number of modalities M >= 2: every rule above is per modality and compares a branch only with itself,
so nothing is specific to two.

Deviations from the re-implementations, on purpose (none of them is the authors' code; we found no release
by the authors):

* They scale encoder *gradients* by the coefficient; the paper sets learning rates. A gradient factor is
  divided out by Adam's normalisation and only approximately a rate under SGD with momentum, so we scale
  each encoder group's learning rate for the step (``step.scale_lr``).
* AGM_ICCV2023 reads the accuracies of the dynamic rule from the loader it evaluates on, the test split in
  its CREMA-D script, and hard-codes the initial factors (0.9 audio, 1.1 visual); we use the validation split
  (a run without validation rows is refused) and take the factors from the unimodal search or ``lr_factors``.
* A memory whose mean accuracy is 0 gives r_m = 1 (the re-implementations divide by it).
* The paper starts from unimodal models fine-tuned to convergence with a learning-rate grid search each;
  here the search trains short copies (``search_epochs``) and the run's own ``unimodal`` stage is the
  fine-tuning, so the whole method fits in one resumable run.
* Only the encoders get per-modality rates; the fusion head (and mid-fusion modules) train at the global
  rate: mmbal's heads are not split by modality in general (``concat`` is one linear layer over every
  modality's features). With ``film`` / ``gated`` fusion the per-modality heads, outside the fused logits,
  learn from the unimodal cross-entropies in the first stage and on detached features afterwards
  (``Method.modality_head_loss``); the paper is about additive fusion (``concat``, ``sum``).

Cost over joint training: the search (len(lr_grid) x search_epochs epochs of unimodal training of a copy,
M branch forwards and backwards each, plus one evaluation per copy), then 1F + 1B per step; no extra
pass per epoch (the dynamic rule reads the trainer's validation metrics).

Live values per step: ``coef/<m>`` and ``method/lr_<m>`` (the effective rate of encoder m). Per epoch, with
the validation record: ``score/<m>`` (branch m's validation accuracy), ``method/ratio_<m>`` (r_m for the
next epoch), ``method/base_<m>`` (c_m) and ``method/stage``.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``strategy`` "keep" and "smooth", the
paper's other two strategies beside "dynamic".
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import PresetError
from ..schema import opt
from . import METHODS
from .base import Method
from .stages import Stage, Stages

STAGE_INDEX = {"unimodal": 0, "fusion": 1}


@dataclass(frozen=True)
class MslrConfig:
    strategy: Literal["keep", "smooth", "dynamic"] = opt(
        "dynamic", help="fusion-stage rate of encoder m: 'keep' eta_m, 'smooth' eta_m moved towards the global rate, "
                     "'dynamic' eta_m x (val acc_m / its mean over the last `memory` epochs)")
    lr_factors: list[float] = opt([], gt=0.0, help="eta_m / train.lr per modality in the preset's modality order; "
                                                   "empty: from the unimodal search over lr_grid")
    lr_grid: list[float] = opt([], gt=0.0,
                               help="factors of train.lr the unimodal search tries, a copy trained per factor "
                                    "(e.g. [0.3, 1.0, 3.0]); empty: no search, every factor 1 unless lr_factors")
    search_epochs: int = opt(2, ge=1, help="epochs each copy of the unimodal search trains")
    unimodal_epochs: int = opt(2, ge=0, help="epochs of unimodal fine-tuning (each branch on its own "
                                             "cross-entropy at eta_m) before the late-fusion stage")
    smooth: float = opt(0.5, ge=0.0, le=1.0, help="smooth: coef = c_m ** (1 - smooth), 0 keeps eta_m, 1 is the "
                                                  "global rate")
    memory: int = opt(5, ge=1, help="dynamic: fusion epochs of validation accuracy the ratio compares with "
                                    "(re-implementations: 5)")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def choose_factor(grid: list[float], acc: list[float], loss: list[float]) -> float:
    """The factor whose copy scored best: highest accuracy, then lowest loss, then the one closest to 1."""
    best = max(range(len(grid)), key=lambda i: (acc[i], -loss[i], -abs(math.log(grid[i]))))
    return grid[best]


def strategy_factors(strategy: str, base: list[float], ratio: list[float], smooth: float) -> list[float]:
    """coef_m of the fusion stage: keep c_m; smooth c_m ** (1 - smooth); dynamic c_m r_m."""
    if strategy == "keep":
        return list(base)
    if strategy == "smooth":
        return [c ** (1.0 - smooth) for c in base]
    return [c * r for c, r in zip(base, ratio)]


def dynamic_update(memory: list[float], acc: float, size: int) -> tuple[list[float], float]:
    """One end of a fusion epoch of the dynamic rule for one modality: (new memory, ratio for the next epoch).

    Until ``size`` accuracies are remembered the ratio is 1 and the accuracy is added; then the ratio is
    acc / mean(memory) (1 if that mean is 0) and the oldest accuracy makes room for this one."""
    if len(memory) < size:
        return memory + [acc], 1.0
    mean = sum(memory) / len(memory)
    return memory[1:] + [acc], (acc / mean if mean > 0 else 1.0)


@METHODS.register("mslr", config=MslrConfig,
                  help="modality-specific learning rates: each encoder trains at the rate its unimodal branch "
                       "was tuned with (keep / smooth / dynamic), after unimodal fine-tuning (Yao & Mihalcea)",
                  paper="Yao, Mihalcea: Modality-specific Learning Rates for Effective Multimodal Additive "
                        "Late-fusion, Findings of ACL 2022",
                  optimizer="adam",
                  cost="1F + 1B (unimodal stage: M branch F/B); before training len(lr_grid) x search_epochs "
                       "unimodal epochs of a copy",
                  live={"coef/<m>": "learning-rate factor of encoder m this step: its rate over the scheduled "
                                    "train.lr (c_m, smoothed, or times the dynamic ratio)",
                        "score/<m>": "validation accuracy of modality m's own head (the dynamic rule's input)",
                        "method/lr_<m>": "effective learning rate of encoder m this step (schedule x coef)",
                        "method/ratio_<m>": "dynamic ratio r_m: m's validation accuracy over its mean in the last "
                                            "`memory` fusion epochs (1 before, and for keep / smooth)",
                        "method/base_<m>": "c_m = eta_m / train.lr, from the unimodal search or lr_factors",
                        "method/stage": "stage of the epoch: 0 unimodal fine-tuning, 1 late fusion",
                        "method/head_ce": "cross-entropy training the per-modality heads on detached features "
                                          "(film / gated fusion, late-fusion stage)"},
                  tune={"strategy": ("keep", "smooth")})
class Mslr(Method):
    """See the module docstring: search, stages, strategies, deviations and logged values."""

    def __init__(self, cfg: MslrConfig, ctx):
        super().__init__(cfg, ctx)
        self.mods = list(ctx.modalities)
        problems = self.problems(cfg, ctx)
        if problems:
            raise PresetError("method", problems)
        stages = [Stage("unimodal", cfg.unimodal_epochs)] if cfg.unimodal_epochs else []
        self.stages = Stages(stages + [Stage("fusion")])
        n = len(self.mods)
        self.base: list[float] | None = list(cfg.lr_factors) if cfg.lr_factors else (
            None if cfg.lr_grid else [1.0] * n)                # c_m; None until the search has run
        self.ratio = [1.0] * n
        self.memory: list[list[float]] = [[] for _ in self.mods]
        self.acc: list[float] | None = None                    # the last validation accuracies
        self.epoch_done = -1
        self._coef: list[float] = []                           # coef_m of the epoch being trained
        self._coef_t: torch.Tensor | None = None               # the same on the device
        self._coef_epoch = -1

    @staticmethod
    def problems(cfg: MslrConfig, ctx) -> list[str]:
        mods = list(ctx.modalities)
        found = []
        if len(mods) < 2:
            found.append(f"method.name: mslr gives each modality its own learning rate and needs at least two "
                         f"modalities; this run has {len(mods)} ({', '.join(mods)})")
        if cfg.lr_factors and len(cfg.lr_factors) != len(mods):
            found.append(f"method.lr_factors: {len(cfg.lr_factors)} factors for {len(mods)} modalities "
                         f"({', '.join(mods)}); give one per modality, or none to search them")
        needs_val = cfg.strategy == "dynamic" or (not cfg.lr_factors and cfg.lr_grid)
        if needs_val and ctx.data is not None and ctx.data.split_size("val") == 0:
            found.append("method: the unimodal learning-rate search (lr_grid) and the dynamic strategy choose by "
                         "validation accuracy, and this dataset has no validation rows; give lr_factors and a "
                         "strategy other than 'dynamic', or data with a validation split")
        return found

    def parameter_groups(self, model):
        return self.modality_groups(model)

    # -- schedule -------------------------------------------------------------------------------
    def stage_of(self, epoch: int) -> str:
        return self.stages.at(epoch).name

    def on_epoch_start(self, epoch, model):
        events = self.search(model) if self.base is None else []
        self.refresh_coef(epoch)
        return events + self.stages.start_events(epoch)

    def factors(self, epoch: int) -> list[float]:
        """coef_m for the steps of ``epoch`` (host floats: the rule changes once per epoch)."""
        if self.stage_of(epoch) == "unimodal":
            return list(self.base)
        return strategy_factors(self.cfg.strategy, self.base, self.ratio, self.cfg.smooth)

    # -- the unimodal learning-rate search --------------------------------------------------------
    def search(self, model) -> list[dict]:
        """c_m for every modality from copies of the initial model trained unimodally at each factor."""
        cfg, grid = self.cfg, list(self.cfg.lr_grid)
        acc = {m: [] for m in self.mods}
        loss = {m: [] for m in self.mods}
        for c in grid:
            probe_cfg = dataclasses.replace(cfg, strategy="keep", lr_factors=[c] * len(self.mods), lr_grid=[],
                                            unimodal_epochs=cfg.search_epochs)
            probe = Mslr(probe_cfg, self.ctx)
            copy_of_model = copy.deepcopy(model)
            probe.setup(copy_of_model)
            result = self.ctx.train_nested(copy_of_model, probe, self.ctx.data, cfg.search_epochs,
                                           seed=self.ctx.seed * 7919 + 104729)
            for m in self.mods:
                acc[m].append(result.after[f"val/acc/{m}"])
                loss[m].append(result.after[f"val/loss/{m}"])
            del copy_of_model, probe
        self.base = [choose_factor(grid, acc[m], loss[m]) for m in self.mods]
        return [{"name": "lr_search", "grid": grid, "epochs": cfg.search_epochs,
                 "val_acc": acc, "val_loss": loss, "factors": dict(zip(self.mods, self.base))}]

    # -- one step (the base train_step: forward, loss, backward, after_backward, optimiser step) --------
    def loss(self, out, y, step):
        if self.stage_of(step.epoch) == "unimodal":
            return sum(F.cross_entropy(out.logits[m].float(), y) for m in self.mods), {}
        return super().loss(out, y, step)

    def modality_head_loss(self, out, y, step):
        if self.stage_of(step.epoch) == "unimodal":
            return None   # the unimodal cross-entropies train every modality's head
        return super().modality_head_loss(out, y, step)

    def after_backward(self, model, out, y, step):
        if self._coef_epoch != step.epoch:   # only when a caller skipped on_epoch_start (a test's lone step)
            self.refresh_coef(step.epoch)
        lrs = {g["name"]: g["lr"] for g in step.optimizer.param_groups}   # the schedule's, before scaling
        for m, k in zip(self.mods, self._coef):
            step.scale_lr(m, k)
        coef = self._coef_t
        live = {f"coef/{m}": coef[i] for i, m in enumerate(self.mods)}
        live.update({f"method/lr_{m}": coef[i] * lrs[m] for i, m in enumerate(self.mods)})
        return live

    def refresh_coef(self, epoch: int) -> None:
        """The factors of ``epoch`` on the host (for ``scale_lr``) and on the device (the live values), made
        outside the steps: at the epoch's start and when a checkpoint is loaded."""
        self._coef = self.factors(epoch)
        self._coef_t = torch.tensor(self._coef, dtype=torch.float32, device=self.ctx.device)
        self._coef_epoch = epoch

    # -- end of epoch: the dynamic rule ------------------------------------------------------------
    def on_epoch_end(self, epoch, model, val):
        keys = [f"val/acc/{m}" for m in self.mods]
        self.acc = [val[k] for k in keys] if all(k in val for k in keys) else None
        self.epoch_done = epoch
        if self.cfg.strategy == "dynamic" and self.stage_of(epoch) == "fusion" and self.acc is not None:
            for i, a in enumerate(self.acc):
                self.memory[i], self.ratio[i] = dynamic_update(self.memory[i], a, self.cfg.memory)
        return []

    def epoch_values(self):
        values: dict = {"method/stage": float(STAGE_INDEX[self.stage_of(max(self.epoch_done, 0))])}
        if self.acc is not None:
            values.update({f"score/{m}": a for m, a in zip(self.mods, self.acc)})
        values.update({f"method/ratio_{m}": r for m, r in zip(self.mods, self.ratio)})
        if self.base is not None:
            values.update({f"method/base_{m}": c for m, c in zip(self.mods, self.base)})
        return values

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        return {"modules": self.modules.state_dict(), "stages": self.stages.state_dict(),
                "base": None if self.base is None else list(self.base), "ratio": list(self.ratio),
                "memory": [list(x) for x in self.memory], "acc": None if self.acc is None else list(self.acc),
                "epoch_done": self.epoch_done}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.stages = Stages.from_state(state["stages"])
        self.base = None if state["base"] is None else list(state["base"])
        self.ratio = list(state["ratio"])
        self.memory = [list(x) for x in state["memory"]]
        self.acc = None if state["acc"] is None else list(state["acc"])
        self.epoch_done = state["epoch_done"]
        self._coef_epoch = -1
        if self.base is not None:   # the next epoch to train (a checkpoint inside it, or after the one before)
            self.refresh_coef(self.epoch_done + 1)
