"""One training batch as the batch sources give it: inputs, labels, sample ids and dropped modalities."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Batch", "zero_dropped", "select_rows"]


class Batch(NamedTuple):
    """A training batch on the data's device.

    ``x``: modality name -> inputs (B, ...); ``y``: labels (B,); ``ids``: int64 (B,), each row's index
    in the train split of the source that made the batch (``0 .. split_size("train") - 1``: a row of
    ``data.splits["train"]`` for resident data), the same row id every epoch, so a method can keep
    per-sample state in a tensor of ``split_size("train")`` rows. ``masks``: ``None`` when no input
    is dropped, else modality name -> bool (B,), ``False`` where the epoch's plan dropped that
    modality of that row (:class:`~engine.data.plan.EpochPlan`; its input in ``x`` is then 0, the
    standardised train mean, as for an absent value).
    """

    x: dict[str, torch.Tensor]
    y: torch.Tensor
    ids: torch.Tensor
    masks: dict[str, torch.Tensor] | None = None


def zero_dropped(x: dict[str, torch.Tensor], keep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``x`` with the rows where ``keep[m]`` is False replaced by zeros (one ``where`` per modality)."""
    out = {}
    for m, t in x.items():
        mask = keep[m].view(-1, *([1] * (t.dim() - 1)))
        out[m] = torch.where(mask, t, t.new_zeros(()))
    return out


def select_rows(batch: Batch, rows: torch.Tensor) -> Batch:
    """``batch`` restricted to the positions ``rows`` (on the batch's device), in that order."""
    def take(t: torch.Tensor) -> torch.Tensor:
        return t.index_select(0, rows.to(t.device))
    masks = None if batch.masks is None else {m: take(k) for m, k in batch.masks.items()}
    return Batch({m: take(t) for m, t in batch.x.items()}, take(batch.y), take(batch.ids), masks)
