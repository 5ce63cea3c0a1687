"""Multi-process helpers: the identity when a run is a single process.

Methods call :func:`all_reduce_sum` on the cross-batch statistics they turn into coefficients
(OGM scores, AUG confidences, ...), so that every rank of a multi-process run applies the same
coefficients; in a single process these calls cost nothing.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "world_size", "rank", "is_main", "all_reduce_sum", "all_reduce_mean"]


def is_distributed() -> bool:
    """True inside a multi-process run (a process group is initialised with more than one rank)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """The process that writes the run directory (rank 0, or the only process)."""
    return rank() == 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over all ranks (a new tensor; ``t`` itself in a single process)."""
    if not is_distributed():
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over all ranks."""
    if not is_distributed():
        return t
    return all_reduce_sum(t) / world_size()
