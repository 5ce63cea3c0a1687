"""Multi-process helpers: the identity when a run is a single process.

A multi-process run (``torchrun --nproc-per-node N -m mmbal_cli run ...`` or ``mmbal run --nproc N``)
is N copies of the same program, one per rank, that agree on everything but the rows of each
training batch (see :mod:`engine.train.data_parallel`). Methods call :func:`all_reduce_sum` on the
cross-batch statistics they turn into coefficients (OGM scores, AUG confidences, ...), and
:func:`gather_rows` / :func:`global_batch_term` for losses over the whole batch (MCR's permutation
game), so that every rank applies the same coefficients; in a single process these calls cost
nothing.

:func:`process_group` opens the group from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) with both backends, ``gloo`` for CPU tensors and
``nccl`` for CUDA ones (collectives go to the backend of their tensors' device), so the group can
be opened before the run's device is known; :func:`local_device` then gives each rank its own GPU
(``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import UsageError

__all__ = ["is_distributed", "world_size", "rank", "is_main", "all_reduce_sum", "all_reduce_mean",
           "all_reduce_max", "gather_rows", "global_batch_term", "broadcast_object", "broadcast_tensors",
           "launched", "process_group", "local_device", "TIMEOUT"]

# A collective waits this long for the other ranks before raising: long enough for rank 0 to write a
# checkpoint on a slow disk while the others wait, short enough that a lost rank does not hang a job.
TIMEOUT = timedelta(minutes=30)


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


def _all_reduced(t: torch.Tensor, op) -> torch.Tensor:
    """``t`` reduced with ``op`` over all ranks (a new tensor; ``t`` itself in a single process)."""
    if not is_distributed():
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=op)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over all ranks (a new tensor; ``t`` itself in a single process)."""
    return _all_reduced(t, dist.ReduceOp.SUM)


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over all ranks."""
    if not is_distributed():
        return t
    return all_reduce_sum(t) / world_size()


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of ``t`` over all ranks."""
    return _all_reduced(t, dist.ReduceOp.MAX)


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of ``t`` concatenated in rank order, i.e. the global batch.

    Every rank must hold the same number of rows (the sharded batches are equal, see
    :mod:`engine.train.data_parallel`). This rank's rows keep their graph; the other ranks' are detached
    constants, so a loss over the result sends gradient only into this rank's part of the
    computation: see :func:`global_batch_term` for the factor that makes the averaged gradient right.
    """
    if not is_distributed():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.detach().contiguous())
    parts[rank()] = t
    return torch.cat(parts)


def global_batch_term(value: torch.Tensor) -> torch.Tensor:
    """A loss term computed on :func:`gather_rows` tensors, with its gradient scaled by the world size.

    Every rank computes the same value, but its backward reaches only its own rows; the gradients
    of the N ranks together make the full gradient, and the trainer *averages* gradients over the
    ranks (dividing by N), so each rank's gradient is multiplied by N here. The value is unchanged
    (bit for bit), so logged losses do not depend on N.
    """
    n = world_size()
    if n == 1:
        return value
    frozen = value.detach()
    return frozen + (value - frozen) * n


def broadcast_object(obj=None, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank (picklable objects, through the CPU backend)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=torch.device("cpu"))
    return box[0]


def broadcast_tensors(tensors: list[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` (in place, on every rank) with rank ``src``'s values, one collective per
    device and dtype (the tensors are flattened into one buffer)."""
    if not is_distributed() or not tensors:
        return
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    with torch.no_grad():
        for group in groups.values():
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            dist.broadcast(flat, src=src)
            for t, part in zip(group, flat.split([t.numel() for t in group])):
                t.copy_(part.view_as(t))


# -- the process group ------------------------------------------------------------------------------
def launched() -> bool:
    """True in a process started by torchrun (or ``mmbal run --nproc``): its environment names a rank."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


@contextmanager
def process_group():
    """Open the process group of a launched process (nothing otherwise) and destroy it at the end.

    Both backends are created (``cpu:gloo,cuda:nccl`` where CUDA exists, else ``gloo``); NCCL's
    communicator is only set up by the first collective on a CUDA tensor. Collectives time out after
    :data:`TIMEOUT`, so a rank that dies leaves the others with an error, not a hang.
    """
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_device(spec: str) -> str:
    """The device spec for this rank: ``auto``/``cuda`` mean ``cuda:LOCAL_RANK`` in a multi-process run
    on GPUs (one GPU per process); a single ``cuda:N`` cannot be shared by several processes."""
    if not is_distributed():
        return spec
    cuda = spec.startswith("cuda") or (spec == "auto" and torch.cuda.is_available())
    if not cuda:
        return spec
    if ":" in spec:
        raise UsageError(f"train.device: '{spec}' names one GPU, but this run has {world_size()} processes; use "
                         f"\"cuda\" or \"auto\" (process k uses cuda:k on its machine)")
    local = int(os.environ.get("LOCAL_RANK", rank()))
    if torch.cuda.is_available() and local < torch.cuda.device_count():
        torch.cuda.set_device(local)
    return f"cuda:{local}"  # checked by resolve_device: no CUDA, or fewer GPUs than processes, is an error
