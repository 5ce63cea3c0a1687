"""Chance-adjusted normalised mutual information between modalities' predicted labels (for ``mikd``).

``mikd`` asks "do modalities a and b share label-relevant structure?" (the stage-1 distillation gate
and the stage-2 redundancy r_m). The reconstruction it follows (see :mod:`engine.methods.mikd`)
suggests scikit-learn's NMI between the two modalities' predicted labels. We use its chance-adjusted form, the adjusted mutual
information (Vinh, Epps & Bailey, "Information theoretic measures for clusterings comparison",
JMLR 2010; scikit-learn's ``adjusted_mutual_info_score`` with the default arithmetic mean)::

    AMI(a, b) = (I(A; B) - E[I]) / ((H(A) + H(B)) / 2 - E[I])

where I and H are the plug-in estimates (nats) from the joint histogram of the two label vectors on
the same N rows, and E[I] is the exact expected plug-in MI of two independent labelings with the
same marginal counts (the permutation / hypergeometric model). It is clipped to [0, 1] (a negative
value means agreement below chance).

Why predicted labels, and why adjusted:

* a modality's predicted label is its feature reduced to what matters for the task, which is what
  the gate is about; it needs no critic network, no training and no optimiser state of its own
  (an InfoNCE/MINE bound on features would), is exact and reproducible on resume, and is bounded,
  invariant to feature scale and dimensionality, so one threshold means the same thing for any
  encoder pair on any dataset (an InfoNCE bound is capped at log(batch) and depends on its critic);
* the plain NMI is badly biased on validation splits of our size: with C = 10 classes and N = 120
  rows, two *independent* labelings have plug-in MI about (C-1)^2 / (2N) = 0.34 nats, an NMI of
  about 0.15, above the default gate threshold. Miller-Madow's first-order correction removes only
  part of it in this undersampled regime (100 cells for 120 rows); the exact expectation E[I]
  removes all of it: AMI is 0 in expectation for independent labelings, 1 for identical ones.

Everything runs on the labels' device: one ``bincount`` for all M(M-1)/2 pairs, and E[I] as one
vectorised sum over (pair, row class, column class, cell count) with ``lgamma``. Conventions as
scikit-learn: identical labelings up to renaming give 1, two constant labelings give 1, one constant
and one varying labeling give 0.
"""

from __future__ import annotations

import math

import torch

EPS = torch.finfo(torch.float64).eps
CHUNK_ELEMENTS = 1 << 22


def entropy(counts: torch.Tensor, n: int) -> torch.Tensor:
    """Plug-in entropy in nats along the last dimension of ``counts`` (histograms over ``n`` rows)."""
    p = counts.double() / n
    return -torch.special.xlogy(p, p).sum(-1)


def pair_index(m: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices (i < j) of the M(M-1)/2 unordered modality pairs, in row-major order."""
    i, j = torch.triu_indices(m, m, offset=1, device=device)
    return i, j


def joint_histograms(preds: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(P, C, C) joint label counts of every pair (i < j) of the rows of ``preds`` (M, N), one bincount."""
    m = preds.shape[0]
    i, j = pair_index(m, preds.device)
    cells = n_classes * n_classes
    offsets = torch.arange(i.numel(), device=preds.device).unsqueeze(1) * cells
    codes = preds[i] * n_classes + preds[j] + offsets
    counts = torch.bincount(codes.reshape(-1), minlength=i.numel() * cells)
    return counts.reshape(i.numel(), n_classes, n_classes)


def expected_mutual_information(rows: torch.Tensor, cols: torch.Tensor, n: int) -> torch.Tensor:
    """E[I] (nats) of two independent labelings with marginal counts ``rows`` (P, C) and ``cols`` (P, C)
    over ``n`` rows, under the hypergeometric model (Vinh et al. 2010, eq. 24a), for each of the P pairs.

    One vectorised sum over (pair, row class, column class, cell count k); k is taken in chunks so
    that no intermediate exceeds about ``CHUNK_ELEMENTS`` values whatever C and N are."""
    a = rows.double()[:, :, None, None]
    b = cols.double()[:, None, :, None]
    top = int(torch.minimum(rows.max(), cols.max()))  # the largest possible cell count (one host read)
    ks = torch.arange(1, max(top, 1) + 1, dtype=torch.float64, device=rows.device)
    per_k = a.shape[0] * a.shape[1] * b.shape[2]
    total = torch.zeros(a.shape[0], dtype=torch.float64, device=rows.device)
    for k in ks.split(max(CHUNK_ELEMENTS // per_k, 1)):
        total += _emi_terms(a, b, k, n).sum((1, 2, 3))
    return total


def _emi_terms(a: torch.Tensor, b: torch.Tensor, k: torch.Tensor, n: int) -> torch.Tensor:
    """(k / n) log(n k / (a b)) P_hypergeometric(k | a, b, n) where k is a possible cell count, else 0."""
    valid = (k >= (a + b - n).clamp_min(1)) & (k <= torch.minimum(a, b))
    a1, b1 = a.clamp_min(1), b.clamp_min(1)  # evaluate on safe arguments, keep the valid terms
    kk = torch.where(valid, k, torch.ones_like(k))
    lg = torch.lgamma
    log_p = (lg(a1 + 1) + lg(b1 + 1) + lg(n - a1 + 1) + lg(n - b1 + 1) - math.lgamma(n + 1)
             - lg(kk + 1) - lg((a1 - kk).clamp_min(0) + 1) - lg((b1 - kk).clamp_min(0) + 1)
             - lg((n - a1 - b1 + kk).clamp_min(0) + 1))
    term = kk / n * torch.log(n * kk / (a1 * b1)) * torch.exp(log_p)
    return torch.where(valid, term, torch.zeros_like(term))


def ami_from_histograms(hist: torch.Tensor, n: int) -> torch.Tensor:
    """Adjusted mutual information (arithmetic normalisation) of each (P, C, C) joint count table of
    ``n`` rows, clipped to [0, 1]; NaN when ``n`` is 0."""
    if n == 0:
        return torch.full(hist.shape[:1], float("nan"), dtype=torch.float64, device=hist.device)
    rows, cols = hist.sum(2), hist.sum(1)
    h_a, h_b = entropy(rows, n), entropy(cols, n)
    mi = (h_a + h_b - entropy(hist.flatten(1), n)).clamp_min(0)
    emi = expected_mutual_information(rows, cols, n)
    denom = (h_a + h_b) / 2 - emi
    denom = torch.where(denom < 0, denom.clamp_max(-EPS), denom.clamp_min(EPS))
    ami = ((mi - emi) / denom).clamp(0.0, 1.0)
    both_constant = ((rows > 0).sum(1) <= 1) & ((cols > 0).sum(1) <= 1)
    return torch.where(both_constant, torch.ones_like(ami), ami)


def pairwise_ami(preds: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Symmetric (M, M) AMI matrix of the predicted labels ``preds`` (M, N) (long), ones on the diagonal."""
    m = preds.shape[0]
    out = torch.eye(m, dtype=torch.float64, device=preds.device)
    if m < 2:
        return out
    i, j = pair_index(m, preds.device)
    values = ami_from_histograms(joint_histograms(preds, n_classes), preds.shape[1])
    out[i, j] = values
    out[j, i] = values
    return out


def ami(a: torch.Tensor, b: torch.Tensor, n_classes: int) -> torch.Tensor:
    """AMI of two label vectors (a 0-d float64 tensor on their device)."""
    return pairwise_ami(torch.stack([a, b]), n_classes)[0, 1]
