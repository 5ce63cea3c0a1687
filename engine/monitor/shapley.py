"""Contribution per modality, ``shapley/<m>``: the exact Shapley value of accuracy over coalitions.

BalanceBenchmark (Xu et al., arXiv 2502.10816) scores each modality by

    phi_m = sum over S subset of M \\ {m} of |S|! (M - |S| - 1)! / M! * [Acc(S + m) - Acc(S)]

where Acc(S) is the accuracy with only the modalities in S present. All 2^M coalitions are
evaluated exactly (M <= 6: at most 64 head passes, batched), and phi = W v with a fixed
(M, 2^M) weight matrix W, so the values satisfy the efficiency axiom exactly:
sum_m phi_m = Acc(all) - Acc(none). ``imbalance`` = max_m phi_m - min_m phi_m summarises them
(0 when every modality contributes equally), so runs can be ranked by balance.

Above ``shapley_max_modalities`` the 2^M coalitions are not all evaluated: with
``shapley_permutations = K > 0`` the values are estimated by permutation sampling
(:func:`sampled_shapley_matrix`): K random orders of the modalities, drawn once from the monitors'
seed (the same orders at every evaluation, so the estimates of successive epochs are comparable),
at most K (M - 1) + 2 coalitions evaluated, the cost linear in M. Stated error: each marginal
contribution of accuracy lies in [-1, 1], so the estimate is unbiased over the draw of the orders
with standard error sd(contribution) / sqrt(K) <= 1 / sqrt(K), and by Hoeffding's inequality
|phi_hat_m - phi_m| <= sqrt(2 ln(2 / delta) / K) with probability 1 - delta (2.72 / sqrt(K) at
delta = 0.05: 0.17 for K = 256); the efficiency axiom still holds exactly. With K = 0 (default) the
values are skipped above ``shapley_max_modalities``.

Deviation, stated: BalanceBenchmark zero-pads the absent modality's *input* and re-runs its encoder;
here the absent modality's *features* are replaced (by zeros, ``shapley_fill = "zero"``, or by
the split's mean feature, ``"mean"``) and only the head is re-run, which is cheaper and, for the
additive heads (concat, sum), removes exactly that modality's logit term with zero fill. For
non-additive heads (film, gated) zero features may lie off the data, and the mean fill is the
gentler choice. The empty coalition is the head's prediction from fill values alone (usually one
constant class).
"""

from __future__ import annotations

import math

import torch


def coalition_masks(n_modalities: int, device: torch.device | None = None) -> torch.Tensor:
    """(2^M, M) bool: coalition c contains modality m iff bit m of c is set (c = 0 empty, 2^M - 1 all)."""
    codes = torch.arange(2 ** n_modalities, device=device)
    return ((codes[:, None] >> torch.arange(n_modalities, device=device)) & 1).bool()


def shapley_matrix(n_modalities: int, device: torch.device | None = None) -> torch.Tensor:
    """(M, 2^M) float64 W with phi = W v for coalition values v indexed as in :func:`coalition_masks`."""
    m = n_modalities
    masks = coalition_masks(m)
    size = masks.sum(1)
    w = torch.zeros(m, 2 ** m, dtype=torch.float64)
    for i in range(m):
        inside = masks[:, i]
        # coalition c containing i contributes +w(|c| - 1) * v(c); one not containing i: -w(|c|) * v(c)
        s = torch.where(inside, size - 1, size)
        weight = torch.tensor([math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m)
                               for k in s.tolist()], dtype=torch.float64)
        w[i] = torch.where(inside, weight, -weight)
    return w.to(device)


def sampled_shapley_matrix(n_modalities: int, permutations: int,
                           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutation sampling (Castro, Gomez, Tejada, Computers & OR 2009): ``(codes, W)`` with ``codes``
    (C,) the distinct coalitions (bit m set: modality m present; ascending, so the empty coalition is
    first and the full one last) that K = ``permutations`` random orders of the modalities pass through,
    and W (M, C) float64 such that phi_hat = W v(codes) is the mean over the orders of each modality's
    marginal contribution v(prefix + m) - v(prefix). Each order's contributions sum to
    v(all) - v(none), so phi_hat keeps the efficiency axiom exactly. Drawn on the CPU from ``generator``."""
    m, k = n_modalities, permutations
    orders = torch.rand(k, m, generator=generator).argsort(dim=1).tolist()
    steps = []   # (modality, coalition before, coalition after) of every order
    for order in orders:
        code = 0
        for i in order:
            steps.append((i, code, code | (1 << i)))
            code |= 1 << i
    codes = sorted({c for _, before, after in steps for c in (before, after)})
    column = {c: j for j, c in enumerate(codes)}
    w = torch.zeros(m, len(codes), dtype=torch.float64)
    for i, before, after in steps:
        w[i, column[after]] += 1.0 / k
        w[i, column[before]] -= 1.0 / k
    return torch.tensor(codes, dtype=torch.long), w


def masks_of_codes(codes: torch.Tensor, n_modalities: int) -> torch.Tensor:
    """(C, M) bool coalition masks of the coalition codes (bit m: modality m present)."""
    return ((codes[:, None] >> torch.arange(n_modalities, device=codes.device)) & 1).bool()


def shapley_values(coalition_values: torch.Tensor) -> torch.Tensor:
    """(M,) exact Shapley values from (2^M,) coalition values (e.g. accuracies)."""
    m = int(round(math.log2(coalition_values.numel())))
    return shapley_matrix(m, coalition_values.device) @ coalition_values.double()


def imbalance(phi: torch.Tensor) -> torch.Tensor:
    """max - min of the Shapley values (0-d)."""
    return phi.max() - phi.min()


def coalition_index(masks: torch.Tensor, n: int, fill_row: int) -> torch.Tensor:
    """(2^M, M, N) table rows per coalition and modality: row i when present, ``fill_row`` when absent."""
    rows = torch.arange(n, device=masks.device)
    fill = torch.full_like(rows, fill_row)
    return torch.where(masks[:, :, None], rows, fill)
