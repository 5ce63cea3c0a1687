"""Per-step work of the engine in the small-model regime: deterministic op counts, not timings.

For each preset x method x monitors on/off, one warm-up epoch (training steps and the end of the
epoch: validation, monitors, the method's epoch hooks), then the second epoch is counted:

* ``aten/step``: ATen operators dispatched per training step (a ``TorchDispatchMode`` counter: the
  forward, the backward, the optimiser, the method's and the trainer's own small ops, and the
  monitors' online probes and critics, amortised over the epoch's steps);
* ``kernels/step``: those of them that launch a kernel (ATen ops minus pure view / metadata ops such
  as ``view``, ``expand``, ``t``, ``detach``); with ``--kernels`` on CUDA, the CUDA kernels counted
  by ``torch.profiler`` instead;
* ``python/step``: tensor operations called at the Python level (a ``TorchFunctionMode`` counter:
  each ``torch.*``, ``F.*`` or ``Tensor`` method called by the engine, not their internals;
  calls that return no tensor, such as attribute reads, excluded);
* ``aten/epoch end``: ATen ops of the end of the epoch (validation with the monitors' estimators,
  the method's epoch hooks, the checkpoint state);
* the top ATen operators per step.

These counts do not depend on the machine's load, so they can be taken on a busy machine; the time
per step (``--time``, median over repeated epochs, the same model and data) needs a quiet one.

    python benchmarks/step_profile.py                        # cub10 and uci_mfeat, the five methods
    python benchmarks/step_profile.py --presets cub10 --methods joint,mcr --json out.json --time
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.bench.loops import DiscardingRecorder, sync  # noqa: E402
from engine.config import load_preset  # noqa: E402
from engine.monitor import MonitorConfig  # noqa: E402
from engine.run import build_parts  # noqa: E402
from engine.train.trainer import Trainer  # noqa: E402

PRESETS = ("cub10", "uci_mfeat")
METHODS = ("joint", "mcr", "ogm_ge", "aug", "greedy")
VIEW_OPS = frozenset({
    "view", "_unsafe_view", "expand", "t", "transpose", "permute", "detach", "alias", "as_strided", "unsqueeze",
    "squeeze", "select", "slice", "unbind", "split", "split_with_sizes", "chunk", "reshape", "_reshape_alias",
    "lift_fresh", "unflatten", "flatten", "narrow", "expand_as", "view_as", "diagonal", "movedim", "numpy_T",
    "_to_copy_noop", "unfold", "real", "imag", "_neg_view", "_conj", "sym_size", "sym_stride", "sym_numel",
    "is_same_size", "is_nonzero", "_has_compatible_shallow_copy_type", "set_", "resolve_conj", "resolve_neg",
})


class AtenCounter(TorchDispatchMode):
    """Counts every ATen operator call (forward, backward and optimiser alike) by name; with ``sites``,
    also by the innermost function of the engine that called it (``module:function``)."""

    def __init__(self, sites: bool = False):
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.sites: Counter[str] | None = Counter() if sites else None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        if self.sites is not None:
            self.sites[engine_site()] += 1
        return func(*args, **(kwargs or {}))


ENGINE = str(ROOT / "engine")


def engine_site() -> str:
    """``module:function`` of the innermost engine frame on the stack ("torch" when none)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(ENGINE):
            return f"{Path(name).relative_to(ROOT).with_suffix('')}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "torch"


class PythonOpCounter(TorchFunctionMode):
    """Counts the tensor operations called at the Python level (not what they call inside)."""

    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) or (isinstance(out, (tuple, list)) and out
                                             and isinstance(out[0], torch.Tensor)):
            self.ops[getattr(func, "__name__", str(func))] += 1
        return out


def kernel_ops(ops: Counter[str]) -> int:
    """ATen calls that launch a kernel: all but the view / metadata operators."""
    return sum(n for name, n in ops.items() if name not in VIEW_OPS)


def build_trainer(preset: str, method: str, monitors: bool, device: str, extra: list[str]) -> Trainer:
    cfg, _ = load_preset(ROOT / "presets" / f"{preset}.toml",
                         [f"method.name={method}", f"train.device={device}", *extra])
    dev = torch.device(device)
    data, model, meth = build_parts(cfg, dev)
    monitor = cfg.monitor if monitors else MonitorConfig(enabled=False)
    return Trainer(cfg.train, data, model, meth, dev, cfg.seed, DiscardingRecorder(), monitor=monitor)


def counted_epoch(trainer: Trainer, sites: bool) -> dict:
    """Op counts of one training epoch (per step) and of the end of that epoch."""
    steps_before = trainer.pos.step
    with AtenCounter(sites) as aten, PythonOpCounter() as python:
        trainer.train_epoch_steps()
    steps = trainer.pos.step - steps_before
    with AtenCounter(sites) as end:
        trainer.end_epoch()
    return {"steps": steps, "aten": aten.ops, "python": python.ops, "end": end.ops,
            "sites": aten.sites, "end_sites": end.sites}


def cuda_kernels(trainer: Trainer) -> float:
    """CUDA kernels launched per training step over one epoch (``torch.profiler``)."""
    from torch.profiler import ProfilerActivity, profile
    before = trainer.pos.step
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        trainer.train_epoch_steps()
        sync(trainer.device)
    kernels = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    trainer.end_epoch()
    return kernels / max(trainer.pos.step - before, 1)


def timed_steps(trainer: Trainer, repeats: int) -> float:
    """Median seconds per training step over ``repeats`` epochs (the training steps only)."""
    times = []
    for _ in range(repeats):
        before = trainer.pos.step
        sync(trainer.device)
        t = time.perf_counter()
        trainer.train_epoch_steps()
        sync(trainer.device)
        times.append((time.perf_counter() - t) / max(trainer.pos.step - before, 1))
        trainer.pos.epoch += 1
        trainer.pos.batch = 0
    return statistics.median(times)


def timed_epochs(trainer: Trainer, repeats: int) -> float:
    """Median seconds of a whole epoch (steps and end of epoch, as ``mmbal run``) over ``repeats``."""
    times = []
    for _ in range(repeats):
        sync(trainer.device)
        t = time.perf_counter()
        trainer.train_epoch_steps()
        trainer.end_epoch()
        sync(trainer.device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def profile_one(preset: str, method: str, monitors: bool, args) -> dict:
    trainer = build_trainer(preset, method, monitors, args.device, args.set)
    trainer.model.train()
    trainer.train_epoch_steps()     # warm-up: epoch 0
    trainer.end_epoch()
    counted = counted_epoch(trainer, args.sites)
    steps = counted["steps"]
    row = {"preset": preset, "method": method, "monitors": monitors, "steps": steps,
           "aten_per_step": sum(counted["aten"].values()) / steps,
           "kernels_per_step": kernel_ops(counted["aten"]) / steps,
           "python_per_step": sum(counted["python"].values()) / steps,
           "aten_epoch_end": sum(counted["end"].values()),
           "top_aten": [(name, n / steps) for name, n in counted["aten"].most_common(args.top)],
           "top_python": [(name, n / steps) for name, n in counted["python"].most_common(args.top)]}
    if args.sites:
        row["sites_per_step"] = [(site, n / steps) for site, n in counted["sites"].most_common()]
        row["sites_epoch_end"] = counted["end_sites"].most_common()
    if args.kernels and trainer.device.type == "cuda":
        row["cuda_kernels_per_step"] = cuda_kernels(trainer)
    if args.time:
        row["s_per_step"] = timed_steps(trainer, args.repeats)
        row["s_per_epoch"] = timed_epochs(trainer, args.repeats)
    return row


def markdown(rows: list[dict]) -> str:
    head = ("| preset | method | monitors | aten/step | kernels/step | python/step | aten/epoch end | x joint (aten) "
            "| top ATen ops per step |")
    lines = [head, "|" + "---|" * 9]
    joint = {(r["preset"], r["monitors"]): r["aten_per_step"] for r in rows if r["method"] == "joint"}
    for r in rows:
        base = joint.get((r["preset"], r["monitors"]))
        ratio = f"{r['aten_per_step'] / base:.2f}" if base else "-"
        top = ", ".join(f"{name} {n:.0f}" for name, n in r["top_aten"][:5])
        lines.append(f"| {r['preset']} | {r['method']} | {'on' if r['monitors'] else 'off'} | "
                     f"{r['aten_per_step']:.0f} | {r['kernels_per_step']:.0f} | {r['python_per_step']:.0f} | "
                     f"{r['aten_epoch_end']} | {ratio} | {top} |")
    if any("s_per_step" in r for r in rows):
        lines += ["", "| preset | method | monitors | ms/step | s/epoch (with end) |", "|---|---|---|---|---|"]
        lines += [f"| {r['preset']} | {r['method']} | {'on' if r['monitors'] else 'off'} | "
                  f"{1000 * r['s_per_step']:.2f} | {r['s_per_epoch']:.3f} |" for r in rows if "s_per_step" in r]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=",".join(PRESETS), help="preset names in presets/ (comma-separated)")
    parser.add_argument("--methods", default=",".join(METHODS), help="methods (comma-separated)")
    parser.add_argument("--monitors", choices=("both", "on", "off"), default="both")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], help="extra preset overrides KEY=VALUE")
    parser.add_argument("--top", type=int, default=8, help="top operators listed per row")
    parser.add_argument("--kernels", action="store_true", help="count CUDA kernels with torch.profiler (CUDA only)")
    parser.add_argument("--time", action="store_true", help="also time steps and epochs (a quiet machine only)")
    parser.add_argument("--repeats", type=int, default=5, help="epochs timed per row with --time")
    parser.add_argument("--sites", action="store_true", help="attribute ATen ops to the engine function calling them "
                                                                  "(in the JSON rows)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    switches = {"both": (False, True), "on": (True,), "off": (False,)}[args.monitors]
    rows = []
    for preset in args.presets.split(","):
        for method in args.methods.split(","):
            for monitors in switches:
                rows.append(profile_one(preset, method, monitors, args))
                print(f"{preset} {method} monitors={'on' if monitors else 'off'}: "
                      f"{rows[-1]['aten_per_step']:.0f} aten ops/step", file=sys.stderr, flush=True)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
