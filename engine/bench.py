"""Speed figures for ``mmbal bench`` and BENCHMARKS.md.

Three comparisons, all on one preset's data and model, training only (no evaluation):

* **engine vs hand loop**: mmbal's trainer against a minimal hand-written loop over the same model
  and the same on-device tensors (the ratio is the engine's overhead);
* **engine vs reference-style loop**: against a loop written the way the published repositories
  write it (a ``torch.utils.data.Dataset`` returning one sample at a time from host arrays, a
  ``DataLoader``, ``loss.item()`` each step) on the same model (mmbal's speed-up);
* **methods vs joint**: each registered method's time per epoch as a ratio to ``joint``, and its
  peak memory (CUDA peak allocated on a GPU; on a CPU the growth of the process's peak RSS while
  the method ran, a lower bound since peak RSS never goes down), next to the algorithmic cost of
  methods-catalog.md section 4.

Timings alternate between contenders after a warm-up epoch each, and report the median epoch.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .config import RunConfig, load_preset
from .data import TensorData
from .errors import UsageError
from .methods import METHODS
from .run import build_parts
from .train.device import autocast_factory, describe_device, resolve_device
from .train.optim import build_optimizer
from .train.trainer import Trainer

class NullRecorder:
    """A recorder that keeps nothing (the benchmark measures training, not I/O)."""

    def metrics(self, step, epoch, split, values): pass
    def event(self, name, step, **fields): pass
    def save_checkpoint(self, state, kind): pass
    def progress(self, pos, n_batches, values): pass


@dataclass
class BenchResult:
    preset: str
    device: str
    torch: str
    threads: int
    train_samples: int
    batch_size: int
    engine_epoch_s: float
    hand_epoch_s: float
    reference_epoch_s: float | None
    methods: list[dict] = field(default_factory=list)
    compiled_epoch_s: float | None = None     # the engine with train.compile = true
    compile_warmup_s: float | None = None     # its first epoch, compilation included

    @property
    def overhead(self) -> float:
        return self.engine_epoch_s / self.hand_epoch_s

    @property
    def speedup_vs_reference(self) -> float | None:
        return self.reference_epoch_s / self.engine_epoch_s if self.reference_epoch_s else None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["overhead"] = round(self.overhead, 3)
        d["speedup_vs_reference"] = round(self.speedup_vs_reference, 2) if self.reference_epoch_s else None
        d["engine_samples_per_s"] = round(self.train_samples / self.engine_epoch_s, 1)
        d["hand_samples_per_s"] = round(self.train_samples / self.hand_epoch_s, 1)
        return d


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def engine_epochs(cfg: RunConfig, device, data, warmup: list | None = None) -> callable:
    """One epoch of mmbal's trainer per call (after a warm-up epoch, whose time is appended to
    ``warmup``: with ``train.compile`` it includes the compilation of the training graphs)."""
    _, model, method = build_parts(cfg, device, data)
    trainer = Trainer(cfg.train, data, model, method, device, cfg.seed, NullRecorder())
    t = _timed(trainer.train_epoch_steps, device)
    if warmup is not None:
        warmup.append(t)

    def epoch():
        trainer.pos.epoch += 1
        trainer.pos.batch = 0
        trainer.train_epoch_steps()
    return epoch


def hand_epochs(cfg: RunConfig, device, data) -> callable:
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


def reference_epochs(cfg: RunConfig, device, data) -> callable:
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


def median_epochs(contenders: dict[str, callable], device, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name].append(_timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def _method_overrides(name: str, cfg: RunConfig) -> list[str]:
    """Options a method needs to run at all (unimodal: which modality)."""
    config = METHODS.entry(name).config
    fields = {f.name for f in dataclasses.fields(config)} if config else set()
    return [f'method.modality="{cfg.modalities[0]}"'] if "modality" in fields else []


def method_figures(preset: str, base: list[str], device, data, repeats: int, methods: list[str]) -> list[dict]:
    """Each method's median epoch time (ratio to joint) and peak memory."""
    rows = []
    for name in methods:
        cfg, _ = load_preset(preset, base + [f'method.name="{name}"'] + _method_overrides(name, load_preset(preset, base)[0]))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before = _peak_rss()
        epoch = engine_epochs(cfg, device, data)
        t = median_epochs({name: epoch}, device, repeats)[name]
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else max(_peak_rss() - before, 0)
        rows.append({"method": name, "epoch_s": round(t, 4), "peak_memory_bytes": int(peak),
                     "algorithmic_cost": METHODS.entry(name).info.cost})
    joint = next((r["epoch_s"] for r in rows if r["method"] == "joint"), None)
    for r in rows:
        r["ratio_to_joint"] = round(r["epoch_s"] / joint, 3) if joint else None
    return rows


def _peak_rss() -> int:
    import resource
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def run_bench(preset: str, overrides: list[str] = (), repeats: int = 3, reference: bool = True,
              methods: list[str] | None = None, compile: bool = False) -> BenchResult:
    """All figures for one preset (``methods=None``: every registered method; ``[]``: none);
    ``compile``: also the engine with ``train.compile`` on (every other contender runs eager)."""
    base = list(overrides)
    cfg, _ = load_preset(preset, base)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=False))
    device = resolve_device(cfg.train.device)
    data, _, _ = build_parts(cfg, device)
    if not isinstance(data, TensorData):
        raise UsageError(f"{preset}: mmbal bench compares training loops on resident data, but this dataset is "
                         f"streamed from disk ({data.placement.describe()}); set data.mode = \"resident\" with a "
                         f"large enough data.memory_budget, or measure streaming with benchmarks/stream_bench.py")
    contenders = {"engine": engine_epochs(cfg, device, data), "hand": hand_epochs(cfg, device, data)}
    if reference:
        contenders["reference"] = reference_epochs(cfg, device, data)
    warmup: list[float] = []
    if compile:
        compiled = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=True))
        contenders["compiled"] = engine_epochs(compiled, device, data, warmup)
    times = median_epochs(contenders, device, repeats)
    names = METHODS.names() if methods is None else methods
    rows = method_figures(preset, base, device, data, repeats, names) if names else []
    return BenchResult(preset=str(preset), device=describe_device(device), torch=torch.__version__,
                       threads=torch.get_num_threads(), train_samples=int(data.splits["train"].numel()),
                       batch_size=cfg.train.batch_size, engine_epoch_s=round(times["engine"], 4),
                       hand_epoch_s=round(times["hand"], 4),
                       reference_epoch_s=round(times["reference"], 4) if reference else None, methods=rows,
                       compiled_epoch_s=round(times["compiled"], 4) if compile else None,
                       compile_warmup_s=round(warmup[0], 2) if warmup else None)
