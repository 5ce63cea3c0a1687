"""Data-parallel training over several processes: sharded batches and averaged gradients.

Each rank computes the same global batch order (``train_epoch`` with the run seed: the order is a
function of (seed, epoch) alone) and takes its contiguous part of every global batch
(:class:`ShardedData`), so the union of the ranks' batches is exactly the single-process batch.
A global batch whose size is not a multiple of the number of processes N (the last, short one,
when ``train.drop_last`` is false) is first padded to the next multiple by repeating its own first
rows, as ``torch.utils.data.DistributedSampler`` pads an epoch: every rank then holds the same
number of rows (which :func:`engine.collectives.gather_rows` and the plain gradient mean rely on), and
those few rows count twice in that one step. An epoch given by a method's plan
(:class:`~engine.data.plan.EpochPlan`) is sharded in the same way, global batch by global batch; a
rank's batches carry the sample ids (and dropped-modality masks) of its own rows.

Gradients: the methods call ``model.encode`` / ``model.head`` / the encoders directly (several
passes per step, per-modality backward calls, parameters added during training), not one
``model.forward``, so ``torch.nn.parallel.DistributedDataParallel``'s reducer, whose hooks are armed
by the wrapper's forward, would miss most of them. The trainer therefore does what DDP does,
explicitly: :func:`average_gradients` all-reduces the gradients of every optimised parameter that
has one, coalesced into one flat buffer per device and dtype, right after each backward and before
the method's ``after_backward``, and divides by N. For a loss that is a mean over the batch rows,
the mean of the ranks' gradients over equal shards is the gradient of the mean over the whole
batch: exactly DDP's averaging, so one step of N ranks with B/N rows each equals one step of one
process with B rows (up to float summation order). Gradient modulation (OGM-GE, AGM) then sees the
same averaged gradients on every rank, and any noise it draws comes from the global RNG, which is
seeded identically on every rank and consumed identically (same shapes everywhere).
:func:`sync_module_state` broadcasts rank 0's parameters and buffers at the start, and its buffers
(BatchNorm running statistics) before every step, as DDP's ``broadcast_buffers`` does; batch
statistics themselves are per shard (as DDP without SyncBatchNorm), so a model with BatchNorm gets
close to, not exactly, the single-process step.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .. import collectives
from ..data.batch import select_rows
from ..data.dataset import EpochBatches
from ..data.plan import EpochPlan

__all__ = ["shard_rows", "ShardedData", "ShardedBatches", "average_gradients", "average_tensors", "gather_output", "sync_module_state",
           "module_buffers"]


def shard_rows(idx: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous part of ``idx`` (along its first dimension) after padding it to a
    multiple of ``world`` by repeating its first rows; every rank gets ``ceil(len(idx) / world)`` of them."""
    n = idx.shape[0]
    k = -(-n // world)
    if n and k * world != n:
        idx = idx.repeat(-(-k * world // n), *([1] * (idx.dim() - 1)))[:k * world]
    return idx[rank * k:(rank + 1) * k]


class ShardedBatches:
    """An epoch of another batch source's batches (:class:`~engine.data.batch.Batch`), each cut to this
    rank's rows."""

    def __init__(self, batches, rank: int, world: int):
        self.batches, self.rank, self.world = batches, rank, world

    def __len__(self) -> int:
        return len(self.batches)

    def iterate(self, start: int = 0):
        for batch in self.batches.iterate(start):
            yield select_rows(batch, shard_rows(torch.arange(batch.y.shape[0], device=batch.y.device),
                                                self.rank, self.world))


class ShardedData:
    """A batch source whose training batches are this rank's shards of the global batches.

    Everything else (``split_size``, ``class_counts``, ``eval_batches``, ``n_classes``, ...) is the
    wrapped source's: sizes and schedules are global, and evaluation sees whole splits. Resident data
    (:class:`~engine.data.dataset.EpochBatches`) is sharded on its index slices, before the gather, so
    a rank never copies the other ranks' rows; any other source is sharded batch by batch.
    """

    def __init__(self, data, rank: int, world: int):
        self.data, self.rank, self.world = data, rank, world

    @classmethod
    def wrap(cls, data):
        """``data`` sharded for this process, or ``data`` itself in a single process."""
        if not collectives.is_distributed() or isinstance(data, cls):
            return data
        return cls(data, collectives.rank(), collectives.world_size())

    def __getattr__(self, name):
        return getattr(self.data, name)

    def train_epoch(self, seed: int, epoch: int, batch_size: int, drop_last: bool, plan: EpochPlan | None = None):
        """This rank's shards of the global batches of ``epoch`` (or of ``plan``'s epoch)."""
        batches = self.data.train_epoch(seed, epoch, batch_size, drop_last, plan=plan)
        if isinstance(batches, EpochBatches):
            def shard(parts):
                return None if parts is None else [shard_rows(p, self.rank, self.world) for p in parts]
            return EpochBatches(batches.data, shard(batches.ids), shard(batches.masks), shard(batches.rows))
        return ShardedBatches(batches, self.rank, self.world)

    def subset(self, train: torch.Tensor, val: torch.Tensor | None = None) -> "ShardedData":
        """The wrapped source's :meth:`~engine.data.dataset.TensorData.subset`, sharded the same way."""
        return ShardedData(self.data.subset(train, val), self.rank, self.world)


def _flat_groups(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return list(groups.values())


@torch.no_grad()
def average_gradients(params: list[torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
    """Replace each parameter's gradient by its mean over the ranks (one all-reduce per device and
    dtype of the gradients); returns the ranks' mean ``loss``, reduced in the same collective, so that
    a non-finite loss on any rank is seen by every rank. The identity in a single process."""
    return average_tensors([p.grad for p in params if p.grad is not None], loss)


@torch.no_grad()
def average_tensors(grads: list[torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
    """:func:`average_gradients` for gradient tensors held outside ``.grad`` (``step.grads``): each is
    replaced in place by its mean over the ranks; returns the ranks' mean ``loss``."""
    if not collectives.is_distributed():
        return loss
    n = collectives.world_size()
    loss = loss.detach().reshape(1)
    done = False
    for group in _flat_groups(grads):
        with_loss = not done and group[0].device == loss.device and group[0].dtype.is_floating_point
        parts = [g.reshape(-1) for g in group] + ([loss.to(group[0].dtype)] if with_loss else [])
        flat = torch.cat(parts)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= n
        sizes = [g.numel() for g in group]
        if with_loss:
            loss, done = flat[-1:].to(loss.dtype), True
            flat = flat[:-1]
        torch._foreach_copy_(group, [part.view_as(g) for part, g in zip(flat.split(sizes), group)])
    if not done:
        loss = collectives.all_reduce_mean(loss)
    return loss.reshape(())


def gather_output(out, y: torch.Tensor):
    """The global batch's detached model output and labels (every rank's rows, in rank order)."""
    rows = collectives.gather_rows
    return (type(out)(fused=rows(out.fused.detach()), logits={m: rows(v.detach()) for m, v in out.logits.items()},
                      features={m: rows(v.detach()) for m, v in out.features.items()}), rows(y))


def module_buffers(*modules: torch.nn.Module) -> list[torch.Tensor]:
    return [b for module in modules for b in module.buffers()]


def sync_module_state(*modules: torch.nn.Module, buffers_only: bool = False) -> None:
    """Overwrite the parameters (unless ``buffers_only``) and buffers of ``modules`` with rank 0's."""
    if not collectives.is_distributed():
        return
    tensors = module_buffers(*modules)
    if not buffers_only:
        tensors = [p.data for module in modules for p in module.parameters()] + tensors
    collectives.broadcast_tensors(tensors)
