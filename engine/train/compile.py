"""``train.compile = true``: :func:`torch.compile` for the model's encoders and fusion head, in place.

(``train.compile = "step"`` compiles the method's whole forward, loss and backward as one graph
instead: :mod:`engine.train.step_compile`; it falls back to this module's compilation for a method
whose step cannot be captured.)

What is compiled: each modality encoder and the fusion module, each with ``nn.Module.compile``
semantics (the module's ``__call__`` goes through the compiled function). Not compiled: the
method's step (its Python control flow: stages, alternating updates, per-modality backward calls,
gradient modulation between backward and step, parameters added during training) and the
method's own modules (AUG's classifiers, MCR's decoder), the trainer, the optimiser (PyTorch's
fused kernels already), the monitors' probes. So a method whose per-step structure changes
(mikd's stages, AUG's growing ensemble, MCR's pre-training stage) still runs compiled encoders
and head: the graphs are per module and do not depend on the step's structure. A method whose
step cannot run through compiled modules declares ``compile_ok = False`` on its class
(:class:`engine.methods.base.Method`) and a preset asking for both with ``train.compile = true`` is
refused before any run starts (exit 2).

In place means the parameters stay the model's own ``nn.Parameter`` objects and the state-dict keys
do not change (no ``_orig_mod.`` prefix as with ``torch.compile(model)``), so a checkpoint of a
compiled run loads into an eager model and the other way round: ``train.compile`` may change on
resume. ``copy.deepcopy`` of a compiled module (the trainer's selected-checkpoint model, mikd's
teacher snapshot) is an eager module (``nn.Module.__getstate__`` drops the compiled call).

Shapes: the batch dimension (dim 0 of every tensor argument, including the tensors of a dict of
features) is marked dynamic before each call (:func:`torch._dynamo.maybe_mark_dynamic`), so the
first compilation is already shape-polymorphic in the batch: the last short training batch,
evaluation batches of ``eval_batch_size`` rows, a monitor's or MCR's stacked K x B rows reuse the
same graph instead of triggering a recompilation each (PyTorch's automatic dynamic shapes would
compile a static graph first and a dynamic one on the second batch size). A batch of exactly one
row is specialised by the compiler (one extra graph when it occurs). Separate graphs are still
made for what changes the computation: train vs eval mode (BatchNorm, dropout), grad vs no-grad
(evaluation), autocast, and MCR's head call with detached parameters.

Randomness: Inductor's own random-number kernels would draw dropout masks from another stream than
eager PyTorch, so a compiled run would not reproduce an eager one and a resume across the switch
would not continue the same stream; ``fallback_random`` keeps PyTorch's random operators (and the
global generator whose state the checkpoints save), so compiled and eager runs of the same seed
match up to floating-point reassociation, at the cost of unfused dropout kernels.

Failure: compilation happens on the first call of each graph. If it raises (no C++ compiler for
the CPU backend, an operator the backend does not support), the call is repeated eagerly; when the
eager call succeeds every module of the model is switched back to eager for the rest of the
process and ``on_fallback`` gets one message (the trainer reports it as a warning). An error
that the eager call raises too is the model's own error and propagates unchanged. The backward
graph is lowered together with the forward (``force_non_lazy_backward_lowering``) so that a
backend failure surfaces in the forward call, where it can be caught, rather than in
``loss.backward()``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

BACKEND = "inductor"   # tests switch to "aot_eager" (same capture, no C++ code generation) for speed


def _mark_batch_dynamic(value: Any) -> None:
    """Mark dim 0 of every tensor in ``value`` (a tensor, or a dict/list/tuple of them) dynamic."""
    if isinstance(value, torch.Tensor):
        if value.dim() > 0 and value.shape[0] > 1:
            torch._dynamo.maybe_mark_dynamic(value, 0)
    elif isinstance(value, dict):
        for v in value.values():
            _mark_batch_dynamic(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _mark_batch_dynamic(v)


class _CompiledCall:
    """A module's compiled ``__call__`` with a dynamic batch dimension and an eager fallback."""

    def __init__(self, module: nn.Module, compiled_modules: "CompiledModules"):
        self.module = module
        self.owner = compiled_modules
        self.compiled = torch.compile(module._call_impl, backend=BACKEND)

    def __call__(self, *args, **kwargs):
        _mark_batch_dynamic(args)
        _mark_batch_dynamic(kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - decided below by running the same call eagerly
            out = self.module._call_impl(*args, **kwargs)  # the model's own error raises here again
            self.owner.fall_back(exc)
            return out


class CompiledModules:
    """The modules of one model that run compiled, and the switch back to eager."""

    def __init__(self, modules: dict[str, nn.Module], on_fallback: Callable[[str], None] | None = None):
        self.modules = modules
        self.on_fallback = on_fallback
        self.active = True
        self.failure: str | None = None
        torch._functorch.config.force_non_lazy_backward_lowering = True
        import torch._inductor.config as inductor_config
        inductor_config.fallback_random = True
        for module in modules.values():
            module._compiled_call_impl = _CompiledCall(module, self)

    @property
    def names(self) -> list[str]:
        return list(self.modules)

    def fall_back(self, exc: BaseException) -> None:
        """Every module back to eager; ``on_fallback`` is told once."""
        for module in self.modules.values():
            module._compiled_call_impl = None
        if not self.active:
            return
        self.active = False
        self.failure, message = fallback_message(exc, "train.compile")
        if self.on_fallback is not None:
            self.on_fallback(message)

    def uncompile(self) -> None:
        """Back to eager without a message (used when the caller decides, e.g. a benchmark)."""
        for module in self.modules.values():
            module._compiled_call_impl = None
        self.active = False


def fallback_message(exc: BaseException, setting: str) -> tuple[str, str]:
    """``(failure, message)`` for a compilation that failed with ``exc``: the failure in one line (its
    type and last message line, at most 300 characters) and the warning for the user, naming ``setting``."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    reason = f"{type(exc).__name__}: {lines[-1] if lines else 'no message'}"
    failure = reason if len(reason) <= 300 else reason[:297] + "..."
    message = (f"{setting}: torch.compile failed ({failure}); training continues without "
               f"compilation (eager mode, same results, slower). Set train.compile = false to skip the attempt"
               f"{'; the CPU backend needs a C++ compiler (gcc or clang)' if _looks_like_compiler(exc) else ''}.")
    return failure, message


def _looks_like_compiler(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(w in text for w in ("cxx", "c++", "compiler", "gcc", "clang"))


def compile_model(model, on_fallback: Callable[[str], None] | None = None) -> CompiledModules:
    """Compile ``model``'s encoders (``encoder/<m>``) and fusion head (``fusion``) in place."""
    modules = {f"encoder/{m}": model.encoders[m] for m in model.modalities}
    modules["fusion"] = model.fusion
    return CompiledModules(modules, on_fallback)


def graph_count() -> int:
    """Graphs compiled so far in this process (Dynamo's counter; for tests and the benchmark)."""
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])
