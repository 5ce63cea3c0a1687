"""Catching non-finite losses and gradients on the device, without a host sync per step.

Each backward adds its loss to the step's sum. The checks run on the device and their results (how
many steps were bad, which was first) are read once per logging interval, in the same transfer as the
other metrics.

``train.on_nonfinite``:

* ``"stop"`` (default): the run stops at the next logging interval, naming the first bad step, the
  method and the last gradient norms per modality; no checkpoint is written after it (the end-of-epoch
  flush comes before the epoch's checkpoint), so the last good checkpoint stays the resumable one.
  Every step's loss is checked. The gradients are checked (one fused norm over them) at the steps that
  end a logging interval, the last step before every flush and checkpoint. On the other steps their
  norm is not taken, which is most of the guard's cost on a small model (about 0.1 ms of a 2.5 ms step
  on cub10): a non-finite gradient under a finite loss turns the weights non-finite in the optimiser's
  update (NaN or inf times any step size; clipping by a non-finite norm gives NaN), so the next step's
  loss is non-finite, and that step is the one named (one after the gradient's own).
* ``"skip"``: every step's loss and gradients are checked, and a bad step is skipped on the device
  through the fused optimisers' ``found_inf`` flag, the same mechanism AMP's GradScaler uses (SGD's
  momentum buffers start at zero, see ``optim.prime_momentum_buffers``); skipped steps are counted in
  the train record (``nonfinite_steps``).
"""

from __future__ import annotations

import torch

from ..errors import UsageError

_NONE = 2 ** 62   # "no bad entry" in a minimum over entry indices


class NonFiniteGuard:
    def __init__(self, mode: str, optimizer: torch.optim.Optimizer, device: torch.device):
        self.mode = mode
        self.device = device
        if mode == "skip" and not optimizer.defaults.get("fused"):
            raise UsageError(f"train.on_nonfinite = \"skip\" needs PyTorch's fused optimisers, which are not "
                             f"available on {device}; use \"stop\"")
        self._losses: torch.Tensor | None = None   # the step's losses summed (several backward calls a step)
        # a waiting loss is copied when the step's outputs are reused memory (CUDA-graph replays of a
        # compiled step overwrite their outputs at the next step; step_compile.CompiledStep.cuda_graphs)
        self.copy_waiting = False
        self.reset()

    def reset(self) -> None:
        self.count = torch.zeros((), dtype=torch.long, device=self.device)
        # while count > 0: the index in self._steps of the first bad entry checked since the reset
        self.first = torch.full((), -1, dtype=torch.long, device=self.device)
        self._steps: list[int] = []              # host: the step of every entry checked since the reset
        self._pending: list[torch.Tensor] = []   # "stop": the loss sums of the steps not checked yet
        self._pending_steps: list[int] = []

    def after_backward(self, loss: torch.Tensor) -> None:
        value = loss.detach()
        self._losses = value if self._losses is None else self._losses + value

    def before_step(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], step: int,
                    gradients: bool = True) -> None:
        """The check of optimiser step ``step`` (1-based). ``gradients`` false (``"stop"`` only): the step's
        loss waits, with no device work, for the next check that takes the gradients, or for :meth:`values`.
        Otherwise one finiteness test of the step's losses and gradient norms summed (a sum is non-finite
        when a term is: inf + finite = inf, inf - inf = nan; finite terms summing to a non-finite value would
        need norms near float32's maximum, which no training survives anyway), with the waiting losses."""
        losses, self._losses = self._losses, None
        if self.mode == "stop" and not gradients:
            if losses is not None:
                self._pending.append(losses.clone() if self.copy_waiting else losses)
                self._pending_steps.append(step)
            return
        grads = [p.grad for p in params if p.grad is not None]
        total = torch.stack(torch._foreach_norm(grads)).sum() if grads else None
        if losses is not None:
            total = losses if total is None else total + losses
        if self.mode == "skip":
            optimizer.found_inf = (torch.zeros((), device=self.device) if total is None
                                   else total.isfinite().logical_not().float())
        if total is not None:
            self._pending.append(total)
            self._pending_steps.append(step)
        self._check_pending()

    def _check_pending(self) -> None:
        """Counts the bad entries among the waiting ones and keeps the first's index (device work only)."""
        if not self._pending:
            return
        offset = len(self._steps)
        self._steps.extend(self._pending_steps)
        totals = self._pending[0].reshape(1) if len(self._pending) == 1 else torch.stack(self._pending)
        self._pending, self._pending_steps = [], []
        bad = totals.isfinite().logical_not()
        index = torch.arange(offset, offset + bad.shape[0], device=self.device)
        first_here = torch.where(bad, index, _NONE).amin()
        self.first = torch.where(self.count == 0, first_here, self.first)
        self.count += bad.sum()

    def values(self) -> dict[str, torch.Tensor]:
        """Device values to transfer with the interval's metrics (the waiting losses checked first);
        ``nonfinite_first_step`` is an entry index, which :meth:`step_of` turns into the step."""
        self._check_pending()
        return {"nonfinite_steps": self.count,
                "nonfinite_first_step": torch.where(self.count > 0, self.first, -1)}

    def step_of(self, index: int) -> int:
        """The step of the entry ``index`` from :meth:`values` (-1: none)."""
        return self._steps[index] if 0 <= index < len(self._steps) else -1
