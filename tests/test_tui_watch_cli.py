"""``mmbal watch``: resolving RUN, exit codes, and the ``--once`` snapshot (also used without a terminal)."""

from pathlib import Path

from typer.testing import CliRunner

from mmbal_cli.app import app

FIXTURES = Path(__file__).parent / "fixtures" / "runs"
runner = CliRunner()


def watch(*args, env=None):
    return runner.invoke(app, ["watch", *map(str, args)], env={"MMBAL_RUNS_DIR": str(FIXTURES), **(env or {})})


def test_once_prints_the_dashboard_content_as_plain_text():
    result = watch("k3f9", "--once")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "avdigits-aug  k3f9a2x1  ·  method aug  ·  data avdigits" in out
    assert "finished  epoch 6/6  step 240/240" in out and "100%" in out and "elapsed 2m06s" in out
    assert "image ◀ weakest" in out
    audio = next(line for line in out.splitlines() if line.startswith("audio"))
    assert audio.split() == ["audio", "0.868", "0.839", "1.235", "0.455", "0.380", "1.299", "0.251"]
    assert "test acc  fused 0.901 audio 0.842 image 0.663" in out
    assert "R resume" in out and "step 80  head_added  modality=image, heads=2" in out
    assert "\x1b[" not in out  # no escape codes when not on a terminal
    assert out.count("accuracy by step") == 1 and "(s: show" not in out  # one title, no key a snapshot lacks


def test_default_run_is_the_latest():
    result = watch("--once")
    assert result.exit_code == 0 and result.output.startswith("quick-mcr  p7q2m4zz")
    assert "stale" in result.output and "incomplete line" in result.output


def test_once_piped_keeps_to_120_columns_method_values_included():
    result = watch("p7q2", "--once")   # MCR: its method values and their meanings, a grid that fills its width
    assert result.exit_code == 0 and "its values and what they mean" in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 120
    assert not [line for line in result.output.splitlines() if line != line.rstrip()]   # no padding at line ends


def test_without_a_terminal_watch_prints_a_snapshot():
    result = watch("a0b1")
    assert result.exit_code == 0
    assert "printing one snapshot" in result.output and "nutrimouse-joint" in result.output


def test_unknown_run_exits_3_with_the_message(tmp_path, monkeypatch):
    import mmbal_cli.commands.watch as watch_command
    monkeypatch.setattr(watch_command, "START_GRACE_S", 0.3)
    result = watch("nosuchrun", "--once")
    assert result.exit_code == 3 and "waiting up to" in result.output   # a name: it waited for a start first
    assert "no run 'nosuchrun'" in result.output and "mmbal ls" in result.output
    result = watch("--once", "--runs-dir", tmp_path / "empty")
    assert result.exit_code == 3 and "names nothing" in result.output
    assert "mmbal run presets/quickstart.toml" in result.output


def test_a_run_directory_path_works_from_anywhere():
    result = watch(FIXTURES / "20250228-170000_nutrimouse-joint_a0b1c2d3", "--once", env={"MMBAL_RUNS_DIR": "/nonexistent"})
    assert result.exit_code == 0 and "nutrimouse-joint" in result.output
