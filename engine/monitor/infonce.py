"""Information between modalities, ``mi/<a>;<b>``: the InfoNCE lower bound with an online critic.

For a batch of B paired rows and any critic f, InfoNCE (van den Oord et al. 2018; Poole et al.,
"On variational bounds of mutual information", ICML 2019) gives

    I(Z_a; Z_b) >= log B + mean_i [ f(a_i, b_i) - logsumexp_j f(a_i, b_j) ]

and the same with the roles of a and b swapped; the estimate is the mean of the two directions
(still a lower bound). The critic is separable, f(a, b) = g_a(a) . g_b(b), so one batched matrix
product scores all B^2 pairs of every modality pair; each modality has one small network
Linear -> ReLU -> Linear (``critic_hidden``) whose output holds one ``critic_embed``-wide
embedding per partner modality, so every pair has its own critic while the hidden layer is shared.
The critics see detached features only and are trained online, every ``update_every`` training
steps, by maximising the summed bound of all pairs with the monitors' own Adam optimiser
(learning rate ``critic_lr``).

The reported value is max(0, bound): 0 is the bound of a constant critic, and mutual information
is never negative; the critic itself is trained on the unclamped bound. Biases, stated: a lower
bound, capped at log B (B = the rows scored together: the training batch, at most
``critic_batch`` rows, for the running training value; the evaluation rows, at most
``eval_max_samples``, at evaluation), so large information is underestimated; biased downwards
while the critic lags behind the changing features.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def modality_pairs(modalities: list[str]) -> list[tuple[str, str]]:
    """(a, b) for a before b in the run's modality order."""
    return [(a, b) for i, a in enumerate(modalities) for b in modalities[i + 1:]]


def pair_name(a: str, b: str) -> str:
    return f"mi/{a};{b}"


class PairCritics(nn.Module):
    """Separable critics for every pair of modalities (see the module docstring)."""

    def __init__(self, feature_dims: dict[str, int], hidden: int, embed: int):
        super().__init__()
        self.modalities = list(feature_dims)
        self.pairs = modality_pairs(self.modalities)
        self.embed = embed
        n_partners = max(len(self.modalities) - 1, 1)
        self.nets = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, n_partners * embed))
            for m, d in feature_dims.items()})
        # where each pair's two embeddings sit among all modalities' embeddings side by side (not saved)
        self.register_buffer("left_slots", self._slots(first=True), persistent=False)
        self.register_buffer("right_slots", self._slots(first=False), persistent=False)

    def _slot(self, m: str, partner: str) -> int:
        partners = [o for o in self.modalities if o != m]
        return partners.index(partner)

    def _slots(self, first: bool) -> torch.Tensor:
        """(P,) column of each pair's left (``first``) or right embedding in :meth:`pair_embeddings`' concatenation."""
        width = max(len(self.modalities) - 1, 1)
        own = [(a, b) if first else (b, a) for a, b in self.pairs]
        return torch.tensor([self.modalities.index(m) * width + self._slot(m, o) for m, o in own], dtype=torch.long)

    def pair_embeddings(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, B, e) embeddings of the left and right modality of every pair: one network call per modality,
        then one gather per side for all pairs."""
        emb = torch.cat([net(features[m].detach().float()).unflatten(-1, (-1, self.embed))
                         for m, net in self.nets.items()], dim=1)          # (B, M * (M - 1), e)
        left, right = emb.index_select(1, self.left_slots), emb.index_select(1, self.right_slots)
        return left.transpose(0, 1), right.transpose(0, 1)

    def bounds(self, features: dict[str, torch.Tensor], chunk_rows: int = 4096) -> torch.Tensor:
        """(P,) symmetric InfoNCE bounds of every pair on the rows of ``features``."""
        left, right = self.pair_embeddings(features)
        return infonce(left, right, chunk_rows)


def infonce(left: torch.Tensor, right: torch.Tensor, chunk_rows: int = 4096) -> torch.Tensor:
    """(P,) symmetric InfoNCE with scores left @ right^T of (P, N, e) embeddings, in row chunks."""
    p, n, _ = left.shape
    positive = (left * right).sum(-1).mean(-1)
    if n <= chunk_rows:  # one block: the training path, fewest operations
        scores = left @ right.transpose(1, 2)
        negative = 0.5 * (scores.logsumexp(-1).mean(-1) + scores.logsumexp(1).mean(-1))
        return math.log(n) + positive - negative
    row_lse = left.new_zeros(p)
    col_lse = left.new_full((p, n), float("-inf"))
    for start in range(0, n, chunk_rows):
        scores = left[:, start:start + chunk_rows] @ right.transpose(1, 2)
        row_lse = row_lse + scores.logsumexp(-1).sum(-1)
        col_lse = torch.logaddexp(col_lse, scores.logsumexp(1))
    negative = 0.5 * (row_lse / n + col_lse.mean(-1))
    return math.log(n) + positive - negative
