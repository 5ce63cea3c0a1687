"""The balancing-method interface every method in mmbal implements.

A method owns one training step and may change any part of it; the trainer owns everything
around it (data order, precision, clipping, the optimiser's schedule, evaluation, logging,
checkpoints). The default :meth:`Method.train_step` is plain joint training decomposed into
hooks, so most methods override one or two hooks:

==========================  ==============================================================
hook                        used by (examples)
==========================  ==============================================================
``setup``                   add modules and state (AUG's extra heads, critics, prototypes)
``forward``                 feature masking / dropping (OPM), extra forward passes (AGM)
``loss``                    multi-loss, regularisers (MCR, MLA, MMCosine, UMT)
``after_backward``          per-encoder gradient scaling (OGM-GE, AGM, MSLR, CGGM)
``optimizer_step``          alternating per-modality updates (AUG, MLA)
``train_step``              whole-step control (ReconBoost stages, Greedy)
``on_epoch_start/end``      schedules, stages, re-initialisation (DnR, G-Blending, mikd)
``epoch_plan``              data-level re-sampling: rows, modality masks, epoch length (Valuation)
``head`` / ``predict``      inference-time fusion (AUG weighted sum, unimodal)
``epoch_values``            per-epoch quantities logged with validation (AUG confidences, mikd weights)
``state_dict``              exact resume of the method's own state
==========================  ==============================================================

Live quantities are returned from each step as 0-d tensors **on the device** (never
``.item()``); the trainer averages them over the logging interval and moves them to the host
once per interval. They are read when the interval is summed, not at the step (no device work per
step), so a live tensor must not be modified in place afterwards: return a fresh tensor, or one the
method replaces (``self.coef = new``), never one it updates in place (``self.coef.mul_(...)``,
``self.coef[i] = ...``). The same holds for the step's loss and its output's logits. Names follow
``docs/metrics.md``: ``coef/<m>``, ``score/<m>``, ``method/<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.plan import EpochPlan
from ..errors import PresetError
from ..models import ModelOutput, MultimodalModel
from .info import MethodInfo, expand


@dataclass
class MethodContext:
    """What a method knows about the run when it is built.

    ``kept`` keeps the models a stage produces for later stages (``ctx.kept.save(name, state)``,
    ``ctx.kept.load(name)``): in the run directory during a run, in memory otherwise (see
    :mod:`engine.methods.stages`).

    ``train_nested(model, method, data, epochs, seed)`` trains a copy of a model apart from the run
    (its own RNG stream; the run's is unchanged) on a batch source such as ``data.subset(rows,
    held_out)``, and returns its metrics before and after (:mod:`engine.train.nested`; G-Blending).

    ``data`` gives methods that need more than the batch (prototypes over the training set,
    validation scores, diagnosis passes) the dataset as a batch source (resident or streamed):
    ``data.split_size(split)``, ``data.class_counts(split)``, ``data.eval_batches(split, batch_size)``
    yielding ``(x, y)`` on the device. Methods must not change it.
    """

    modalities: list[str]
    n_classes: int
    epochs: int
    steps_per_epoch: int
    device: torch.device
    seed: int = 0
    data: Any = None
    eval_batch_size: int = 1024
    kept: Any = None   # KeptModels (engine.methods.stages): models a stage keeps for later stages
    train_nested: Any = None   # engine.train.nested.train_nested(model, method, data, epochs, seed)


@dataclass
class StepContext:
    """What the trainer hands a method for one training step.

    * ``backward(loss)`` runs the backward pass into ``.grad`` (in a multi-process run the gradients
      are then averaged over the ranks; the non-finite guard sees the loss).
    * ``grads(loss, params, retain_graph=False)`` gives the gradients of one loss with respect to
      ``params`` *without* touching ``.grad`` (``torch.autograd.grad``; a parameter the loss does not
      reach gets zeros), averaged over the ranks and checked by the non-finite guard like ``backward``:
      for methods that combine per-loss gradients (MMPareto, InfoReg, CGGM, AMCo) and then write
      ``p.grad`` themselves before ``step_optimizer``.
    * ``scale_lr(group, factor)`` multiplies the learning rate of the optimiser parameter group named
      ``group`` (see :meth:`Method.parameter_groups`) by ``factor`` for this step only, on top of the
      schedule; ``factor`` may be a 0-d device tensor (no host sync). Unlike scaling gradients, this
      scales the update under adaptive optimisers too (Adam divides a constant gradient factor out).
    * ``step_optimizer()`` clips (when configured) and applies the optimiser to the parameters that
      have gradients, then clears them.
    * ``forward_loss``: under ``train.compile = "step"``, :meth:`Method.forward_loss` compiled
      (:mod:`engine.train.step_compile`), which the default ``train_step`` calls instead; else None.
    * ``ids``: each row's index in the training split, (B,) on the device (None where the batch
      source does not give them); ``masks``: modality -> bool (B,) when the epoch follows a plan with
      modality masks (False: that modality's input was replaced by zeros), else None.
    """

    model: MultimodalModel
    optimizer: torch.optim.Optimizer
    epoch: int
    step: int
    batch_in_epoch: int
    autocast: Callable[[], Any]
    backward: Callable[[torch.Tensor], None]
    step_optimizer: Callable[[], None]
    grads: Callable[..., list[torch.Tensor]] | None = None
    scale_lr: Callable[[str, Any], None] | None = None
    ids: torch.Tensor | None = None
    masks: dict[str, torch.Tensor] | None = None
    forward_loss: Callable[..., tuple] | None = None   # the method's forward_loss compiled (train.compile = "step")


@dataclass
class StepResult:
    """One step's outcome: the detached loss, the model output used for train metrics, live values
    (read when the logging interval is summed: none may be modified in place later; module docstring)."""

    loss: torch.Tensor
    output: ModelOutput
    live: dict[str, torch.Tensor] = field(default_factory=dict)


class Method:
    """Base class of the balancing methods (see the module docstring for the hooks).

    Subclasses set ``name`` and may define a frozen dataclass ``Config`` of their options;
    they are registered with ``@METHODS.register(name, config=Config)`` on the class.

    ``compile_ok``: whether the method works with ``train.compile = true``, which compiles the
    model's encoders and fusion head in place (:mod:`engine.train.compile`). That is safe for any
    method that reaches the model through its modules' calls (``model(x)``, ``model.encode``,
    ``model.head``, ``model.encoders[m](...)``, ``model.fusion(...)``, also under
    ``torch.func.functional_call``), whatever its own step does in Python around them. Set it to
    False for a method that needs something compiled modules do not give: e.g. forward hooks added
    or removed during training, per-call Python side effects inside a module's ``forward`` (a
    counter, a host read), or module attributes it changes every step (each change would
    recompile); a preset combining it with ``train.compile = true`` is refused (exit 2).

    ``step_compile_ok``: whether ``train.compile = "step"`` may compile :meth:`forward_loss` (forward,
    loss and, through AOTAutograd, the backward) as one graph (:mod:`engine.train.step_compile`).
    Declare it only on a method that keeps the default :meth:`train_step` and whose ``forward``,
    ``loss`` and ``modality_head_loss`` are pure tensor code: no Python decision on a tensor's value,
    no collective, no state changed per call, no ``after_backward`` or ``optimizer_step`` of its own.
    Other methods run ``"step"`` with their modules compiled (or eagerly) after one warning.
    """

    name = "method"        # set from the registered name by METHODS.register
    info: MethodInfo       # the registration's facts (paper, optimiser, cost, live quantities)
    compile_ok = True
    step_compile_ok = False
    trains_modality_heads = False   # True when the method's own loss trains every ``logits[m]``

    def __init__(self, cfg: Any, ctx: MethodContext):
        self.cfg = cfg
        self.ctx = ctx
        self.modules = nn.ModuleDict()  # the method's own trainable modules (saved and optimised)
        self.end_reason: str | None = None

    def require_modalities(self, what: str) -> None:
        """Refuse (a preset error, exit 2) a run with fewer than two modalities, saying what the method
        does with them (``"balances modalities against each other"``). Presets are refused earlier by
        :mod:`engine.config`; this guards methods built another way (tests, the Python API)."""
        mods = self.ctx.modalities
        if len(mods) < 2:
            raise PresetError("method", [f"method.name: {self.name} {what} and needs at least two; this run has "
                                         f"{len(mods)} ({', '.join(mods)})"])

    @property
    def trained_modalities(self) -> list[str]:
        """The modalities whose own accuracy this method trains: all of them (``unimodal``: its one).
        The per-epoch lines of ``mmbal run`` show these, not a never-trained modality's chance level."""
        return list(self.ctx.modalities)

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self, model: MultimodalModel) -> None:
        """Add the method's own modules to ``self.modules`` (moved to the device by the trainer)."""

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Called once the optimiser exists, before any state is loaded.

        A method that grows parameters during training (AUG's extra heads) keeps the reference
        and adds them with ``optimizer.add_param_group``; on resume its ``load_state_dict`` must
        rebuild them (and their param groups) so that the optimiser's state loads after it.
        """
        self.optimizer = optimizer

    def parameter_groups(self, model: MultimodalModel) -> list[dict]:
        """Optimiser parameter groups; by default every model and method parameter, one group named
        "all". A method that scales one modality's learning rate (``step.scale_lr``) returns
        :meth:`modality_groups` instead."""
        params = list(model.parameters()) + list(self.modules.parameters())
        return [{"params": params, "name": "all"}]

    def modality_groups(self, model: MultimodalModel) -> list[dict]:
        """One parameter group per modality's encoder (named by the modality) and one named "fusion"
        for the fusion head and the method's own modules."""
        groups = [{"params": model.encoder_parameters(m), "name": m} for m in self.ctx.modalities]
        groups.append({"params": model.head_parameters() + list(self.modules.parameters()), "name": "fusion"})
        return groups

    # -- one training step ----------------------------------------------------------------------
    def forward(self, model: MultimodalModel, x: dict[str, torch.Tensor]) -> ModelOutput:
        return model(x)

    def loss(self, out: ModelOutput, y: torch.Tensor, step: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss and live values; default: fused cross-entropy."""
        return F.cross_entropy(out.fused.float(), y), {}

    def after_backward(self, model: MultimodalModel, out: ModelOutput, y: torch.Tensor,
                       step: StepContext) -> dict[str, torch.Tensor]:
        """Modify gradients in place (e.g. scale an encoder's); returns live values."""
        return {}

    def optimizer_step(self, step: StepContext) -> None:
        step.step_optimizer()

    def train_step(self, x: dict[str, torch.Tensor], y: torch.Tensor, step: StepContext) -> StepResult:
        total, loss, out, live = (step.forward_loss or self.forward_loss)(x, y, step)
        step.backward(total)
        live.update(self.after_backward(step.model, out, y, step))
        self.optimizer_step(step)
        return StepResult(loss, out, live)

    def forward_loss(self, x: dict[str, torch.Tensor], y: torch.Tensor,
                     step: StepContext) -> tuple[torch.Tensor, torch.Tensor, ModelOutput, dict[str, torch.Tensor]]:
        """The default step up to its backward: ``(total, loss, output, live)``, where ``total`` is the
        loss to differentiate (the method's loss plus the modality-head loss of a non-additive fusion)
        and ``loss`` the method's loss, detached. ``train.compile = "step"`` compiles this function."""
        with step.autocast():
            out = self.forward(step.model, x)
        loss, live = self.loss(out, y, step)
        heads = self.modality_head_loss(out, y, step)
        if heads is not None:
            live["method/head_ce"] = heads.detach()
        return (loss if heads is None else loss + heads), loss.detach(), out, live

    def modality_head_loss(self, out: ModelOutput, y: torch.Tensor, step: StepContext) -> torch.Tensor | None:
        """Cross-entropy that trains the per-modality heads of a non-additive fusion (``film``,
        ``gated``) on *detached* encoder features, or None.

        Those heads take no part in the fused logits, so without this no loss reaches them and every
        ``*/acc/<m>`` metric would describe a random linear classifier. The features are detached, so
        the encoders' and the fusion's gradients are unchanged (as OGM-GE's release does for its
        unimodal scores); only the heads learn. None for additive fusions (the modality logits are
        parts of the fused ones) and for methods whose own loss trains every ``logits[m]``
        (``trains_modality_heads``). A method overriding ``train_step`` adds it itself.
        """
        if self.trains_modality_heads or getattr(step.model.fusion, "additive", True):
            return None
        with step.autocast():  # the features are bf16 under autocast; the heads' weights are fp32
            _, logits = step.model.head({m: z.detach() for m, z in out.features.items()})
        return sum(F.cross_entropy(logits[m].float(), y) for m in self.ctx.modalities)

    def end_run(self, reason: str) -> None:
        """Ask the trainer to end the run after the current epoch (e.g. MSES when every modality has
        stopped). The run then finishes normally: a ``method_end`` event with ``reason`` is recorded,
        the selected checkpoint is tested, and a resume with more epochs does not train further."""
        self.end_reason = reason

    def selectable(self, epoch: int) -> bool:
        """Whether the state after ``epoch`` may become the run's selected (best-on-validation)
        checkpoint. A method whose first stage trains something other than its final model (UMT's
        unimodal teachers, which the student is then re-initialised away from) returns False for that
        stage's epochs; they are still evaluated and logged. Default: every epoch."""
        return True

    # -- schedule -------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, model: MultimodalModel) -> list[dict]:
        """Called before each epoch; returns events to log (e.g. ``{"name": "stage", ...}``)."""
        return []

    def epoch_plan(self, epoch: int, model: MultimodalModel) -> EpochPlan | None:
        """The training rows of ``epoch`` (:class:`~engine.data.plan.EpochPlan`: row indices that may
        repeat, optional per-row modality masks, any length), or None for the usual pass over every
        row. Called after ``on_epoch_start``; the trainer keeps the plan in its checkpoint, so a
        resume in the middle of the epoch replays it exactly (Modality Valuation's re-sampling)."""
        return None

    def on_epoch_end(self, epoch: int, model: MultimodalModel, val: dict[str, float]) -> list[dict]:
        """Called after each epoch's evaluation with the host-side val metrics; returns events."""
        return []

    def epoch_values(self) -> dict[str, Any]:
        """Values to log with each epoch's validation record (``coef/<m>``, ``score/<m>``, ``method/...``):
        0-d tensors or floats, moved to the host by the trainer."""
        return {}

    # -- inference ------------------------------------------------------------------------------
    def head(self, model: MultimodalModel, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fused and per-modality logits from features; the monitors call it on permuted or
        masked features. Methods with their own heads (AUG) override it."""
        return model.head(features)

    def head_is_additive(self, model: MultimodalModel) -> bool:
        """Whether :meth:`head`'s fused logits are the sum of its per-modality logits, each a function of
        its own modality's features alone (the model's ``concat`` or ``sum`` head, unchanged): the
        monitors then score permuted copies and coalitions without a head pass per copy. A method
        that overrides :meth:`head` is not assumed additive."""
        return type(self).head is Method.head and bool(getattr(model.fusion, "additive", False))

    def predict(self, model: MultimodalModel, x: dict[str, torch.Tensor]) -> ModelOutput:
        """The model's prediction at evaluation time (``fused`` is what ``*/fused`` metrics score)."""
        features = model.encode(x)
        fused, logits = self.head(model, features)
        return ModelOutput(fused=fused, logits=logits, features=features)

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume exactly (tensors and primitives only: weights_only loads)."""
        return {"modules": self.modules.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.modules.load_state_dict(state["modules"])

    # -- description ----------------------------------------------------------------------------
    @classmethod
    def check_preset(cls, cfg: Any, train: Any) -> list[str]:
        """Problems of this method's options together with the preset's ``[train]`` table (e.g. an
        option that does not act under the chosen optimiser), each naming the key; [] when none."""
        return []

    @classmethod
    def live_names(cls, modalities: list[str]) -> list[str]:
        """The live quantity names this method reports, from its registration's ``live`` patterns
        (``<m>`` once per modality). A method whose patterns hold other placeholders (MCR's permuted
        sets) overrides this to expand them."""
        return expand(list(cls.info.live), modalities)
