"""The memory a model needs to train, estimated without allocating it.

The model of a preset is built on PyTorch's ``meta`` device (shapes and dtypes, no storage: a
23 GB model costs nothing here), and one training batch is passed through it there, with hooks
recording the size of every layer's output. From that:

* **parameters** (and buffers such as BatchNorm's running statistics), at their dtype;
* **gradients**, one per trainable parameter;
* **optimiser state**: Adam and AdamW keep two moments per trainable parameter, SGD with momentum
  one buffer, plain SGD nothing;
* **activations** of one training batch: every layer's output is kept for the backward pass (the
  sum over leaf modules), plus the largest one again for the gradient flowing back through it. An
  upper bound for ``train.precision = "bf16"``, whose activations take half that.

A method's own modules (an auxiliary head, a teacher) and the data are not counted: the data are
checked against ``data.memory_budget`` on their own (:mod:`engine.data.memory`), and what is
available is measured after they are loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..data.memory import format_bytes as _fmt
from .multimodal import ModelSpec, build_model

ADAM_STATES = 2   # exp_avg, exp_avg_sq
MOMENTUM_STATES = 1


@dataclass(frozen=True)
class ModelSize:
    """The estimate, in bytes, of what training the model takes, part by part."""

    parameters: int          # number of parameter elements (buffers not included)
    parameter_bytes: int     # parameters and buffers
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int    # one training batch, forward and backward
    batch_size: int
    optimizer: str

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes + self.activation_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes}

    def breakdown(self) -> str:
        """One line: the total and its parts, e.g. for an error message or ``mmbal bench``."""
        return (f"{_fmt(self.total_bytes)} = parameters {_fmt(self.parameter_bytes)} ({self.parameters:,} values) "
                f"+ gradients {_fmt(self.gradient_bytes)} + {self.optimizer} state {_fmt(self.optimizer_bytes)} "
                f"+ activations of a batch of {self.batch_size} {_fmt(self.activation_bytes)}")


def optimizer_states(optimizer: str, momentum: float) -> int:
    """Tensors the optimiser keeps per trainable parameter."""
    if optimizer in ("adam", "adamw"):
        return ADAM_STATES
    return MOMENTUM_STATES if momentum > 0 else 0


def meta_model(spec: ModelSpec, shapes: dict[str, tuple[int, ...]], n_classes: int) -> nn.Module:
    """The model of ``spec`` on the ``meta`` device: every shape, no storage.

    The global RNG is left as it was (initialisers on ``meta`` tensors draw nothing, but a module
    could draw on the CPU while being built)."""
    state = torch.random.get_rng_state()
    try:
        with torch.device("meta"):
            return build_model(spec, shapes, n_classes)
    finally:
        torch.random.set_rng_state(state)


def _tensor_bytes(value) -> int:
    """Bytes of the tensors in a module's output (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    return sum(_tensor_bytes(v) for v in vars(value).values()) if hasattr(value, "__dataclass_fields__") else 0


def activation_bytes(model: nn.Module, shapes: dict[str, tuple[int, ...]], batch_size: int) -> int:
    """Bytes the activations of one training batch take: the outputs of every leaf module (kept for
    the backward pass) plus the largest one (the gradient flowing back through it), from a forward
    pass on the ``meta`` device."""
    sizes: list[int] = []
    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(lambda _m, _i, out: sizes.append(_tensor_bytes(out))) for m in leaves]
    try:
        inputs = {m: torch.empty((batch_size, *shape), device="meta") for m, shape in shapes.items()}
        output = model(inputs)
        sizes.append(_tensor_bytes(output))
    finally:
        for h in handles:
            h.remove()
    return sum(sizes) + max(sizes, default=0)


def estimate_model_size(spec: ModelSpec, shapes: dict[str, tuple[int, ...]], n_classes: int, batch_size: int,
                        optimizer: str = "adam", momentum: float = 0.9) -> ModelSize:
    """What training the model of ``spec`` on samples of ``shapes`` takes (see the module docstring).

    Raises what :func:`~engine.models.multimodal.build_model` raises for a model that cannot be built
    (a :class:`~engine.errors.PresetError`)."""
    model = meta_model(spec, shapes, n_classes)
    params = {id(p): p for p in model.parameters()}.values()
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    parameter_bytes = sum(p.numel() * p.element_size() for p in params)
    parameter_bytes += sum(b.numel() * b.element_size() for b in model.buffers())
    model.train()
    return ModelSize(parameters=sum(p.numel() for p in params), parameter_bytes=parameter_bytes,
                     gradient_bytes=trainable, optimizer_bytes=optimizer_states(optimizer, momentum) * trainable,
                     activation_bytes=activation_bytes(model, shapes, batch_size), batch_size=batch_size,
                     optimizer=optimizer)
