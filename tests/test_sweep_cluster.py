"""A sweep on several GPUs (``--gpus``) and on a cluster (``--launcher slurm``, through submitit).

The GPU placement is checked without GPUs: a stand-in member records the environment it was started
with (``CUDA_VISIBLE_DEVICES``) and when it ran, so the test sees which GPU each slot used.
"""

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine.errors import UsageError
from engine.store import read_metrics
from engine.store.checkpoints import load_checkpoint
from engine.sweep.attempts import Task
from engine.sweep.members import Member, parse_gpus
from engine.sweep.plan import Plan
from engine.sweep.runner import SweepRunner, slot_gpu
from mmbal_cli.app import app
from runtools import tiny_preset

MEMBER = '''
import os, sys, time
name = sys.argv[sys.argv.index("--name") + 1]
gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "-")
with open(os.environ["FAKE_EVENTS"], "a") as f:
    f.write(f"start {name} {gpu} {time.time()} {os.environ.get('OMP_NUM_THREADS', '-')}\\n")
time.sleep(0.4)
with open(os.environ["FAKE_EVENTS"], "a") as f:
    f.write(f"end {name} {gpu} {time.time()} -\\n")
'''


def _plan(runs: Path, n: int) -> Plan:
    tasks = [Task(Member("joint", s, f"g-joint-s{s}", (), {}), "start") for s in range(n)]
    return Plan("g", Path("/nonexistent.toml"), runs, ["joint"], list(range(n)), [], {}, None, tasks)


def test_parse_gpus():
    assert parse_gpus("0,1", visible=2) == ["0", "1"]
    assert parse_gpus("2, 0-1", visible=4) == ["2", "0", "1"]
    for bad, message in [("x", "'x' is not a GPU index"), ("1-0", "'1-0' is not"), ("0,0", "GPU 0 is given twice"),
                         ("0-1,1", "GPU 1 is given twice"), ("0,2,3", "GPUs 2, 3 not found: this machine shows "
                                                                    "GPUs 0-1")]:
        with pytest.raises(UsageError, match=message):
            parse_gpus(bad, visible=2)
    with pytest.raises(UsageError, match="GPU 0 not found: this machine shows no CUDA GPU"):
        parse_gpus("0", visible=0)
    assert [slot_gpu(["0", "1"], s) for s in range(4)] == ["0", "1", "0", "1"] and slot_gpu([], 3) is None


def test_members_are_placed_on_gpus_round_robin_each_seeing_one(tmp_path, monkeypatch):
    """3 slots on GPUs 0,1: slots 0 and 2 on GPU 0, slot 1 on GPU 1; a member sees only its GPU."""
    member = tmp_path / "member"
    member.write_text(f"#!{sys.executable}\n{MEMBER}")
    member.chmod(0o755)
    events = tmp_path / "events"
    monkeypatch.setenv("FAKE_EVENTS", str(events))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    started = []
    runner = SweepRunner(_plan(tmp_path / "runs", 6), [str(member), "-m", "mmbal_cli"], jobs=3, poll_s=0.02,
                         gpus=["0", "1"], on_event=lambda kind, task, gpu: started.append(gpu) if kind == "start"
                         else None)
    runner.run()
    rows = [line.split() for line in events.read_text().splitlines()]
    starts = {r[1]: r for r in rows if r[0] == "start"}
    assert len(starts) == 6 and {r[2] for r in starts.values()} == {"0", "1"}
    assert started[:3] == ["0", "1", "0"] and sorted(started) == sorted(r[2] for r in starts.values())
    assert {r[4] for r in starts.values()} == {str(max(1, (os.cpu_count() or 1) // 3))}
    spans = {r[1]: [float(r[3])] for r in rows if r[0] == "start"}
    for r in rows:
        if r[0] == "end":
            spans[r[1]].append(float(r[3]))
    for gpu, most in (("0", 2), ("1", 1)):  # at no moment more members on a GPU than it has slots
        mine = [spans[n] for n, r in starts.items() if r[2] == gpu]
        for t0, _ in mine:
            assert sum(a <= t0 < b for a, b in mine) <= most
    for name, row in starts.items():  # the member's log names its placement
        log = (tmp_path / "runs" / "sweeps" / "g" / "logs" / f"{name}.log").read_text()
        assert log.startswith("== ") and f" CUDA_VISIBLE_DEVICES={row[2]} " in log.splitlines()[0]


def test_sweep_gpus_on_the_command_line(tmp_path, monkeypatch):
    """--gpus is checked against the GPUs torch sees; it sets one run at a time per GPU by default."""
    preset = tmp_path / "sw.toml"
    preset.write_text(tiny_preset('name = "joint"', name="sw", epochs=1))
    runner = CliRunner()
    args = ["sweep", str(preset), "--seeds", "0-2", "--runs-dir", str(tmp_path / "runs")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = runner.invoke(app, [*args, "--gpus", "0"])
    assert res.exit_code == 2 and "GPU 0 not found: this machine shows no CUDA GPU" in res.output
    assert not (tmp_path / "runs").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    res = runner.invoke(app, [*args, "--gpus", "0,1", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "= 3 runs (3 to start); 2 at a time" in res.output
    assert "on GPUs 0,1, each member on one (CUDA_VISIBLE_DEVICES)" in res.output
    assert "(GPU 0: 1, GPU 1: 1 at a time)" in res.output
    res = runner.invoke(app, [*args, "--gpus", "0,1", "--jobs", "3", "--dry-run"])
    assert "3 at a time" in res.output and "(GPU 0: 2, GPU 1: 1 at a time)" in res.output


# -- --launcher slurm, through submitit's local executor ----------------------------------------------
def _cluster_sweep(tmp_path, preset_text: str, seeds: list[int], on_event=None):
    from engine.sweep.launchers import SubmititLauncher
    from engine.sweep.layout import sweep_dir
    from engine.sweep.plan import plan_sweep
    preset = tmp_path / "c.toml"
    preset.write_text(preset_text)
    runs = tmp_path / "runs"
    plan = plan_sweep(preset, runs, ["joint"], seeds, [], name="c", device=None, grid=[])
    launcher = SubmititLauncher(sweep_dir(runs, "c"), {"timeout_min": 10}, cluster="local")
    runner = SweepRunner(plan, [sys.executable, "-m", "mmbal_cli"], jobs=1, launcher=launcher, poll_s=0.05,
                         on_event=on_event)
    return runner, plan


def test_submitit_member_runs_to_the_end_in_a_job(tmp_path):
    pytest.importorskip("submitit")
    runner, plan = _cluster_sweep(tmp_path, tiny_preset('name = "joint"', epochs=1, monitor={"enabled": False}), [0])
    result = runner.run()
    [outcome] = result.outcomes
    assert (outcome.state, outcome.returncode) == ("finished", 0) and not result.interrupted
    assert outcome.summary["status"] == "finished" and "test/acc/fused" in outcome.summary["test"]
    jobs = tmp_path / "runs" / "sweeps" / "c" / "jobs"
    assert list(jobs.glob("*_result.pkl"))  # it ran as a submitit job
    record = json.loads((tmp_path / "runs" / "sweeps" / "c" / "sweep.json").read_text())
    assert record["members"][0]["attempts"] == [outcome.run_id]
    log = outcome.log.read_text()
    assert f"run {outcome.run_id}  " in log and "test (epoch 1, selected on val)" in log


def test_stopping_a_cluster_sweep_checkpoints_its_job_and_a_rerun_resumes(tmp_path):
    """Ctrl-C of the sweep reaches the member in its job through the stop file: it writes a checkpoint
    and ends interrupted; the queued member is never submitted; the same sweep again plans a resume."""
    pytest.importorskip("submitit")
    slow = tiny_preset('name = "joint"', epochs=200, data={"synthetic": {"n_samples": 3000}}, train={"threads": 1},
                       monitor={"enabled": False})
    runner, plan = _cluster_sweep(tmp_path, slow, [0, 1])
    runs = tmp_path / "runs"

    def interrupt_after_first_checkpoint():
        deadline = time.time() + 240
        while not list(runs.glob("2*_c-joint-s0_*/checkpoints/last.pt")) and time.time() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_first_checkpoint, daemon=True).start()
    result = runner.run()
    assert result.interrupted and result.stopped_by == "SIGINT"
    [outcome] = result.outcomes
    assert (outcome.state, outcome.returncode) == ("interrupted", 130)
    assert (runs / "sweeps" / "c" / "jobs" / "c-joint-s0.stop").read_text() == "1"
    status = json.loads((outcome.run_dir / "status.json").read_text())
    assert status["state"] == "interrupted" and not status.get("message")
    stopped = [e for e in read_metrics(outcome.run_dir / "metrics.jsonl").events("interrupted")]
    last = load_checkpoint(outcome.run_dir / "checkpoints" / "last.pt")
    assert [e["signal"] for e in stopped] == ["SIGINT"] and last["position"]["step"] == stopped[0]["step"]
    record = json.loads((runs / "sweeps" / "c" / "sweep.json").read_text())
    assert record["stopped"]["stopped"] == ["c-joint-s0"] and record["stopped"]["not_started"] == ["c-joint-s1"]
    assert not list(runs.glob("2*_c-joint-s1_*"))
    _, again = _cluster_sweep(tmp_path, slow, [0, 1])
    assert [t.action for t in again.tasks] == ["resume", "start"]


def test_run_member_forwards_stop_requests_and_starts_nothing_once_stopped(tmp_path):
    from engine.sweep.launchers import run_member
    stop, log = tmp_path / "m.stop", tmp_path / "m.log"
    stop.write_text("1")
    assert run_member([sys.executable, "-c", "raise SystemExit(3)"], str(tmp_path), str(log), str(stop)) == 130
    assert not log.exists()  # stopped before it began: nothing started
    stop.unlink()
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGINT, lambda *a: (print('got SIGINT', flush=True), sys.exit(130)))\n"
             "print('ready', flush=True)\n"
             "time.sleep(60)\n")
    threading.Timer(1.0, lambda: stop.write_text("1")).start()
    started = time.time()
    assert run_member([sys.executable, "-c", child], str(tmp_path), str(log), str(stop), poll_s=0.05) == 130
    assert time.time() - started < 30 and log.read_text() == "ready\ngot SIGINT\n"


def test_launcher_errors_are_usage_errors(tmp_path, monkeypatch):
    from engine.sweep.launchers import import_submitit, parse_parameters
    assert parse_parameters(["partition=gpu", "timeout_min=600", "gpus-per-node=1", "mem_gb=7.5", "slurm_qos=high"]) == {
        "slurm_partition": "gpu", "timeout_min": 600, "gpus_per_node": 1, "mem_gb": 7.5, "slurm_qos": "high"}
    for bad, message in [("partition", "'partition' is not KEY=VALUE"), ("timeout_min=1h", "expected int, got '1h'")]:
        with pytest.raises(UsageError, match=message):
            parse_parameters([bad])
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(UsageError, match=r'pip install "mmbal\[slurm\]"'):
        import_submitit()
    (tmp_path / "p.toml").write_text(tiny_preset('name = "joint"'))
    res = CliRunner().invoke(app, ["sweep", str(tmp_path / "p.toml"), "--seeds", "0", "--launcher", "slurm",
                                   "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and 'pip install "mmbal[slurm]"' in res.output, res.output


def test_a_queued_job_is_cancelled_on_stop_and_counts_as_stopped(tmp_path):
    from engine.sweep.launchers import SubmittedMember

    class Queued:
        job_id, state, cancels = "42", "PENDING", 0

        def cancel(self, check=True):
            self.cancels += 1
            self.state = "CANCELLED"

        def done(self):
            return self.state == "CANCELLED"

        def result(self):
            raise RuntimeError("Job 42 (task: 0) with path ... has not produced any output (state: CANCELLED)")

    job, log = Queued(), tmp_path / "m.log"
    member = SubmittedMember(job, tmp_path / "m.stop", log)
    assert member.poll() is None
    member.send_signal(signal.SIGINT)
    member.send_signal(signal.SIGINT)
    assert job.cancels == 1 and (tmp_path / "m.stop").read_text() == "2"
    assert member.wait() == 130 and "job 42 ended without the member's exit code: cancelled while queued" in log.read_text()
