"""Local sweep members forked from a server that imported mmbal once (:mod:`mmbal_cli.forked`): the
same runs as exec'd members, their own session, their log, their exit status, a checkpoint on SIGINT."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.store import read_status
from mmbal_cli import forked
from mmbal_cli.app import app

from runtools import tiny_preset

pytestmark = pytest.mark.skipif(not forked.enabled(), reason="no forkserver here")


def preset(tmp_path: Path, epochs: int = 2) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_preset(epochs=epochs, monitor={"enabled": False}))
    return path


def results(runs: Path) -> dict:
    out = {}
    for d in runs.glob("2*"):
        name = json.loads((d / "run.json").read_text())["name"]
        summary = json.loads((d / "summary.json").read_text())
        out[name] = (summary["test"], summary["best"])
    return out


def test_forked_members_train_exactly_what_execd_members_train(tmp_path, monkeypatch):
    started = []
    start = forked.ForkLauncher.start
    monkeypatch.setattr(forked.ForkLauncher, "start", lambda self, *a, **k: started.append(a[2]) or start(self, *a, **k))
    args = ["sweep", str(preset(tmp_path)), "--methods", "joint,ogm_ge", "--seeds", "0,1", "--jobs", "2"]
    res = CliRunner().invoke(app, [*args, "--runs-dir", str(tmp_path / "forked")])
    assert res.exit_code == 0, res.output
    assert sorted(started) == ["tiny-joint-s0", "tiny-joint-s1", "tiny-ogm_ge-s0", "tiny-ogm_ge-s1"]
    monkeypatch.setenv("MMBAL_SWEEP_EXEC", "1")
    res = CliRunner().invoke(app, [*args, "--runs-dir", str(tmp_path / "execd")])
    assert res.exit_code == 0, res.output
    assert len(started) == 4                                   # the second sweep exec'd its members
    assert results(tmp_path / "forked") == results(tmp_path / "execd")
    assert len(results(tmp_path / "forked")) == 4


def start_member(tmp_path: Path, argv: list[str], env: dict | None = None):
    log = tmp_path / "member.log"
    return forked.ForkLauncher(0).start(argv, log, "m", env=env), log


def test_a_forked_member_has_its_own_session_and_stops_on_sigint_with_a_checkpoint(tmp_path):
    runs = tmp_path / "runs"
    proc, log = start_member(tmp_path, ["run", str(preset(tmp_path, epochs=400)), "--runs-dir", str(runs),
                                        "--name", "long"])
    deadline = time.monotonic() + 60
    while "epoch 2/400" not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
        time.sleep(0.05)
    assert os.getsid(proc.pid) == proc.pid != os.getsid(0)     # a terminal's Ctrl-C does not reach it
    proc.send_signal(signal.SIGINT)
    assert proc.wait() == 130
    run_dir = next(runs.glob("2*_long_*"))
    assert read_status(run_dir)["effective_state"] == "interrupted"
    assert (run_dir / "checkpoints" / "last.pt").exists()
    assert log.read_text().startswith("run ")                   # its standard output is the log


def test_a_forked_members_exit_status_and_environment_are_its_own(tmp_path):
    proc, log = start_member(tmp_path, ["run", str(tmp_path / "missing.toml")])
    assert proc.wait() == 2 and "missing.toml" in log.read_text()
    runs = tmp_path / "elsewhere"
    proc, log = start_member(tmp_path, ["run", str(preset(tmp_path, epochs=1)), "--name", "where"],
                             env={**os.environ, "MMBAL_RUNS_DIR": str(runs), "OMP_NUM_THREADS": "1"})
    assert proc.wait() == 0, log.read_text()
    assert len(list(runs.glob("2*_where_*"))) == 1              # $MMBAL_RUNS_DIR of the member's environment


def test_a_forked_member_arms_the_faults_of_its_own_environment(tmp_path):
    """The server imported engine.faults without MMBAL_FAULTS; the member's environment arms them."""
    from engine import faults
    proc, log = start_member(tmp_path, ["run", str(preset(tmp_path, epochs=1)), "--runs-dir", str(tmp_path / "r")],
                             env={**os.environ, faults.ENV: "eval:1"})
    assert proc.wait() == -9                                    # killed (SIGKILL) at its first evaluation
    assert not list((tmp_path / "r").glob("2*/checkpoints/last.pt"))


def test_warm_starts_the_server_before_any_member_and_members_start_after_it(tmp_path):
    import multiprocessing.forkserver as server
    forked.ForkLauncher(0).warm()
    assert getattr(server._forkserver, "_forkserver_pid", None) is not None   # the server runs
    member, log = start_member(tmp_path, ["--version"])
    assert member.wait() == 0 and "mmbal" in log.read_text()
