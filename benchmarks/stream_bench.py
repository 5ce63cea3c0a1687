"""Streaming vs resident data: a generated dataset at least 4x the memory budget, trained from disk.

Usage: python benchmarks/stream_bench.py [--budget 256MiB] [--factor 4.2] [--steps 600] [--threads N]
                                        [--device cpu|cuda] [--repeats N] [--dir DIR] [--json]

1. Writes (once; reused when present) a directory of Parquet files of ``factor x budget`` bytes of
   float32 features: two vector modalities ``a`` (384) and ``b`` (256), 10 classes, row groups of
   4096 rows, files of about 128 MiB (at least 8 files).
2. Trains the same MLP model with the engine's trainer (method ``joint``, batch 256) for
   ``--steps`` steps twice, each in a fresh process so that its peak RSS is its own:
   * **stream**: the whole directory with ``data.memory_budget = budget`` and ``data.mode = "auto"``,
     which chooses streaming since the resident estimate is over the budget;
   * **resident**: the first files that fit the budget (``data.mode = "auto"`` chooses resident).
3. Prints steady-state samples/s of each (median over ``--repeats`` alternating pairs) (optimiser steps after the first ``--warmup`` steps, i.e.
   after the first shuffle window; steps that straddle an epoch's evaluation are left out), the
   time to open the data (the stream's pre-pass reads labels and fits the standardiser), and the
   resident set size of each process after its imports (Python, torch, pyarrow) and at its peak.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIMS = {"a": 384, "b": 256}
N_CLASSES = 10
GROUP_ROWS = 4096
FILE_BYTES = 128 * 1024 ** 2


def write_data(folder: Path, total_bytes: int, seed: int = 0) -> Path:
    """``total_bytes`` of float32 features in files of about FILE_BYTES (skipped when already written)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.data.parquet import METADATA_KEY

    row = 4 * sum(DIMS.values())
    n_rows = math.ceil(total_bytes / row)
    per_file = max(GROUP_ROWS, min(FILE_BYTES, total_bytes // 8) // row // GROUP_ROWS * GROUP_ROWS)
    n_files = math.ceil(n_rows / per_file)
    stamp = folder / "DONE.json"
    spec = {"rows": n_rows, "per_file": per_file, "dims": DIMS, "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()) == spec:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()
    rng = np.random.default_rng(seed)
    centres = {m: rng.normal(size=(N_CLASSES, d)).astype(np.float32) for m, d in DIMS.items()}
    meta = json.dumps({"format": 1, "name": "streambench", "classes": [str(c) for c in range(N_CLASSES)]})
    for f in range(n_files):
        rows = min(per_file, n_rows - f * per_file)
        y = rng.integers(0, N_CLASSES, rows)
        cols = {}
        for m, d in DIMS.items():
            x = rng.standard_normal((rows, d), dtype=np.float32) * 2.0
            x += centres[m][y] * (0.5 if m == "a" else 0.3)
            cols[m] = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d)
        cols["label"] = pa.array(y.astype(np.int64))
        table = pa.table(cols).replace_schema_metadata({METADATA_KEY: meta})
        pq.write_table(table, folder / f"part-{f:04d}.parquet", row_group_size=GROUP_ROWS)
    stamp.write_text(json.dumps(spec))
    return folder


def subset_that_fits(folder: Path, budget: int, out: Path) -> Path:
    """A directory of links to the first files whose resident estimate fits ``budget``."""
    import pyarrow.parquet as pq

    from engine.data.memory import resident_estimate

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.parquet"):
        old.unlink()
    rows = 0
    for f in sorted(folder.glob("*.parquet")):
        n = pq.ParquetFile(f).metadata.num_rows
        if rows and resident_estimate(rows + n, [(d,) for d in DIMS.values()]) > budget:
            break
        if resident_estimate(n, [(d,) for d in DIMS.values()]) > budget:
            raise SystemExit(f"one file ({f}) is larger than the budget; use a larger --budget")
        (out / f.name).symlink_to(f)
        rows += n
    return out


def preset(data_dir: str, budget: int) -> dict:
    """The parsed preset of both measurements: joint, one MLP [512] -> 128 per modality of ``DIMS``, batches
    of 256, monitors off; ``data.mode = "auto"`` chooses between streaming and resident by ``budget``."""
    return {"name": "streambench", "seed": 0,
            "data": {"path": data_dir, "mode": "auto", "memory_budget": budget},
            "modalities": {m: {"encoder": "mlp", "hidden": [512], "dim": 128} for m in DIMS},
            "monitor": {"enabled": False},
            "train": {"epochs": 1000, "batch_size": 256, "lr": 0.01, "log_every": 50}}


class _Timer:
    """The trainer's recorder: timestamps every optimiser step and asks it to stop after ``steps``."""

    def __init__(self, steps: int, cuda: bool):
        self.steps, self.cuda = steps, cuda
        self.times: list[tuple[int, int, float]] = []  # (step, epoch, time)
        self.trainer = None

    def metrics(self, *a, **k): pass
    def event(self, *a, **k): pass
    def save_checkpoint(self, *a, **k): pass

    def progress(self, pos, n_batches, values):
        if self.cuda:
            torch.cuda.synchronize()
        self.times.append((pos.step, pos.epoch, time.perf_counter()))
        if pos.step >= self.steps:
            self.trainer.stop_requested = True


def _rss_now() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def train_once(data_dir: str, budget: int, steps: int, warmup: int, threads: int | None, device: str) -> dict:
    """One measurement in this process (called in a child process)."""
    from engine.config import resolve
    from engine.data import StreamData, load_data
    from engine.run import build_parts
    from engine.train.device import resolve_device
    from engine.train.trainer import Interrupted, Trainer

    if threads:
        torch.set_num_threads(threads)
    cfg = resolve(preset(data_dir, budget), "stream_bench", Path("."))
    device = resolve_device(device)
    rss_base = _rss_now()
    t0 = time.perf_counter()
    data = load_data(cfg.data, cfg.columns, cfg.seed, Path("."), device)
    open_s = time.perf_counter() - t0
    rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    data, model, method = build_parts(cfg, device, data)
    timer = _Timer(steps, device.type == "cuda")
    trainer = Trainer(cfg.train, data, model, method, device, cfg.seed, timer, cfg.monitor)
    timer.trainer = trainer
    try:
        trainer.fit()
    except Interrupted:
        pass
    t = timer.times
    gaps = [(b[2] - a[2]) for a, b in zip(t, t[1:]) if a[1] == b[1] and a[0] >= warmup]
    steady = cfg.train.batch_size * len(gaps) / sum(gaps)
    return {"mode": data.placement.mode, "placement": data.placement.describe(),
            "rows": int(data.split_size("train") + data.split_size("val") + data.split_size("test")),
            "train_rows": data.split_size("train"), "steps": len(t), "steady_steps": len(gaps),
            "steady_samples_per_s": round(steady, 1), "open_s": round(open_s, 2),
            "rss_after_imports_mib": round(rss_base / 2 ** 20, 1),
            "peak_rss_after_open_mib": round(rss_open / 2 ** 20, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "torch_threads": torch.get_num_threads(), "device": str(device),
            "streamed": isinstance(data, StreamData)}


def _disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.parquet"))


def main() -> None:
    from engine.data.config import parse_size
    from engine.data.memory import format_bytes

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", default="256MiB", help="data.memory_budget of both runs")
    ap.add_argument("--factor", type=float, default=4.2, help="dataset size on disk / budget (>= 4)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--warmup", type=int, default=100, help="steps left out (the first shuffle window)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="training device: cpu, cuda, cuda:N")
    ap.add_argument("--repeats", type=int, default=1, help="alternating stream/resident pairs (median)")
    ap.add_argument("--dir", default=os.environ.get("MMBAL_STREAM_BENCH_DIR", "/tmp/mmbal-stream-bench"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("DATA", "BUDGET"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(train_once(args.child[0], int(args.child[1]), args.steps, args.warmup, args.threads,
                                    args.device)))
        return
    budget = parse_size(args.budget, "--budget")
    root = Path(args.dir)
    t0 = time.perf_counter()
    full = write_data(root / "full", int(args.factor * budget))
    gen_s = time.perf_counter() - t0
    part = subset_that_fits(full, budget, root / "fits")
    results = {"budget_bytes": budget, "dataset_bytes_on_disk": _disk_bytes(full),
               "files": len(list(full.glob("*.parquet"))), "write_s": round(gen_s, 1),
               "cpu_count": os.cpu_count()}
    runs: dict[str, list[dict]] = {"stream": [], "resident": []}
    for _ in range(args.repeats):
        for name, folder in (("stream", full), ("resident", part)):
            cmd = [sys.executable, __file__, "--child", str(folder), str(budget), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--device", args.device] + \
                  (["--threads", str(args.threads)] if args.threads else [])
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if out.returncode != 0:
                raise SystemExit(f"the {name} measurement failed:\n{out.stderr}")
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for name, done in runs.items():
        median = sorted(done, key=lambda r: r["steady_samples_per_s"])[len(done) // 2]
        results[name] = {**median, "all_samples_per_s": [r["steady_samples_per_s"] for r in done]}
    s, r = results["stream"], results["resident"]
    results["resident_over_stream"] = round(r["steady_samples_per_s"] / s["steady_samples_per_s"], 3)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"dataset: {format_bytes(results['dataset_bytes_on_disk'])} on disk in {results['files']} files "
          f"({results['dataset_bytes_on_disk'] / budget:.2f}x the budget of {format_bytes(budget)}); "
          f"{os.cpu_count()} CPU cores")
    for name in ("stream", "resident"):
        x = results[name]
        print(f"{name:9s} {x['placement']}: {x['rows']} rows; open {x['open_s']} s; steady "
              f"{x['steady_samples_per_s']:.0f} samples/s over {x['steady_steps']} steps (runs: "
              f"{', '.join(f'{v:.0f}' for v in x['all_samples_per_s'])}); RSS {x['rss_after_imports_mib']:.0f} MiB "
              f"after imports, peak {x['peak_rss_mib']:.0f} MiB")
    print(f"resident / stream throughput: {results['resident_over_stream']:.3f}x")


if __name__ == "__main__":
    main()
