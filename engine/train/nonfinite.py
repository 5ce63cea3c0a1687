"""Catching non-finite losses and gradients on the device, without a host sync per step.

Each backward adds its loss to the step's sum; each optimiser step tests that sum and its gradients'
norms at once and adds whether the step was bad to a device-side counter (and keeps the first bad
step's number). The trainer reads both once per logging interval, in the same transfer as the
other metrics.

``train.on_nonfinite``:

Every step checks its loss and its gradients (one fused norm over them, on the device).

* ``"stop"`` (default): the run stops at the next logging interval, naming the first bad step,
  the method and the last gradient norms per modality; no checkpoint is written after it (the
  end-of-epoch flush comes before the epoch's checkpoint), so the last good checkpoint stays the
  resumable one.
* ``"skip"``: a bad step is skipped on the device through the fused optimisers' ``found_inf``
  flag, the same mechanism AMP's GradScaler uses (SGD's momentum buffers start at zero, see
  ``optim.prime_momentum_buffers``); skipped steps are counted in the train record
  (``nonfinite_steps``).
"""

from __future__ import annotations

import torch

from ..errors import UsageError


class NonFiniteGuard:
    def __init__(self, mode: str, optimizer: torch.optim.Optimizer, device: torch.device):
        self.mode = mode
        self.device = device
        if mode == "skip" and not optimizer.defaults.get("fused"):
            raise UsageError(f"train.on_nonfinite = \"skip\" needs PyTorch's fused optimisers, which are not "
                             f"available on {device}; use \"stop\"")
        self._losses: torch.Tensor | None = None   # the step's losses summed (several backward calls a step)
        self.reset()

    def reset(self) -> None:
        self.count = torch.zeros((), dtype=torch.long, device=self.device)
        # the step of the last check while count was 0: once a step is bad, its own number (see before_step)
        self.first = torch.full((), -1, dtype=torch.long, device=self.device)

    def after_backward(self, loss: torch.Tensor) -> None:
        value = loss.detach()
        self._losses = value if self._losses is None else self._losses + value

    def before_step(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], step: int) -> None:
        """One finiteness test of the step's losses and gradient norms summed (a sum is non-finite when
        a term is: inf + finite = inf, inf - inf = nan; finite terms summing to a non-finite value would
        need norms near float32's maximum, which no training survives anyway), then two small updates:
        ``first`` follows the step while ``count`` is 0, so it holds the first bad step's number once
        ``count`` grows."""
        grads = [p.grad for p in params if p.grad is not None]
        total = torch.stack(torch._foreach_norm(grads)).sum() if grads else None
        if self._losses is not None:
            total = self._losses if total is None else total + self._losses
        self._losses = None
        if total is None:
            if self.mode == "skip":
                optimizer.found_inf = torch.zeros((), device=self.device)
            return
        bad = total.isfinite().logical_not()
        if self.mode == "skip":
            optimizer.found_inf = bad.float()
        self.first = torch.where(self.count == 0, step, self.first)
        self.count += bad

    def values(self) -> dict[str, torch.Tensor]:
        """Device values to transfer with the interval's metrics."""
        return {"nonfinite_steps": self.count,
                "nonfinite_first_step": torch.where(self.count > 0, self.first, -1)}
