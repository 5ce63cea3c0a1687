"""The run directory lock (engine.store.lock)."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.errors import RunLocked, RunNotFound
from engine.store.lock import RunLock

ROOT = Path(__file__).resolve().parents[1]

TRY_LOCK = textwrap.dedent(
    """
    import sys
    from engine.errors import RunLocked
    from engine.store.lock import RunLock
    try:
        with RunLock(sys.argv[1]):
            print("acquired")
    except RunLocked as e:
        print("locked:", e)
    """
)


def try_in_other_process(run_dir):
    out = subprocess.run(
        [sys.executable, "-c", TRY_LOCK, str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_second_process_is_refused_then_admitted_after_release(tmp_path):
    with RunLock(tmp_path) as lock:
        assert lock.held
        holder = json.loads((tmp_path / ".lock").read_text())
        assert holder == {"pid": os.getpid(), "host": socket.gethostname()}
        answer = try_in_other_process(tmp_path)
        assert answer.startswith("locked:")
        assert str(tmp_path) in answer and f"process {os.getpid()} on host" in answer
    assert not lock.held
    assert try_in_other_process(tmp_path) == "acquired"


def test_lock_held_by_a_killed_process_is_free(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from engine.store.lock import RunLock; "
         "l = RunLock(sys.argv[1]).acquire(); print('ok', flush=True); time.sleep(60)", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(RunLocked, match=f"process {holder.pid} on host"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with RunLock(tmp_path):
        pass


def test_same_process_second_lock_is_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLocked) as info:
            RunLock(tmp_path).acquire()
        assert info.value.exit_code == 3


def test_missing_run_dir_is_run_not_found(tmp_path):
    with pytest.raises(RunNotFound, match="does not exist"):
        RunLock(tmp_path / "gone").acquire()
