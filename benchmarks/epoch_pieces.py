"""Where the engine's time per epoch goes beyond its optimiser steps, piece by piece.

One preset's model in mmbal's trainer (recording nothing, as ``mmbal bench``'s engine loop), timers
around the trainer's pieces for ``--epochs`` epochs of training steps (no evaluation): each piece's
total time divided by the epochs, and its calls per epoch. Per-step pieces (``train_one``, the batch's
rows) sit next to the per-epoch ones (the epoch's set-up, the flush of the interval's train record to
the host, and within the flush the interval's sums and the one transfer), so a small dataset's
fixed cost per epoch shows. The timers add a few microseconds a call, so the pieces sum to a little
more than an untimed epoch; compare against ``mmbal bench``'s hand loop for the overhead itself.

    python benchmarks/epoch_pieces.py presets/nutrimouse.toml --epochs 1000
"""

from __future__ import annotations

import argparse
import collections
import time

import torch

import engine.data.dataset as dataset
import engine.train.trainer as trainer_module
from engine.bench.loops import engine_epochs
from engine.config import load_preset
from engine.run import build_parts
from engine.train.device import resolve_device
from engine.train.interval import RunningSums

PIECES = [  # (owner, attribute, label)
    (trainer_module.Trainer, "train_epoch_steps", "the epoch (steps and flushes)"),
    (trainer_module.Trainer, "train_one", "  one optimiser step (train_one)"),
    (dataset.TensorData, "train_epoch", "  the epoch's set-up (permutation, slices, row gather)"),
    (dataset.TensorData, "train_batch", "  a batch's rows (index_select per modality)"),
    (trainer_module.Trainer, "_flush_interval", "  the flush of the train record"),
    (RunningSums, "means", "    the interval's sums and means"),
    (trainer_module, "to_host", "    the one transfer to the host"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("preset")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg, _ = load_preset(args.preset, [])
    device = resolve_device(cfg.train.device)
    data, _, _ = build_parts(cfg, device)
    epoch = engine_epochs(cfg, device, data)
    total: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()

    def timed(fn, label):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                total[label] += time.perf_counter() - t
                calls[label] += 1
        return wrapper

    for owner, name, label in PIECES:
        setattr(owner, name, timed(getattr(owner, name), label))
    for _ in range(20):
        epoch()
    total.clear()
    calls.clear()
    for _ in range(args.epochs):
        epoch()
    print(f"{args.preset}: {args.epochs} epochs of training steps, {torch.get_num_threads()} threads")
    for _, _, label in PIECES:
        print(f"{label:58s} {total[label] / args.epochs * 1e3:8.3f} ms/epoch  {calls[label] / args.epochs:6.2f} calls")


if __name__ == "__main__":
    main()
