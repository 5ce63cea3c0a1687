"""Gradient routing for ``mcr``'s permutation game: the pieces that change which parameters a value's
gradient reaches, and by how much, without changing the value (see :mod:`engine.methods.mcr`).

* :func:`with_gradient_scale` (:class:`ScaleGradient`): ``x`` bit for bit, its gradient multiplied by a
  constant;
* :class:`PermuteRows`: N row permutations of a batch, with a deterministic backward;
* :func:`head_parameters`: a module's parameters for ``torch.func.functional_call`` with their
  gradient scaled (or cut);
* :func:`dropout_off`: a module's dropout layers in eval mode for a few calls.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class ScaleGradient(torch.autograd.Function):
    """``x`` broadcast with ``scale`` in value (no arithmetic: a view), its gradient multiplied by
    ``scale`` and summed back to ``x``'s shape: what ``x.detach() + (x - x.detach()) * scale`` computes,
    without that expression's three passes over the broadcast tensor in the forward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        ctx.shape = x.shape
        return x.expand(torch.broadcast_shapes(x.shape, scale.shape))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (scale,) = ctx.saved_tensors
        return (grad * scale).sum_to_size(ctx.shape), None


def with_gradient_scale(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x`` in value (bit for bit; broadcast with ``scale``), with its gradient multiplied by ``scale``."""
    scale = scale.detach() if isinstance(scale, torch.Tensor) else torch.tensor(scale, dtype=x.dtype, device=x.device)
    return ScaleGradient.apply(x, scale)


class PermuteRows(torch.autograd.Function):
    """``z[perms]``: (N, B, ...) from ``z`` (B, ...) and N permutations ``perms`` (N, B) of range(B).

    The backward gathers the incoming gradient by each inverse permutation and sums over the N
    permutations in order: deterministic on every device, unlike the backward of ``z[idx]`` with
    repeated indices (an accumulating scatter, whose order depends on the threads on the CPU)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(perms)
        return z[perms]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (perms,) = ctx.saved_tensors
        inverse = perms.argsort(dim=-1)
        rows = torch.arange(perms.shape[0], device=perms.device)[:, None]
        return grad[rows, inverse].sum(0), None


def permute_rows(z: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """(N, B, ...): ``z`` (B, ...) under each of the N permutations ``perms`` (N, B) (:class:`PermuteRows`)."""
    return PermuteRows.apply(z, perms)


def head_parameters(fusion: nn.Module, scale: float) -> dict[str, torch.Tensor]:
    """The fusion's parameters for ``functional_call``, their gradient multiplied by ``scale`` (detached at 0)."""
    if scale == 1:
        return dict(fusion.named_parameters())
    if scale == 0:
        return {k: p.detach() for k, p in fusion.named_parameters()}
    return {k: with_gradient_scale(p, scale) for k, p in fusion.named_parameters()}


def active_dropout_layers(module: nn.Module) -> list[nn.Module]:
    """``module``'s dropout layers that drop something now (training mode, p > 0)."""
    return [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0]


def has_active_dropout(module: nn.Module) -> bool:
    return bool(active_dropout_layers(module))


@contextmanager
def dropout_off(module: nn.Module):
    """``module``'s active dropout layers in eval mode for the duration (restored afterwards); nothing else
    changes mode."""
    layers = active_dropout_layers(module)
    for m in layers:
        m.train(False)
    try:
        yield
    finally:
        for m in layers:
            m.train(True)
