"""Which way of compiling a whole training step is fastest here: the measurement behind
``engine/train/step_compile.py``'s design.

Usage: python benchmarks/step_compile_variants.py [PRESET] [--repeats N] [--threads N]

On one preset's model and resident training data (method ``joint``'s step: forward, fused
cross-entropy, backward, optimiser step, nothing else), one epoch per call of each variant:

* **eager**: no compilation, the fused optimiser (the engine's default);
* **aot**: forward and loss as one compiled graph (AOTAutograd compiles its backward, which
  ``loss.backward()`` runs), the fused optimiser eager (what ``train.compile = "step"`` does);
* **compiled_autograd**: forward, loss and ``backward()`` in one compiled function with Dynamo's
  compiled autograd, the fused optimiser eager;
* **aot_compiled_optimizer**: as ``aot``, with the optimiser step compiled too (PyTorch's recipe:
  a ``foreach``, ``capturable`` optimiser with the learning rate as a tensor, since Dynamo does not
  trace the fused kernels).

Prints the median process CPU time per epoch over alternating repeats after a warm-up epoch each
(the first, compiling, epoch apart) and the 1-minute load average before and after. CPU time, not
wall time, so that other jobs on a shared machine disturb it less; it still is not a speed figure
on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.config import load_preset
from engine.run import build_parts

ROOT = Path(__file__).resolve().parents[1]


def batches(data, batch_size: int):
    train = data.splits["train"]
    return [({m: t[idx] for m, t in data.x.items()}, data.y[idx]) for idx in train.split(batch_size)]


def variant(kind: str, cfg, data):
    """(one epoch of ``kind``, the seconds of CPU time its first epoch took)."""
    _, model, _ = build_parts(cfg, torch.device("cpu"), data)
    model.train()
    params = list(model.parameters())
    if kind == "aot_compiled_optimizer":
        opt = torch.optim.Adam(params, lr=torch.tensor(cfg.train.lr), foreach=True, capturable=True)
        opt_step = torch.compile(opt.step)
    else:
        opt = torch.optim.Adam(params, lr=cfg.train.lr, fused=True)
        opt_step = opt.step

    def loss_of(x, y):
        return F.cross_entropy(model(x).fused.float(), y)

    def loss_and_backward(x, y):
        loss = loss_of(x, y)
        loss.backward()
        return loss.detach()

    compiled_loss = loss_of if kind == "eager" else torch.compile(loss_of)
    compiled_both = torch.compile(loss_and_backward)
    work = batches(data, cfg.train.batch_size)

    def step(x, y):
        if kind == "compiled_autograd":
            with torch._dynamo.compiled_autograd._enable(torch.compile):
                compiled_both(x, y)
        else:
            compiled_loss(x, y).backward()
        opt_step()
        opt.zero_grad(set_to_none=True)

    def epoch():
        for x, y in work:
            step(x, y)
    t = time.process_time()
    epoch()
    return epoch, time.process_time() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", nargs="?", default=str(ROOT / "presets" / "quickstart.toml"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import torch._inductor.config as inductor_config
    inductor_config.fallback_random = True
    load_before = os.getloadavg()[0]
    cfg, _ = load_preset(args.preset, [f"train.threads={args.threads}"])
    data, _, _ = build_parts(cfg, torch.device("cpu"))
    kinds = ["eager", "aot", "compiled_autograd", "aot_compiled_optimizer"]
    built = {k: variant(k, cfg, data) for k in kinds}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for k in kinds:
            t = time.process_time()
            built[k][0]()
            times[k].append(time.process_time() - t)
    print(f"{Path(args.preset).name}: {args.threads} thread(s), torch {torch.__version__}, "
          f"load {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    eager = statistics.median(times["eager"])
    for k in kinds:
        median = statistics.median(times[k])
        print(f"  {k:24s} {median * 1000:8.1f} ms/epoch CPU  ({median / eager:.2f}x eager; "
              f"first epoch {built[k][1]:.1f} s)")


if __name__ == "__main__":
    main()
