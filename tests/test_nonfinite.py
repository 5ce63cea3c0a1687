"""Non-finite losses: "stop" stops at the next logging interval keeping the last good checkpoint;
"skip" skips the bad step on the device (fused optimisers' found_inf) and carries on."""

import json
import math

import pytest
import torch

from engine.errors import NonFiniteError
from engine.methods.joint import Joint
from engine.run import resume_run, start_run
from engine.store import read_metrics

from runtools import InterruptAt, tiny_preset

BAD_STEP = 10  # 0-based index of the poisoned step: the 4th step of epoch 1 (7 steps per epoch)


@pytest.fixture()
def poisoned(monkeypatch):
    original = Joint.loss

    def loss(self, out, y, step):
        value, live = original(self, out, y, step)
        if step.step == BAD_STEP:
            value = value * float("nan")
        return value, live
    monkeypatch.setattr(Joint, "loss", loss)


def preset(tmp_path, mode, opt="adam"):
    """Joint on 300 synthetic samples (7 steps per epoch, 3 epochs), the engine's default encoders and lr."""
    p = tmp_path / f"{mode}-{opt}.toml"
    p.write_text(tiny_preset(name="nan", seed=1, optimizer=opt, lr=None, modalities=None,
                             data={"synthetic": {"modalities": None, "unique": None, "noise": None}},
                             train={"on_nonfinite": mode}))
    return p


def test_stop_names_the_step_and_keeps_the_last_good_checkpoint(poisoned, tmp_path):
    with pytest.raises(NonFiniteError) as info:
        start_run(preset(tmp_path, "stop"), runs_dir=tmp_path / "runs")
    message = str(info.value)
    assert f"at step {BAD_STEP + 1} " in message and "method 'joint'" in message and "mmbal resume" in message
    run_dir = next((tmp_path / "runs").iterdir())
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"]["step"] == 7  # the end of epoch 0, before the bad step
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "non-finite" in status["message"]
    events = [e["name"] for e in read_metrics(run_dir / "metrics.jsonl").events()]
    assert "nonfinite" in events


def test_a_stop_request_after_a_bad_step_keeps_the_last_good_checkpoint(poisoned, tmp_path):
    """Ctrl-C after the bad step and before its interval's flush (log_every 3: steps 9 and 12): the
    waiting values are checked before the interrupt's checkpoint, so the run stops on the bad step
    instead of saving non-finite weights as the resumable last.pt."""
    with pytest.raises(NonFiniteError) as info:
        start_run(preset(tmp_path, "stop"), runs_dir=tmp_path / "runs", reporter=InterruptAt(BAD_STEP + 1))
    assert f"at step {BAD_STEP + 1} " in str(info.value)
    run_dir = next((tmp_path / "runs").iterdir())
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"]["step"] == 7 and all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_skip_skips_the_bad_step_on_the_device(opt, poisoned, tmp_path):
    result = start_run(preset(tmp_path, "skip", opt), runs_dir=tmp_path / "runs")
    assert result.state == "finished"
    state = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    if opt == "adam":  # the fused kernel does not count a skipped step
        steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
        assert steps == {20.0}  # 21 steps taken, one skipped
    rows = read_metrics(result.run_dir / "metrics.jsonl").metric_rows()
    flagged = [(r["step"], r["m"]["nonfinite_steps"]) for r in rows if "nonfinite_steps" in r["m"]]
    assert flagged == [(12, 1)]
    assert math.isfinite(result.summary["test"]["test/acc/fused"])


@pytest.mark.parametrize("resumed_as", ["skip", "stop"])
def test_skip_counts_a_skipped_step_across_a_stop_request(resumed_as, poisoned, tmp_path):
    """Ctrl-C after the skipped step 11 and before its interval's flush at 12: the interrupt's checkpoint
    keeps the count, and the resumed run's record at step 12 has it, as the straight run's does. Resumed
    under "stop", the held step (already skipped) is counted, not a reason to stop."""
    cut = start_run(preset(tmp_path, "skip"), runs_dir=tmp_path / "runs", reporter=InterruptAt(BAD_STEP + 1))
    assert cut.state == "interrupted"
    state = torch.load(cut.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"]["step"] == BAD_STEP + 1 and state["guard"] == {"held": [BAD_STEP + 1]}
    resumed = resume_run(cut.run_id, [f"train.on_nonfinite={resumed_as}"], runs_dir=tmp_path / "runs")
    assert resumed.state == "finished"
    log = read_metrics(cut.run_dir / "metrics.jsonl")
    rows = log.metric_rows()
    assert [(r["step"], r["m"]["nonfinite_steps"]) for r in rows if "nonfinite_steps" in r["m"]] == [(12, 1)]
    skipped = [e for e in log.events() if e["name"] == "nonfinite_skipped"]
    assert [(e["steps"], e["first_step"]) for e in skipped] == [(1, BAD_STEP + 1)]


@pytest.fixture(params=[13, 9], ids=["interval-end", "mid-interval"])
def bad_gradient(request, monkeypatch):
    """A finite loss whose gradient is infinite at step index 13 (the last of epoch 1, which ends a logging
    interval: the gradients are checked there) or 9 (mid-interval: the loss of the next step shows it)."""
    original = Joint.after_backward

    def after_backward(self, model, out, y, step):
        live = original(self, model, out, y, step)
        if step.step == request.param:
            next(model.encoders["b"].parameters()).grad[0] = float("inf")
        return live
    monkeypatch.setattr(Joint, "after_backward", after_backward)
    return request.param


def test_a_non_finite_gradient_with_a_finite_loss_stops_before_the_epochs_checkpoint(bad_gradient, tmp_path):
    with pytest.raises(NonFiniteError) as info:
        start_run(preset(tmp_path, "stop"), runs_dir=tmp_path / "runs")
    message = str(info.value)
    named = 14 if bad_gradient == 13 else 11   # 1-based: the bad step itself, or the one after it
    assert f"at step {named} " in message and "grad/a=" in message and "grad/b=" in message
    run_dir = next((tmp_path / "runs").iterdir())
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"]["step"] == 7  # epoch 1's checkpoint (which would hold the bad step) was not written
    assert all(torch.isfinite(v).all() for v in state["model"].values())
