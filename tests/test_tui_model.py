"""The dashboard's model of a run: values, progress, events and every failure case, read from files."""

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from engine.store import MetricsTail, write_status
from mmbal_cli.tui.formatting import fmt_duration
from mmbal_cli.tui.model import RunModel
from mmbal_cli.tui.progress import epoch_in_progress, extend_segments, seconds_left, training_seconds
from mmbal_cli.tui.reader import RunReader
from mmbal_cli.tui.testing import live_run

FIXTURES = Path(__file__).parent / "fixtures" / "runs"
AUG = FIXTURES / "20250301-101500_avdigits-aug_k3f9a2x1"
MCR = FIXTURES / "20250302-090000_quick-mcr_p7q2m4zz"
JOINT = FIXTURES / "20250228-170000_nutrimouse-joint_a0b1c2d3"
MCR_BEAT = 1740823200.0 + 86400 + 80 * 0.5 + 0.5  # the heartbeat in the MCR fixture's status.json


def copy_run(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


# -- a finished run with every monitor and a resume ----------------------------------------------
def test_finished_run_header_values():
    model = RunModel(AUG).load()
    assert (model.name, model.run_id, model.method, model.dataset) == ("avdigits-aug", "k3f9a2x1", "aug", "avdigits")
    assert model.state == "finished" and not model.is_live
    assert model.steps_per_epoch == 40 and model.total_steps == 240
    assert (model.epoch_now, model.epochs_total, model.step, model.progress) == (6, 6, 240, 1.0)
    # two segments: 65.1 s before the interruption, 61.1 s after the resume (the 10 min gap excluded)
    assert model.elapsed() == pytest.approx(126.2, abs=1e-6)
    assert model.eta() is None


def test_panel_values_weakest_and_fused():
    rows = {r.name: r for r in RunModel(AUG).load().modality_rows()}
    assert list(rows) == ["audio", "image", "fused"]
    audio = rows["audio"].values
    # the fixture's closed forms (make_fixtures.py) at the last evaluation, epoch 6 = step 240
    close = {"abs": 1e-4}
    assert audio["val acc"] == pytest.approx(0.87 - 0.62 * math.exp(-0.5 * 6), **close)
    assert audio["train acc"] == pytest.approx(0.9 - 0.65 * math.exp(-0.5 * 6), **close)
    assert audio["mi"] == pytest.approx(1.3 * (1 - math.exp(-0.5 * 6)), **close)
    assert audio["cmi"] == pytest.approx(0.5 * (1 - math.exp(-0.4 * 6)), **close)
    assert audio["shapley"] == pytest.approx(0.4 * (1 - math.exp(-0.5 * 6)), **close)
    assert audio["grad"] == pytest.approx(0.9 * math.exp(-0.25 * 6) + 0.05, **close)
    assert audio["coef"] == pytest.approx(1.0 - 0.3 * math.sin(0.8 * 6), **close)
    assert rows["image"].weakest and not rows["audio"].weakest and not rows["fused"].weakest
    assert rows["fused"].values["val acc"] == pytest.approx(0.92 - 0.67 * math.exp(-0.6 * 6), **close)
    assert rows["fused"].values["mi"] is None


def test_run_without_monitors_has_no_values_for_them():
    rows = RunModel(JOINT).load().modality_rows()
    assert all(r.values[c] is None for r in rows for c in ("mi", "cmi", "shapley", "coef", "grad"))
    assert RunModel(JOINT).load().chart("mi").series == []


def test_resume_supersedes_rows_and_events_and_says_so():
    model = RunModel(AUG).load()
    steps = [r["step"] for r in model.log.metric_rows() if r["split"] == "train"]
    assert steps.count(130) == 1  # the seg-0 row at 130 is dropped, the seg-1 one kept
    rows = {(r.name, r.step): r for r in model.event_rows()}
    assert rows[("interrupted", 130)].superseded
    assert not rows[("checkpoint", 120)].superseded and not rows[("head_added", 80)].superseded
    assert rows[("resume", 120)].details == "continued from step 120 as segment 1"
    symbols = {(m.x, m.symbol) for m in model.markers("step")}
    assert (80.0, "H") in symbols and (120.0, "R") in symbols and (120.0, "c") in symbols
    assert not any(s == "I" for _, s in symbols)
    texts = [n.text for n in model.notices()]
    assert texts == ["resumed 1x (from step 120); 1 logged row at step 130 of the earlier segment superseded"]


def test_markers_on_the_epoch_axis_use_the_event_epoch():
    marks = {(m.x, m.symbol) for m in RunModel(AUG).load().markers("epoch")}
    assert (2.0, "H") in marks and (3.0, "R") in marks  # resume from step 120 = epoch 3 at 40 steps/epoch


def test_charts_pick_series_per_tab():
    model = RunModel(AUG).load()
    acc = model.chart("acc")
    assert [s.name for s in acc.series] == ["fused", "audio", "image"]
    assert [x for x, _ in acc.series[0].points] == [40.0, 80.0, 120.0, 160.0, 200.0, 240.0]
    assert [s.name for s in model.chart("acc", split="train").series] == ["fused", "audio", "image"]
    assert [s.name for s in model.chart("mi").series] == ["mi/audio", "mi/image", "mi/audio;image",
                                                          "cmi/audio", "cmi/image"]
    assert [s.name for s in model.chart("coef").series] == ["coef/audio", "coef/image"]
    assert [c.series[0].name for c in model.method_charts()] == ["method/heads_image", "method/loss_image"]
    by_epoch = model.chart("acc", x_axis="epoch")
    assert [x for x, _ in by_epoch.series[0].points] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert ("H", "head added") in acc.marker_legend and ("R", "resume") in acc.marker_legend


def test_evaluation_estimates_prefer_val_rows_and_live_values_train_rows(tmp_path):
    run_dir, writer = live_run(tmp_path / "runs")
    writer.metrics(10, 0.5, "train", {"mi/audio": 9.0, "coef/audio": 0.7, "train/acc/audio": 0.5})
    writer.metrics(20, 1, "val", {"mi/audio": 0.4, "coef/audio": 1.0, "val/acc/audio": 0.6})
    writer.metrics(30, 1.5, "train", {"mi/audio": 8.0, "coef/audio": 0.8, "train/acc/audio": 0.55})
    model = RunModel(run_dir).load()
    assert model.value("mi/audio") == 0.4        # the evaluation estimate, not the running one
    assert model.value("coef/audio") == 0.8      # per-interval coefficient
    assert model.points("mi/audio") == [(20.0, 0.4)]
    assert model.points("coef/audio") == [(10.0, 0.7), (30.0, 0.8)]


# -- a run that died: stale heartbeat, a bad line, a torn last line --------------------------------
def test_stale_run_is_shown_as_such():
    model = RunModel(MCR, clock=lambda: MCR_BEAT + 3600).load()
    assert model.state == "stale" and not model.is_live
    assert (model.epoch_now, model.step, model.total_steps) == (3, 80, 120)
    notices = model.notices()
    assert notices[0].level == "error"
    assert notices[0].text.startswith("stale: no heartbeat for 1h00m (process 4242 on gpu-box)")
    assert "mmbal resume p7q2m4zz" in notices[0].text


def test_torn_last_line_and_bad_line_are_reported_not_fatal():
    model = RunModel(MCR, clock=lambda: MCR_BEAT).load()
    assert model.pending_bytes == 68
    texts = [n.text for n in model.notices()]
    assert "metrics.jsonl ends with an incomplete line (68 bytes: the writer stopped mid-record); ignored" in texts
    assert "metrics.jsonl line 5: not valid JSON, skipped" in texts
    assert model.log.metric_rows()[-1]["step"] == 80  # the torn step-90 row is not used


def test_partial_line_of_a_live_writer_is_not_a_problem(tmp_path):
    run_dir, writer = live_run(tmp_path / "runs")
    with open(run_dir / "metrics.jsonl", "ab") as f:
        f.write(b'{"kind":"metrics","step":5')
    model = RunModel(run_dir).load()
    assert model.pending_bytes > 0 and model.is_live
    assert not any("incomplete" in n.text for n in model.notices())


def test_tail_pending_bytes(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"kind":"header"}\n{"kind":')
    tail = MetricsTail(path)
    assert len(tail.poll()) == 1 and tail.pending_bytes == 8
    with open(path, "ab") as f:
        f.write(b'"event","step":1,"name":"x"}\n')
    assert [r["name"] for r in tail.poll()] == ["x"] and tail.pending_bytes == 0


# -- live updates ---------------------------------------------------------------------------------
def test_reader_applies_only_what_was_appended(tmp_path):
    run_dir, writer = live_run(tmp_path / "runs", epochs=4)
    reader, model = RunReader(run_dir), RunModel(run_dir, clock=lambda: 0.0)
    assert model.apply(reader.read())
    assert model.state == "running" and model.step == 0 and model.total_steps is None
    writer.metrics(10, 0.5, "train", {"train/acc/audio": 0.4, "train/acc/image": 0.3})
    delta = reader.read()
    assert [r["step"] for r in delta.records] == [10]
    model.apply(delta)
    assert model.steps_per_epoch == 20 and model.total_steps == 80 and model.step == 10
    assert model.epoch_now == 1
    assert [r.name for r in model.modality_rows() if r.weakest] == ["image"]
    writer.metrics(20, 1, "val", {"val/acc/audio": 0.3, "val/acc/image": 0.5})
    model.apply(reader.read())
    assert [r.name for r in model.modality_rows() if r.weakest] == ["audio"]  # val accuracy decides
    version = model.version
    assert not model.apply(reader.read()) and model.version == version  # nothing new: nothing to redraw
    writer.close()


def test_rewritten_log_is_read_again_from_the_start(tmp_path):
    run_dir, writer = live_run(tmp_path / "runs")
    offset = writer.offset()
    for step in (10, 20, 30):
        writer.metrics(step, step / 20, "train", {"train/acc/audio": step / 100})
    reader, model = RunReader(run_dir), RunModel(run_dir)
    model.apply(reader.read())
    writer.truncate_to(offset)
    writer.metrics(10, 0.5, "train", {"train/acc/audio": 0.9})
    delta = reader.read()
    assert delta.reset
    model.apply(delta)
    assert model.points("train/acc/audio") == [(10.0, 0.9)]
    writer.close()


def test_a_resume_arriving_live_supersedes_rows_already_shown(tmp_path):
    run_dir, writer = live_run(tmp_path / "runs")
    for step in (10, 20, 30):
        writer.metrics(step, step / 20, "train", {"train/acc/audio": step / 100})
    reader, model = RunReader(run_dir), RunModel(run_dir)
    model.apply(reader.read())
    assert model.points("train/acc/audio") == [(10.0, 0.1), (20.0, 0.2), (30.0, 0.3)]
    writer.metrics(40, 2, "train", {"train/acc/audio": 0.4})
    model.apply(reader.read())  # appended: the index grows in place
    assert model.points("train/acc/audio")[-1] == (40.0, 0.4)
    writer.resume(from_step=20, seg=1)  # the process died after step 40; the checkpoint was at 20
    writer.metrics(30, 1.5, "train", {"train/acc/audio": 0.33})
    model.apply(reader.read())
    assert model.points("train/acc/audio") == [(10.0, 0.1), (20.0, 0.2), (30.0, 0.33)]
    assert model.step == 30
    assert model.notices()[-1].text == ("resumed 1x (from step 20); 2 logged rows at steps 30-40 of the earlier "
                                        "segment superseded")
    writer.close()


def test_eta_from_the_current_segment_rate(tmp_path):
    run_dir, writer = live_run(tmp_path / "runs", epochs=2)
    writer.close()
    lines = [{"kind": "header", "t": 1000.0, "run_id": "live0001"},
             {"kind": "metrics", "t": 1010.0, "step": 10, "epoch": 0.5, "split": "train", "m": {"lr": 0.1}}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    model = RunModel(run_dir, clock=lambda: 1012.0).load()
    assert model.total_steps == 40
    assert model.eta() == pytest.approx(30.0)  # 30 steps left at 1 step/s
    assert model.elapsed() == pytest.approx(12.0)


# -- missing and unreadable files -----------------------------------------------------------------
def test_missing_metrics_file(tmp_path):
    run = copy_run(JOINT, tmp_path)
    (run / "metrics.jsonl").unlink()
    model = RunModel(run).load()
    assert [n.text for n in model.notices()] == ["metrics.jsonl does not exist yet: nothing logged"]
    assert model.modality_rows()[0].values["val acc"] is None and model.chart("acc").series == []


def test_unreadable_metrics_file(tmp_path):
    run = copy_run(JOINT, tmp_path)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()  # root can read any file, but nobody can read a directory as one
    model = RunModel(run).load()
    assert any(n.text.startswith("metrics.jsonl unreadable: Is a directory") for n in model.notices())


def test_damaged_run_json_config_and_status(tmp_path):
    run = copy_run(AUG, tmp_path)
    (run / "run.json").write_text("{not json")
    (run / "config.json").unlink()
    (run / "status.json").unlink()
    model = RunModel(run).load()
    assert model.name == "avdigits-aug" and model.modalities == ["audio", "image"]  # from the log's header
    assert model.state == "unknown" and model.epochs_total is None and model.total_steps is None
    texts = [n.text for n in model.notices()]
    assert "state unknown: status.json is missing" in texts
    assert "config.json missing" in texts
    assert any(t.startswith("run.json unreadable:") for t in texts)
    assert model.modality_rows()[0].values["val acc"] == pytest.approx(0.8391)


def test_failed_run_shows_its_message(tmp_path):
    run = copy_run(JOINT, tmp_path)
    write_status(run, "failed", message="RuntimeError: CUDA out of memory")
    assert RunModel(run).load().notices()[0].text == "failed: RuntimeError: CUDA out of memory"


def test_process_gone_on_this_host_is_failed(tmp_path):
    run_dir, writer = live_run(tmp_path / "runs")
    writer.close()
    status = json.loads((run_dir / "status.json").read_text())
    status["pid"] = 2 ** 22 + 12345  # above the default pid_max: no such process
    (run_dir / "status.json").write_text(json.dumps(status))
    model = RunModel(run_dir).load()
    assert model.state == "failed" and model.notices()[0].text.startswith("failed: process")


def test_fmt_duration():
    assert [fmt_duration(s) for s in (None, 4.4, 125, 3720, 3 * 86400 + 4 * 3600)] == \
        ["-", "4s", "2m05s", "1h02m", "3d04h"]


def test_progress_over_segments_on_plain_records():
    """Wall time is summed per segment (the gap before a resume excluded); the time left is the
    current segment's rate times the steps left; the epoch in progress counts from 1."""
    records = [{"kind": "header", "t": 100.0}, {"kind": "metrics", "t": 110.0, "step": 10},
               {"kind": "resume", "t": 500.0, "from_step": 5}, {"kind": "metrics", "t": 520.0, "step": 15}]
    segments = [(a, b, int(s)) for a, b, s in extend_segments(None, records)]
    assert segments == [(100.0, 110.0, 0), (500.0, 520.0, 5)]
    assert training_seconds(segments, now=530.0, is_live=True, started=None) == 10.0 + 30.0
    assert training_seconds(segments, now=530.0, is_live=False, started=None) == 10.0 + 20.0
    assert seconds_left(segments, records[-1], step=15, total_steps=100) == 85 * 2.0  # 10 steps in 20 s
    assert epoch_in_progress(15, 10, None, True, 3) == 2
    assert epoch_in_progress(20, 10, None, False, 3) == 2 and epoch_in_progress(20, 10, None, True, 3) == 3
    assert epoch_in_progress(0, None, 1, True, None) == 2  # from status.json's completed epochs


def test_fixture_files_are_what_the_generator_writes(tmp_path):
    """The committed fixtures match make_fixtures.py (regenerate them with it after a change)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.HERE = tmp_path
    module.make_aug(), module.make_mcr(), module.make_joint()
    for run in (AUG, MCR, JOINT):
        for name in ("run.json", "config.json", "status.json", "metrics.jsonl"):
            assert (tmp_path / run.name / name).read_bytes() == (run / name).read_bytes(), f"{run.name}/{name}"
    assert os.path.exists(tmp_path / AUG.name / "summary.json")
