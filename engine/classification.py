"""Classification scores on the device from a confusion matrix: the counts and macro-F1 that the
trainer's evaluation (:mod:`engine.train.metrics`) and methods that weigh modalities by their F1
(mikd) share.

Macro-F1 follows scikit-learn's default: the mean F1 over the classes that occur in the labels or
the predictions.
"""

from __future__ import annotations

import torch


def confusion(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, C) counts, rows = true class, columns = predicted class."""
    return torch.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def macro_f1(conf: torch.Tensor) -> torch.Tensor:
    conf = conf.double()
    tp = conf.diagonal()
    fp = conf.sum(0) - tp
    fn = conf.sum(1) - tp
    seen = (conf.sum(0) + conf.sum(1)) > 0
    f1 = torch.where(seen, 2 * tp / (2 * tp + fp + fn).clamp_min(1e-12), torch.zeros_like(tp))
    return f1.sum() / seen.sum().clamp_min(1)
