"""Exact resume on the CPU: interrupted + resumed runs end bitwise equal to uninterrupted ones."""


import pytest

from engine.errors import ResumeRefused, RunLocked, RunNotFound
from engine.run import NullReporter, resume_run, start_run
from engine.store import RunLock, read_metrics

from runtools import InterruptAt, last_checkpoint, metric_rows, same_tensors, tiny_preset

PRESET = tiny_preset('name = "joint"', name="resume", seed=3)


@pytest.fixture()
def preset(tmp_path):
    p = tmp_path / "resume.toml"
    p.write_text(PRESET)
    return p


def assert_same_run(a, b):
    assert same_tensors(last_checkpoint(a)["model"], last_checkpoint(b)["model"])
    assert metric_rows(a, ("train", "val")) == metric_rows(b, ("train", "val"))


def test_interrupt_mid_epoch_then_resume_is_bitwise_identical(preset, tmp_path):
    straight = start_run(preset, runs_dir=tmp_path / "runs")
    assert straight.state == "finished"
    # 300 samples * 0.7 train = 210 -> 7 steps per epoch; stop after step 10 (epoch 1, batch 3)
    cut = start_run(preset, runs_dir=tmp_path / "runs", reporter=InterruptAt(10))
    assert cut.state == "interrupted"
    state = last_checkpoint(cut.run_dir)
    assert state["position"] == {"epoch": 1, "batch": 3, "step": 10}
    resumed = resume_run(cut.run_id, runs_dir=tmp_path / "runs")
    assert resumed.state == "finished"
    assert_same_run(straight.run_dir, resumed.run_dir)
    assert resumed.summary["test"] == straight.summary["test"]


def test_interrupt_at_epoch_boundary_and_continue_a_finished_run(preset, tmp_path):
    straight = start_run(preset, runs_dir=tmp_path / "runs", overrides=["train.epochs=4"])
    cut = start_run(preset, runs_dir=tmp_path / "runs", reporter=InterruptAt(7))  # last step of epoch 0
    assert last_checkpoint(cut.run_dir)["position"]["batch"] == 0
    assert resume_run(cut.run_dir.name, runs_dir=tmp_path / "runs").state == "finished"  # to 3 epochs
    with pytest.raises(ResumeRefused, match="already trained 3"):
        resume_run(cut.run_id, runs_dir=tmp_path / "runs")
    resume_run(cut.run_id, ["train.epochs=4"], runs_dir=tmp_path / "runs")
    assert_same_run(straight.run_dir, cut.run_dir)
    log = read_metrics(cut.run_dir / "metrics.jsonl")
    assert [e["from_step"] for e in log.records if e["kind"] == "resume"] == [7, 21]


def test_resume_refuses_locked_changes_and_unknown_runs(preset, tmp_path):
    done = start_run(preset, runs_dir=tmp_path / "runs")
    with pytest.raises(ResumeRefused) as info:
        resume_run(done.run_id, ["seed=4", "method.name=unimodal", "method.modality=a", "train.epochs=5"],
                   runs_dir=tmp_path / "runs")
    text = str(info.value)
    assert "seed: 3 -> 4" in text and 'method.name: "joint" -> "unimodal"' in text
    with pytest.raises(RunNotFound):
        resume_run("zzzzzzzz", runs_dir=tmp_path / "runs")
    with RunLock(done.run_dir):
        with pytest.raises(RunLocked):
            resume_run(done.run_id, ["train.epochs=5"], runs_dir=tmp_path / "runs")


def test_run_files_and_summary(preset, tmp_path):
    res = start_run(preset, runs_dir=tmp_path / "runs", name="my run")
    names = sorted(p.name for p in res.run_dir.iterdir())
    for f in ("run.json", "preset.toml", "config.json", "metrics.jsonl", "status.json", "summary.json", "checkpoints"):
        assert f in names
    s = res.summary
    assert s["status"] == "finished" and s["epochs"] == 3 and s["steps"] == 21
    assert set(s["test"]) >= {"test/acc/fused", "test/acc/a", "test/acc/b", "test/f1/fused"}
    assert s["selected"]["metric"] == "val/acc/fused"
    assert s["best"]["val/acc/fused"] == s["selected"]["value"]
    assert 0.0 <= s["test"]["test/acc/fused"] <= 1.0
    log = read_metrics(res.run_dir / "metrics.jsonl")
    val_steps = [r["step"] for r in log.metric_rows() if r["split"] == "val"]
    assert val_steps == [7, 14, 21]
    train_steps = [r["step"] for r in log.metric_rows() if r["split"] == "train"]
    assert train_steps == [1, 2, 3, 6, 7, 9, 12, 14, 15, 18, 21]   # and the first steps 1, 2 (powers of 2 below log_every)


def damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # flip one bit in the middle of the tensor data
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncate", "bitflip"])
def test_damaged_last_checkpoint_falls_back_to_the_previous_one(how, preset, tmp_path):
    from engine.store import CheckpointDamaged, load_checkpoint
    straight = start_run(preset, runs_dir=tmp_path / "runs")
    cut = start_run(preset, runs_dir=tmp_path / "runs", reporter=InterruptAt(10))
    last = cut.run_dir / "checkpoints" / "last.pt"
    damage(last, how)
    with pytest.raises(CheckpointDamaged, match="last.pt"):
        load_checkpoint(last)

    class Warnings(NullReporter):
        seen = []

        def warn(self, message):
            self.seen.append(message)

    reporter = Warnings()
    resume_run(cut.run_id, runs_dir=tmp_path / "runs", reporter=reporter)
    assert any("last.pt" in w and "falling back" in w for w in reporter.seen), reporter.seen
    assert_same_run(straight.run_dir, cut.run_dir)
    log = read_metrics(cut.run_dir / "metrics.jsonl")
    assert [e["from_step"] for e in log.records if e["kind"] == "resume"] == [7]


def test_every_checkpoint_damaged_refuses_resume(preset, tmp_path):
    cut = start_run(preset, runs_dir=tmp_path / "runs", reporter=InterruptAt(10))
    for name in ("last.pt", "previous.pt"):
        damage(cut.run_dir / "checkpoints" / name, "truncate")
    with pytest.raises(ResumeRefused, match="every checkpoint is damaged"):
        resume_run(cut.run_id, runs_dir=tmp_path / "runs")
