"""Catching non-finite losses and gradients on the device, without a host sync per step.

Each backward records whether its loss was finite; each optimiser step adds whether the step
was bad to a device-side counter (and the first bad step's number). The trainer reads both once
per logging interval, in the same transfer as the other metrics.

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
        self._loss_ok: torch.Tensor | None = None
        self.reset()

    def reset(self) -> None:
        self.count = torch.zeros((), dtype=torch.long, device=self.device)
        self.first = torch.full((), -1, dtype=torch.long, device=self.device)

    def after_backward(self, loss: torch.Tensor) -> None:
        ok = torch.isfinite(loss.detach()).all()
        self._loss_ok = ok if self._loss_ok is None else self._loss_ok & ok

    def before_step(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], step: int) -> None:
        ok = self._loss_ok if self._loss_ok is not None else torch.ones((), dtype=torch.bool, device=self.device)
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            ok = ok & torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()
        if self.mode == "skip":
            optimizer.found_inf = (~ok).float()
        bad = ~ok
        self.count += bad
        self.first = torch.where((self.first < 0) & bad, torch.full_like(self.first, step), self.first)
        self._loss_ok = None

    def values(self) -> dict[str, torch.Tensor]:
        """Device values to transfer with the interval's metrics."""
        return {"nonfinite_steps": self.count, "nonfinite_first_step": self.first}
