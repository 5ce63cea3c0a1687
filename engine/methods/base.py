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
``head`` / ``predict``      inference-time fusion (AUG weighted sum, unimodal)
``epoch_values``            per-epoch quantities logged with validation (AUG confidences, mikd weights)
``state_dict``              exact resume of the method's own state
==========================  ==============================================================

Live quantities are returned from each step as 0-d tensors **on the device** (never
``.item()``); the trainer averages them over the logging interval and moves them to the host
once per interval. Names follow interfaces.md: ``coef/<m>``, ``score/<m>``, ``method/<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models import ModelOutput, MultimodalModel


@dataclass
class MethodContext:
    """What a method knows about the run when it is built.

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


@dataclass
class StepContext:
    """What the trainer hands a method for one training step.

    ``backward(loss)`` runs the backward pass (the trainer decides precision details);
    ``step()`` clips (when configured) and applies the optimiser to the parameters that
    have gradients, then clears them.
    """

    model: MultimodalModel
    optimizer: torch.optim.Optimizer
    epoch: int
    step: int
    batch_in_epoch: int
    autocast: Callable[[], Any]
    backward: Callable[[torch.Tensor], None]
    step_optimizer: Callable[[], None]


@dataclass
class StepResult:
    """One step's outcome: the detached loss, the model output used for train metrics, live values."""

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
    """

    name = "method"
    compile_ok = True

    def __init__(self, cfg: Any, ctx: MethodContext):
        self.cfg = cfg
        self.ctx = ctx
        self.modules = nn.ModuleDict()  # the method's own trainable modules (saved and optimised)

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
        """Optimiser parameter groups; by default every model and method parameter, one group."""
        params = list(model.parameters()) + list(self.modules.parameters())
        return [{"params": params, "name": "all"}]

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
        with step.autocast():
            out = self.forward(step.model, x)
        loss, live = self.loss(out, y, step)
        step.backward(loss)
        live.update(self.after_backward(step.model, out, y, step))
        self.optimizer_step(step)
        return StepResult(loss.detach(), out, live)

    # -- schedule -------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, model: MultimodalModel) -> list[dict]:
        """Called before each epoch; returns events to log (e.g. ``{"name": "stage", ...}``)."""
        return []

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
    def live_names(cls, modalities: list[str]) -> list[str]:
        """The live quantity names this method reports (for the dashboard's layout)."""
        return [f"coef/{m}" for m in modalities]
