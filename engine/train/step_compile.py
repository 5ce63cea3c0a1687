"""``train.compile = "step"``: the training step's forward, loss and backward as compiled code.

What is compiled: :meth:`engine.methods.base.Method.forward_loss` (the method's forward under
autocast, its loss, the modality-head loss of a non-additive fusion) as one Dynamo graph over the
whole model and the loss, instead of one graph per encoder and the fusion head as with
``train.compile = true`` (:mod:`engine.train.compile`). AOTAutograd traces the backward of that
graph with it, so ``loss.backward()`` runs one compiled backward graph too (lowered together with
the forward, ``force_non_lazy_backward_lowering``, so that a backend failure surfaces in the
forward call where it can be caught).

What runs eagerly between the compiled parts, and why:

* the gradient average over the ranks of a multi-process run (a collective per step, after the
  backward; Dynamo does not trace ``torch.distributed`` calls into this graph);
* the non-finite guard, the grad-norm logging and the gradient clipping (each a few ``foreach``
  calls over the gradients, after the backward, before the optimiser);
* the optimiser step. mmbal's optimisers are PyTorch's *fused* ones (:mod:`engine.train.optim`),
  which Dynamo deliberately does not trace (``_fused_adam`` is ``torch.compiler.disable``-d: the
  kernel is already one fused call). Compiling a ``foreach`` optimiser instead (the PyTorch recipe,
  with the learning rate as a tensor so that the schedule does not recompile it) was measured on
  this project's CPU and was not faster: for 10 parameter tensors of the quickstart model's shapes,
  Adam took 86 us per step fused and eager, 154 us compiled from ``foreach`` with ``capturable``
  (253 us eager ``foreach``), and a whole step with it gained nothing on quickstart and lost on
  cub10 (BENCHMARKS.md, "Whole-step compilation"; ``benchmarks/step_compile_variants.py``). It would
  also change the optimiser's state-dict flags (``fused``, ``capturable``) and so the checkpoints.
  So the optimiser stays fused and eager, its learning rate a float as the schedule sets it;
  nothing recompiles when the schedule changes the rate.

Dynamo's compiled autograd (forward, loss and ``backward()`` in one compiled function) was measured
as the alternative to AOTAutograd's backward and was never faster on those presets; so it is not used.

Which methods: a method whose class declares ``step_compile_ok = True`` and keeps the default
:meth:`~engine.methods.base.Method.train_step`, i.e. forward, loss, one backward, the optimiser step,
with no Python control flow on tensor values in between (joint, unimodal, multiloss). Any other
method (its own ``train_step``, gradient modulation in ``after_backward``, alternating optimiser
steps, collectives in its loss) runs as with ``train.compile = true`` where that is allowed for it,
eagerly otherwise, after one warning that names the method and says why (:func:`refusal`).

Exactness: the parameters, buffers and optimiser are the model's own, so checkpoints are those of an
eager run and ``train.compile`` may change on resume. Random operators (dropout) fall back to
PyTorch's (``fallback_random``), so the compiled step draws the same masks from the same global
generator as eager and a resume across the switch continues the same stream. Nothing in the
compiled call reads a value back to the host.

Shapes: on the CPU, and on CUDA when the training batches may differ in size, the batch dimension
is marked dynamic (as in :mod:`engine.train.compile`), so the last short batch reuses the graph. On
CUDA with static shapes (``train.drop_last``, or a training split that is a multiple of the batch
size) the step is compiled with ``mode="reduce-overhead"``: Inductor records the forward and the
backward as CUDA graphs and replays them, which removes the per-kernel launch cost of small models.
The outputs of a CUDA-graph replay live in a memory pool that the next replay reuses; the trainer
uses a step's outputs (loss, logits, live values) only within that step (train metrics, monitors;
the non-finite guard copies a loss it checks at a later step, ``NonFiniteGuard.copy_waiting``),
and :func:`torch.compiler.cudagraph_mark_step_begin` marks each new step. Where Inductor cannot
record a graph (it logs why, e.g. a CPU tensor among the inputs) it runs that graph compiled without
CUDA graphs. That CUDA path has not been run by this project's tests (they ran on CPUs without a
GPU): it is written to PyTorch's documented use, not verified here.

Failure: if compiling raises (no C++ compiler for the CPU backend, an operator the backend does not
support), the same call runs eagerly; when that succeeds the rest of the run is eager and
``on_fallback`` gets one message. An error the eager call raises too is the model's own and
propagates unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from . import compile as module_compile
from ..methods.base import Method
from .compile import _mark_batch_dynamic, fallback_message


def refusal(method) -> str | None:
    """Why ``method``'s step cannot be compiled as a whole, or None when it can."""
    cls = type(method)
    if not getattr(cls, "step_compile_ok", False):
        return (f"method '{method.name}' does not declare its training step capturable as one graph "
                f"(Method.step_compile_ok; only methods whose step is forward, loss, one backward and one "
                f"optimiser step with no Python decisions on tensor values in between declare it)")
    if cls.train_step is not Method.train_step:
        return f"method '{method.name}' has its own train_step, which does not go through Method.forward_loss"
    return None


def modules_compile_ok(method, train_cfg) -> bool:
    """Whether ``method`` (with its options) runs with ``train.compile = true``: the fallback of "step"."""
    if not getattr(type(method), "compile_ok", True):
        return False
    return not type(method).check_preset(method.cfg, dataclasses.replace(train_cfg, compile=True))


def static_batches(train_cfg, n_train: int) -> bool:
    """Whether every training batch has ``batch_size`` rows (the last one included)."""
    return train_cfg.drop_last or n_train % train_cfg.batch_size == 0


class CompiledStep:
    """``method.forward_loss`` compiled, with an eager fallback; hand :attr:`forward_loss` to the step."""

    def __init__(self, method, device: torch.device, static_shapes: bool,
                 on_fallback: Callable[[str], None] | None = None):
        self.method = method
        self.on_fallback = on_fallback
        self.active = True
        self.failure: str | None = None
        self.cuda_graphs = device.type == "cuda" and static_shapes and module_compile.BACKEND == "inductor"
        self.dynamic = not (device.type == "cuda" and static_shapes)
        torch._functorch.config.force_non_lazy_backward_lowering = True
        import torch._inductor.config as inductor_config
        inductor_config.fallback_random = True
        options: dict[str, Any] = {"mode": "reduce-overhead"} if self.cuda_graphs else {}
        self.compiled = torch.compile(method.forward_loss, backend=module_compile.BACKEND, **options)

    def forward_loss(self, x: dict[str, torch.Tensor], y: torch.Tensor, step):
        """``(total, loss, output, live)`` as :meth:`Method.forward_loss` gives them, computed compiled."""
        if not self.active:
            return self.method.forward_loss(x, y, step)
        if self.dynamic:
            _mark_batch_dynamic(x)
            _mark_batch_dynamic(y)
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        try:
            return self.compiled(x, y, step)
        except Exception as exc:  # noqa: BLE001 - decided below by running the same call eagerly
            out = self.method.forward_loss(x, y, step)  # the model's own error raises here again
            self.fall_back(exc)
            return out

    def fall_back(self, exc: BaseException) -> None:
        """Eager for the rest of the run; ``on_fallback`` is told once."""
        if not self.active:
            return
        self.active = False
        self.failure, message = fallback_message(exc, 'train.compile = "step"')
        if self.on_fallback is not None:
            self.on_fallback(message)
