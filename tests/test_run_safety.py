"""Nobody can corrupt a run or escape the runs directory (issue #9, item 6).

Each protection has a test that fails when it is removed:

* one writer per run: real processes race for a run's lock; a second ``resume`` of a running run
  exits 3 naming the holder's pid and host; a lock file left behind by a SIGKILLed holder (or naming
  another host, or a live unrelated pid) is taken over, because the lock is the ``flock``, not the
  file's content; a symbolic link planted as ``.lock`` is refused, not written through;
* run names are labels: separators, ``..``, control characters, more than 255 bytes, empty -> exit 2
  with nothing created anywhere;
* checkpoints load with ``weights_only=True``: a pickled payload is refused with a clear message and
  never runs (the same payload demonstrably runs under a plain ``torch.load``);
* presets and data are data: no ``eval``/``exec``/pickle/unsafe ``torch.load`` in the sources (an AST
  scan that is itself tested on known-bad code), and ``--set`` values are TOML or plain strings;
* ``watch --once``, ``compare`` and ``ls`` only read: every file of a run keeps its bytes and mtime,
  no lock file appears, even for a run given as a path outside the runs directory and while another
  process holds the run's lock.
"""

import ast
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine.errors import PresetError, RunLocked, UsageError
from engine.run import resume_run, start_run
from engine.store import check_run_name, run_name_problem
from engine.store.lock import LOCK_FILE, RunLock
from engine.store import CheckpointDamaged, load_checkpoint
from mmbal_cli.app import app

from runtools import tiny_preset

ROOT = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"MMBAL_RUNS_DIR": None})


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` (hidden ones included): relative path -> (bytes, mtime in ns)."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished two-epoch run (7 steps per epoch) in its own runs directory."""
    base = tmp_path_factory.mktemp("finished")
    preset = base / "tiny.toml"
    preset.write_text(tiny_preset('name = "joint"', epochs=2))
    result = start_run(preset, ["train.threads=1"], base / "runs")
    return result.run_dir


# -- one writer per run -----------------------------------------------------------------------------
RACER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from engine.errors import RunLocked
    from engine.store.lock import RunLock
    run_dir, go, release = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    try:
        lock = RunLock(run_dir).acquire()
    except RunLocked as exc:
        print("locked", exc, flush=True)
        sys.exit(3)
    print("won", os.getpid(), flush=True)
    while not release.exists():
        time.sleep(0.01)
    lock.release()
""")


def test_processes_racing_for_one_run_lock_admit_exactly_one(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    go, release = tmp_path / "go", tmp_path / "release"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(run_dir), str(go), str(release)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        for p in racers:
            assert p.stdout.readline().strip() == "ready"
        go.touch()  # all four try at once
        first = {p.pid: p.stdout.readline().strip() for p in racers}
        winners = [pid for pid, line in first.items() if line.startswith("won")]
        assert len(winners) == 1, first
        holder = json.loads((run_dir / LOCK_FILE).read_text())
        assert holder == {"pid": winners[0], "host": HOST}
        for p in racers:
            if p.pid != winners[0]:
                assert p.wait(timeout=60) == 3
                assert first[p.pid].startswith("locked") and f"process {winners[0]} on host {HOST}" in first[p.pid]
    finally:
        release.touch()
        for p in racers:
            p.wait(timeout=60)
            p.stdout.close()
            p.stderr.close()
    assert [p.returncode for p in racers].count(0) == 1


def _wait_for(predicate, timeout=90.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def reaped(proc: subprocess.Popen):
    """Runs the block; then kills ``proc`` if it still runs, and closes its stdout."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def sigkill(proc: subprocess.Popen) -> None:
    """Kills ``proc`` as a crash would (no clean-up in it) and waits for its end."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def _lock_record(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None


def test_resume_of_a_running_run_exits_3_naming_the_holder_then_takes_over_after_sigkill(tmp_path):
    preset = tmp_path / "long.toml"
    preset.write_text(tiny_preset('name = "joint"', epochs=5000))
    runs = tmp_path / "runs"
    trainer = subprocess.Popen([sys.executable, "-m", "mmbal_cli", "run", str(preset), "--runs-dir", str(runs),
                                "--set", "train.threads=1"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    with reaped(trainer):
        run_id = trainer.stdout.readline().split()[1]  # "run <id>  <dir>"
        run_dir = next(runs.glob(f"*_{run_id}"))
        _wait_for(lambda: (_lock_record(run_dir) or {}).get("pid") == trainer.pid, what="the run's lock record")
        _wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists(), what="a first checkpoint")
        run_json = (run_dir / "run.json").read_bytes()

        done = load_checkpoint(run_dir / "checkpoints" / "last.pt")["position"]["epoch"]
        # this test's process is the second one; were it let in, it would train one epoch and end
        second = invoke("resume", run_id, "--runs-dir", runs, "--set", f"train.epochs={done + 1}")
        assert second.exit_code == 3, second.output
        assert f"process {trainer.pid} on host {HOST}" in second.output
        assert "in use" in second.output and "Traceback" not in second.output
        assert (run_dir / "run.json").read_bytes() == run_json  # the refused resume wrote nothing
        assert trainer.poll() is None  # and the training went on

        sigkill(trainer)
    # the dead holder's record is still in the file: the stale lock the next resume must take over
    assert _lock_record(run_dir) == {"pid": trainer.pid, "host": HOST}
    done = load_checkpoint(run_dir / "checkpoints" / "last.pt")["position"]["epoch"]
    again = invoke("resume", run_id, "--runs-dir", runs, "--set", f"train.epochs={done + 1}")
    assert again.exit_code == 0, again.output
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert (run_dir / LOCK_FILE).read_text() == ""  # released: the record is cleared


def test_lock_left_by_a_sigkilled_holder_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from engine.store.lock import RunLock; "
         "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    with reaped(holder):
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"process {holder.pid} on host {HOST}"):
            RunLock(tmp_path).acquire()
        sigkill(holder)
    assert _lock_record(tmp_path) == {"pid": holder.pid, "host": HOST}  # left behind, holder dead
    with pytest.raises(ProcessLookupError):
        os.kill(holder.pid, 0)
    with RunLock(tmp_path):
        assert _lock_record(tmp_path) == {"pid": os.getpid(), "host": HOST}


@pytest.mark.parametrize("record", [
    {"pid": 1, "host": "another-host.example"},  # a holder on another host, no flock: nothing holds it
    {"pid": os.getppid(), "host": HOST},  # a live, unrelated process (a reused pid) on this host
    "not json at all",
])
def test_the_lock_file_content_never_blocks_only_the_flock_does(tmp_path, record):
    (tmp_path / LOCK_FILE).write_text(record if isinstance(record, str) else json.dumps(record))
    with RunLock(tmp_path):
        assert _lock_record(tmp_path) == {"pid": os.getpid(), "host": HOST}


def test_a_symlinked_lock_file_is_refused_not_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_FILE).symlink_to(outside)
    with pytest.raises(RunLocked, match="symbolic link") as info:
        RunLock(run_dir).acquire()
    assert info.value.exit_code == 3
    assert outside.read_text() == "precious\n"


# -- run names ---------------------------------------------------------------------------------------
BAD_NAMES = ["../x", "a/b", "a\\b", "..", "x/../../y", "", "   ", "a\x1b[31mred", "two\nlines", "nul\x00byte",
             "tab\there", "\u202eevil", "x" * 256, "é" * 128]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unusable_run_names_exit_2_and_create_nothing(tmp_path, name):
    preset = tmp_path / "tiny.toml"
    preset.write_text(tiny_preset('name = "joint"', epochs=1))
    runs = tmp_path / "area" / "runs"
    before = listing(tmp_path)
    res = invoke("run", preset, "--runs-dir", runs, "--name", name)
    assert res.exit_code == 2, res.output
    assert "--name" in res.output and "is not a usable run name" in res.output
    assert "\x1b[31m" not in res.output and "Traceback" not in res.output  # shown escaped
    assert listing(tmp_path) == before  # no runs dir, no run dir, nothing beside them


@pytest.mark.parametrize("name", BAD_NAMES)
def test_run_name_problem_for_each_bad_name(name):
    assert run_name_problem(name) is not None
    with pytest.raises(UsageError):
        check_run_name(name)


@pytest.mark.parametrize("name", ["x" * 255, "é" * 127, "my run (v2)", "a.b-c_d", "名前", "$(touch pwned)"])
def test_unusual_but_harmless_names_are_accepted(name):
    assert run_name_problem(name) is None


def test_a_preset_name_that_cannot_name_a_run_is_a_preset_error(tmp_path):
    preset = tmp_path / "tiny.toml"
    preset.write_text(tiny_preset('name = "joint"', name="../../etc/x", epochs=1))
    with pytest.raises(PresetError, match=r"name: '\.\./\.\./etc/x' cannot name a run: .*path separator"):
        start_run(preset, [], tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_a_harmless_odd_name_is_kept_verbatim_and_runs_inside_the_runs_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    preset = tmp_path / "tiny.toml"
    preset.write_text(tiny_preset('name = "joint"', epochs=1))
    name = "résumé $(touch pwned) `touch pwned` (名前)"
    result = start_run(preset, ["train.threads=1"], tmp_path / "runs", name=name)
    assert result.run_dir.parent == tmp_path / "runs"
    assert json.loads((result.run_dir / "run.json").read_text())["name"] == name
    assert not list(tmp_path.rglob("pwned"))


def test_set_values_are_toml_or_plain_strings_never_code(tmp_path):
    preset = tmp_path / "tiny.toml"
    preset.write_text(tiny_preset('name = "joint"', epochs=1))
    marker = tmp_path / "pwned"
    res = invoke("run", preset, "--runs-dir", tmp_path / "runs", "--set",
                 f"train.lr=__import__('os').system('touch {marker}')")
    assert res.exit_code == 2, res.output
    assert "train.lr" in res.output and not marker.exists() and not (tmp_path / "runs").exists()


# -- checkpoints are data ---------------------------------------------------------------------------
class Payload:
    """Unpickling this calls ``os.mkdir(target)``: code run by merely loading the file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def _plant_payload(path: Path, marker: Path) -> None:
    state = load_checkpoint(path) if path.exists() else {}
    state["evil"] = Payload(marker)
    torch.save(state, path)


def test_a_pickled_payload_runs_under_plain_torch_load_so_the_test_is_live(tmp_path):
    marker = tmp_path / "ran"
    _plant_payload(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)  # what mmbal must never do
    assert marker.is_dir()


def test_a_checkpoint_holding_a_pickled_payload_is_refused_and_never_runs(tmp_path, finished_run):
    run_dir = tmp_path / finished_run.name
    shutil.copytree(finished_run, run_dir)
    marker = tmp_path / "ran"
    for name in ("last.pt", "previous.pt", "best.pt"):
        _plant_payload(run_dir / "checkpoints" / name, marker)
    with pytest.raises(CheckpointDamaged, match=r"holds a Python object \(posix\.mkdir\) that is not a tensor or a "
                                                r"plain value: refused without running it") as info:
        load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert "weights_only=False" not in str(info.value)  # torch's advice to disable the protection is not passed on
    res = invoke("resume", run_dir, "--set", "train.epochs=3", "--runs-dir", tmp_path)
    assert res.exit_code == 3, res.output
    assert "not a tensor or a plain value" in res.output and "Traceback" not in res.output
    assert not marker.exists()


def test_resume_falls_back_past_a_tampered_last_checkpoint_without_running_it(tmp_path, finished_run):
    run_dir = tmp_path / finished_run.name
    shutil.copytree(finished_run, run_dir)
    marker = tmp_path / "ran"
    _plant_payload(run_dir / "checkpoints" / "last.pt", marker)
    result = resume_run(str(run_dir), ["train.epochs=3"], runs_dir=tmp_path)
    assert result.state == "finished" and not marker.exists()


# -- presets and data are data: the sources load no code --------------------------------------------
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
# (file, call) pairs that are reviewed and safe: the command modules are imported by fixed names; an
# external encoder (``encoder = "package.module:function"``, issue #20) imports the module its preset names,
# which is that feature (a preset naming one is code, as docs/presets.md says), and the optional backbone
# packages (transformers, timm, torchvision) are imported by fixed names.
ALLOWED = {("mmbal_cli/commands/__init__.py", "import_module"),
           ("engine/models/encoders/external.py", "import_module"),
           ("engine/models/encoders/timm_tv.py", "import_module")}


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _kwarg(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<not a constant>"
    return None


def code_loading_calls(source: str, filename: str) -> list[str]:
    """Every place in ``source`` that could run code from data: problems as 'file:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.split(".")[0] in PICKLE_MODULES:
                    found.append(f"{where}: imports {name}")
        if not isinstance(node, ast.Call):
            continue
        func = _dotted(node.func)
        last = func.rsplit(".", 1)[-1]
        if (filename, last) in ALLOWED:
            continue
        if isinstance(node.func, ast.Name) and func in ("eval", "exec", "compile", "__import__"):
            found.append(f"{where}: {func}()")
        elif func.split(".")[0] in PICKLE_MODULES:
            found.append(f"{where}: {func}()")
        elif func == "torch.load" and _kwarg(node, "weights_only") is not True:
            found.append(f"{where}: torch.load() without weights_only=True")
        elif func in ("torch.jit.load", "torch.package.PackageImporter", "pandas.read_pickle", "pd.read_pickle",
                      "os.system", "os.popen", "yaml.load", "yaml.unsafe_load", "yaml.full_load", "import_module",
                      "importlib.import_module", "runpy.run_path", "runpy.run_module"):
            found.append(f"{where}: {func}()")
        elif func in ("np.load", "numpy.load") and _kwarg(node, "allow_pickle") not in (None, False):
            found.append(f"{where}: {func}(allow_pickle=...)")
        elif _kwarg(node, "shell") not in (None, False):
            found.append(f"{where}: {func}(shell=...)")
    return found


def test_the_scanner_finds_each_kind_of_code_loading():
    bad = textwrap.dedent("""
        import pickle
        from dill import loads
        import torch, numpy as np, subprocess, os, importlib
        eval("1")
        exec("x = 1")
        compile("1", "f", "eval")
        pickle.loads(b"")
        torch.load("f")
        torch.load("f", weights_only=False)
        torch.jit.load("f")
        np.load("f", allow_pickle=True)
        subprocess.run("ls", shell=True)
        os.system("ls")
        importlib.import_module(name)
    """)
    found = code_loading_calls(bad, "bad.py")
    assert len(found) == 13, found
    good = textwrap.dedent("""
        model.eval()
        torch.load("f", weights_only=True, map_location="cpu")
        np.load("f")
        subprocess.run(["ls"])
        torch.compile(model)
        re.compile("x")
    """)
    assert code_loading_calls(good, "good.py") == []


def test_engine_and_cli_sources_load_no_code_from_data():
    files = sorted((ROOT / "engine").rglob("*.py")) + sorted((ROOT / "mmbal_cli").rglob("*.py"))
    assert len(files) > 40
    found = [f for path in files
             for f in code_loading_calls(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert found == []
    checkpoint_source = (ROOT / "engine" / "train" / "checkpoint.py").read_text()
    assert "weights_only=True)" in checkpoint_source  # checkpoints are read, and read weights-only


# -- watch, compare and ls only read ------------------------------------------------------------------
def _read_only_commands(run_ref, runs_dir):
    return [("watch", run_ref, "--once", "--runs-dir", runs_dir),
            ("compare", run_ref, "--runs-dir", runs_dir),
            ("compare", run_ref, "--format", "json", "--runs-dir", runs_dir),
            ("compare", run_ref, "--format", "csv", "--all-config", "--runs-dir", runs_dir),
            ("compare", run_ref, "--format", "md", "--runs-dir", runs_dir),
            ("ls", "--runs-dir", runs_dir),
            ("ls", "--json", "--runs-dir", runs_dir)]


def test_watch_compare_and_ls_leave_every_file_of_a_run_untouched(finished_run):
    runs_dir, run_id = finished_run.parent, finished_run.name.rsplit("_", 1)[-1]
    before, entries = tree(runs_dir), listing(runs_dir)
    for args in _read_only_commands(run_id, runs_dir):
        res = invoke(*args)
        assert res.exit_code == 0, (args, res.output)
    assert listing(runs_dir) == entries  # no lock file, no temporary file, nothing new
    assert tree(runs_dir) == before  # every byte and every mtime


def test_a_run_outside_the_runs_dir_is_read_by_path_and_never_written(tmp_path, finished_run):
    outside = tmp_path / "elsewhere" / finished_run.name
    shutil.copytree(finished_run, outside)
    empty_runs = tmp_path / "runs"
    empty_runs.mkdir()
    before, entries = tree(tmp_path), listing(tmp_path)
    for args in _read_only_commands(str(outside), empty_runs)[:5]:
        res = invoke(*args)
        assert res.exit_code == 0, (args, res.output)
        assert finished_run.name.rsplit("_", 1)[-1] in res.output
    assert listing(tmp_path) == entries and tree(tmp_path) == before


def test_watch_and_compare_read_a_run_whose_lock_is_held(tmp_path, finished_run):
    """They never take the lock: with it held (by this process, so any second flock would fail) they work."""
    run_dir = tmp_path / finished_run.name
    shutil.copytree(finished_run, run_dir)
    with RunLock(run_dir):
        before = tree(run_dir)
        for args in _read_only_commands(str(run_dir), tmp_path)[:2]:
            res = invoke(*args)
            assert res.exit_code == 0, (args, res.output)
        assert tree(run_dir) == before
