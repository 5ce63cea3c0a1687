"""What Gaussian noise per parameter costs on this machine (OGM-GE's generalisation enhancement).

Times ``torch.randn`` (and ``torch.rand``) of N float32 numbers, N the number of encoder parameters of
a preset's model (cub10: 405,248), eagerly and compiled by Inductor (which draws with its own generator),
median of alternating calls.

    python benchmarks/rng_cost.py presets/cub10.toml
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from engine.config import load_preset
from engine.run import build_parts
from engine.train.device import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("preset")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg, _ = load_preset(args.preset, [])
    device = resolve_device(cfg.train.device)
    _, model, _ = build_parts(cfg, device)
    n = sum(p.numel() for m in model.modalities for p in model.encoder_parameters(m))
    gen = torch.Generator(device=device).manual_seed(0)
    like = torch.empty(n, device=device)
    draws = {"randn (eager)": lambda: torch.randn(n, generator=gen, device=device),
             "rand (eager)": lambda: torch.rand(n, generator=gen, device=device)}
    if not args.no_compile:
        compiled = torch.compile(lambda t: torch.randn(t.shape[0], device=t.device, dtype=t.dtype))
        draws["randn (Inductor)"] = lambda: compiled(like)
    for fn in draws.values():
        for _ in range(5):
            fn()
    times: dict[str, list[float]] = {k: [] for k in draws}
    for _ in range(args.calls):
        for name, fn in draws.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - t)
    print(f"{n:,} encoder parameters on {device}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:18s} {median * 1e3:8.3f} ms  ({median / n * 1e9:.2f} ns a number)")


if __name__ == "__main__":
    main()
