"""The contenders of ``mmbal bench``: one epoch of training per call, on one preset's data and model.

* **engine**: mmbal's trainer, recording nothing (:class:`DiscardingRecorder`);
* **hand**: a minimal hand-written loop over the same model and on-device tensors (the ratio to
  the engine is the engine's overhead);
* **reference**: a loop written the way the published repositories write it (a
  ``torch.utils.data.Dataset`` returning one sample at a time from host arrays, a ``DataLoader``,
  ``loss.item()`` each step).

Each builder runs one warm-up epoch before returning its epoch function.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..config import RunConfig
from ..run import build_parts
from ..train.device import autocast_factory
from ..train.optim import build_optimizer
from ..train.trainer import Trainer


class DiscardingRecorder:
    """The trainer's recorder for a benchmark: it keeps nothing (the benchmark measures training, not I/O)."""

    def metrics(self, step, epoch, split, values): pass
    def event(self, name, step, **fields): pass
    def save_checkpoint(self, state, kind): pass
    def save_monitors(self, state): pass
    def progress(self, pos, n_batches, values): pass


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds ``fn`` takes, with the device's queued work finished before and after."""
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def engine_epochs(cfg: RunConfig, device, data, warmup: list | None = None) -> Callable[[], None]:
    """One epoch of mmbal's trainer per call (after a warm-up epoch, whose time is appended to
    ``warmup``: with ``train.compile`` it includes the compilation of the training graphs)."""
    _, model, method = build_parts(cfg, device, data)
    trainer = Trainer(cfg.train, data, model, method, device, cfg.seed, DiscardingRecorder())
    t = timed(trainer.train_epoch_steps, device)
    if warmup is not None:
        warmup.append(t)

    def epoch():
        trainer.pos.epoch += 1
        trainer.pos.batch = 0
        trainer.train_epoch_steps()
    return epoch


class OwnClock:
    """``time.perf_counter`` stopped between one contender's calls (:meth:`pause`, :meth:`resume`).

    The monitors' ``max_overhead`` budget compares their time with the run's wall time so far; with
    contenders timed in turn in one process, the others' time would count as this run's and let the
    monitors work more often than in a run of its own."""

    def __init__(self):
        self.offset = 0.0
        self.paused_at: float | None = None

    def __call__(self) -> float:
        return time.perf_counter() - self.offset

    def pause(self) -> None:
        self.paused_at = time.perf_counter()

    def resume(self) -> None:
        if self.paused_at is not None:
            self.offset += time.perf_counter() - self.paused_at
            self.paused_at = None


def whole_epochs(cfg: RunConfig, device, data, monitors: bool = False) -> Callable[[], None]:
    """One whole epoch of a run per call, as ``mmbal run`` trains it: the optimiser steps, then the
    end of the epoch (validation, selection, the method's epoch hooks such as a stage switch or a
    re-estimate, the checkpoint state); after one warm-up epoch. What methods cost per epoch.
    ``monitors``: with the preset's live monitors (``cfg.monitor``), else none; their time budget
    counts only this contender's calls (:class:`OwnClock`)."""
    _, model, method = build_parts(cfg, device, data)
    trainer = Trainer(cfg.train, data, model, method, device, cfg.seed, DiscardingRecorder(),
                      cfg.monitor if monitors else None)
    clock = OwnClock()
    trainer.monitors.overhead.clock = trainer.monitors.eval_overhead.clock = clock

    def epoch():
        clock.resume()
        trainer.train_epoch_steps()
        trainer.end_epoch()
        clock.pause()
    epoch()
    return epoch


def hand_epochs(cfg: RunConfig, device, data) -> Callable[[], None]:
    """What a careful user writes by hand: forward, fused CE, backward, step. Nothing else."""
    _, model, _ = build_parts(cfg, device, data)
    opt = build_optimizer(cfg.train, [{"params": list(model.parameters())}], device)
    autocast = autocast_factory(cfg.train.precision, device)
    train, bs = data.splits["train"], cfg.train.batch_size
    model.train()

    def epoch():
        order = train[torch.randperm(train.numel(), device=device)]
        for i in range(0, order.numel(), bs):
            idx = order[i:i + bs]
            with autocast():
                out = model({m: t[idx] for m, t in data.x.items()})
            F.cross_entropy(out.fused.float(), data.y[idx]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    epoch()
    return epoch


class _PerSampleDataset(torch.utils.data.Dataset):
    """The research-code pattern: one sample at a time from host arrays."""

    def __init__(self, arrays: dict[str, np.ndarray], labels: np.ndarray):
        self.arrays, self.labels = arrays, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {m: torch.from_numpy(a[i]) for m, a in self.arrays.items()}, int(self.labels[i])


def reference_epochs(cfg: RunConfig, device, data) -> Callable[[], None]:
    """A loop as the published repositories write it: Dataset + DataLoader + ``.item()`` per step."""
    _, model, _ = build_parts(cfg, device, data)
    opt = build_optimizer(cfg.train, [{"params": list(model.parameters())}], device)
    idx = data.splits["train"]
    arrays = {m: t[idx].cpu().numpy() for m, t in data.x.items()}
    loader = torch.utils.data.DataLoader(_PerSampleDataset(arrays, data.y[idx].cpu().numpy()),
                                         batch_size=cfg.train.batch_size, shuffle=True, num_workers=0)
    model.train()

    def epoch():
        total = 0.0
        for x, y in loader:
            x = {m: t.to(device) for m, t in x.items()}
            y = y.to(device)
            loss = F.cross_entropy(model(x).fused, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
    epoch()
    return epoch
