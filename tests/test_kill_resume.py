"""SIGKILL at any moment: real ``mmbal run`` processes are killed, ``mmbal resume`` completes them, and the
result is bitwise the uninterrupted run (CPU).

Each kill point starts ``python -m mmbal_cli run`` on the tiny preset (3 epochs x 7 steps, one torch
thread) in its own runs directory and kills it with SIGKILL, either

* at a named moment, through :mod:`engine.faults` (``MMBAL_FAULTS="<site>:<n>"``: the process kills
  itself the n-th time it reaches the site: a step, an evaluation, a checkpoint or summary.json half
  written, a checkpoint about to be renamed, a metrics line about to be appended, ...), or
* from this process after a seeded random delay, measured from the launch, from the moment the run
  directory appears or from the moment the metrics log starts (so most land while training).

Then, before resuming: ``mmbal ls`` and ``mmbal watch --once`` must show the run as failed or stale.
Some points kill the first ``mmbal resume`` too. A final ``mmbal resume`` (in this process, through the
CLI) must finish the run with ``checkpoints/last.pt`` weights equal (``torch.equal``) to an uninterrupted
run's, the same train/val metric rows (each step once, equal values), one test row, the same summary
metrics, status ``finished`` and no temporary file left. A run killed before its first checkpoint is
trained again from step 0 in its directory.

Every other registered method gets one pass of its own: its run is killed at a seeded random training
step after the first checkpoint, resumed, and compared with its uninterrupted run in the same way.

``MMBAL_KILL_POINTS=N`` runs the long sweep: every occurrence of every site (about 70), a quarter of
them with the resume killed as well, plus random delays up to N points. ``MMBAL_KILL_SEED`` changes
the random delays; ``MMBAL_KILL_REPORT=<file>`` writes every point's outcome as JSON.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine import faults
from engine.run import NullReporter, start_run
from engine.store import read_metrics, read_status, read_summary, run_dirs
from mmbal_cli.app import app

from engine.methods import METHODS

from methodkit import method_table
from runtools import tiny_preset

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["train.threads=1"]
PRESET = tiny_preset('name = "joint"', name="kill", seed=3)
runner = CliRunner()

# Sites of one run of the tiny preset, each with how often it is reached (counted by the reference run).
COUNTED = ("run.json", "preset.toml", "config.json", "run-dir", ".lock", "status.json", "metrics.jsonl",
           "metrics.fsync", "step", "eval", "best.pt", "last.pt", "checkpoint_rename", "summary.json")
NO_RUN, NO_CHECKPOINT, FINISHED = "no run directory", "no checkpoint", "finished before the kill"

# (site:n, what the kill must leave): the moments named in the issue, in the order a run reaches them.
SHORT_POINTS = (
    ("run.json:1", NO_RUN),                     # the new run's directory half made (hidden, .creating)
    (".lock:1", NO_CHECKPOINT),                 # directory in place and locked, nothing trained
    ("metrics.jsonl:1", NO_CHECKPOINT),         # appending the log's header
    ("step:5", NO_CHECKPOINT),                  # mid first epoch
    ("eval:1", NO_CHECKPOINT),                  # the first validation
    ("best.pt:1", NO_CHECKPOINT),               # the first best.pt half written
    ("last.pt:1", NO_CHECKPOINT),               # the first last.pt half written (best.pt already there)
    ("summary.json:1", "checkpoint at step 7"),  # the first checkpoint in place, its summary half written
    ("step:10", "checkpoint at step 7"),        # mid second epoch
    ("checkpoint_rename:1", "checkpoint at step 7"),  # second last.pt complete, not yet renamed
    ("eval:4", "checkpoint at step 21"),        # the test evaluation after the last checkpoint
    ("summary.json:4", "checkpoint at step 21"),  # the final summary (test row already logged)
    ("status.json:3", "checkpoint at step 21"),  # the final status
)
# The run killed, then its first resume killed as well.
SHORT_CHAINED = (("step:3", "step:4"), ("step:12", "last.pt:1"))
SHORT_RANDOM = 8


@dataclass(frozen=True)
class KillPoint:
    label: str
    run_fault: str | None = None              # MMBAL_FAULTS of `mmbal run`
    delay: tuple[str, float] | None = None    # (anchor, seconds): a SIGKILL from this process
    resume_fault: str | None = None           # MMBAL_FAULTS of a first `mmbal resume`, killed too
    expect: str | None = None                 # what the kill must leave (see `left_by_kill`)
    strict: bool = True                       # the faults must fire (False: a site the resume may not reach)


@dataclass
class Killed:
    point: KillPoint
    runs: Path
    returncode: int
    log: str


# -- the reference ------------------------------------------------------------------------------
class Timer(NullReporter):
    def start(self, info):
        self.t0 = time.perf_counter()

    def end(self, summary):
        self.t1 = time.perf_counter()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread):
    """The uninterrupted run, how often it reaches each site, and how long it trains."""
    root = tmp_path_factory.mktemp("kill")
    preset = root / "kill.toml"
    preset.write_text(PRESET)
    timer = Timer()
    with faults.inject(",".join(f"{site}:1000000" for site in COUNTED)):
        result = start_run(preset, OVERRIDES, runs_dir=root / "reference", reporter=timer)
        counts = faults.hits()
    assert result.state == "finished"
    return {"preset": preset, "root": root, "run": result.run_dir, "counts": counts,
            "train_s": timer.t1 - timer.t0, **expected(result.run_dir)}


def expected(run_dir: Path) -> dict:
    """What a run directory must end with: weights, effective metric rows, summary metrics."""
    log = read_metrics(run_dir / "metrics.jsonl")
    rows = log.metric_rows()
    summary = read_summary(run_dir)
    return {
        "weights": torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"],
        "rows": [(r["step"], r["split"], r["m"]) for r in rows if r["split"] in ("train", "val")],
        "test": [r["m"] for r in rows if r["split"] == "test"],
        "summary": {k: summary.get(k) for k in ("status", "steps", "epochs", "final", "best", "test", "selected")},
        "warnings": log.warnings,
    }


# -- the kill points ----------------------------------------------------------------------------
def kill_points(counts: dict[str, int]) -> list[KillPoint]:
    """The short list, or with MMBAL_KILL_POINTS=N every site occurrence plus random delays up to N."""
    wanted = int(os.environ.get("MMBAL_KILL_POINTS", "0") or 0)
    rng = random.Random(int(os.environ.get("MMBAL_KILL_SEED", "20261125")))
    if not wanted:
        points = [KillPoint(f"kill at {spec}", run_fault=spec, expect=leave) for spec, leave in SHORT_POINTS]
        points += [KillPoint(f"kill at {a}, resume killed at {b}", run_fault=a, resume_fault=b)
                   for a, b in SHORT_CHAINED]
        return points + random_points(rng, SHORT_RANDOM)
    points = []
    occurrences = [f"{site}:{n}" for site in COUNTED for n in range(1, counts.get(site, 0) + 1)]
    resume_sites = ("step", "eval", "last.pt", "summary.json", "metrics.jsonl", "checkpoint_rename")
    for i, spec in enumerate(occurrences):
        chained = f"{rng.choice(resume_sites)}:{rng.randint(1, 3)}" if i % 4 == 3 else None
        label = f"kill at {spec}" + (f", resume killed at {chained}" if chained else "")
        points.append(KillPoint(label, run_fault=spec, resume_fault=chained, strict=chained is None))
    return points + random_points(rng, max(wanted - len(points), SHORT_RANDOM))


def random_points(rng: random.Random, n: int) -> list[KillPoint]:
    """Seeded random SIGKILL delays: 10 % from the launch (imports, data), 20 % from the moment the run
    directory appears (building the trainer), 70 % from the first line of the metrics log (training,
    evaluation, checkpoints, the end); the span of the last is 1.1 x the reference's training time."""
    points = []
    for _ in range(n):
        anchor = rng.choices(("launch", "created", "logging"), weights=(1, 2, 7))[0]
        fraction = rng.random()
        points.append(KillPoint(f"random kill {fraction:.3f} of the '{anchor}' span", delay=(anchor, fraction)))
    return points


SPANS = {"launch": 3.0, "created": 1.5}  # seconds; "logging": 1.1 x the reference's training time


def launch(args: list[str], fault: str | None, log_path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if fault:
        env[faults.ENV] = fault
    log = open(log_path, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "mmbal_cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    finally:
        log.close()


def run_and_kill(point: KillPoint, runs: Path, preset: Path, train_s: float) -> Killed:
    """Start `mmbal run`; kill it as the point says; wait for its end."""
    runs.mkdir(parents=True)
    log_path = runs.parent / f"{runs.name}.log"
    proc = launch(["run", str(preset), "--runs-dir", str(runs), *sum((["--set", o] for o in OVERRIDES), [])],
                  point.run_fault, log_path)
    if point.delay is not None:
        anchor, fraction = point.delay
        span = SPANS.get(anchor, 1.1 * train_s)
        if wait_for(anchor, proc, runs):
            time.sleep(fraction * span)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return Killed(point, runs, proc.returncode, log_path.read_text(errors="replace"))


def wait_for(anchor: str, proc: subprocess.Popen, runs: Path) -> bool:
    """Poll (2 ms) until the anchor moment; False when the process ended first."""
    while proc.poll() is None:
        if anchor == "launch":
            return True
        dirs = run_dirs(runs)
        if dirs and (anchor == "created" or _size(dirs[0] / "metrics.jsonl") > 0):
            return True
        time.sleep(0.002)
    return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# -- checks -------------------------------------------------------------------------------------
def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def left_by_kill(runs: Path) -> str:
    dirs = run_dirs(runs)
    if not dirs:
        return NO_RUN
    if read_status(dirs[0]).get("state") == "finished":
        return FINISHED
    for name in ("last.pt", "previous.pt"):
        path = dirs[0] / "checkpoints" / name
        if path.exists():
            return f"checkpoint at step {torch.load(path, weights_only=True)['position']['step']}"
    return NO_CHECKPOINT


def assert_shown_dead(runs: Path, run_dir: Path, context: str) -> None:
    """``mmbal ls`` and ``mmbal watch --once`` show a killed run as failed (its process is gone) or stale."""
    listed = json.loads(cli("ls", "--json", "--runs-dir", runs).output)
    assert [r["state"] for r in listed] in (["failed"], ["stale"]), (context, listed)
    shown = cli("watch", run_dir.name, "--once", "--runs-dir", runs)
    assert shown.exit_code == 0, (context, shown.output)
    assert ("failed" in shown.output or "stale" in shown.output) and "mmbal resume" in shown.output, \
        (context, shown.output)


def assert_same_as_reference(run_dir: Path, ref: dict, context: str) -> None:
    got = expected(run_dir)
    assert got["weights"].keys() == ref["weights"].keys(), context
    for key in ref["weights"]:
        assert torch.equal(got["weights"][key], ref["weights"][key]), (context, key)
    steps = [(step, split) for step, split, _ in got["rows"]]
    assert len(steps) == len(set(steps)), (context, "a step logged twice", steps)
    assert got["rows"] == ref["rows"], (context, steps, [(s, p) for s, p, _ in ref["rows"]])
    assert got["test"] == ref["test"], context
    assert len(got["test"]) == 1, context
    assert got["summary"] == ref["summary"], context
    assert read_status(run_dir)["state"] == "finished", context
    assert [w for w in got["warnings"]] == [], (context, got["warnings"])
    temps = [p.relative_to(run_dir) for p in run_dir.rglob(".*.tmp-*")]
    assert temps == [], (context, temps)
    assert json.loads(cli("ls", "--json", "--runs-dir", run_dir.parent).output)[0]["state"] == "finished", context


def finish_after_kill(killed: Killed, ref: dict) -> str:
    """Check what the kill left, resume (killing the first resume if the point says so), compare."""
    point, runs = killed.point, killed.runs
    context = f"{point.label} (exit {killed.returncode}): {killed.log[-2000:]}"
    if point.run_fault and point.strict:
        assert killed.returncode == -signal.SIGKILL, f"{point.run_fault} was never reached: {context}"
    left = left_by_kill(runs)
    if point.expect is not None:
        assert left == point.expect, context
    if left == NO_RUN:  # nothing visible to resume (a hidden .creating directory at most)
        assert cli("ls", "--json", "--runs-dir", runs).output.strip() == "[]", context
        refused = cli("resume", "latest", "--runs-dir", runs)
        assert refused.exit_code == 3 and "no run" in refused.output, (context, refused.output)
        return left
    run_dir = run_dirs(runs)[0]
    if left == FINISHED:
        assert_same_as_reference(run_dir, ref, context)
        return left
    assert_shown_dead(runs, run_dir, context)
    if point.resume_fault:
        proc = launch(["resume", run_dir.name, "--runs-dir", str(runs)], point.resume_fault,
                      runs.parent / f"{runs.name}.log")
        proc.wait(timeout=300)
        log = (runs.parent / f"{runs.name}.log").read_text(errors="replace")[-2000:]
        if point.strict:
            assert proc.returncode == -signal.SIGKILL, f"resume: {point.resume_fault} was never reached: {log}"
        if proc.returncode != 0:
            assert_shown_dead(runs, run_dir, context + " / after the resume was killed")
    if read_status(run_dir).get("state") != "finished":
        done = cli("resume", run_dir.name, "--runs-dir", runs)
        assert done.exit_code == 0, (context, done.output)
        if left == NO_CHECKPOINT and not point.resume_fault:
            assert "starts again from step 0" in done.output, (context, done.output)
    assert_same_as_reference(run_dir, ref, context)
    return left


def test_sigkill_at_any_moment_then_resume_is_bitwise_the_uninterrupted_run(reference, tmp_path):
    points = kill_points(reference["counts"])
    assert reference["rows"] and len({(s, p) for s, p, _ in reference["rows"]}) == len(reference["rows"])
    workers = min(4, max(2, os.cpu_count() or 2))
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        killed = list(pool.map(lambda ip: run_and_kill(ip[1], tmp_path / f"p{ip[0]:03d}", reference["preset"],
                                                       reference["train_s"]), enumerate(points)))
    killed_s = time.perf_counter() - started
    outcomes = Counter()
    report = []
    for k in killed:
        left = finish_after_kill(k, reference)
        outcomes[left if not left.startswith("checkpoint") else "a checkpoint to resume from"] += 1
        report.append({"point": k.point.label, "exit": k.returncode, "left": left})
    deterministic = sum(1 for p in points if p.run_fault)
    chained = sum(1 for p in points if p.resume_fault)
    print(f"\nkill points tried: {len(points)} ({deterministic} at named sites, {len(points) - deterministic} "
          f"after random delays; {chained} with the first resume killed too); what the kills left: "
          + ", ".join(f"{n} {what}" for what, n in outcomes.most_common())
          + f" ({killed_s:.0f} s running and killing, {time.perf_counter() - started - killed_s:.0f} s resuming)")
    if os.environ.get("MMBAL_KILL_REPORT"):
        Path(os.environ["MMBAL_KILL_REPORT"]).write_text(json.dumps(report, indent=1))
    assert outcomes[NO_CHECKPOINT] >= 1 and outcomes["a checkpoint to resume from"] >= 1


# -- every registered method: one kill each -------------------------------------------------------------
def method_kill_step(method: str) -> int:
    """The training step whose end kills the method's run: seeded by its name, after the first
    checkpoint (step 7), so that the resume restores the method's saved state."""
    return random.Random(f"kill/{method}").randint(8, 20)


def test_every_method_resumes_bitwise_after_a_sigkill(tmp_path, one_thread):
    """``joint`` has the whole list above; every other registered method (its minimal options, the tiny
    preset) is killed once by SIGKILL mid-training in a real ``mmbal run``, then ``mmbal resume`` must
    give its uninterrupted run's weights, metric rows and summary."""
    methods = [m for m in METHODS.names() if m != "joint"]
    refs, points = {}, []
    for method in methods:
        preset = tmp_path / f"{method}.toml"
        preset.write_text(tiny_preset(method_table(method), name="kill", seed=3))
        result = start_run(preset, OVERRIDES, runs_dir=tmp_path / "reference" / method)
        assert result.state == "finished", method
        refs[method] = {"preset": preset, **expected(result.run_dir)}
        points.append(KillPoint(f"{method}: kill at step:{method_kill_step(method)}",
                                run_fault=f"step:{method_kill_step(method)}"))
    with ThreadPoolExecutor(2) as pool:
        killed = list(pool.map(lambda mp: run_and_kill(mp[1], tmp_path / mp[0], refs[mp[0]]["preset"], 0.0),
                               zip(methods, points)))
    failures = []
    for method, k in zip(methods, killed):
        try:
            left = finish_after_kill(k, refs[method])
            assert left.startswith("checkpoint at step"), (k.point.label, left)
        except AssertionError as exc:
            failures.append(f"{k.point.label}: {str(exc)[:1500]}")
    assert not failures, "\n".join(failures)
