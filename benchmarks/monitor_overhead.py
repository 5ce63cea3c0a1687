"""Time per epoch with the live monitors on against off (``monitor.enabled``), on the shared presets.

Usage: python benchmarks/monitor_overhead.py [--presets presets/cub10.toml ...] [--epochs 6]
       [--repeats 7] [--json]

Each repeat runs the preset twice, monitors on then off (the order alternates between repeats, so a
change of load hits both), each in its own ``mmbal run`` process. An epoch's time is read from the
run's ``metrics.jsonl``: the time between the first and the last epoch's validation rows divided by
the epochs between them, so it counts training, validation, the monitors' updates and evaluations and
the logging, and leaves out the start-up and the first epoch (warm-up). The ratio on/off is taken per
repeat; the figures are its median with the 95% interval of the median (``engine.bench.figures.
ratio_summary``), min and max. The load average is printed at the start and at the
end: a figure taken under load is not a figure.
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

from engine.bench.figures import ratio_summary

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=SHARED_PRESETS)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    print(f"load average at the start: {os.getloadavg()}", file=sys.stderr)
    results = [measure(p, args.epochs, args.repeats) for p in args.presets]
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
