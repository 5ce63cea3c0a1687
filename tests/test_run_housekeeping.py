"""Looking after runs once they exist: ``show``, ``tag`` / ``note`` (meta.json), ``rm`` and ``gc``."""

import json

import pytest
from typer.testing import CliRunner

from engine.store import RunLock, RunPaths
from mmbal_cli.app import app
from runtools import tiny_preset

runner = CliRunner()



def invoke(runs, *args, stdin=None):
    return runner.invoke(app, [str(a) for a in args], env={"MMBAL_RUNS_DIR": str(runs)}, input=stdin)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keep")
    preset = folder / "keep.toml"
    preset.write_text(tiny_preset(name="keep", epochs=1))
    runs = folder / "runs"
    for name in ("first", "second"):
        assert invoke(runs, "run", preset, "--name", name).exit_code == 0
    return runs


def test_tags_and_notes_are_kept_listed_filtered_and_compared(two_runs):
    runs = two_runs
    assert invoke(runs, "tag", "first", "paper", "baseline").stdout.strip().endswith("paper, baseline")
    assert invoke(runs, "tag", "first", "--remove", "baseline").stdout.strip().endswith(": paper")
    assert invoke(runs, "note", "first", "lr too high?").exit_code == 0
    meta = json.loads(RunPaths(next(runs.glob("*_first_*"))).meta.read_text())
    assert meta["tags"] == ["paper"] and meta["notes"][0]["text"] == "lr too high?"
    listed = invoke(runs, "ls", "--filter", "tag=paper").stdout
    assert "first [paper]" in listed and "second" not in listed
    compared = invoke(runs, "compare", "--tag", "paper", "--format", "json").stdout
    assert [r["label"] for r in json.loads(compared)["rows"]] == ["first"]
    shown = invoke(runs, "show", "first").stdout
    assert "tags      paper" in shown and "lr too high?" in shown and "checkpoints/best.pt" in shown
    bad = invoke(runs, "tag", "first", "no spaces allowed")
    assert bad.exit_code == 2 and "a tag is 1 to 64" in bad.output
    assert invoke(runs, "compare", "--tag", "nothing").exit_code == 3


def test_show_json_has_config_summary_and_file_sizes(two_runs):
    info = json.loads(invoke(two_runs, "show", "second", "--json").stdout)
    assert info["run"]["name"] == "second" and info["config"]["train"]["epochs"] == 1
    assert info["summary"]["selected"]["metric"] == "val/acc/fused"
    sizes = {f["path"]: f["bytes"] for f in info["files"]}
    assert sizes["checkpoints/last.pt"] > 0 and info["bytes"] >= sum(sizes.values())


def test_show_says_why_a_failed_run_failed(tmp_path, two_runs):
    import shutil
    runs = tmp_path / "runs"
    shutil.copytree(two_runs, runs)
    status = RunPaths(next(runs.glob("*_first_*"))).status
    record = json.loads(status.read_text())
    status.write_text(json.dumps({**record, "state": "failed", "message": "RuntimeError: flaky encoder gave up"}))
    lines = invoke(runs, "show", "first").stdout.splitlines()
    assert lines[1].startswith("state     failed, epoch") and lines[2] == "error     RuntimeError: flaky encoder gave up"
    assert invoke(runs, "show", "second").stdout.splitlines()[2].startswith("method ")   # no message: no line


def test_show_lists_the_generator_options_only_for_a_run_on_synthetic_data(two_runs):
    from mmbal_cli.commands.show import shown_config
    assert "data.synthetic.n_samples" in invoke(two_runs, "show", "second").stdout   # the tiny preset is synthetic
    config = {"base_dir": "/x", "data": {"source": "parquet", "path": "bc.parquet", "synthetic": {"n_samples": 3000}},
              "train": {"epochs": 3}}
    assert shown_config(config) == {"data": {"source": "parquet", "path": "bc.parquet"}, "train": {"epochs": 3}}
    assert config["data"]["synthetic"] == {"n_samples": 3000}   # the run's own record is untouched


def test_gc_keeps_best_and_resume_then_says_why_it_cannot(tmp_path, two_runs):
    import shutil
    runs = tmp_path / "runs"
    shutil.copytree(two_runs, runs)
    dry = invoke(runs, "gc", "--keep-best", "--dry-run")
    assert dry.exit_code == 0 and "would free" in dry.stdout and all(p.exists() for p in runs.glob("*/checkpoints/last.pt"))
    assert invoke(runs, "gc", "--keep-best").exit_code == 2            # no terminal to ask on, no --yes
    done = invoke(runs, "gc", "--keep-best", "--yes", "--filter", "name=first")
    assert done.exit_code == 0, done.output
    first = RunPaths(next(runs.glob("*_first_*")))
    assert not first.last.exists() and not first.previous.exists() and first.best.exists()
    assert RunPaths(next(runs.glob("*_second_*"))).last.exists()
    refused = invoke(runs, "resume", "first", "--set", "train.epochs=2")
    assert refused.exit_code == 3 and "`mmbal gc` removed its resume checkpoints" in refused.output
    assert invoke(runs, "gc", "--keep-best", "--dry-run", "--filter", "name=first").stdout.startswith("nothing")


def test_rm_deletes_runs_but_not_a_running_one(tmp_path, two_runs):
    import shutil
    runs = tmp_path / "runs"
    shutil.copytree(two_runs, runs)
    second = next(runs.glob("*_second_*"))
    with RunLock(second):
        held = invoke(runs, "rm", "second", "--yes")
        assert held.exit_code == 3 and second.is_dir()
    assert invoke(runs, "rm", "first").exit_code == 2                 # asks; no terminal
    gone = invoke(runs, "rm", "first", "second", "--yes")
    assert gone.exit_code == 0 and "freed" in gone.stdout
    assert [p.name for p in runs.iterdir() if not p.name.startswith(".")] == []


def test_show_wraps_the_method_and_test_lines_between_values_at_80_columns(two_runs, monkeypatch):
    import mmbal_cli.commands.show as show
    monkeypatch.setattr(show, "terminal_width", lambda stream: 80)
    lines = invoke(two_runs, "show", "second").stdout.splitlines()
    assert all(len(line) <= 80 for line in lines[1:8])   # the first line is the run directory
    test = next(i for i, line in enumerate(lines) if line.startswith("test "))
    assert lines[test].startswith("test      acc/fused ") and lines[test + 1].startswith("          imbalance ")
    method = next(i for i, line in enumerate(lines) if line.startswith("method "))
    assert lines[method + 1].startswith("          ") and "segments 1" in lines[method + 1]
    monkeypatch.setattr(show, "terminal_width", lambda stream: None)   # into a pipe: one line each
    assert any(line.startswith("test ") and "imbalance" in line for line in invoke(two_runs, "show", "second").stdout.splitlines())
