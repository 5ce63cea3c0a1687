"""Device-side sums of the per-step values of one logging interval (one host transfer per interval)."""

from __future__ import annotations

import torch

from .. import collectives


class RunningSums:
    """Device-side sums of per-step values over a logging interval.

    The values of one step are stacked into one float64 vector and added with one kernel while
    the set of names stays the same (the usual case); a new set of names (a method changing
    stage) folds the running vector back into per-name sums first.

    Batch accuracies (:meth:`add_hits`) are kept as each step's (K, B) hit mask until the sums are
    read: then one count per batch size for all the waiting steps, summed as integer hit counts per
    batch size. Their interval mean, sum_s hits_s / B_s / S, is a function of
    those integers, so it is the same whatever the grouping of steps (a resume mid-interval included).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self._keys: tuple[str, ...] = ()
        self._vec: torch.Tensor | None = None
        self._vec_count = 0
        self.count = 0
        self._acc_keys: tuple[str, ...] = ()
        self._predictions: dict[int, list[torch.Tensor]] = {}   # batch size -> the waiting steps' hit masks
        self._hits: dict[int, torch.Tensor] = {}   # batch size -> int64 hit counts, one per accuracy name
        self._acc_steps = 0

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

    def add_hits(self, keys: tuple[str, ...], hits: torch.Tensor) -> None:
        """Adds one step's batch accuracies named ``keys``: ``hits`` (K, B) bool, whether each of the B
        rows was predicted right, one row per name. Nothing runs on the device here (class docstring)."""
        if keys != self._acc_keys:
            self._accuracies_to_sums()
            self._acc_keys = keys
        self._predictions.setdefault(int(hits.shape[-1]), []).append(hits)
        self._acc_steps += 1

    def _count_hits(self) -> None:
        for size in sorted(self._predictions):
            hits = torch.stack(self._predictions[size]).sum((0, 2))   # (S, K, B) -> (K,)
            self._hits[size] = self._hits[size] + hits if size in self._hits else hits
        self._predictions = {}

    def _accuracy_sums(self) -> dict[str, torch.Tensor]:
        """The sum over the steps of each batch accuracy (float64), from the hit counts."""
        self._count_hits()
        if not self._hits:
            return {}
        total = None
        for size in sorted(self._hits):
            part = self._hits[size].double() / size
            total = part if total is None else total + part
        return dict(zip(self._acc_keys, total.unbind()))

    def _accuracies_to_sums(self) -> None:
        """Moves the accuracies into the float sums by name (a change of names, a rank average)."""
        for k, v in self._accuracy_sums().items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + self._acc_steps
        self._hits, self._acc_steps = {}, 0

    def _fold(self) -> None:
        if self._vec is None:
            return
        for k, v in zip(self._keys, self._vec.unbind()):
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + self._vec_count
        self._keys, self._vec, self._vec_count = (), None, 0

    def means(self) -> dict[str, torch.Tensor]:
        if not self.sums and self._vec is not None:   # one set of names all interval: one division
            out = dict(zip(self._keys, (self._vec / self._vec_count).unbind()))
        else:
            self._fold()
            out = {k: v / self.counts[k] for k, v in self.sums.items()}
        for k, v in self._accuracy_sums().items():   # with float sums of the same name (an older checkpoint)
            out[k] = (self.sums[k] + v) / (self.counts[k] + self._acc_steps) if k in self.sums else v / self._acc_steps
        return out

    def average_across_ranks(self) -> None:
        """Replace the sums by their mean over the ranks (one collective; the counts are the same on
        every rank), so that a checkpoint holds the interval's global values so far."""
        self._fold()
        self._accuracies_to_sums()
        if collectives.is_distributed() and self.sums:
            keys = list(self.sums)
            self.sums = dict(zip(keys, collectives.all_reduce_mean(torch.stack([self.sums[k] for k in keys])).unbind()))

    def state_dict(self) -> dict:
        self._fold()
        self._count_hits()
        return {"sums": dict(self.sums), "counts": dict(self.counts), "count": self.count,
                "accuracy": {"keys": list(self._acc_keys), "hits": dict(self._hits), "steps": self._acc_steps}}

    def load_state_dict(self, state: dict) -> None:
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.counts = dict(state["counts"])
        self.count = state["count"]
        acc = state.get("accuracy")   # absent in checkpoints before the hit counts: their accuracies are in sums
        self._acc_keys = tuple(acc["keys"]) if acc else ()
        self._hits = {int(b): h.to(self.device) for b, h in acc["hits"].items()} if acc else {}
        self._acc_steps = acc["steps"] if acc else 0
        self._predictions = {}
