"""Evaluation metrics of a split, accumulated on the device over batches (confusion matrices and
loss sums; scores from :mod:`engine.classification`), and their one-transfer move to the host."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..classification import confusion, macro_f1


class SplitScorer:
    """Accumulates confusion matrices and loss sums over batches for fused and per-modality logits."""

    def __init__(self, targets: list[str], n_classes: int, device: torch.device):
        self.n_classes = n_classes
        self.conf = {t: torch.zeros(n_classes, n_classes, dtype=torch.long, device=device) for t in targets}
        self.loss = {t: torch.zeros((), dtype=torch.float64, device=device) for t in targets}
        self.count = torch.zeros((), dtype=torch.long, device=device)

    def add(self, logits: dict[str, torch.Tensor], y: torch.Tensor) -> None:
        for t, z in logits.items():
            z = z.float()
            self.conf[t] += confusion(z.argmax(1), y, self.n_classes)
            self.loss[t] += F.cross_entropy(z, y, reduction="sum").double()
        self.count += y.numel()

    def tensors(self, split: str) -> dict[str, torch.Tensor]:
        """``<split>/acc|f1|loss/<target>`` as 0-d device tensors."""
        out = {}
        n = self.count.clamp_min(1)
        for t, conf in self.conf.items():
            out[f"{split}/acc/{t}"] = conf.diagonal().sum().double() / n
            out[f"{split}/f1/{t}"] = macro_f1(conf)
            out[f"{split}/loss/{t}"] = self.loss[t] / n
        return out


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
