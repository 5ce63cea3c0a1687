"""``mmbal sweep``: planning, per-method options, skip/resume decisions, running N at a time, and a real sweep.

Most runner tests launch a stand-in for ``python -m mmbal_cli`` (a small script, no torch) that
behaves like a member run: it creates a run directory, prints ``run <id>  <dir>`` first, records
when it started and ended, and fails, finishes or waits for SIGINT as the test asks. One test at
the end runs a real two-method, two-seed sweep on synthetic data and compares it.
"""

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.config_text import toml_value
from engine.errors import PresetError, UsageError
from engine.sweep.attempts import Attempt, decide
from engine.sweep.members import Member, parse_methods, parse_seeds, split_overrides
from engine.sweep.plan import plan_sweep
from engine.sweep.record import sweep_members
from engine.sweep.runner import SweepRunner, member_command
from mmbal_cli.app import app
from runtools import tiny_preset

runner = CliRunner()

PRESET = tiny_preset('name = "joint"', seed=0, epochs=1)

FAKE = r'''
import json, os, signal, sys, time
from pathlib import Path
from engine.store import write_status
args = sys.argv[3:]
stopped = []
signal.signal(signal.SIGINT, lambda *a: stopped.append(1))
events = Path(os.environ["FAKE_EVENTS"])
configs = json.loads(Path(os.environ["FAKE_CONFIGS"]).read_text()) if os.environ.get("FAKE_CONFIGS") else {}
if args[0] == "resume":
    run_dir = Path(args[1]); name = json.loads((run_dir / "run.json").read_text())["name"]
    print(f"resuming {run_dir.name[-8:]}  {run_dir}", flush=True)
else:
    name = args[args.index("--name") + 1]
    runs = Path(args[args.index("--runs-dir") + 1])
    run_id = ("00000000" + name.replace("-", "").replace("_", ""))[-8:].lower()
    run_dir = runs / f"20260101-{len(list(runs.glob('2*'))):06d}_{name}_{run_id}"
    (run_dir / "checkpoints").mkdir(parents=True)
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_id, "name": name, "overrides": sets}))
    (run_dir / "config.json").write_text(json.dumps(configs.get(name, {})))
    print(f"run {run_id}  {run_dir}", flush=True)
with open(events, "a") as f:
    f.write(f"start {name} {time.time()}\n")
write_status(run_dir, "running")
behaviour = os.environ.get("FAKE_" + name.replace("-", "_").upper(), "finish")
if behaviour == "wait":
    while not stopped:
        time.sleep(0.02)
    time.sleep(0.1)
    with open(events, "a") as f:
        f.write(f"sigint {name} {len(stopped)}\n")
    write_status(run_dir, "interrupted")
    sys.exit(130)
time.sleep(0.3)
with open(events, "a") as f:
    f.write(f"end {name} {time.time()}\n")
if behaviour == "fail":
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")
    print("RuntimeError: fake failure", file=sys.stderr)
    write_status(run_dir, "failed", message="RuntimeError: fake failure")
    sys.exit(1)
(run_dir / "summary.json").write_text(json.dumps({"status": "finished", "test": {"test/acc/fused": 0.5}}))
write_status(run_dir, "finished")
'''


@pytest.fixture()
def preset(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(PRESET)
    return p


@pytest.fixture()
def fake(tmp_path, monkeypatch):
    """The stand-in member process; returns its path (``cli(fake)`` is the command line SweepRunner is given)."""
    script = tmp_path / "fake_python"
    script.write_text(f"#!{sys.executable}\n{FAKE}")
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_EVENTS", str(tmp_path / "events"))
    return script


def cli(fake):
    """The stand-in started as the CLI starts mmbal (it skips ``-m mmbal_cli``, like the interpreter)."""
    return [str(fake), "-m", "mmbal_cli"]


def events(tmp_path):
    path = tmp_path / "events"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def max_concurrent(evs):
    spans = {}
    for kind, name, value in evs:
        if kind in ("start", "end"):
            spans.setdefault(name, {})[kind] = float(value)
    points = sorted([(s["start"], 1) for s in spans.values()] + [(s["end"], -1) for s in spans.values() if "end" in s])
    level = peak = 0
    for _, step in points:
        level += step
        peak = max(peak, level)
    return peak


# -- parsing ------------------------------------------------------------------------------------
def test_methods_and_seeds_parsing():
    assert parse_methods("joint, unimodal") == ["joint", "unimodal"]
    with pytest.raises(UsageError, match=r"unknown method 'jiont' \(did you mean 'joint'\?\)"):
        parse_methods("jiont,unimodal")
    with pytest.raises(UsageError, match="more than once"):
        parse_methods("joint,joint")
    assert parse_seeds("3,0-2,1") == [3, 0, 1, 2]
    for bad in ("a", "2-1", "-1", ""):
        with pytest.raises(UsageError):
            parse_seeds(bad)


def test_set_items_are_scoped_by_method_name_and_sweep_keys_refused():
    general, scoped = split_overrides(["train.epochs=3", "unimodal.modality=a", "model.fusion=\"sum\""],
                                      ["joint", "unimodal"])
    assert general == ["train.epochs=3", 'model.fusion="sum"'] and scoped == {"unimodal": {"modality": "a"}}
    with pytest.raises(PresetError) as err:
        split_overrides(["method.alpha=1", "seed=3", "mcr.alpha=1", "unimodal=3"], ["joint", "unimodal"])
    text = str(err.value)
    assert "--set unimodal.modality=a" in text and "use --seeds" in text
    assert "method 'mcr' is not in --methods" in text and "expected unimodal.OPTION=VALUE" in text


@pytest.mark.parametrize("value", [
    {"name": "unimodal", "modality": "a"}, {"x": [1, 2.5, -0.0, True], "y": {"z": "q\"uo\\te\n\t\x7f é 𝔘"}},
    {"odd key": float("inf"), "n": -3, "e": 1e-300}, {"l": [[1], ["a", False]]},
])
def test_toml_value_round_trips_through_tomllib(value):
    assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value


# -- planning -----------------------------------------------------------------------------------
def test_members_replace_the_method_table_keeping_the_presets_own_options(preset, tmp_path):
    preset.write_text(preset.read_text().replace('name = "joint"', 'name = "unimodal"\nmodality = "b"'))
    plan = plan_sweep(preset, tmp_path / "runs", ["joint", "unimodal"], [0, 2], ["train.epochs=2"])
    assert [(t.member.method, t.member.seed, t.member.run_name) for t in plan.tasks] == [
        ("joint", 0, "tiny-joint-s0"), ("unimodal", 0, "tiny-unimodal-s0"),
        ("joint", 2, "tiny-joint-s2"), ("unimodal", 2, "tiny-unimodal-s2")]
    joint, uni = plan.tasks[2].member, plan.tasks[3].member
    assert joint.config["method"] == {"name": "joint"} and joint.config["seed"] == 2
    assert uni.config["method"] == {"name": "unimodal", "modality": "b"} and uni.config["train"]["epochs"] == 2
    assert uni.overrides == ("train.epochs=2", "seed=2", 'method={name = "unimodal", modality = "b"}')
    scoped = plan_sweep(preset, tmp_path / "runs", ["unimodal"], [0], ["unimodal.modality=a"], name="other")
    assert scoped.tasks[0].member.config["method"]["modality"] == "a"
    assert scoped.tasks[0].member.run_name == "other-unimodal-s0"
    assert all(t.action == "start" for t in plan.tasks) and not (tmp_path / "runs").exists()


def test_a_missing_method_option_names_the_scoped_key(preset, tmp_path):
    with pytest.raises(PresetError) as err:
        plan_sweep(preset, tmp_path / "runs", ["joint", "unimodal"], [0, 1])
    assert err.value.problems == ["unimodal.modality: required key is missing (str) "
                                  "(scoped to this method: --set unimodal.modality=VALUE)"]


def attempt(state, same=True, ckpt=False, run_id="a"):
    return Attempt(Path("/x") / run_id, run_id, state, same, ckpt)


def test_decide_skips_resumes_or_restarts():
    m = Member("joint", 0, "t-joint-s0", (), {})
    assert decide(m, []).action == "start"
    assert decide(m, [attempt("failed"), attempt("finished", run_id="b")]).action == "skip"
    assert decide(m, [attempt("running")]).action == "running"
    assert decide(m, [attempt("stale")]).action == "stale"
    resumed = decide(m, [attempt("interrupted", ckpt=True)])
    assert resumed.action == "resume" and resumed.attempt.run_id == "a"
    assert decide(m, [attempt("failed", ckpt=True)]).action == "resume"
    fresh = decide(m, [attempt("failed", ckpt=False)])
    assert fresh.action == "start" and "before its first checkpoint" in fresh.note
    changed = decide(m, [attempt("interrupted", same=False, ckpt=True)])
    assert changed.action == "start" and "config changed" in changed.note


# -- running (stand-in members) -----------------------------------------------------------------
def write_configs(tmp_path, plan, monkeypatch):
    path = tmp_path / "configs.json"
    path.write_text(json.dumps({t.member.run_name: t.member.config for t in plan.tasks}))
    monkeypatch.setenv("FAKE_CONFIGS", str(path))


def test_runner_runs_n_at_a_time_records_and_resumes_failures(preset, tmp_path, fake, monkeypatch):
    runs = tmp_path / "runs"
    plan = plan_sweep(preset, runs, ["joint", "unimodal"], [0, 1], ["unimodal.modality=a"])
    write_configs(tmp_path, plan, monkeypatch)
    monkeypatch.setenv("FAKE_TINY_UNIMODAL_S1", "fail")
    seen = []
    result = SweepRunner(plan, cli(fake), jobs=2, poll_s=0.02,
                         on_event=lambda kind, task, out: seen.append((kind, task.member.key))).run()
    assert not result.interrupted
    assert sorted((o.task.member.key, o.state, o.returncode) for o in result.outcomes) == [
        ("joint s0", "finished", 0), ("joint s1", "finished", 0), ("unimodal s0", "finished", 0),
        ("unimodal s1", "failed", 1)]
    assert max_concurrent(events(tmp_path)) == 2
    assert [k for k, _ in seen].count("start") == 4 and seen[0] == ("start", "joint s0")
    failed = next(o for o in result.outcomes if o.state == "failed")
    assert failed.last_line == "RuntimeError: fake failure" and "fake failure" in failed.log.read_text()
    record = json.loads((runs / "sweeps" / "tiny" / "sweep.json").read_text())
    assert record["methods"] == ["joint", "unimodal"] and record["method_options"] == {"unimodal": {"modality": "a"}}
    assert {m["run_name"]: len(m["attempts"]) for m in record["members"]} == {
        "tiny-joint-s0": 1, "tiny-unimodal-s0": 1, "tiny-joint-s1": 1, "tiny-unimodal-s1": 1}

    again = plan_sweep(preset, runs, ["joint", "unimodal"], [0, 1], ["unimodal.modality=a"])
    assert [t.action for t in again.tasks] == ["skip", "skip", "skip", "resume"]
    assert member_command(again, again.tasks[3], ["py", "-m", "mmbal_cli"])[:4] == ["py", "-m", "mmbal_cli", "resume"]
    monkeypatch.setenv("FAKE_TINY_UNIMODAL_S1", "finish")
    second = SweepRunner(again, cli(fake), jobs=2, poll_s=0.02).run()
    assert [(o.task.member.key, o.state) for o in second.outcomes] == [("unimodal s1", "finished")]
    assert [t.action for t in plan_sweep(preset, runs, ["joint", "unimodal"], [0, 1],
                                         ["unimodal.modality=a"]).tasks] == ["skip"] * 4
    members = sweep_members(runs, "tiny")
    assert all(path is not None and path.name.split("_")[1] == m["run_name"] for m, path in members)

    with pytest.raises(UsageError, match="already has finished runs with a different configuration") as err:
        plan_sweep(preset, runs, ["joint"], [0], ["train.epochs=3"])
    assert "train.epochs: 1 -> 3" in str(err.value) and "--name tiny-2" in str(err.value)
    bigger = plan_sweep(preset, runs, ["joint"], [0, 1, 2], name="tiny")
    assert [t.action for t in bigger.tasks] == ["skip", "skip", "start"]


DRIVER = r'''
import sys
from pathlib import Path
from engine.sweep.attempts import Task
from engine.sweep.members import Member
from engine.sweep.plan import Plan
from engine.sweep.runner import SweepRunner
runs, fake = Path(sys.argv[1]), sys.argv[2]
tasks = [Task(Member("joint", s, f"drv-joint-s{s}", (), {}), "start") for s in range(3)]
plan = Plan("drv", Path("/nonexistent.toml"), runs, ["joint"], [0, 1, 2], [], {}, None, tasks)
result = SweepRunner(plan, [fake, "-m", "mmbal_cli"], jobs=2, poll_s=0.02).run()
print("interrupted", result.interrupted, sorted((o.task.member.run_name, o.returncode) for o in result.outcomes))
'''


def test_ctrl_c_is_forwarded_once_to_each_running_member_and_nothing_new_starts(tmp_path, fake):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "FAKE_DRV_JOINT_S0": "wait", "FAKE_DRV_JOINT_S1": "wait"}
    proc = subprocess.Popen([sys.executable, str(driver), str(tmp_path / "runs"), str(fake)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while sum(e[0] == "start" for e in events(tmp_path)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "interrupted True [('drv-joint-s0', 130), ('drv-joint-s1', 130)]" in out
    assert sorted((e[0], e[1], e[2]) for e in events(tmp_path) if e[0] == "sigint") == [
        ("sigint", "drv-joint-s0", "1"), ("sigint", "drv-joint-s1", "1")]
    assert "drv-joint-s2" not in {e[1] for e in events(tmp_path)}


# -- a real sweep, then compare -----------------------------------------------------------------
def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_real_sweep_then_rerun_skips_then_compare(preset, tmp_path):
    runs = tmp_path / "runs"
    args = ["sweep", preset, "--methods", "joint,unimodal", "--seeds", "0,1", "--set", "unimodal.modality=a",
            "--jobs", "2", "--runs-dir", runs]
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert "sweep tiny: 2 of 2" not in res.output and "sweep tiny: 4 of 4 runs finished" in res.output
    assert "mmbal compare --sweep tiny" in res.output
    summaries = {}
    for d in runs.glob("2*"):
        info = json.loads((d / "run.json").read_text())
        summaries[info["name"]] = json.loads((d / "summary.json").read_text())["test"]
        config = json.loads((d / "config.json").read_text())
        assert config["seed"] == int(info["name"][-1])
        assert config["method"] == ({"name": "unimodal", "modality": "a"} if "unimodal" in info["name"]
                                    else {"name": "joint"})
    assert sorted(summaries) == ["tiny-joint-s0", "tiny-joint-s1", "tiny-unimodal-s0", "tiny-unimodal-s1"]
    for s in (0, 1):   # unimodal trains 'a' alone: its fused prediction is modality a's
        uni = summaries[f"tiny-unimodal-s{s}"]
        assert uni["test/acc/fused"] == uni["test/acc/a"]

    again = invoke(*args)
    assert again.exit_code == 0 and "4 finished, skipped" in again.output and "[1/" not in again.output
    assert len(list(runs.glob("2*"))) == 4

    out = json.loads(invoke("compare", "--sweep", "tiny", "--runs-dir", runs, "--baseline", "joint",
                            "--format", "json").stdout)
    rows = {r["label"]: r for r in out["rows"]}
    assert sorted(rows) == ["joint", "unimodal"] and out["excluded"] == []
    for method, row in rows.items():
        accs = [summaries[f"tiny-{method}-s{s}"]["test/acc/fused"] for s in (0, 1)]
        cell = row["metrics"]["test/acc/fused"]
        assert row["n"] == 2 and row["seeds"] == [0, 1]
        assert cell["mean"] == pytest.approx(sum(accs) / 2)
        assert cell["std"] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
    diffs = [summaries[f"tiny-unimodal-s{s}"]["test/acc/fused"] - summaries[f"tiny-joint-s{s}"]["test/acc/fused"]
             for s in (0, 1)]
    assert rows["unimodal"]["metrics"]["test/acc/fused"]["delta"] == pytest.approx(sum(diffs) / 2)
    md = invoke("compare", "--sweep", "tiny", "--runs-dir", runs, "--format", "md")
    assert md.exit_code == 0 and md.stdout.startswith("| method | runs | seeds |")
