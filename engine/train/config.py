"""Options of the training loop: the preset's ``[train]`` table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..schema import opt


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = opt(10, ge=1, help="number of passes over the training split")
    batch_size: int = opt(64, ge=1, help="samples per optimiser step")
    eval_batch_size: int = opt(1024, ge=1, help="samples per forward pass at evaluation")
    optimizer: Literal["sgd", "adam", "adamw"] = opt("adam", help="optimiser")
    lr: float = opt(1e-3, gt=0, help="peak learning rate")
    momentum: float = opt(0.9, ge=0, lt=1, help="SGD momentum")
    nesterov: bool = opt(False, help="SGD Nesterov momentum")
    betas: list[float] = opt([0.9, 0.999], ge=0, lt=1, help="Adam/AdamW betas")
    weight_decay: float = opt(0.0, ge=0, help="weight decay (decoupled for adamw)")
    scheduler: Literal["none", "step", "cosine"] = opt("none", help="learning-rate schedule after warm-up")
    warmup_epochs: float = opt(0.0, ge=0, help="linear warm-up from 0, in epochs (fractions allowed)")
    step_size: int = opt(30, ge=1, help="step schedule: epochs between decays")
    gamma: float = opt(0.1, gt=0, le=1, help="step schedule: decay factor")
    min_lr_ratio: float = opt(0.0, ge=0, le=1, help="cosine schedule: final lr as a fraction of lr")
    grad_clip: float = opt(0.0, ge=0, help="clip the global gradient norm to this (0: off)")
    precision: Literal["auto", "fp32", "bf16"] = opt(
        "auto", help="auto: bf16 autocast on CUDA, fp32 on the CPU")
    device: str = opt("auto", help="auto | cpu | cuda | cuda:N")
    select_metric: str = opt("val/acc/fused", help="validation metric that selects the best checkpoint")
    early_stop: int = opt(0, ge=0, help="stop when select_metric has not improved for this many epochs (0: off); "
                                        "the selected checkpoint is tested as at the planned end")
    early_stop_min_delta: float = opt(0.0, ge=0, help="early stopping: an improvement must exceed this")
    log_every: int = opt(25, ge=1, help="training steps between metric records (host syncs)")
    drop_last: bool = opt(False, help="drop the last incomplete training batch")
    threads: int = opt(0, ge=0, le=1024, help="CPU threads for torch (0: torch's default)")
    on_nonfinite: Literal["stop", "skip"] = opt(
        "stop", help="a non-finite loss or gradient: stop the run (keeping the last good checkpoint) or skip the step")
    compile: bool | Literal["step"] = opt(
        False, help="true: torch.compile the encoders and the fusion head in place (batch size dynamic; same "
                    "checkpoints; falls back to eager with a warning if compilation fails); \"step\": the whole "
                    "training step's forward, loss and backward as one compiled graph, for methods that allow it "
                    "(others: as true, with a warning)")
    channels_last: bool | Literal["auto"] = opt(
        "auto", help="channels-last memory format for the 2-D conv encoders (conv2d, resnet18), weights and "
                     "inputs: auto = on CUDA, off on the CPU")

    def __post_init__(self):
        if len(self.betas) != 2:
            raise ValueError("train.betas must have two values, e.g. [0.9, 0.999]")
        beta1, beta2 = self.betas
        if self.optimizer != "sgd" and beta1 ** 2 > beta2:
            # with beta1 > sqrt(beta2), m / sqrt(v) grows without bound while a gradient stays at 0
            # (gamma = beta1 / sqrt(beta2) < 1 is the condition of Reddi et al., ICLR 2018)
            raise ValueError(f"train.betas = [{beta1:g}, {beta2:g}]: {self.optimizer} needs beta1 <= sqrt(beta2), else "
                             f"its step m / sqrt(v) is unbounded; e.g. [0.9, 0.999]")
        parts = self.select_metric.split("/")
        if len(parts) != 3 or parts[0] != "val" or parts[1] not in ("acc", "f1", "loss"):
            raise ValueError(f"train.select_metric must look like 'val/acc/fused' or 'val/f1/<modality>', "
                             f"got '{self.select_metric}'")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"train.warmup_epochs ({self.warmup_epochs:g}) must be below train.epochs "
                             f"({self.epochs}): the warm-up would never end; for a short trial run add "
                             f"--set train.warmup_epochs=0 (or a fraction below {self.epochs})")

    def steps_per_epoch(self, n_train: int) -> int:
        """Optimiser steps in one pass over ``n_train`` training samples."""
        b = self.batch_size
        return max(n_train // b, 1) if self.drop_last else -(-n_train // b)

    @property
    def select_mode(self) -> str:
        return "min" if self.select_metric.split("/")[1] == "loss" else "max"
