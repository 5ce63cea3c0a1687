"""Evaluation metrics of a split, accumulated on the device over batches (confusion matrices and
loss sums; scores from :mod:`engine.classification`), and their one-transfer move to the host."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..classification import confusion, macro_f1


class SplitScorer:
    """Accumulates confusion matrices and loss sums over batches for fused and per-modality logits.

    A modality's scores count only the rows where its value is present (``present`` in :meth:`add`): on
    a row where it is absent its input is the train mean, so its own prediction there says nothing
    about it. The fused scores count every row. A target none of whose rows was present scores NaN.
    """

    def __init__(self, targets: list[str], n_classes: int, device: torch.device):
        self.n_classes = n_classes
        self.conf = {t: torch.zeros(n_classes, n_classes, dtype=torch.long, device=device) for t in targets}
        self.loss = {t: torch.zeros((), dtype=torch.float64, device=device) for t in targets}
        self.count = {t: torch.zeros((), dtype=torch.long, device=device) for t in targets}
        self.masked: set[str] = set()

    def add(self, logits: dict[str, torch.Tensor], y: torch.Tensor,
            present: dict[str, torch.Tensor] | None = None) -> None:
        """One batch; ``present``: target -> bool (B,), False on the rows that target must not count
        (a modality absent there); a target not in it counts every row."""
        for t, z in logits.items():
            z = z.float()
            keep = None if present is None else present.get(t)
            if keep is None:
                self.conf[t] += confusion(z.argmax(1), y, self.n_classes)
                self.loss[t] += F.cross_entropy(z, y, reduction="sum").double()
                self.count[t] += y.numel()
                continue
            self.masked.add(t)
            self.conf[t] += masked_confusion(z.argmax(1), y, keep, self.n_classes)
            self.loss[t] += (F.cross_entropy(z, y, reduction="none") * keep).sum().double()
            self.count[t] += keep.sum()

    def tensors(self, split: str) -> dict[str, torch.Tensor]:
        """``<split>/acc|f1|loss/<target>`` as 0-d device tensors."""
        out = {}
        for t, conf in self.conf.items():
            n = self.count[t]
            acc, f1, loss = conf.diagonal().sum().double() / n.clamp_min(1), macro_f1(conf), self.loss[t] / n.clamp_min(1)
            if t in self.masked:   # no present row: no score (NaN), not a score of 0
                acc, f1, loss = (torch.where(n > 0, v, torch.full_like(v, float("nan"))) for v in (acc, f1, loss))
            out[f"{split}/acc/{t}"], out[f"{split}/f1/{t}"], out[f"{split}/loss/{t}"] = acc, f1, loss
        return out


def masked_confusion(pred: torch.Tensor, y: torch.Tensor, keep: torch.Tensor, n_classes: int) -> torch.Tensor:
    """:func:`~engine.classification.confusion` of the rows where ``keep`` is True (the others counted in an
    extra bin that is dropped: no host sync)."""
    cells = n_classes * n_classes
    index = torch.where(keep, y * n_classes + pred, torch.full_like(y, cells))
    return torch.bincount(index, minlength=cells + 1)[:cells].reshape(n_classes, n_classes)


def to_host(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Move many 0-d tensors to the host in one transfer: one stack per dtype (no op per value), all
    converted to float64 (exact for float32 and for integers below 2^53), one copy."""
    if not values:
        return {}
    keys = list(values)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, v in enumerate(values.values()):
        by_dtype.setdefault(v.dtype, []).append(i)
    tensors = list(values.values())
    with torch.no_grad():
        blocks = [torch.stack([t if t.dim() == 0 else t.reshape(()) for t in (tensors[i] for i in idx)]).double()
                  for idx in by_dtype.values()]
        flat = (blocks[0] if len(blocks) == 1 else torch.cat(blocks)).cpu().tolist()
    found = dict(zip((keys[i] for idx in by_dtype.values() for i in idx), flat))
    return {k: found[k] for k in keys}
