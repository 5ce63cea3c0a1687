"""``monitor.max_overhead`` in a run: the monitors' state written apart from ``last.pt`` (only when it
changed and the budget allows), read back on resume, and skipped evaluations leaving their values out."""

import torch

from engine.monitor.overhead import OverheadBudget
from engine.run import resume_run, start_run
from engine.store import RunPaths, load_checkpoint, newest_good_checkpoint

from runtools import InterruptAt, last_checkpoint, tiny_preset


def budgeted_preset(tmp_path, epochs=3):
    path = tmp_path / "p.toml"
    path.write_text(tiny_preset('name = "joint"', name="ovh", epochs=epochs,
                                monitor={"max_overhead": 0.1, "update_every": 2}))
    return path


def test_the_monitors_state_lives_apart_and_a_resume_reads_it(tmp_path, monkeypatch):
    monkeypatch.setattr(OverheadBudget, "allows", lambda self, key=None: True)   # always within the budget
    cut = start_run(budgeted_preset(tmp_path), runs_dir=tmp_path / "runs", reporter=InterruptAt(10))
    assert cut.state == "interrupted"
    paths = RunPaths(cut.run_dir)
    assert "monitors" not in last_checkpoint(cut.run_dir)
    apart = load_checkpoint(paths.monitors)
    assert set(apart) >= {"probes", "critics", "optimizer", "overhead", "evaluations"}
    state, warnings, _ = newest_good_checkpoint(paths)
    assert warnings == [] and all(torch.equal(v, apart["critics"][k]) for k, v in state["monitors"]["critics"].items())
    loaded = {}
    from engine.monitor.monitors import Monitors
    real = Monitors.load_state_dict

    def spy(self, s):
        loaded.update(s)
        return real(self, s)
    monkeypatch.setattr(Monitors, "load_state_dict", spy)
    resumed = resume_run(cut.run_id, runs_dir=tmp_path / "runs")
    assert resumed.state == "finished" and loaded["evaluations"] == apart["evaluations"] >= 1


def test_a_damaged_monitors_file_is_passed_over_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(OverheadBudget, "allows", lambda self, key=None: True)
    run = start_run(budgeted_preset(tmp_path, epochs=1), runs_dir=tmp_path / "runs")
    paths = RunPaths(run.run_dir)
    data = bytearray(paths.monitors.read_bytes())
    data[len(data) // 2] ^= 0xFF
    paths.monitors.write_bytes(bytes(data))
    state, warnings, _ = newest_good_checkpoint(paths)
    assert "monitors" not in state
    assert len(warnings) == 1 and "monitors.pt" in warnings[0] and "start afresh" in warnings[0]


def test_beyond_the_budget_a_validation_has_no_monitor_values_and_nothing_is_written_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(OverheadBudget, "allows", lambda self, key=None: False)  # always over the budget
    run = start_run(budgeted_preset(tmp_path), runs_dir=tmp_path / "runs")
    from engine.store import read_metrics
    val = [r["m"] for r in read_metrics(RunPaths(run.run_dir).metrics).metric_rows() if r.get("split") == "val"]
    assert len(val) == 3
    assert "shapley/a" in val[0] and "mi/a" in val[0]                 # the first evaluation always runs
    assert all("shapley/a" not in v and "cmi/a" not in v for v in val[1:])
    assert not RunPaths(run.run_dir).monitors.exists()
    assert "shapley/a" in run.summary["test"]                          # the test split is always scored
