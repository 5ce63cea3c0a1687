"""Time per epoch with the live monitors on against off (``monitor.enabled``), on the shared presets.

Usage: python benchmarks/monitor_overhead.py [--presets presets/cub10.toml ...] [--epochs 6]
       [--repeats 7] [--in-process] [--json]

Each repeat runs the preset twice, monitors on then off (the order alternates between repeats, so a
change of load hits both), each in its own ``mmbal run`` process. An epoch's time is read from the
run's ``metrics.jsonl``: the time between the first and the last epoch's validation rows divided by
the epochs between them, so it counts training, validation, the monitors' updates and evaluations and
the logging, and leaves out the start-up and the first epoch (warm-up). The ratio on/off is taken per
repeat; the figures are its median with the 95% interval of the median (``engine.bench.figures.
ratio_summary``), min and max. The load average is printed at the start and at the
end: a figure taken under load is not a figure.

``--in-process``: both in one process instead, on the same data: whole epochs as ``mmbal run`` trains
them (training steps, validation with the monitors' evaluations, the epoch's hooks) with the preset's
monitors against none, timed alternately (``engine.bench.figures.loop_times``: each timing lasts at
least 0.2 s of consecutive epochs). Nothing is written (the monitors' saved state included), so this
is their compute without their I/O, and the interval of the median is much narrower than between
processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from engine.bench.figures import loop_times, ratio_summary

ROOT = Path(__file__).resolve().parent.parent
SHARED_PRESETS = ["presets/nutrimouse.toml", "presets/uci_mfeat.toml", "presets/cub10.toml",
                  "presets/avdigits.toml", "presets/avdigits_hard.toml"]


def epoch_seconds(run_dir: Path) -> float:
    """Seconds per epoch between the first and the last epoch's validation rows of ``run_dir``."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    val = [(r["epoch"], r["t"]) for r in rows if r.get("split") == "val" and isinstance(r.get("epoch"), int)]
    (e0, t0), (e1, t1) = val[0], val[-1]
    if e1 <= e0:
        raise SystemExit(f"{run_dir}: fewer than 2 epochs logged; raise --epochs")
    return (t1 - t0) / (e1 - e0)


def run_once(preset: str, monitors: bool, epochs: int, where: Path) -> float:
    name = f"mon-{'on' if monitors else 'off'}"
    cmd = [sys.executable, "-m", "mmbal_cli", "run", preset, "--name", name, "--runs-dir", str(where),
           "--set", f"monitor.enabled={'true' if monitors else 'false'}", "--set", f"train.epochs={epochs}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    newest = max((p for p in where.iterdir() if p.is_dir() and name in p.name), key=lambda p: p.stat().st_mtime)
    return epoch_seconds(newest)


def measure(preset: str, epochs: int, repeats: int) -> dict:
    on, off = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            order = (True, False) if i % 2 == 0 else (False, True)
            for monitors in order:
                (on if monitors else off).append(run_once(preset, monitors, epochs, Path(tmp)))
            print(f"  {preset} repeat {i + 1}/{repeats}: on {on[-1]:.3f} s/epoch, off {off[-1]:.3f}",
                  file=sys.stderr, flush=True)
    ratios = [a / b for a, b in zip(on, off)]
    summary = ratio_summary(ratios)
    return {"preset": preset, "epochs": epochs, "repeats": repeats,
            "on_s": statistics.median(on), "off_s": statistics.median(off),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratio_ci_low": summary["ci_low"], "ratio_ci_high": summary["ci_high"]}


def measure_in_process(preset: str, repeats: int) -> dict:
    import torch

    from engine.bench.loops import whole_epochs
    from engine.config import load_preset
    from engine.run import build_parts
    from engine.train.device import resolve_device

    on_cfg = load_preset(ROOT / preset, ["monitor.enabled=true"])[0]
    off_cfg = load_preset(ROOT / preset, ["monitor.enabled=false"])[0]
    torch.set_num_threads(on_cfg.train.threads or torch.get_num_threads())
    device = resolve_device(on_cfg.train.device)
    data, _, _ = build_parts(on_cfg, device)
    times = loop_times({"on": whole_epochs(on_cfg, device, data, monitors=True),
                        "off": whole_epochs(off_cfg, device, data, monitors=True)}, device, repeats)
    ratios = [a / b for a, b in zip(times["on"], times["off"])]
    summary = ratio_summary(ratios)
    print(f"  {preset}: {repeats} repeats done", file=sys.stderr, flush=True)
    return {"preset": preset, "epochs": None, "repeats": repeats, "in_process": True,
            "on_s": statistics.median(times["on"]), "off_s": statistics.median(times["off"]),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratio_ci_low": summary["ci_low"], "ratio_ci_high": summary["ci_high"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=SHARED_PRESETS)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--in-process", action="store_true", help="both in one process (module docstring)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    print(f"load average at the start: {os.getloadavg()}", file=sys.stderr)
    results = [measure_in_process(p, args.repeats) if args.in_process else measure(p, args.epochs, args.repeats)
               for p in args.presets]
    print(f"load average at the end: {os.getloadavg()}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print("| preset | on s/epoch | off s/epoch | on/off median [95% interval of the median] | min | max |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| `{r['preset']}` | {r['on_s']:.4f} | {r['off_s']:.4f} | {r['ratio']:.2f} [{r['ratio_ci_low']:.2f}, "
              f"{r['ratio_ci_high']:.2f}] | {r['ratio_min']:.2f} | {r['ratio_max']:.2f} |")


if __name__ == "__main__":
    main()
