"""Methods with their own options against joint, whole epochs side by side (what ``mmbal bench`` cannot
set, since its ``--set`` applies to joint's preset too).

Each ``METHOD[:KEY=VALUE[:KEY=VALUE...]]`` is a method with preset overrides; each is timed against joint
on the same data as ``mmbal bench`` times methods (``engine.bench.figures.paired_ratio``: alternating
whole epochs, per-repeat ratios, one timing lasting at least 0.2 s), and reported with the median's 95%
interval.

    python benchmarks/method_pairs.py presets/cub10.toml aug aug:method.max_heads=0 --repeats 31
"""

from __future__ import annotations

import argparse

import torch

from engine.bench.figures import paired_ratio, ratio_summary  # noqa: F401 - ratio_summary documents the fields
from engine.bench.loops import whole_epochs
from engine.config import load_preset
from engine.run import build_parts
from engine.train.device import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("preset")
    parser.add_argument("methods", nargs="+", help="METHOD[:KEY=VALUE...]")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base, _ = load_preset(args.preset, [])
    device = resolve_device(base.train.device)
    data, _, _ = build_parts(base, device)
    joint = whole_epochs(load_preset(args.preset, ['method.name="joint"'])[0], device, data)
    for spec in args.methods:
        name, *overrides = spec.split(":")
        cfg, _ = load_preset(args.preset, [f'method.name="{name}"', *overrides])
        r = paired_ratio(whole_epochs(cfg, device, data), joint, device, args.repeats)
        print(f"{spec:40s} {r['median']:.3f} x joint  [95% interval of the median {r['ci_low']:.3f}, "
              f"{r['ci_high']:.3f}; min {r['min']:.3f}, max {r['max']:.3f}]  epoch {r['epoch_s'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
