"""An epoch plan: the training rows one epoch visits, and which of their modalities it drops.

By default an epoch visits every train row once, in the order of a permutation seeded by (run
seed, epoch). A method may instead supply an :class:`EpochPlan` for an epoch, for data-level
resampling: e.g. Modality Valuation (Wei et al., "Enhancing multimodal cooperation via
sample-level modality valuation", CVPR 2024) re-samples the samples whose weak modality
contributes little, with the other modality dropped, so that the weak one must carry them.

* ``rows``: int64 (N,), N >= 1, train-split row indices (``0 .. split_size("train") - 1``, the
  ids :class:`~engine.data.batch.Batch` reports); a row may appear any number of times, or not at
  all. The epoch then has ``ceil(N / batch_size)`` batches (``floor`` with ``drop_last``).
* ``masks``: optional bool (N, M), one column per modality in the data's modality order
  (``data.modality_names``); ``False`` drops that modality of that sample: the batch source
  replaces its input by zeros (the standardised train mean, as for an absent value) on the device
  before the batch reaches the method, and reports the mask in ``Batch.masks``.
* ``shuffle``: True (the default) visits the plan's samples (each row with its mask row) in the
  order of the same (seed, epoch) permutation as a normal epoch, of length N; so the plan
  ``rows = arange(n_train)`` gives exactly the normal epoch. False keeps the given order (a method
  that orders the samples itself).

The order is a function of (plan, seed, epoch) alone, so a trainer that saves the epoch's plan in
its checkpoint (:meth:`EpochPlan.state_dict`, tensors and a bool, loadable with
``torch.load(weights_only=True)``) and passes :meth:`EpochPlan.from_state` of it again replays a
resumed epoch exactly, from any batch on. Plans are for resident data; streamed data (which reads
row groups in a fixed window order) refuse them with a :class:`~engine.errors.DataError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError

__all__ = ["EpochPlan", "check_rows", "resident_only"]


@dataclass(frozen=True)
class EpochPlan:
    """The samples of one epoch (see the module docstring)."""

    rows: torch.Tensor
    masks: torch.Tensor | None = None
    shuffle: bool = True

    def __post_init__(self):
        if self.rows.dim() != 1 or self.rows.numel() < 1 or self.rows.dtype != torch.int64:
            raise ValueError(f"EpochPlan.rows must be a non-empty 1-d int64 tensor, got {self.rows.dtype} "
                             f"{tuple(self.rows.shape)}")
        if self.masks is not None and (self.masks.dtype != torch.bool or self.masks.dim() != 2
                                       or self.masks.shape[0] != self.rows.numel()):
            raise ValueError(f"EpochPlan.masks must be a bool tensor of shape ({self.rows.numel()}, n_modalities), "
                             f"got {self.masks.dtype} {tuple(self.masks.shape)}")

    def __len__(self) -> int:
        return self.rows.numel()

    def check(self, n_train: int, modalities: list[str]) -> None:
        """Raise ValueError unless every row is a train row of a source with ``n_train`` rows and the
        masks have one column per modality (one host read per epoch: the rows' range)."""
        check_rows(self.rows, n_train, "EpochPlan.rows")
        if self.masks is not None and self.masks.shape[1] != len(modalities):
            raise ValueError(f"EpochPlan.masks has {self.masks.shape[1]} columns; the data have "
                             f"{len(modalities)} modalities ({', '.join(modalities)})")

    def to(self, device: torch.device | str) -> "EpochPlan":
        masks = None if self.masks is None else self.masks.to(device)
        return EpochPlan(self.rows.to(device), masks, self.shuffle)

    def state_dict(self) -> dict:
        """The plan as tensors and a bool, for a checkpoint."""
        state = {"rows": self.rows, "shuffle": bool(self.shuffle)}
        if self.masks is not None:
            state["masks"] = self.masks
        return state

    @classmethod
    def from_state(cls, state: dict, device: torch.device | str | None = None) -> "EpochPlan":
        """The plan :meth:`state_dict` saved, on ``device`` (default: where its tensors are)."""
        plan = cls(state["rows"], state.get("masks"), bool(state["shuffle"]))
        return plan if device is None else plan.to(device)


def check_rows(rows: torch.Tensor, n: int, what: str) -> None:
    """Raise ValueError unless ``rows`` (1-d int64) are all in ``0 .. n - 1`` (one host read)."""
    if rows.dim() != 1 or rows.dtype != torch.int64:
        raise ValueError(f"{what} must be a 1-d int64 tensor, got {rows.dtype} {tuple(rows.shape)}")
    if rows.numel() == 0:
        return
    low, high = torch.aminmax(rows)
    low, high = int(low), int(high)
    if low < 0 or high >= n:
        raise ValueError(f"{what} must be train-split row indices in 0..{n - 1}; got values in {low}..{high}")


def resident_only(source: str, what: str) -> DataError:
    """The error streamed data raise for what only resident data support."""
    return DataError(f"{source}: {what} needs the data resident on the device, but they are streamed from disk; "
                     f"set data.mode = \"resident\" (with a data.memory_budget large enough to hold them), or "
                     f"use a method that does not resample the training data")
