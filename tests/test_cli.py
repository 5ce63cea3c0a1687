"""The command line as a user drives it: output, files, and exit codes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmbal_cli.app import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

PRESET = """
name = "cli"
[data]
source = "synthetic"
[data.synthetic]
n_samples = 240
n_classes = 3
dims = [6, 6]
[method]
name = "joint"
[train]
epochs = 2
batch_size = 32
"""


@pytest.fixture()
def preset(tmp_path):
    p = tmp_path / "cli.toml"
    p.write_text(textwrap.dedent(PRESET))
    return p


def invoke(*args, runs=None):
    env = {"MMBAL_RUNS_DIR": str(runs)} if runs else {}
    return runner.invoke(app, [str(a) for a in args], env=env)


def test_run_prints_id_and_directory_first_then_ls_lists_it(preset, tmp_path):
    runs = tmp_path / "runs"
    res = invoke("run", preset, "--set", "train.epochs=1", runs=runs)
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[0]
    run_id, run_dir = first.split()[1], Path(first.split()[2])
    assert first.startswith("run ") and run_dir.parent == runs and run_dir.name.endswith(run_id)
    assert "epoch 1/1" in res.output
    ls = invoke("ls", "--json", runs=runs)
    rows = json.loads(ls.output)
    assert [r["run_id"] for r in rows] == [run_id] and rows[0]["state"] == "finished"


def test_bad_preset_exits_2_and_creates_nothing(preset, tmp_path):
    runs = tmp_path / "runs"
    res = invoke("run", preset, "--set", "train.epoch=3", "--set", "method.name=ogm_gee", runs=runs)
    assert res.exit_code == 2
    assert "train.epoch: unknown key (did you mean 'epochs'?)" in res.output
    assert "method.name: unknown method 'ogm_gee' (did you mean 'ogm_ge'?)" in res.output
    assert "Traceback" not in res.output
    assert not runs.exists() or list(runs.iterdir()) == []


def test_bad_data_exits_2_and_creates_nothing(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    preset = tmp_path / "p.toml"
    preset.write_text(f'[data]\npath = "{bad}"\n')
    res = invoke("run", preset, runs=tmp_path / "runs")
    assert res.exit_code == 2 and str(bad) in res.output
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_resume_exit_codes(preset, tmp_path):
    runs = tmp_path / "runs"
    assert invoke("resume", "nothing", runs=runs).exit_code == 3
    invoke("run", preset, "--set", "train.epochs=1", runs=runs)
    refused = invoke("resume", "latest", "--set", "seed=9", runs=runs)
    assert refused.exit_code == 3 and "seed: 0 -> 9" in refused.output
    done = invoke("resume", "latest", runs=runs)
    assert done.exit_code == 3 and "train.epochs" in done.output
    more = invoke("resume", "latest", "--set", "train.epochs=2", runs=runs)
    assert more.exit_code == 0, more.output
    assert "epoch 2/2" in more.output


def test_methods_lists_joint_and_unimodal_with_parameters():
    res = invoke("methods", "--json")
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert {"joint", "unimodal"} <= set(rows)
    assert [p["name"] for p in rows["unimodal"]["params"]] == ["modality"]


def test_data_synth_then_inspect(tmp_path):
    out = tmp_path / "s.parquet"
    res = invoke("data", "synth", out, "--samples", "120", "--set", "modalities=['x','y','z']",
                 "--set", "dims=[3,4,5]", "--set", "unique=[1.0,0.5,0.0]", "--set", "noise=[0.1,0.1,0.1]")
    assert res.exit_code == 0, res.output
    info = json.loads(invoke("data", "inspect", out, "--json").output)
    assert info["rows"] == 120
    assert [(m["column"], list(m["shape"])) for m in info["modalities"]] == [("x", [3]), ("y", [4]), ("z", [5])]
    bad = invoke("data", "synth", out, "--set", "dims=[3]")
    assert bad.exit_code == 2


def start_slow_run(tmp_path, epochs):
    """``mmbal run`` of a 3000-sample preset for ``epochs`` as a real process, its output piped; returns the
    process (its first line, the run's id and directory, read), the run directory and the environment."""
    preset = tmp_path / "slow.toml"
    preset.write_text(textwrap.dedent(PRESET).replace("epochs = 2", f"epochs = {epochs}")
                      .replace("n_samples = 240", "n_samples = 3000"))
    env = {**os.environ, "MMBAL_RUNS_DIR": str(tmp_path / "runs")}
    proc = subprocess.Popen([sys.executable, "-m", "mmbal_cli", "run", str(preset)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    first = proc.stdout.readline()
    assert first.startswith("run ")
    return proc, Path(first.split()[2]), env


def test_a_closed_pipe_stops_the_run_after_a_checkpoint_and_exits_141(tmp_path):
    """``mmbal run p.toml | head -2``: when the reader goes away the run's next line fails (EPIPE); the run
    stops after a checkpoint (interrupted, resumable) instead of failing with a traceback."""
    proc, run_dir, _ = start_slow_run(tmp_path, epochs=500)
    assert proc.stdout.readline().startswith("epoch 1/500")
    proc.stdout.close()   # as `head -2` exits
    proc.wait(timeout=120)
    err = proc.stderr.read()
    assert proc.returncode == 141, err
    assert "Traceback" not in err and f"continue with `mmbal resume {run_dir.name.rsplit('_', 1)[-1]}`" in err
    assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"event"' in line]
    assert [e["signal"] for e in events if e["name"] == "interrupted"] == ["SIGPIPE"]


def test_interrupt_writes_checkpoint_and_exits_130(tmp_path):
    """A real process, a real SIGINT: exit 130, state interrupted, and resume finishes the run."""
    proc, run_dir, env = start_slow_run(tmp_path, epochs=200)
    deadline = time.time() + 60
    while not (run_dir / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode == 130, proc.stderr.read()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted"
    import torch
    epoch = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["position"]["epoch"]
    done = subprocess.run([sys.executable, "-m", "mmbal_cli", "resume", run_dir.name, "--set",
                           f"train.epochs={epoch + 1}"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_brackets_in_errors_and_dataset_names_are_shown_as_written(tmp_path, monkeypatch):
    """Rich markup was applied to what users wrote: on a terminal, an error quoting ``exp[/x]`` crashed with a
    MarkupError traceback and ``mmbal[image]`` lost its ``[image]``; ``data inspect`` did the same to column
    and class names."""
    import io

    import numpy as np
    from rich.console import Console

    from engine.data.writer import write_dataset
    from mmbal_cli import output

    terminal = io.StringIO()
    monkeypatch.setattr(output, "err_console", Console(file=terminal, force_terminal=True, color_system=None))
    output.print_error("--name: 'exp[/x]' ...; pip install \"mmbal[image]\"")
    assert terminal.getvalue().strip() == "error: --name: 'exp[/x]' ...; pip install \"mmbal[image]\""

    rng = np.random.default_rng(0)
    data = tmp_path / "brackets.parquet"
    write_dataset(data, {"emb[/clip]": rng.normal(size=(30, 2)).astype(np.float32),
                         "[b]text": rng.normal(size=(30, 2)).astype(np.float32)},
                  np.arange(30) % 2, None, ["[pos]", "[neg]"], "brackets")
    result = CliRunner().invoke(app, ["data", "inspect", str(data)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "classes 2: [pos] (15), [neg] (15)" in result.output
    assert "emb[/clip]" in result.output and "[b]text" in result.output


def test_data_inspect_prints_splits_and_each_class_with_its_rows(tmp_path):
    import numpy as np

    from engine.data.writer import write_dataset

    labels = np.array([0] * 6 + [1] * 3 + [2])
    split = np.array([0, 0, 0, 1, 2, 0, 0, 1, 2, 0], dtype=np.int8)
    features = {m: np.zeros((10, 2), np.float32) for m in ("a", "b")}
    write_dataset(tmp_path / "d.parquet", features, labels, split, ["cat", "dog", "eel"], "d")
    result = CliRunner().invoke(app, ["data", "inspect", str(tmp_path / "d.parquet")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "splits train 6, val 2, test 2" in result.output  # was a Python dict: {'train': 6, ...}
    assert "classes 3: cat (6), dog (3), eel (1)" in result.output


def test_piped_tables_are_as_wide_as_COLUMNS_when_set_else_200(monkeypatch):
    from rich.console import Console

    from mmbal_cli import output
    monkeypatch.setattr(output.sys.stdout, "isatty", lambda: False)
    monkeypatch.delenv("COLUMNS", raising=False)
    assert output.piped_width() == 200
    monkeypatch.setenv("COLUMNS", "100")
    assert output.piped_width() is None and Console(width=output.piped_width()).width == 100
    monkeypatch.setenv("COLUMNS", "wide")
    assert output.piped_width() == 200


def test_inspect_notes_a_column_that_cannot_name_a_modality(tmp_path):
    import numpy as np

    from engine.data.writer import write_dataset
    rng = np.random.default_rng(0)
    write_dataset(tmp_path / "d.parquet", {"fused": rng.normal(size=(8, 3)), "b": rng.normal(size=(8, 2))},
                  np.arange(8) % 2, None, ["n", "y"], name="d")
    result = CliRunner().invoke(app, ["data", "inspect", str(tmp_path / "d.parquet")], env={"COLUMNS": "200"})
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "note: column 'fused' cannot be a modality's name in a run: 'fused' is the " \
        "fused model's name" in text and 'a preset uses it under another name: [modalities.<name>] with column = ' \
        '"fused"' in text and "column 'b'" not in text, text
