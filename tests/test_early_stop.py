"""Early stopping (``train.early_stop``): when it stops, what it records, and that a stopped or
interrupted run resumes exactly."""

import pytest

from engine.errors import ResumeRefused
from engine.run import resume_run, start_run
from engine.store import read_metrics
from engine.train.early_stop import EarlyStop
from runtools import last_checkpoint, metric_rows, same_tensors, straight_and_cut, tiny_preset


@pytest.mark.parametrize("values, patience, min_delta, mode, stops_after", [
    ([0.5, 0.6, 0.6, 0.6], 2, 0.0, "max", 3),        # no gain after epoch 1: stops after epoch 1 + 2
    ([0.5, 0.6, 0.61, 0.615], 2, 0.02, "max", 3),    # gains below min_delta: epoch 1 stays the reference
    ([0.5, 0.6, 0.7, 0.8], 1, 0.0, "max", None),     # always improving
    ([1.0, 0.9, 0.95, 0.91], 2, 0.0, "min", 3),      # a loss: lower is better
    ([0.5, float("nan"), 0.4, 0.4], 3, 0.0, "max", 3),
    ([0.5, 0.4, 0.4, 0.4], 0, 0.0, "max", None),     # patience 0: off
])
def test_it_stops_after_patience_epochs_without_improvement(values, patience, min_delta, mode, stops_after):
    early = EarlyStop(patience, min_delta, mode)
    stopped = None
    for epoch, value in enumerate(values):
        early.observe(epoch, value)
        if stopped is None and early.stopped_after(epoch):
            stopped = epoch
    assert stopped == stops_after


def _preset(epochs=6, patience=1):
    # a learning rate of 0 keeps the validation accuracy where it starts: only epoch 0 counts as an improvement
    return tiny_preset(epochs=epochs, lr=1e-12, train={"early_stop": patience})


def test_a_run_stops_early_records_why_and_tests_the_selected_checkpoint(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text(_preset())
    result = start_run(preset, runs_dir=tmp_path / "runs")
    assert result.state == "finished"
    val = [m for _, split, m in metric_rows(result.run_dir, ("val",))]
    assert len(val) == 2                                        # epochs 1 and 2, then patience 1 is spent
    events = [e for e in read_metrics(result.run_dir / "metrics.jsonl").events() if e["name"] == "early_stop"]
    assert len(events) == 1 and events[0]["epoch"] == 1 and "for 1 epoch(s)" in events[0]["reason"]
    assert result.summary["selected"]["epoch"] == 0 and "test/acc/fused" in result.summary["test"]
    assert last_checkpoint(result.run_dir)["position"]["epoch"] == 2

    with pytest.raises(ResumeRefused, match="stopped early after epoch 2.*train.early_stop=0"):
        resume_run(result.run_id, runs_dir=tmp_path / "runs")
    more = resume_run(result.run_id, ["train.early_stop=0"], runs_dir=tmp_path / "runs")
    assert more.state == "finished" and last_checkpoint(more.run_dir)["position"]["epoch"] == 6


def test_an_interrupted_run_with_early_stopping_resumes_exactly(tmp_path):
    straight, cut = straight_and_cut(tmp_path, tiny_preset(epochs=4, train={"early_stop": 2,
                                                                            "early_stop_min_delta": 0.01}), step=12)
    resumed = resume_run(cut.run_id, runs_dir=tmp_path / "runs")
    a, b = last_checkpoint(straight.run_dir), last_checkpoint(resumed.run_dir)
    assert same_tensors(a["model"], b["model"]) and a["early_stop"] == b["early_stop"]
    assert a["position"] == b["position"]
