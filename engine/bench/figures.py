"""The figures of ``mmbal bench``: the contenders of :mod:`engine.bench.loops` timed against each
other, and each method's time per epoch as a ratio to ``joint`` with its peak memory (CUDA peak
allocated on a GPU; on a CPU the growth of the process's peak RSS while the method ran, a lower
bound since peak RSS never goes down), next to the algorithmic cost its registration states.
Training only, no evaluation; timings alternate between contenders after a warm-up epoch each and
report the median epoch.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..config import RunConfig, load_preset
from ..data import TensorData
from ..errors import UsageError
from ..methods import METHODS
from ..run import build_parts
from ..train.device import describe_device, resolve_device
from .loops import engine_epochs, hand_epochs, reference_epochs, timed, whole_epochs


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
    step_compiled_epoch_s: float | None = None   # the engine with train.compile = "step"
    step_compile_warmup_s: float | None = None   # its first epoch, compilation included
    load_average: list[float] = field(default_factory=list)   # 1-minute load average before and after
    cores: int = 0
    model_memory: dict | None = None   # the estimate of what training the model takes (engine.models.size)

    @property
    def busy(self) -> bool:
        """Whether the machine was busy around the measurement (see :func:`busy`)."""
        return any(busy(load, self.cores) for load in self.load_average)

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
        d["busy"] = self.busy
        return d


def busy(load: float, cores: int) -> bool:
    """A 1-minute load average above half the cores (the benchmark itself adds about one): other work
    then shares the cores, and times, even ratios, are not speed figures."""
    return cores > 0 and load > max(cores / 2, 1.0) + 1.0


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return 0.0


def median_epochs(contenders: dict[str, Callable[[], None]], device, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name].append(timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def _method_overrides(name: str, cfg: RunConfig) -> list[str]:
    """Options a method needs to run at all (unimodal: which modality)."""
    config = METHODS.entry(name).config
    fields = {f.name for f in dataclasses.fields(config)} if config else set()
    return [f'method.modality="{cfg.modalities[0]}"'] if "modality" in fields else []


def paired_ratio(fn: Callable[[], None], baseline: Callable[[], None], device, repeats: int) -> dict[str, float]:
    """``fn``'s time over ``baseline``'s, measured side by side: each repeat times one call of each,
    in alternating order, and gives one ratio; the median, min and max of the ratios, and the median
    time of ``fn``. Drifts of a shared machine's speed then cancel in each pair."""
    ratios, times = [], []
    for i in range(repeats):
        order = (fn, baseline) if i % 2 == 0 else (baseline, fn)
        t = {id(f): timed(f, device) for f in order}
        ratios.append(t[id(fn)] / t[id(baseline)])
        times.append(t[id(fn)])
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "epoch_s": statistics.median(times)}


def method_figures(preset: str, base: list[str], device, data, repeats: int, methods: list[str],
                   progress: Callable[[str], None] = lambda _: None) -> list[dict]:
    """Each method's time of a whole epoch (steps, validation and its epoch hooks) as a ratio to
    joint's, measured side by side (:func:`paired_ratio`), and its peak memory."""
    rows = []
    base_cfg = load_preset(preset, base)[0]
    joint = whole_epochs(load_preset(preset, base + ['method.name="joint"'])[0], device, data)
    for i, name in enumerate(methods, 1):
        progress(f"[{i}/{len(methods)}] {name} against joint, {repeats} epochs each")
        cfg, _ = load_preset(preset, base + [f'method.name="{name}"'] + _method_overrides(name, base_cfg))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before = _peak_rss()
        epoch = whole_epochs(cfg, device, data)
        ratio = paired_ratio(epoch, joint, device, repeats)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else max(_peak_rss() - before, 0)
        rows.append({"method": name, "epoch_s": round(ratio["epoch_s"], 4), "peak_memory_bytes": int(peak),
                     "algorithmic_cost": METHODS.entry(name).info.cost, "ratio_to_joint": round(ratio["median"], 3),
                     "ratio_min": round(ratio["min"], 3), "ratio_max": round(ratio["max"], 3)})
    return rows


def _peak_rss() -> int:
    import resource
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def run_bench(preset: str, overrides: list[str] = (), repeats: int = 3, reference: bool = True,
              methods: list[str] | None = None, compile: bool = False,
              progress: Callable[[str], None] = lambda _: None) -> BenchResult:
    """All figures for one preset (``methods=None``: every registered method; ``[]``: none);
    ``compile``: also the engine with ``train.compile = true`` and with ``train.compile = "step"``
    (every other contender runs eager);
    ``progress`` is told what is being timed as it goes."""
    loads = [load_average()]
    base = list(overrides)
    cfg, _ = load_preset(preset, base)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=False))
    device = resolve_device(cfg.train.device)
    data, model, _ = build_parts(cfg, device)   # refuses a model too large for the device
    estimate = getattr(model, "memory_estimate", None)
    if not isinstance(data, TensorData):
        raise UsageError(f"{preset}: mmbal bench compares training loops on resident data, but this dataset is "
                         f"streamed from disk ({data.placement.describe()}); set data.mode = \"resident\" with a "
                         f"large enough data.memory_budget, or measure streaming with benchmarks/stream_bench.py")
    contenders = {"engine": engine_epochs(cfg, device, data), "hand": hand_epochs(cfg, device, data)}
    if reference:
        contenders["reference"] = reference_epochs(cfg, device, data)
    warmup: list[float] = []
    step_warmup: list[float] = []
    if compile:
        compiled = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=True))
        progress("compiling the encoders and the fusion head (train.compile = true)")
        contenders["compiled"] = engine_epochs(compiled, device, data, warmup)
        step = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile="step"))
        progress("compiling the training step (train.compile = \"step\")")
        contenders["step_compiled"] = engine_epochs(step, device, data, step_warmup)
    progress(f"timing the loops ({', '.join(contenders)}), {repeats} epochs each")
    times = median_epochs(contenders, device, repeats)
    names = METHODS.names() if methods is None else methods
    rows = method_figures(preset, base, device, data, repeats, names, progress) if names else []
    loads.append(load_average())
    return BenchResult(preset=str(preset), device=describe_device(device), torch=torch.__version__,
                       threads=torch.get_num_threads(), train_samples=int(data.splits["train"].numel()),
                       batch_size=cfg.train.batch_size, engine_epoch_s=round(times["engine"], 4),
                       hand_epoch_s=round(times["hand"], 4),
                       reference_epoch_s=round(times["reference"], 4) if reference else None, methods=rows,
                       compiled_epoch_s=round(times["compiled"], 4) if compile else None,
                       compile_warmup_s=round(warmup[0], 2) if warmup else None,
                       step_compiled_epoch_s=round(times["step_compiled"], 4) if compile else None,
                       step_compile_warmup_s=round(step_warmup[0], 2) if step_warmup else None,
                       load_average=loads, cores=os.cpu_count() or 0,
                       model_memory=estimate.to_dict() if estimate is not None else None)
