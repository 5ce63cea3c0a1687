"""Where the engine's per-step time goes beyond a hand-written step, piece by piece.

One process, one preset's model built twice (the engine's trainer and a hand-written loop over an
identical model), one fixed batch. Each iteration runs one engine step, timing its pieces with
``time.perf_counter`` around a copy of ``Trainer.train_one``'s body (the schedule and position
bookkeeping, the step context, the method's ``train_step`` with its backward, guard and optimiser,
the monitors' hook, the interval's record of the step), then one hand-written step (forward, fused
cross-entropy, backward, fused Adam). Interleaving them puts both under the same drifts of a shared
machine's speed. Medians over the iterations; never a logging step (no flush), so this is the
steady per-step cost; the per-epoch work (the flush, the epoch's permutation) is not in it.

    python benchmarks/step_pieces.py presets/quickstart.toml --steps 3000
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from engine.bench.loops import DiscardingRecorder
from engine.config import load_preset
from engine.faults import fault_point
from engine.run import build_parts
from engine.train.data_parallel import sync_module_state
from engine.train.device import resolve_device
from engine.train.optim import build_optimizer, lr_factor, set_lr
from engine.train.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("preset")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg, _ = load_preset(args.preset, [])
    device = resolve_device(cfg.train.device)
    data, model, method = build_parts(cfg, device)
    trainer = Trainer(cfg.train, data, model, method, device, cfg.seed, DiscardingRecorder())
    _, hand_model, _ = build_parts(cfg, device, data)
    hand_opt = build_optimizer(cfg.train, [{"params": list(hand_model.parameters())}], device)
    rows = data.splits["train"][:cfg.train.batch_size]
    x, y = data.batch(rows)

    def hand() -> None:
        F.cross_entropy(hand_model(x).fused.float(), y).backward()
        hand_opt.step()
        hand_opt.zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {}

    def lap(name: str, t0: float) -> float:
        t1 = time.perf_counter()
        times.setdefault(name, []).append(t1 - t0)
        return t1

    trainer._n_batches = 10
    for i in range(args.steps + 50):
        trainer.pos.step, trainer.pos.batch = 5, 1   # never a logging step
        t = time.perf_counter()
        batch, n = trainer.pos.batch, trainer._n_batches
        trainer._lr = set_lr(trainer.optimizer, lr_factor(trainer.cfg, trainer.pos.epoch * n + batch, n))
        trainer._log_now = trainer.logs_after(trainer.pos.step + 1) or batch == n - 1
        sync_module_state(trainer.model, trainer.method.modules, buffers_only=True)
        t = lap("bookkeeping (schedule, position)", t)
        ctx = trainer._step_context(batch)
        t = lap("step context", t)
        result = trainer.method.train_step(x, y, ctx)
        t = lap("method.train_step (forward, loss, backward, guard, optimiser)", t)
        fault_point(trainer.fault_site)
        trainer._observe(result.output, y)
        t = lap("monitors' hook", t)
        trainer._record_step(result, y)
        lap("the step's train values (interval)", t)
        t = time.perf_counter()
        hand()
        lap("hand-written step", t)
        if i == 49:
            times.clear()   # warm-up
    hand_median = statistics.median(times["hand-written step"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:66s} {median * 1e6:9.1f} us  {median / hand_median:6.3f} x hand step")
    engine = sum(statistics.median(v) for k, v in times.items() if k != "hand-written step")
    print(f"{'engine step, sum of the pieces':66s} {engine * 1e6:9.1f} us  {engine / hand_median:6.3f} x hand step")


if __name__ == "__main__":
    main()
