"""What a new user trips over in a first hour (data silently ignored, paths, lookups, names): each case
as the user meets it on the command line."""

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmbal_cli.app import app
from runtools import tiny_preset

runner = CliRunner()



@pytest.fixture()
def preset(tmp_path):
    folder = tmp_path / "presets"
    folder.mkdir()
    p = folder / "first.toml"
    p.write_text(tiny_preset(name="first", epochs=1))
    return p


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_a_path_beside_synthetic_data_is_refused_not_ignored(preset, tmp_path):
    assert invoke("data", "synth", tmp_path / "my.parquet", "--samples", "300").exit_code == 0
    runs = tmp_path / "runs"
    res = invoke("run", preset, "--set", f"data.path={tmp_path / 'my.parquet'}", "--runs-dir", runs)
    assert res.exit_code == 2
    assert "data.source is 'synthetic'" in res.output and "--set data.source=parquet" in res.output
    assert not runs.exists()


def test_a_path_on_the_command_line_is_relative_to_the_working_directory(preset, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert invoke("data", "synth", "my.parquet", "--samples", "300").exit_code == 0
    res = invoke("run", preset, "--set", "data.path=my.parquet", "--set", "data.source=parquet",
                 "--runs-dir", "runs")
    assert res.exit_code == 0, res.output
    run_dir = next((work / "runs").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"]["path"] == str(work / "my.parquet")
    info = json.loads((run_dir / "run.json").read_text())
    assert f"data.path={json.dumps(str(work / 'my.parquet'))}" in info["overrides"]
    # the preset's folder holds no my.parquet: the run read the one in the working directory
    assert not (preset.parent / "my.parquet").exists()


def test_a_missing_path_is_shown_resolved(preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke("run", preset, "--set", "data.path=../nope/missing.parquet", "--set", "data.source=parquet",
                 "--runs-dir", "runs")
    assert res.exit_code == 2
    assert str(tmp_path.parent / "nope" / "missing.parquet") in res.output and "/../" not in res.output


def test_resume_names_the_local_runs_folder_when_the_run_is_there(preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMBAL_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert invoke("run", preset, "--runs-dir", "./runs", "--name", "try1").exit_code == 0
    res = invoke("resume", "try1", "--set", "train.epochs=2")
    assert res.exit_code == 3
    assert "./runs has a run 'try1': pass --runs-dir ./runs" in res.output
    assert invoke("resume", "try1", "--runs-dir", "./runs", "--set", "train.epochs=2").exit_code == 0


def test_a_second_run_with_the_same_name_is_warned_about(preset, tmp_path):
    runs = tmp_path / "runs"
    first = invoke("run", preset, "--runs-dir", runs, "--name", "same")
    assert first.exit_code == 0 and "also named" not in first.output
    second = invoke("run", preset, "--runs-dir", runs, "--name", "same")
    assert second.exit_code == 0
    assert "1 other run(s)" in second.output and "also named 'same'" in second.output


def test_results_go_to_stdout_and_diagnostics_to_stderr(preset, tmp_path):
    res = invoke("run", preset, "--set", "train.epochs=2", "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 0, res.output
    out = res.stdout.splitlines()
    assert out[0].startswith("run ")
    assert [line.split("  val  ")[0] for line in out if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert out[-1].startswith("test (epoch ") and "selected on val" in out[-1] and "fused 0." in out[-1]
    assert "training joint on cpu" in res.stderr and "training joint" not in res.stdout
    assert "epoch 1/2" not in res.stderr


def test_a_unimodal_run_shows_and_is_named_after_its_one_modality(preset, tmp_path):
    res = invoke("run", preset, "--set", 'method.name="unimodal"', "--set", 'method.modality="b"',
                 "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 0, res.output
    epoch_line = next(line for line in res.stdout.splitlines() if line.startswith("epoch 1/1"))
    assert "  b 0." in epoch_line and "  a 0." not in epoch_line
    assert "_first-unimodal-b_" in res.stdout.splitlines()[0]


@pytest.mark.parametrize("width", [40, 80, 120])
def test_result_lines_fit_the_terminal(width):
    from mmbal_cli.output import fit_lines, result_fields
    mods = ["fou", "fac", "kar", "pix", "zer", "mor"]
    values = {f"val/acc/{m}": 0.5 for m in ["fused", *mods]} | {"val/f1/fused": 0.9, "val/loss/fused": 0.25}
    lines = fit_lines("epoch 12/30  val", result_fields(values, "val", mods), "(12.5s)", width)
    assert all(len(line) <= width for line in lines)
    assert " ".join(" ".join(lines).split()) == ("epoch 12/30 val fused 0.500 fou 0.500 fac 0.500 kar 0.500 "
                                                 "pix 0.500 zer 0.500 mor 0.500 f1 0.900 loss 0.250 (12.5s)")
    assert fit_lines("h", ["a 1", "b 2"], width=None) == ["h  a 1  b 2"]


def test_version_flags_and_generator_options_are_where_a_user_looks():
    version = invoke("--version")
    assert version.exit_code == 0 and version.stdout.startswith("mmbal ") and "torch " in version.stdout
    help_text = runner.invoke(app, ["ls", "--help"], env={"COLUMNS": "100"}).stdout
    assert "--json" in help_text and "<bool>" not in help_text
    options = invoke("data", "synth", "--help-options")   # no output path needed to ask for the options
    assert options.exit_code == 0 and "n_samples (int, default 3000)" in options.stdout


def test_ls_shows_age_epochs_and_score_sorted_and_filtered(preset, tmp_path):
    runs = tmp_path / "runs"
    for name, epochs in (("short", 1), ("longer", 2)):
        assert invoke("run", preset, "--runs-dir", runs, "--name", name, "--set", f"train.epochs={epochs}").exit_code == 0
    rows = sorted(json.loads(invoke("ls", "--runs-dir", runs, "--json").stdout), key=lambda r: r["name"])
    assert [(r["name"], r["epochs"], r["selected"]["metric"]) for r in rows] == \
        [("longer", 2, "val/acc/fused"), ("short", 1, "val/acc/fused")]   # (both may start in one second)
    table = runner.invoke(app, ["ls", "--runs-dir", str(runs)], env={"COLUMNS": "80"}).stdout
    header = next(line for line in table.splitlines() if line.startswith("id"))
    assert header.split() == ["id", "name", "state", "age", "epochs", "best", "val"]
    assert all(len(line) <= 80 for line in table.splitlines())
    longer = next(line for line in table.splitlines() if " longer " in line)
    assert " 2/2 " in longer and f"{rows[0]['selected']['value']:.4f}" in longer and "finished" in longer
    by_score = json.loads(invoke("ls", "--runs-dir", runs, "--json", "--sort", "score").stdout)
    values = [r["selected"]["value"] for r in by_score]
    assert values == sorted(values, reverse=True)
    only = invoke("ls", "--runs-dir", runs, "--filter", "name=lon*")
    assert " longer " in only.stdout and " short " not in only.stdout and "1 of 2 runs" in only.stdout
    bad = invoke("ls", "--runs-dir", runs, "--filter", "colour=red")
    assert bad.exit_code == 2 and "'colour'" in bad.output


def test_ages_read_as_a_person_would():
    from mmbal_cli.commands.ls import age
    now = 1_800_000_000.0
    stamp = lambda seconds: datetime.fromtimestamp(now - seconds, timezone.utc).isoformat()   # noqa: E731
    assert [age(stamp(s), now) for s in (5, 125, 7300, 3 * 86400, 30 * 86400)] == ["5s", "2m", "2h", "3d", "4w"]
    assert age("not a date", now) == "?"


def test_watch_waits_for_the_run_being_started_not_an_older_one(preset, tmp_path):
    import threading

    from engine.run import start_run
    from engine.store.starting import announce_start
    from mmbal_cli.commands.watch import _just_started
    runs = tmp_path / "runs"
    assert invoke("run", preset, "--runs-dir", runs, "--name", "race").exit_code == 0   # an older run named race
    old = next(runs.glob("*_race_*"))
    found = {}
    with announce_start(runs, "race"):   # as `mmbal run --name race` does first, before its data are read
        watcher = threading.Thread(target=lambda: found.update(run=_just_started(runs, "race")))
        watcher.start()
        new = start_run(preset, runs_dir=runs, name="race").run_dir
    watcher.join(timeout=60)
    assert found["run"] == new != old
    assert not (runs / ".starting").exists() or not any((runs / ".starting").iterdir())
    assert _just_started(runs, "race") is None   # nothing starting now: the usual lookup


def test_watch_of_a_name_not_announced_yet_waits_a_moment_for_it(preset, tmp_path):
    """`mmbal run --name late & sleep 2; mmbal watch late --once` on a busy machine: the run announces
    itself only after the watch looked (Python's start takes seconds under load)."""
    import threading
    import time

    from engine.run import start_run
    from engine.store.starting import announce_start
    runs = tmp_path / "runs"
    assert invoke("run", preset, "--runs-dir", runs, "--name", "other").exit_code == 0

    def late_start():
        time.sleep(1.0)
        with announce_start(runs, "late"):
            start_run(preset, runs_dir=runs, name="late")
    starter = threading.Thread(target=late_start)
    starter.start()
    watched = invoke("watch", "late", "--once", "--runs-dir", runs)
    starter.join(timeout=120)
    assert watched.exit_code == 0, watched.output
    said = " ".join(watched.output.split())   # the notice is wrapped at the terminal's width
    assert "waiting up to 5 s" in said and "late " in said.split("·")[0] and "other" not in said
