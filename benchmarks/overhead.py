"""Engine overhead: mmbal's trainer vs a minimal hand-written PyTorch loop, same model, same tensors.

    python benchmarks/overhead.py [PRESET] [--epochs N] [--repeats R] [--device DEV] [--json]

Both loops train the same freshly built model (same seed) with the same optimiser on the same
on-device tensors, in batches of index slices of a random permutation; the engine's loop also
runs the method interface, accumulates per-modality train accuracy and live values on the device
and logs once per interval. Evaluation is excluded from both. Runs alternate (engine, hand,
engine, ...) after a warm-up epoch each, and the median time per epoch is reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.config import load_preset  # noqa: E402
from engine.run import build_parts  # noqa: E402
from engine.train.device import autocast_factory, describe_device, resolve_device  # noqa: E402
from engine.train.optim import build_optimizer  # noqa: E402
from engine.train.trainer import Trainer  # noqa: E402


class NullRecorder:
    def metrics(self, step, epoch, split, values): pass
    def event(self, name, step, **fields): pass
    def save_checkpoint(self, state, kind): pass
    def progress(self, pos, n_batches, values): pass


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_epoch_seconds(cfg, device, data, epochs):
    _, model, method = build_parts(cfg, device, data)
    trainer = Trainer(cfg.train, data, model, method, device, cfg.seed, NullRecorder())
    trainer.train_epoch_steps()  # warm-up
    times = []
    for _ in range(epochs):
        trainer.pos.epoch += 1
        trainer.pos.batch = 0
        sync(device)
        t = time.perf_counter()
        trainer.train_epoch_steps()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def hand_epoch_seconds(cfg, device, data, epochs):
    """What a careful user writes by hand: forward, fused CE, backward, step. Nothing else."""
    _, model, method = build_parts(cfg, device, data)
    opt = build_optimizer(cfg.train, [{"params": list(model.parameters())}], device)
    autocast = autocast_factory(cfg.train.precision, device)
    train = data.splits["train"]
    bs = cfg.train.batch_size
    model.train()

    def one_epoch():
        order = train[torch.randperm(train.numel(), device=device)]
        for i in range(0, order.numel(), bs):
            idx = order[i:i + bs]
            x = {m: t[idx] for m, t in data.x.items()}
            with autocast():
                out = model(x)
            loss = F.cross_entropy(out.fused.float(), data.y[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    one_epoch()
    times = []
    for _ in range(epochs):
        sync(device)
        t = time.perf_counter()
        one_epoch()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("preset", nargs="?", default=str(ROOT / "presets" / "avdigits.toml"))
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    cfg, _ = load_preset(args.preset, [f'train.device="{args.device}"'])
    device = resolve_device(cfg.train.device)
    data, _, _ = build_parts(cfg, device)
    n = int(data.splits["train"].numel())
    engine, hand = [], []
    for _ in range(args.repeats):
        engine += engine_epoch_seconds(cfg, device, data, args.epochs)
        hand += hand_epoch_seconds(cfg, device, data, args.epochs)
    e, h = statistics.median(engine), statistics.median(hand)
    result = {
        "preset": Path(args.preset).name, "device": describe_device(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "python": platform.python_version(), "date": date.today().isoformat(),
        "train_samples": n, "batch_size": cfg.train.batch_size,
        "engine_epoch_s": round(e, 4), "hand_epoch_s": round(h, 4),
        "engine_samples_per_s": round(n / e, 1), "hand_samples_per_s": round(n / h, 1),
        "overhead_ratio": round(e / h, 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")


if __name__ == "__main__":
    main()
