"""Catching non-finite losses and gradients on the device, without a host sync per step.

Each backward adds its loss to the step's sum. The values to check (the steps' losses, and gradient
norms where they are taken) wait on the device and reach the host once per logging interval, in the
same transfer as the other metrics; the host counts the non-finite ones (no device work for the check).

``train.on_nonfinite``:

* ``"stop"`` (default): the run stops at the next logging interval, naming the first bad step, the
  method and the last gradient norms per modality; no checkpoint is written after it (the end-of-epoch
  flush comes before the epoch's checkpoint, and a stop request checks the waiting values before its
  own), so the last good checkpoint stays the resumable one.
  Every step's loss is checked. The gradients are checked (one fused norm over them) at the steps that
  end a logging interval, the last step before every flush and checkpoint. On the other steps their
  norm is not taken, which is most of the guard's cost on a small model (about 0.1 ms of a 2.5 ms step
  on cub10): a non-finite gradient under a finite loss turns the weights non-finite in the optimiser's
  update (NaN or inf times any step size; clipping by a non-finite norm gives NaN), so the next step's
  loss is non-finite, and that step is the one named (one after the gradient's own).
* ``"skip"``: every step's loss and gradients are checked, and a bad step is skipped on the device
  through the fused optimisers' ``found_inf`` flag, the same mechanism AMP's GradScaler uses (SGD's
  momentum buffers start at zero, see ``optim.prime_momentum_buffers``); skipped steps are counted in
  the train record (``nonfinite_steps``). A checkpoint taken mid-interval (a stop request) reads the
  waiting values first and keeps the bad steps found in the guard's state, so the resumed run's next
  record counts them (:meth:`NonFiniteGuard.hold`).
"""

from __future__ import annotations

import math

import torch

from ..errors import UsageError


class NonFiniteGuard:
    """Collects each optimiser step's checked values on the device; :meth:`values` hands them to the
    interval's one host transfer and :meth:`read` counts the bad steps on the host (no device work for
    the check itself)."""

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
        self._held: list[int] = []   # bad steps already read (:meth:`hold`), not yet in a record
        self.reset()

    def reset(self) -> None:
        self._entries: list[torch.Tensor] = []   # 0-d device values: non-finite when their step was bad
        self._steps: list[int] = []              # the step of each entry

    def after_backward(self, loss: torch.Tensor) -> None:
        value = loss.detach()
        self._losses = value if self._losses is None else self._losses + value

    def before_step(self, optimizer: torch.optim.Optimizer, step: int, norms: list[torch.Tensor] | None) -> None:
        """The check of optimiser step ``step`` (1-based): its losses, and the norms of its gradients where
        given (one fused norm of every gradient, taken by the trainer), wait on the device for
        :meth:`values`. ``"skip"`` (norms every step) sums them into one value, which also sets the fused
        optimiser's ``found_inf`` flag (a sum is non-finite when a term is: inf + finite = inf, inf - inf =
        nan; finite terms summing to a non-finite value would need norms near float32's maximum, which no
        training survives anyway)."""
        losses, self._losses = self._losses, None
        if self.mode == "skip":
            total = torch.stack(norms).sum() if norms else torch.zeros((), device=self.device)
            total = total if losses is None else total + losses
            optimizer.found_inf = total.isfinite().logical_not().float()
            self._wait(total, step)
            return
        if losses is not None:
            self._wait(losses.clone() if self.copy_waiting else losses, step)
        for norm in norms or ():
            self._wait(norm, step)

    def _wait(self, value: torch.Tensor, step: int) -> None:
        self._entries.append(value)
        self._steps.append(step)

    def values(self) -> dict[str, torch.Tensor]:
        """The waiting values, named ``nonfinite/<i>``, for the interval's one host transfer; their host
        values go to :meth:`read`."""
        return {f"nonfinite/{i}": v for i, v in enumerate(self._entries)}

    def read(self, host: dict[str, float]) -> tuple[int, int, int]:
        """Pops :meth:`values`' names from ``host`` (their host values); returns (number of bad steps, the
        first bad step or -1, the first bad step among the waiting values or -1), the held ones
        (:meth:`hold`) included in the first two, then starts over. A held step was skipped under ``"skip"``
        before a checkpoint, so only a waiting one is a reason to stop (a resume may switch to ``"stop"``)."""
        found = self.hold(host)
        self._held = []
        return found

    def hold(self, host: dict[str, float]) -> tuple[int, int, int]:
        """As :meth:`read`, but the bad steps stay counted (and saved with :meth:`state_dict`) until the
        next :meth:`read`: for a checkpoint taken before the interval's record is written."""
        fresh = self._waiting_bad_steps(host)
        self._held = sorted(set(fresh).union(self._held))
        return len(self._held), (self._held[0] if self._held else -1), (fresh[0] if fresh else -1)

    def _waiting_bad_steps(self, host: dict[str, float]) -> list[int]:
        """The steps of the non-finite waiting values (popped from ``host``), sorted; they start over."""
        found = sorted({s for i, s in enumerate(self._steps) if not math.isfinite(host.pop(f"nonfinite/{i}"))})
        self.reset()
        return found

    def state_dict(self) -> dict:
        """The held bad steps (the waiting values are read before any checkpoint: :meth:`hold`)."""
        return {"held": list(self._held)}

    def load_state_dict(self, state: dict | None) -> None:
        """Restores :meth:`state_dict`'s; ``None`` (a checkpoint from before it was saved): none held."""
        self._held = list((state or {}).get("held", ()))
