"""Device-side sums of the per-step values of one logging interval (one host transfer per interval)."""

from __future__ import annotations

import torch

from .. import collectives


class RunningSums:
    """Device-side sums of per-step values over a logging interval.

    The values of one step are stacked into one float64 vector and added with one kernel while
    the set of names stays the same (the usual case); a new set of names (a method changing
    stage) folds the running vector back into per-name sums first.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self._keys: tuple[str, ...] = ()
        self._vec: torch.Tensor | None = None
        self._vec_count = 0
        self.count = 0

    def add(self, values: dict[str, torch.Tensor]) -> None:
        """Adds one step's 0-d values by name."""
        with torch.no_grad():  # one stack of the 0-d values, no per-value detach (the result needs no graph)
            vec = torch.stack([v if v.dim() == 0 else v.reshape(()) for v in values.values()])
        self.add_vector(tuple(values), vec)

    def add_vector(self, keys: tuple[str, ...], vec: torch.Tensor) -> None:
        """Adds one step's values given as names and a vector of the same length (summed in float64)."""
        if keys != self._keys:
            self._fold()
            self._keys, self._vec = keys, vec.detach().double().clone()
        else:
            self._vec += vec
        self._vec_count += 1
        self.count += 1

    def _fold(self) -> None:
        if self._vec is None:
            return
        for k, v in zip(self._keys, self._vec.unbind()):
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + self._vec_count
        self._keys, self._vec, self._vec_count = (), None, 0

    def means(self) -> dict[str, torch.Tensor]:
        if not self.sums and self._vec is not None:   # one set of names all interval: one division
            return dict(zip(self._keys, (self._vec / self._vec_count).unbind()))
        self._fold()
        return {k: v / self.counts[k] for k, v in self.sums.items()}

    def average_across_ranks(self) -> None:
        """Replace the sums by their mean over the ranks (one collective; the counts are the same on
        every rank), so that a checkpoint holds the interval's global values so far."""
        self._fold()
        if collectives.is_distributed() and self.sums:
            keys = list(self.sums)
            self.sums = dict(zip(keys, collectives.all_reduce_mean(torch.stack([self.sums[k] for k in keys])).unbind()))

    def state_dict(self) -> dict:
        self._fold()
        return {"sums": dict(self.sums), "counts": dict(self.counts), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.counts = dict(state["counts"])
        self.count = state["count"]
