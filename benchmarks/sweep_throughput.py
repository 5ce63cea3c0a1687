"""Runs per hour of many small runs: ``mmbal sweep --jobs N`` (members forked from a preloaded server,
the default) against the same sweep with every member exec'd (``MMBAL_SWEEP_EXEC=1``) and against N
separate ``mmbal run`` processes started by a shell loop, N at a time.

Usage: python benchmarks/sweep_throughput.py [--preset presets/nutrimouse.toml] [--runs 12] [--jobs 1 2]
       [--epochs 2] [--repeats 3] [--json]

Each repeat runs the three ways one after the other (alternating, so a change of load hits all three);
the figures are medians over the repeats with min and max, and the ratios are taken per repeat. The
machine's load average is printed at the start and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mmbal(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmbal_cli", *args]


def sweep(preset: str, runs: int, jobs: int, epochs: int, where: Path, execd: bool) -> float:
    env = {**os.environ, "MMBAL_SWEEP_EXEC": "1" if execd else "0"}
    cmd = mmbal("sweep", preset, "--methods", "joint", "--seeds", f"0-{runs - 1}", "--jobs", str(jobs),
                "--set", f"train.epochs={epochs}", "--runs-dir", str(where))
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def separate(preset: str, runs: int, jobs: int, epochs: int, where: Path) -> float:
    """N separate `mmbal run` processes at a time (what a shell loop with `&` and `wait` does)."""
    env = dict(os.environ)
    if jobs > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    started = time.perf_counter()
    procs: list[subprocess.Popen] = []
    for seed in range(runs):
        while sum(p.poll() is None for p in procs) >= jobs:
            time.sleep(0.02)
        procs.append(subprocess.Popen(mmbal("run", preset, "--runs-dir", str(where), "--set", f"seed={seed}",
                                            "--set", f"train.epochs={epochs}"), env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a run failed (exit {p.returncode})")
    return time.perf_counter() - started


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default=str(ROOT / "presets" / "nutrimouse.toml"))
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load = [os.getloadavg()[0]]
    out = {"preset": args.preset, "runs": args.runs, "epochs": args.epochs, "repeats": args.repeats,
           "cpus": os.cpu_count(), "rows": []}
    for jobs in args.jobs:
        times: dict[str, list[float]] = {"forked": [], "execd": [], "separate": []}
        for r in range(args.repeats):
            for way in times:
                where = Path(tempfile.mkdtemp(prefix="mmbal-sweep-bench-"))
                try:
                    if way == "separate":
                        t = separate(args.preset, args.runs, jobs, args.epochs, where)
                    else:
                        t = sweep(args.preset, args.runs, jobs, args.epochs, where, execd=way == "execd")
                finally:
                    shutil.rmtree(where, ignore_errors=True)
                times[way].append(t)
                print(f"jobs {jobs} repeat {r + 1}/{args.repeats} {way:<8} {t:6.1f} s "
                      f"({3600 * args.runs / t:5.0f} runs/h)", file=sys.stderr, flush=True)
        row = {"jobs": jobs, **{way: {**summary(v), "runs_per_hour": 3600 * args.runs / statistics.median(v)}
                                for way, v in times.items()},
               "separate_over_forked": summary([s / f for s, f in zip(times["separate"], times["forked"])]),
               "execd_over_forked": summary([e / f for e, f in zip(times["execd"], times["forked"])])}
        out["rows"].append(row)
    load.append(os.getloadavg()[0])
    out["load"] = load
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{args.runs} runs of {Path(args.preset).name}, {args.epochs} epochs each; {args.repeats} alternating "
          f"repeats; load average {load[0]:.2f} -> {load[1]:.2f}")
    for row in out["rows"]:
        f, e, s = row["forked"], row["execd"], row["separate"]
        print(f"--jobs {row['jobs']}: sweep (forked) {f['runs_per_hour']:.0f} runs/h, sweep (exec'd) "
              f"{e['runs_per_hour']:.0f}, separate `mmbal run` {s['runs_per_hour']:.0f}; separate/forked time "
              f"{row['separate_over_forked']['median']:.2f} [{row['separate_over_forked']['min']:.2f}, "
              f"{row['separate_over_forked']['max']:.2f}]")


if __name__ == "__main__":
    main()
