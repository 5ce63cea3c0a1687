"""status.json writing, liveness judgement and the heartbeat thread (engine.store.status)."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from engine.store.status import Heartbeat, read_status, write_status


def stored(run_dir):
    return json.loads((run_dir / "status.json").read_text())


def test_write_status_merges_and_removes_none_fields(tmp_path):
    write_status(tmp_path, "running", step=1, epoch=0, started="2026-05-01T12:00:00", message="warming up")
    before = time.time()
    written = write_status(tmp_path, "running", step=7, message=None)
    s = stored(tmp_path)
    assert s == written
    assert (s["state"], s["step"], s["epoch"], s["started"]) == ("running", 7, 0, "2026-05-01T12:00:00")
    assert "message" not in s
    assert (s["pid"], s["host"]) == (os.getpid(), socket.gethostname())
    assert before <= s["heartbeat"] <= time.time()
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_running_with_fresh_heartbeat_and_our_pid(tmp_path):
    write_status(tmp_path, "running", heartbeat_interval=5.0, step=3)
    s = read_status(tmp_path)
    assert s["effective_state"] == "running" and s["step"] == 3 and "reason" not in s


def test_dead_pid_on_this_host_means_failed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid no longer exists
    write_status(tmp_path, "running", heartbeat_interval=5.0)
    data = stored(tmp_path)
    data["pid"] = proc.pid
    (tmp_path / "status.json").write_text(json.dumps(data))
    s = read_status(tmp_path)
    assert s["effective_state"] == "failed" and s["state"] == "running"
    assert s["reason"] == f"process {proc.pid} is gone"


def test_old_heartbeat_is_stale_even_if_the_pid_lives(tmp_path):
    write_status(tmp_path, "running", heartbeat_interval=2.0)
    data = stored(tmp_path)
    data["heartbeat"] -= 7.0  # > 3 x 2 s
    (tmp_path / "status.json").write_text(json.dumps(data))
    s = read_status(tmp_path)
    assert s["effective_state"] == "stale" and s["reason"].startswith("last heartbeat 7 s ago")


def test_other_host_fresh_is_running_old_is_stale(tmp_path):
    write_status(tmp_path, "running", heartbeat_interval=2.0)
    data = stored(tmp_path)
    data.update(host="gpu-node-that-is-not-us", pid=999999999)
    (tmp_path / "status.json").write_text(json.dumps(data))
    assert read_status(tmp_path)["effective_state"] == "running"
    data["heartbeat"] -= 60
    (tmp_path / "status.json").write_text(json.dumps(data))
    s = read_status(tmp_path)
    assert s["effective_state"] == "stale" and "host gpu-node-that-is-not-us" in s["reason"]


def test_final_states_are_taken_as_written(tmp_path):
    write_status(tmp_path, "finished", heartbeat_interval=1.0)
    data = stored(tmp_path)
    data["heartbeat"] -= 3600
    (tmp_path / "status.json").write_text(json.dumps(data))
    assert read_status(tmp_path)["effective_state"] == "finished"


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "status.json is missing"),
        ("{broken", "status.json unreadable: "),
        ('{"heartbeat": 1.0}', "status.json has no 'state'"),
        ('{"state": "running", "heartbeat": "soon"}', "status.json has no valid 'heartbeat'"),
    ],
)
def test_missing_or_invalid_status_is_unknown(tmp_path, content, reason):
    if content is not None:
        (tmp_path / "status.json").write_text(content)
    s = read_status(tmp_path)
    assert s["effective_state"] == "unknown" and s["reason"].startswith(reason)


def test_heartbeat_thread_refreshes_and_stop_writes_final_state(tmp_path):
    hb = Heartbeat(tmp_path, interval=0.05, started="t0")
    first = stored(tmp_path)
    assert (first["state"], first["heartbeat_interval"], first["started"]) == ("running", 0.05, "t0")
    hb.update(step=5, epoch=1)
    deadline = time.time() + 5
    while stored(tmp_path).get("step") != 5 and time.time() < deadline:
        time.sleep(0.01)
    second = stored(tmp_path)
    assert second["step"] == 5 and second["epoch"] == 1 and second["heartbeat"] > first["heartbeat"]
    beats = {stored(tmp_path)["heartbeat"]}
    deadline = time.time() + 5
    while len(beats) < 3 and time.time() < deadline:
        time.sleep(0.02)
        beats.add(stored(tmp_path)["heartbeat"])
    assert len(beats) >= 3
    assert read_status(tmp_path)["effective_state"] == "running"
    final = hb.stop("finished", step=9)
    assert not hb._thread.is_alive()
    assert stored(tmp_path) == final
    assert (final["state"], final["step"], final["started"]) == ("finished", 9, "t0")
    time.sleep(0.15)
    assert stored(tmp_path) == final  # nothing writes after stop


def test_heartbeat_context_manager_maps_exceptions(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with Heartbeat(tmp_path, interval=10):
            raise KeyboardInterrupt
    assert stored(tmp_path)["state"] == "interrupted"
    with pytest.raises(RuntimeError):
        with Heartbeat(tmp_path, interval=10):
            raise RuntimeError("loss exploded")
    s = stored(tmp_path)
    assert s["state"] == "failed" and s["message"] == "RuntimeError: loss exploded"
    with Heartbeat(tmp_path, interval=10, step=1):
        assert "message" not in stored(tmp_path)  # the earlier failure's message is cleared
    assert stored(tmp_path)["state"] == "finished"
    hb = Heartbeat(tmp_path, interval=10)
    with pytest.raises(ValueError, match="final state"):
        hb.stop("done")
    hb.stop("failed")
    assert stored(tmp_path)["state"] == "failed"


def test_a_killed_but_unreaped_process_is_not_alive():
    import subprocess
    import sys
    import time as _time

    from engine.store.status import pid_alive
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
        child.kill()
        deadline = _time.monotonic() + 10
        while pid_alive(child.pid) and _time.monotonic() < deadline:  # a zombie until wait() reaps it
            _time.sleep(0.01)
        assert not pid_alive(child.pid)
    finally:
        child.wait()
