"""Batched head passes over variants of an evaluation set (permuted or masked features).

Both the permutation estimator (``cmi/<m>``) and the coalition accuracies (``shapley/<m>``) run the
method's head on J variants of the same N rows. A variant is described, per modality o, by an
index row ``index[o][j]`` (N entries) into a table of candidate feature rows ``tables[o]``: the
evaluation rows themselves, plus extra rows such as a fill value for an absent modality. All
variants are gathered with one ``index_select`` per modality and evaluated in as few head calls
as ``chunk_rows`` allows (``floor(chunk_rows / N)`` variants per call, at least one).

An additive head (fused logits = the sum over modalities of per-modality logits, each a function of
its own modality's features alone: ``concat`` and ``sum`` under a method that keeps the model's head)
needs no pass per variant: :func:`additive_passes` runs the head once on the table rows and sums the
gathered per-modality logits of each variant, in the head's own order (``torch.stack(...).sum(0)``),
so the values are those of the head passes.
"""

from __future__ import annotations

from typing import Callable

import torch

HeadFn = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def head_passes(head_fn: HeadFn, tables: dict[str, torch.Tensor], index: dict[str, torch.Tensor],
                y: torch.Tensor, chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of the true label and correctness of the fused prediction per variant.

    ``tables[o]``: (R_o, d_o) candidate rows of modality o; ``index[o]``: (J, N) long rows of
    ``tables[o]`` for each variant; ``y``: (N,) labels. Returns ``(log_q, correct)``, both (J, N):
    log softmax(fused)[y] (float32) and argmax(fused) == y.
    """
    def fused(start: int, stop: int) -> torch.Tensor:
        return head_fn({o: tables[o].index_select(0, index[o][start:stop].reshape(-1)) for o in tables})[0]
    return _scored(fused, index, y, chunk_rows)


def additive_passes(head_fn: HeadFn, tables: dict[str, torch.Tensor], index: dict[str, torch.Tensor],
                    y: torch.Tensor, chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`head_passes` for an additive head: one head call on the (equally long) tables, then per
    variant the sum of each modality's logits at its index rows, in the head's order."""
    _, parts = head_fn(tables)

    def fused(start: int, stop: int) -> torch.Tensor:
        return torch.stack([parts[o].index_select(0, index[o][start:stop].reshape(-1)) for o in parts]).sum(0)
    return _scored(fused, index, y, chunk_rows)


def _scored(fused_of: Callable[[int, int], torch.Tensor], index: dict[str, torch.Tensor], y: torch.Tensor,
            chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_q, correct)`` of variants ``[start, stop)`` at a time, as many as ``chunk_rows`` allows."""
    n_variants, n = next(iter(index.values())).shape
    per_call = max(1, chunk_rows // max(n, 1))
    log_q, correct = [], []
    for start in range(0, n_variants, per_call):
        stop = min(start + per_call, n_variants)
        fused = fused_of(start, stop).float().reshape(stop - start, n, -1)
        log_q.append(fused.log_softmax(-1).gather(-1, y.expand(stop - start, n).unsqueeze(-1)).squeeze(-1))
        correct.append(fused.argmax(-1) == y)
    return torch.cat(log_q), torch.cat(correct)


def identity_rows(n_variants: int, n: int, device: torch.device) -> torch.Tensor:
    """(J, N) index of the unchanged rows 0..N-1 for every variant."""
    return torch.arange(n, device=device).expand(n_variants, n)
