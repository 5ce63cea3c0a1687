"""Nested training inside a run, apart from it: G-Blending's weight estimation.

Gradient-Blending (Wang, Tran, Feiszli, "What Makes Training Multi-Modal Classification Networks
Hard?", CVPR 2020) estimates each modality's blending weight from how a copy of the model trained
on part of the training split generalises to the held-out part (the overfitting-to-generalisation
ratio). :func:`train_nested` trains such a copy: a separate :class:`~engine.train.trainer.Trainer`
with the run's ``[train]`` options (``epochs`` replaced), no monitors and a recorder that keeps
nothing, on a batch source such as ``data.subset(train_rows, held_out_rows)``, and returns the
copy's metrics on the source's train and val splits before and after.

It does not disturb the run: the global RNG states (Python, NumPy, torch, CUDA) are saved first
and restored after, and the copy draws from a stream seeded by ``seed`` alone, so the main run's
batches, dropout masks and noise are the same whether or when nested training happens, and the
nested result is a function of (state of the copy, rows, seed). Methods reach it as
``ctx.train_nested`` (the trainer installs it), since the methods may not import the trainer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .checkpoint import capture_rng, restore_rng, seed_everything
from .config import TrainConfig


@dataclass
class NestedResult:
    """Metrics of the nested copy (``train/...`` and ``val/...`` names) before and after its training."""

    before: dict[str, float]
    after: dict[str, float]


class _KeepNothing:
    def metrics(self, step, epoch, split, values): pass
    def event(self, name, step, **fields): pass
    def save_checkpoint(self, state, kind): pass
    def save_monitors(self, state): pass
    def progress(self, position, n_batches, values): pass


def train_nested(trainer_cls, cfg: TrainConfig, device: torch.device, model, method, data, epochs: int,
                 seed: int) -> NestedResult:
    """Train ``model`` (a copy the caller made) with ``method`` on ``data`` for ``epochs`` epochs with a
    ``trainer_cls`` (the run's :class:`~engine.train.trainer.Trainer`, which installs this function as
    ``ctx.train_nested``) and the run's ``[train]`` options; the run's RNG streams are left as they were."""
    nested_cfg = dataclasses.replace(cfg, epochs=epochs, warmup_epochs=min(cfg.warmup_epochs, epochs / 2),
                                     compile=False, select_metric="val/loss/fused")
    saved = capture_rng()
    device_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        seed_everything(seed)
        trainer = trainer_cls(nested_cfg, data, model, method, device, seed, _KeepNothing())
        trainer.fault_site = "nested_step"   # a test's "step" faults count the run's own steps
        before = _scores(trainer)
        while trainer.pos.epoch < epochs:
            trainer.train_epoch_steps()
            trainer.end_epoch()
        return NestedResult(before, _scores(trainer))
    finally:
        restore_rng(saved)
        if device_rng is not None:
            torch.cuda.set_rng_state(device_rng, device)


def _scores(trainer) -> dict[str, float]:
    values = {}
    for split in ("train", "val"):
        if trainer.data.split_size(split):
            values.update(trainer.evaluate(split))
    return values
