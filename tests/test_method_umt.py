"""``umt`` (Du et al., ICML 2023, :mod:`engine.methods.umt`): the distillation loss on known values, the
student stage's start (re-initialised model, fresh optimiser, frozen teachers from the kept files), the stage
switch and the selection that skips the teacher stage, the teacher choice, 3 modalities, and a resume
inside the student stage that rebuilds the teachers from the run directory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.methods.unimodal_teachers import feature_distillation, reset_optimizer_state
from engine.run import resume_run

from methodkit import THREE, Kit, method_table
from runtools import last_checkpoint, same_tensors, straight_and_cut, tiny_preset

STEPS = 7   # methodkit's preset: 210 training rows in batches of 32


def encoder_state(model, m: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.encoders[m].state_dict().items()}


# -- the pieces ------------------------------------------------------------------------------------------
def test_feature_distillation_is_the_mean_squared_error_per_modality_and_spares_the_teacher():
    student = {"a": torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True),
               "b": torch.zeros(1, 3, requires_grad=True)}
    teacher = {"a": torch.tensor([[1.0, 0.0], [0.0, 4.0]], requires_grad=True), "b": torch.ones(1, 3)}
    d = feature_distillation(student, teacher, ["a", "b"])
    assert d.tolist() == [pytest.approx((0 + 4 + 9 + 0) / 4), pytest.approx(1.0)]
    d.sum().backward()
    assert teacher["a"].grad is None   # the teacher side is detached
    assert torch.allclose(student["a"].grad, 2 * (student["a"] - teacher["a"]).detach() / 4)


def test_reset_optimizer_state_gives_a_fresh_adam_update():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4))
    fresh = torch.nn.Parameter(w.detach().clone())
    used, new = torch.optim.Adam([w], lr=0.1), torch.optim.Adam([fresh], lr=0.1)
    for _ in range(3):   # some history
        w.grad = torch.randn(4)
        used.step()
    with torch.no_grad():
        w.copy_(fresh)
    reset_optimizer_state(used)
    g = torch.randn(4)
    w.grad, fresh.grad = g.clone(), g.clone()
    used.step()
    new.step()
    assert torch.equal(w, fresh)


# -- the student stage -----------------------------------------------------------------------------------
def test_student_stage_restarts_from_the_initial_weights_and_distils_to_frozen_teachers():
    kit = Kit.build("umt", {"teacher_epochs": 1, "distill_weight": 2.5}, epochs=3, dropout=0.0, optimizer="sgd")
    model, method, t = kit.model, kit.method, kit.trainer
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    t.train_epoch_steps()
    t.end_epoch()                                     # epoch 0: the teachers
    trained = {m: encoder_state(model, m) for m in kit.modalities}
    assert not same_tensors(trained["a"], {k[len("encoders.a."):]: v for k, v in initial.items()
                                           if k.startswith("encoders.a.")})

    events = method.on_epoch_start(1, model)          # what the trainer calls before epoch 1
    assert events[0]["stage"] == "student" and events[0]["teachers"]["a"]["epoch"] == 0
    assert same_tensors(model.state_dict(), initial)   # re-initialised
    assert all(torch.count_nonzero(s["momentum_buffer"]) == 0 for s in kit.optimizer.state.values())
    teachers = method.teachers
    for m in kit.modalities:
        assert same_tensors(teachers[m].state_dict(), trained[m])
        assert not teachers[m].training
        assert all(not p.requires_grad for p in teachers[m].parameters())
    optimised = {id(p) for g in kit.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in optimised for m in kit.modalities for p in teachers[m].parameters())

    x, y = kit.batch(16)
    model.train()
    with torch.no_grad():
        out = model(x)
        ce = F.cross_entropy(out.fused, y)
        mse = {m: ((out.features[m] - teachers[m](x[m])) ** 2).mean() for m in kit.modalities}
    before_teachers = {m: {k: v.clone() for k, v in teachers[m].state_dict().items()} for m in kit.modalities}
    before = kit.snapshot()
    result = kit.step(x, y)
    assert result.loss.item() == pytest.approx((ce + 2.5 * sum(mse.values())).item(), rel=1e-5)
    for m in kit.modalities:
        assert result.live[f"method/distill_{m}"].item() == pytest.approx(mse[m].item(), rel=1e-5)
        assert result.live[f"coef/{m}"].item() == 2.5
        # the teachers: no gradient, unchanged; the student encoders moved
        assert all(p.grad is None for p in teachers[m].parameters())
        assert same_tensors(teachers[m].state_dict(), before_teachers[m])
        assert any(k.startswith(f"encoders.{m}.") for k in kit.changed(before))
    assert result.live["method/stage"].item() == 1.0


def test_the_distillation_pulls_each_encoder_towards_its_teacher():
    """With lambda large, the distillation dominates: one step lowers every modality's MSE."""
    kit = Kit.build("umt", {"teacher_epochs": 1, "distill_weight": 100.0}, epochs=3, dropout=0.0, optimizer="sgd",
                    lr=0.01)
    t = kit.trainer
    t.train_epoch_steps()
    t.end_epoch()
    kit.method.on_epoch_start(1, kit.model)
    x, y = kit.batch(32)
    first = kit.step(x, y).live
    second = kit.step(x, y).live
    for m in kit.modalities:
        assert second[f"method/distill_{m}"] < first[f"method/distill_{m}"]


# -- stages, selection, teachers ---------------------------------------------------------------------------
def test_stage_switch_at_teacher_epochs_and_only_student_epochs_are_selected_with_three_modalities():
    kit = Kit.build("umt", {"teacher_epochs": 2}, modalities=THREE, epochs=3)
    kit.fit()
    assert [live["method/stage"].item() for live in kit.lives] == [0.0] * (2 * STEPS) + [1.0] * STEPS
    for i, live in enumerate(kit.lives):
        student = i >= 2 * STEPS
        assert all((f"method/distill_{m}" in live) == student for m in THREE)
        assert all((f"method/ce_{m}" in live) == (not student) for m in THREE)
        assert all(live[f"coef/{m}"].item() == (10.0 if student else 1.0) for m in THREE)
    assert all(torch.isfinite(kit.lives[-1][f"method/distill_{m}"]) for m in THREE)
    stages = [(f["epoch"], f["stage"]) for name, _, f in kit.recorder.events if name == "stage"]
    assert stages == [(0, "teachers"), (2, "student")]
    assert [v["method/stage"] for v in kit.recorder.split("val")] == [0.0, 0.0, 1.0]
    assert kit.trainer.best.epoch == 2   # the teacher stage's epochs are evaluated, never selected


def test_early_stopping_counts_its_patience_from_the_student_stage():
    """The teacher stage's ensemble is never selected, so its validation values do not start the patience either:
    the reference the patience counts from is a student epoch's."""
    teachers_only = Kit.build("umt", {"teacher_epochs": 2}, epochs=2, train={"early_stop": 1})
    teachers_only.fit()
    assert (teachers_only.trainer.early.reference, teachers_only.trainer.early.epoch) == (None, -1)
    kit = Kit.build("umt", {"teacher_epochs": 2}, epochs=4, train={"early_stop": 1})
    kit.fit()
    assert kit.trainer.early.epoch >= 2
    assert not [f for name, _, f in kit.recorder.events if name == "early_stop" and f["epoch"] < 2]


def test_teachers_are_the_encoders_of_their_best_validation_epoch():
    kit = Kit.build("umt", {"teacher_epochs": 3}, epochs=3)
    snapshots = []
    on_epoch_end = kit.method.on_epoch_end

    def recording(epoch, model, val):
        snapshots.append({m: encoder_state(model, m) for m in kit.modalities})
        return on_epoch_end(epoch, model, val)
    kit.method.on_epoch_end = recording
    kit.fit()
    accs = [[v[f"val/acc/{m}"] for v in kit.recorder.split("val")] for m in kit.modalities]
    assert kit.trainer.best.epoch == -1     # the run ended inside the teacher stage: nothing selected
    for i, m in enumerate(kit.modalities):
        best = max(range(3), key=lambda e: (accs[i][e], -e))
        kept = kit.method.ctx.kept.load(f"umt-teacher-{i}")
        assert kit.method.teacher_epoch[i] == kept["epoch"] == best
        assert kit.method.teacher_score[i] == kept["score"] == accs[i][best]
        assert same_tensors(kept["encoder"], snapshots[best][m])
        assert kit.recorder.split("val")[-1][f"score/{m}"] == accs[i][best]


def test_last_teacher_selection_keeps_the_stages_last_epoch():
    kit = Kit.build("umt", {"teacher_epochs": 2, "teacher_select": "last"}, epochs=2)
    kit.fit()
    assert kit.method.teacher_epoch == [1, 1]
    for i, m in enumerate(kit.modalities):
        assert same_tensors(kit.method.ctx.kept.load(f"umt-teacher-{i}")["encoder"], encoder_state(kit.model, m))


# -- resume inside the student stage ---------------------------------------------------------------------
def test_a_run_resumed_inside_the_student_stage_rebuilds_its_teachers_from_the_run_directory(tmp_path):
    text = tiny_preset(method_table("umt", {"teacher_epochs": 1}), name="umt-cut", epochs=3)
    straight, cut = straight_and_cut(tmp_path, text, step=2 * STEPS - 3)   # inside epoch 1, the student's
    kept = cut.run_dir / "checkpoints" / "kept"
    assert {p.name for p in kept.iterdir()} >= {"umt-init.pt", "umt-teacher-0.pt", "umt-teacher-1.pt"}
    assert resume_run(str(cut.run_dir), [], runs_dir=tmp_path / "runs").state == "finished"
    assert same_tensors(last_checkpoint(cut.run_dir)["model"], last_checkpoint(straight.run_dir)["model"])
