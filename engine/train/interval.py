"""Device-side sums of the per-step values of one logging interval (one host transfer per interval)."""

from __future__ import annotations

import torch

from .. import collectives


class RunningSums:
    """Device-side sums of per-step values over a logging interval.

    A step's values (:meth:`add_values`) and its logits with the labels (:meth:`add_predictions`) are
    kept as they are, with no device work in the step; the waiting steps are summed together when the
    sums are read, with one stack of the values and one argmax over the concatenated logits (every
    ``MAX_WAITING_STEPS`` steps or ``MAX_WAITING_ELEMENTS`` logits sooner; every step where ``copy``:
    outputs in reused memory, such as CUDA-graph replays, must be read before the next step).

    Values are summed in float64 as one running vector while the set of names stays the same (the
    usual case); a new set of names (a method changing stage) folds the running vector back into
    per-name sums first. Batch accuracies are summed as integer hit counts per batch size: their
    interval mean, sum_s hits_s / B_s / S, is a function of those integers, so it is the same whatever
    the grouping of steps (a resume mid-interval included).
    """

    MAX_WAITING_STEPS = 256
    MAX_WAITING_ELEMENTS = 1 << 22   # logits elements kept alive by the waiting steps (16 MiB in float32)

    def __init__(self, device: torch.device, copy: bool = False):
        self.device = device
        self.copy = copy
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self._keys: tuple[str, ...] = ()
        self._vec: torch.Tensor | None = None
        self._vec_count = 0          # steps in the running vector, the waiting ones included
        self._waiting: list[torch.Tensor] = []   # the waiting steps' values, len(self._keys) each, flat
        self.count = 0
        self._acc_keys: tuple[str, ...] = ()
        self._predictions: dict[int, list[tuple[list[torch.Tensor], torch.Tensor]]] = {}   # batch size -> steps
        self._waiting_elements = 0
        self._hits: dict[int, torch.Tensor] = {}   # batch size -> int64 hit counts, one per accuracy name
        self._acc_steps = 0

    def add(self, values: dict[str, torch.Tensor]) -> None:
        """Adds one step's 0-d values by name."""
        self.add_values(tuple(values), list(values.values()))

    def add_values(self, keys: tuple[str, ...], values: list[torch.Tensor]) -> None:
        """Adds one step's values named ``keys`` (0-d or one-element tensors, summed in float64)."""
        if keys != self._keys:
            self._fold()
            self._keys = keys
        self._waiting.extend(v.detach() for v in values)
        self._vec_count += 1
        self.count += 1
        if self.copy or len(self._waiting) >= self.MAX_WAITING_STEPS * max(len(keys), 1):
            self._sum_waiting()

    def _sum_waiting(self) -> None:
        if not self._waiting:
            return
        with torch.no_grad():
            flat = torch.stack([v if v.dim() == 0 else v.reshape(()) for v in self._waiting])
            part = flat.view(-1, len(self._keys)).sum(0, dtype=torch.float64)
        self._vec = part if self._vec is None else self._vec + part
        self._waiting = []

    def add_predictions(self, keys: tuple[str, ...], logits: list[torch.Tensor], y: torch.Tensor) -> None:
        """Adds one step's batch accuracies named ``keys``, one per (B, C) tensor of ``logits``, against
        the labels ``y`` (B,)."""
        if keys != self._acc_keys:
            self._accuracies_to_sums()
            self._acc_keys = keys
        self._predictions.setdefault(int(y.shape[0]), []).append(([z.detach() for z in logits], y))
        self._acc_steps += 1
        self._waiting_elements += sum(z.numel() for z in logits)
        if self.copy or self._waiting_elements > self.MAX_WAITING_ELEMENTS or \
                sum(map(len, self._predictions.values())) >= self.MAX_WAITING_STEPS:
            self._count_hits()

    def _count_hits(self) -> None:
        """The waiting steps' hits: one concatenation of their logits (modality-major, the steps ordered
        by batch size), one argmax, one comparison, then one count per batch size (a column range)."""
        if not self._predictions:
            return
        sizes = sorted(self._predictions)
        steps = [step for size in sizes for step in self._predictions[size]]
        k = len(steps[0][0])
        with torch.no_grad():
            logits = torch.cat([zs[i] for i in range(k) for zs, _ in steps])       # (K * N, C)
            hits = logits.view(k, -1, logits.shape[-1]).argmax(-1) == torch.cat([y for _, y in steps])  # (K, N)
            start = 0
            for size in sizes:
                rows = size * len(self._predictions[size])
                counts = (hits if rows == hits.shape[1] else hits[:, start:start + rows]).sum(1)   # (K,)
                self._hits[size] = self._hits[size] + counts if size in self._hits else counts
                start += rows
        self._predictions, self._waiting_elements = {}, 0

    def _accuracy_total(self) -> torch.Tensor | None:
        """(K,) float64: the sum over the steps of each batch accuracy, from the hit counts (None: none)."""
        self._count_hits()
        total = None
        for size in sorted(self._hits):
            part = self._hits[size].double() / size
            total = part if total is None else total + part
        return total

    def _accuracy_sums(self) -> dict[str, torch.Tensor]:
        """The sum over the steps of each batch accuracy (float64) by name."""
        total = self._accuracy_total()
        return {} if total is None else dict(zip(self._acc_keys, total.unbind()))

    def _accuracies_to_sums(self) -> None:
        """Moves the accuracies into the float sums by name (a change of names, a rank average)."""
        for k, v in self._accuracy_sums().items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + self._acc_steps
        self._hits, self._acc_steps = {}, 0

    def _fold(self) -> None:
        self._sum_waiting()
        if self._vec is None:
            return
        for k, v in zip(self._keys, self._vec.unbind()):
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + self._vec_count
        self._keys, self._vec, self._vec_count = (), None, 0

    def means(self) -> dict[str, torch.Tensor]:
        self._sum_waiting()
        if not self.sums and self._vec is not None:   # one set of names all interval: one division
            out = dict(zip(self._keys, (self._vec / self._vec_count).unbind()))
        else:
            self._fold()
            out = {k: v / self.counts[k] for k, v in self.sums.items()}
        total = self._accuracy_total()
        if total is None:
            return out
        if not any(k in self.sums for k in self._acc_keys):   # the usual case: one division
            out.update(zip(self._acc_keys, (total / self._acc_steps).unbind()))
            return out
        for k, v in zip(self._acc_keys, total.unbind()):   # with float sums of the same name (an older checkpoint)
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
        self._predictions, self._waiting_elements, self._waiting = {}, 0, []
