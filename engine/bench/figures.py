"""The figures of ``mmbal bench``: the contenders of :mod:`engine.bench.loops` timed against each
other, and each method's time per epoch as a ratio to ``joint`` with its peak memory (CUDA peak
allocated on a GPU; on a CPU the growth of the process's peak RSS while the method ran, a lower
bound since peak RSS never goes down), next to the algorithmic cost its registration states.
Training only, no evaluation; timings alternate between contenders after a warm-up epoch each (the
order reversed every other repeat), and every ratio is taken per repeat, within one pass over the
contenders, then summarised by its median, min, max and the 95% confidence interval of the median:
a shared machine's drifts in speed cancel within a repeat, and a ratio whose median is uncertain by
more than :data:`WIDE` is flagged as too spread to trust (:func:`too_wide`).
"""

from __future__ import annotations

import dataclasses
import math
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
    # per-repeat ratios of the loops ("engine/hand", "reference/engine", "compiled/hand", "step_compiled/hand"):
    # {"median", "min", "max", "ci_low", "ci_high"} each (see ratio_summary)
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)
    cores: int = 0
    model_memory: dict | None = None   # the estimate of what training the model takes (engine.models.size)

    @property
    def busy(self) -> bool:
        """Whether the machine was busy around the measurement (see :func:`busy`)."""
        return any(busy(load, self.cores) for load in self.load_average)

    @property
    def overhead(self) -> float:
        """The engine's time over the hand loop's: the median of the per-repeat ratios."""
        if "engine/hand" in self.ratios:
            return self.ratios["engine/hand"]["median"]
        return self.engine_epoch_s / self.hand_epoch_s

    @property
    def speedup_vs_reference(self) -> float | None:
        """The reference loop's time over the engine's (above 1: the engine is faster), per repeat, median."""
        if "reference/engine" in self.ratios:
            return self.ratios["reference/engine"]["median"]
        return self.reference_epoch_s / self.engine_epoch_s if self.reference_epoch_s else None

    def wide_ratios(self) -> list[str]:
        """The loop ratios and methods whose per-repeat spread is too wide to trust (:func:`too_wide`)."""
        loops = [name for name, r in self.ratios.items() if too_wide(r)]
        return loops + [f"{m['method']}/joint" for m in self.methods if too_wide(
            {"median": m["ratio_to_joint"], "ci_low": m["ratio_ci_low"], "ci_high": m["ratio_ci_high"]})]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["overhead"] = round(self.overhead, 3)
        d["speedup_vs_reference"] = round(self.speedup_vs_reference, 2) if self.reference_epoch_s else None
        d["engine_samples_per_s"] = round(self.train_samples / self.engine_epoch_s, 1)
        d["hand_samples_per_s"] = round(self.train_samples / self.hand_epoch_s, 1)
        d["busy"] = self.busy
        d["wide"] = self.wide_ratios()
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


WIDE = 0.10   # a ratio whose median's 95% confidence interval is wider than this fraction of it is not trusted
MIN_TIMING_S = 0.2   # one timing runs enough epochs to last this long (tiny epochs are timer and jitter noise)


def epochs_per_timing(fn: Callable[[], None], device, min_s: float = MIN_TIMING_S) -> int:
    """How many consecutive epochs one timing of ``fn`` runs: enough to last ``min_s``, from one timed epoch."""
    once = timed(fn, device)
    return max(1, min(1000, math.ceil(min_s / max(once, 1e-6) - 1e-9)))


def timed_epochs(fn: Callable[[], None], device, n: int) -> float:
    """The mean time of ``n`` consecutive epochs of ``fn``, timed as one."""
    if n == 1:
        return timed(fn, device)
    return timed(lambda: [fn() for _ in range(n)], device) / n


def too_wide(summary: dict[str, float]) -> bool:
    """Whether the 95% confidence interval of a ratio's median spans more than :data:`WIDE` of the median
    (on this project's shared 2-core machine, two identical timings differ by up to 10 %, so a
    median needs a few dozen repeats)."""
    return summary["median"] > 0 and (summary["ci_high"] - summary["ci_low"]) / summary["median"] > WIDE


def ratio_summary(values: list[float]) -> dict[str, float]:
    """Median, min, max and the distribution-free 95% confidence interval of the median (the order
    statistics n/2 -+ 0.98 sqrt(n), the binomial sign-test interval) of per-repeat ratios."""
    ordered = sorted(values)
    n = len(ordered)
    k = max(0, int((n - 1.96 * n ** 0.5) // 2))
    return {"median": round(statistics.median(ordered), 3), "min": round(ordered[0], 3),
            "max": round(ordered[-1], 3), "ci_low": round(ordered[k], 3), "ci_high": round(ordered[n - 1 - k], 3)}


def loop_times(contenders: dict[str, Callable[[], None]], device, repeats: int) -> dict[str, list[float]]:
    """Each contender's epoch times, one per repeat; a repeat times every contender once (as many
    consecutive epochs as last :data:`MIN_TIMING_S`, :func:`epochs_per_timing`), in the given order on
    even repeats and reversed on odd ones."""
    times: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    n = {name: epochs_per_timing(fn, device) for name, fn in contenders.items()}
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            times[name].append(timed_epochs(contenders[name], device, n[name]))
    return times


def loop_ratios(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """The per-repeat ratios of the loops, summarised (:func:`ratio_summary`)."""
    pairs = {"engine/hand": ("engine", "hand"), "reference/engine": ("reference", "engine"),
             "compiled/hand": ("compiled", "hand"), "step_compiled/hand": ("step_compiled", "hand")}
    return {name: ratio_summary([a / b for a, b in zip(times[num], times[den])])
            for name, (num, den) in pairs.items() if num in times and den in times}


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
    n = {id(f): epochs_per_timing(f, device) for f in (fn, baseline)}
    for i in range(repeats):
        order = (fn, baseline) if i % 2 == 0 else (baseline, fn)
        t = {id(f): timed_epochs(f, device, n[id(f)]) for f in order}
        ratios.append(t[id(fn)] / t[id(baseline)])
        times.append(t[id(fn)])
    summary = ratio_summary(ratios)
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "ci_low": summary["ci_low"], "ci_high": summary["ci_high"], "epoch_s": statistics.median(times)}


def method_figures(preset: str, base: list[str], device, data, repeats: int, methods: list[str],
                   progress: Callable[[str], None] = lambda _: None) -> list[dict]:
    """Each method's time of a whole epoch (steps, validation and its epoch hooks) as a ratio to
    joint's, measured side by side (:func:`paired_ratio`), and its peak memory."""
    rows = []
    base_cfg = load_preset(preset, base)[0]
    joint = whole_epochs(load_preset(preset, base + ['method.name="joint"'])[0], device, data)
    for i, name in enumerate(methods, 1):
        progress(f"[{i}/{len(methods)}] {name} against joint, {repeats} repeats")
        cfg, _ = load_preset(preset, base + [f'method.name="{name}"'] + _method_overrides(name, base_cfg))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before = _peak_rss()
        epoch = whole_epochs(cfg, device, data)
        ratio = paired_ratio(epoch, joint, device, repeats)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else max(_peak_rss() - before, 0)
        rows.append({"method": name, "epoch_s": round(ratio["epoch_s"], 4), "peak_memory_bytes": int(peak),
                     "algorithmic_cost": METHODS.entry(name).info.cost, "ratio_to_joint": round(ratio["median"], 3),
                     "ratio_min": round(ratio["min"], 3), "ratio_max": round(ratio["max"], 3),
                     "ratio_ci_low": ratio["ci_low"], "ratio_ci_high": ratio["ci_high"]})
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
    progress(f"timing the loops ({', '.join(contenders)}), {repeats} repeats")
    per_repeat = loop_times(contenders, device, repeats)
    times = {k: statistics.median(v) for k, v in per_repeat.items()}
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
                       load_average=loads, cores=os.cpu_count() or 0, ratios=loop_ratios(per_repeat),
                       model_memory=estimate.to_dict() if estimate is not None else None)
