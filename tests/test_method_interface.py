"""The method interface's hooks, on known values: per-group learning-rate scaling (gradient
modulation that survives Adam), per-loss gradients, trained heads for non-additive fusions, a method
ending the run, stages with kept models, nested training apart from the run."""


import pytest
import torch
import torch.nn.functional as F

from engine.bench.loops import DiscardingRecorder
from engine.config import load_preset
from engine.errors import PresetError
from engine.methods import METHODS, Method, StepResult
from engine.methods.stages import MemoryKept, Stage, Stages
from engine.run import NullReporter, build_parts, resume_run, start_run
from engine.store import read_metrics, read_summary
from engine.train.checkpoint import capture_rng
from engine.train.metrics import to_host
from engine.train.trainer import Trainer

from runtools import InterruptAt, tiny_preset

CPU = torch.device("cpu")


def build_trainer(tmp_path, method_table, *, optimizer="sgd", lr=0.05, fusion=None, overrides=()):
    path = tmp_path / "preset.toml"
    path.write_text(tiny_preset(method_table, optimizer=optimizer, lr=lr,
                                model={"fusion": fusion} if fusion else None))
    cfg, _ = load_preset(path, list(overrides))
    data, model, method = build_parts(cfg, CPU)
    return Trainer(cfg.train, data, model, method, CPU, cfg.seed, DiscardingRecorder())


def first_batch(trainer):
    batch = next(iter(trainer.data.train_epoch(trainer.seed, 0, trainer.cfg.batch_size, False).iterate(0)))
    return batch[0], batch[1]


def one_step(trainer):
    """One real training step through the trainer's step context; returns the parameter deltas and live values."""
    x, y = first_batch(trainer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    result = trainer.method.train_step(x, y, trainer._step_context(0))
    after = dict(trainer.model.named_parameters())
    return {n: after[n].detach() - before[n] for n in before}, result.live


# -- gradient modulation under every optimiser ------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_ogm_shrinks_the_dominant_encoders_update_by_its_coefficient_under_every_optimizer(tmp_path, optimizer):
    """The modulated step's update of encoder m is exactly k_m times the unmodulated one (same state,
    same batch): under SGD by scaling the gradient (the paper), under Adam/AdamW by scaling the
    encoder's learning rate, since Adam divides a gradient factor out."""
    table = 'name = "ogm"\nalpha = 0.8'
    # each built (seeded) right before its step: the same weights, batch and dropout masks
    delta, live = one_step(build_trainer(tmp_path, table, optimizer=optimizer, lr=0.01))
    reference, plain_live = one_step(build_trainer(tmp_path, table + "\nmodulation_start = 5", optimizer=optimizer,
                                                   lr=0.01))
    k = {m: live[f"coef/{m}"].item() for m in ("a", "b")}
    assert min(k.values()) < 0.9 and max(k.values()) == 1.0   # one modality leads and is slowed down
    assert all(plain_live[f"coef/{m}"].item() == 1.0 for m in ("a", "b"))
    for name, d in delta.items():
        coef = k[name.split(".")[1]] if name.startswith("encoders.") else 1.0
        # deltas of float32 weights of magnitude ~0.5 carry rounding of ~3e-8
        torch.testing.assert_close(d, reference[name] * coef, rtol=1e-4, atol=1e-7)


def test_ogm_gradient_modulation_with_adam_is_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(tiny_preset('name = "ogm"\nmodulate = "gradient"', optimizer="adam"))
    with pytest.raises(PresetError) as err:
        load_preset(path)
    assert "method.modulate" in str(err.value) and "adam divides out" in str(err.value)


def test_scale_lr_acts_for_one_step_and_names_unknown_groups(tmp_path):
    trainer = build_trainer(tmp_path, 'name = "ogm"', optimizer="adam")
    step = trainer._step_context(0)
    step.scale_lr("a", torch.tensor(0.25))
    group = next(g for g in trainer.optimizer.param_groups if g["name"] == "a")
    assert float(group["lr"]) == pytest.approx(0.25 * group["base_lr"])
    with pytest.raises(KeyError, match="'nope'.*groups: a, b, fusion"):
        step.scale_lr("nope", 0.5)


# -- per-loss gradients -----------------------------------------------------------------------------
def test_step_grads_equal_backward_without_touching_grad(tmp_path):
    trainer = build_trainer(tmp_path, 'name = "joint"')
    x, y = first_batch(trainer)
    model = trainer.model
    params = list(model.encoders["a"].parameters()) + list(model.encoders["b"].parameters())
    loss = F.cross_entropy(model(x).logits["a"], y)
    grads = trainer._step_context(0).grads(loss, params, retain_graph=True)
    assert all(p.grad is None for p in params)
    loss.backward()
    n_a = len(list(model.encoders["a"].parameters()))
    for p, g in zip(params[:n_a], grads[:n_a]):
        assert torch.equal(p.grad, g)
    assert all(torch.count_nonzero(g) == 0 for g in grads[n_a:])  # encoder b does not reach logits["a"]


def test_step_grads_of_a_non_finite_loss_are_caught_by_the_guard(tmp_path):
    trainer = build_trainer(tmp_path, 'name = "joint"')
    x, y = first_batch(trainer)
    params = list(trainer.model.encoders["a"].parameters())
    loss = trainer.model(x).logits["a"].sum() * float("nan")
    trainer._step_context(0).grads(loss, params)
    trainer._step_optimizer()
    assert trainer.guard.read(to_host(trainer.guard.values())) == (1, 1, 1)   # read with the interval's values


# -- trained per-modality heads with every fusion ---------------------------------------------------
@pytest.mark.parametrize("fusion", ["film", "gated"])
def test_joint_trains_the_modality_heads_of_non_additive_fusions_on_detached_features(tmp_path, fusion):
    trainer = build_trainer(tmp_path, 'name = "joint"', fusion=fusion)
    x, y = first_batch(trainer)
    model = trainer.model.eval()   # no dropout: the two forward passes below are the same
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x).fused, y).backward()   # what the fused loss alone gives the encoders
    fused_only = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    out = model(x)
    loss, _ = trainer.method.loss(out, y, trainer._step_context(0))
    heads = trainer.method.modality_head_loss(out, y, trainer._step_context(0))
    expected = sum(F.cross_entropy(model.fusion.heads[m](out.features[m]), y) for m in ("a", "b"))
    assert heads.item() == pytest.approx(expected.item(), rel=1e-6)
    (loss + heads).backward()
    for name, p in model.named_parameters():
        if name.startswith("fusion.heads."):
            assert p.grad is not None and p.grad.abs().sum() > 0 and name not in fused_only
        elif name in fused_only:
            torch.testing.assert_close(p.grad, fused_only[name])   # encoders and fusion: unchanged


def test_additive_fusions_get_no_extra_head_loss(tmp_path):
    trainer = build_trainer(tmp_path, 'name = "joint"', fusion="sum")
    x, y = first_batch(trainer)
    out = trainer.model(x)
    assert trainer.method.modality_head_loss(out, y, trainer._step_context(0)) is None


# -- a method that ends the run, stages and kept models (toy methods registered for the test) --------
class EndsAfterTwo(Method):
    """Plain joint training that ends the run after its second epoch."""

    def on_epoch_end(self, epoch, model, val):
        if epoch == 1:
            self.end_run("every modality has stopped improving")
        return []


class TeacherStudent(Method):
    """Stage "teacher" (1 epoch): joint training; the model is kept as "teacher". Stage "student":
    fused CE plus the KL to the kept teacher's fused prediction, the teacher loaded from ``ctx.kept``."""

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.stages = Stages([Stage("teacher", 1), Stage("student")])
        self.teacher = None

    def setup(self, model):
        self.model = model

    def on_epoch_start(self, epoch, model):
        if self.stages.at(epoch).name == "student" and self.teacher is None:
            self.ctx.kept.save("teacher", model.state_dict())
            self._load_teacher()
        return self.stages.start_events(epoch)

    def _load_teacher(self):
        import copy
        self.teacher = copy.deepcopy(self.model).eval()
        self.teacher.load_state_dict(self.ctx.kept.load("teacher"))

    def train_step(self, x, y, step):
        if self.teacher is None:
            return super().train_step(x, y, step)
        with torch.no_grad():
            target = F.softmax(self.teacher(x).fused, -1)
        out = step.model(x)
        kl = F.kl_div(F.log_softmax(out.fused, -1), target, reduction="batchmean")
        loss = F.cross_entropy(out.fused, y) + kl
        step.backward(loss)
        step.step_optimizer()
        return StepResult(loss.detach(), out, {"method/kl": kl.detach()})

    def state_dict(self):
        return {"modules": self.modules.state_dict(), "has_teacher": self.teacher is not None,
                "stages": self.stages.state_dict()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.stages = Stages.from_state(state["stages"])
        if state["has_teacher"]:
            self._load_teacher()


class Resamples(Method):
    """Joint training on an epoch plan that changes every epoch: the first rows twice (modality b
    dropped on the repeats), the rest once; it records the sample ids it was given."""

    def epoch_plan(self, epoch, model):
        from engine.data import EpochPlan
        n = self.ctx.data.split_size("train")
        k = 40 + 10 * epoch
        rows = torch.cat([torch.arange(n), torch.arange(k)])
        masks = torch.ones(len(rows), 2, dtype=torch.bool)
        masks[n:, 1] = False
        return EpochPlan(rows, masks)

    def loss(self, out, y, step):
        loss, live = super().loss(out, y, step)
        dropped = (~step.masks["b"]).sum().double()
        return loss, {**live, "method/dropped": dropped, "method/id_sum": step.ids.sum().double()}


@pytest.fixture
def toy_methods():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class NoOptions:
        pass

    added = []
    for name, cls in (("toy_ends", EndsAfterTwo), ("toy_stages", TeacherStudent), ("toy_plan", Resamples)):
        METHODS.register(name, config=NoOptions, help="test method", optimizer="sgd", cost="1F + 1B",
                         live={"method/kl": "KL to the kept teacher", "method/dropped": "rows with b dropped",
                               "method/id_sum": "sum of the batch's sample ids"})(cls)
        added.append(name)
    yield
    for name in added:
        METHODS._entries.pop(name)


def events(log, name):
    return [r for r in log.records if r.get("kind") == "event" and r.get("name") == name]


def run(tmp_path, method, epochs, name, interrupt=None):
    path = tmp_path / f"{name}.toml"
    path.write_text(tiny_preset(f'name = "{method}"', epochs=epochs, name=name))
    return start_run(path, runs_dir=tmp_path / "runs", name=name, reporter=interrupt or NullReporter())


def test_a_method_can_end_the_run_early_with_a_reason(tmp_path, toy_methods):
    result = run(tmp_path, "toy_ends", 5, "ends")
    log = read_metrics(result.run_dir / "metrics.jsonl")
    ends = events(log, "method_end")
    assert len(ends) == 1 and ends[0]["reason"] == "every modality has stopped improving"
    assert max(r["epoch"] for r in log.records if r.get("split") == "val") == 2
    assert read_summary(result.run_dir)["status"] == "finished"
    again = resume_run(str(result.run_dir), ["train.epochs=8"], runs_dir=tmp_path / "runs")
    log2 = read_metrics(again.run_dir / "metrics.jsonl")
    assert max(r["epoch"] for r in log2.records if r.get("split") == "val") == 2   # nothing more was trained


def test_stages_keep_a_teacher_in_the_run_directory_and_resume_across_the_boundary(tmp_path, toy_methods):
    whole = run(tmp_path, "toy_stages", 3, "whole")
    assert (whole.run_dir / "checkpoints" / "kept" / "teacher.pt").exists()
    cut = run(tmp_path, "toy_stages", 3, "cut", interrupt=InterruptAt(9))   # 7 steps an epoch: in the student stage
    assert cut.state == "interrupted"
    done = resume_run(str(cut.run_dir), runs_dir=tmp_path / "runs")
    assert done.state == "finished"
    a, b = read_summary(whole.run_dir), read_summary(done.run_dir)
    assert a["final"] == b["final"] and a["test"] == b["test"]
    stages = events(read_metrics(whole.run_dir / "metrics.jsonl"), "stage")
    assert [e["stage"] for e in stages] == ["teacher", "student"]


def test_an_epoch_plan_sets_the_epoch_length_and_masks_and_is_replayed_on_resume(tmp_path, toy_methods):
    whole = run(tmp_path, "toy_plan", 3, "plan")
    log = read_metrics(whole.run_dir / "metrics.jsonl")
    val_steps = [r["step"] for r in log.records if r.get("kind") == "metrics" and r.get("split") == "val"]
    assert val_steps == [8, 17, 26]      # 210 + 40, 210 + 50, 210 + 60 rows: 8, 9, 9 batches of 32
    dropped = sum(r["m"]["method/dropped"] for r in log.records
                  if r.get("kind") == "metrics" and r.get("split") == "train")
    assert dropped > 0
    cut = run(tmp_path, "toy_plan", 3, "plan_cut", interrupt=InterruptAt(19))   # inside the third epoch
    assert cut.state == "interrupted"
    done = resume_run(str(cut.run_dir), runs_dir=tmp_path / "runs")
    a, b = read_summary(whole.run_dir), read_summary(done.run_dir)
    assert a["final"] == b["final"] and a["test"] == b["test"]


def test_stages_are_fixed_in_absolute_epochs():
    stages = Stages([Stage("a", 2), Stage("b", 1), Stage("c")])
    assert [stages.at(e).name for e in range(6)] == ["a", "a", "b", "c", "c", "c"]
    assert [e for e in range(6) if stages.begins(e)] == [0, 2, 3]
    assert Stages.from_state(stages.state_dict()).starts == stages.starts
    with pytest.raises(ValueError):
        Stages([Stage("open"), Stage("after")])


def test_memory_kept_models_are_copies():
    kept = MemoryKept()
    w = torch.ones(2)
    kept.save("m", {"w": w})
    w.add_(1)
    assert torch.equal(kept.load("m")["w"], torch.ones(2)) and "m" in kept
    with pytest.raises(ValueError):
        kept.save("../escape", {})


# -- nested training apart from the run --------------------------------------------------------------
def test_nested_training_leaves_the_runs_random_streams_unchanged_and_is_reproducible(tmp_path):
    import copy
    trainer = build_trainer(tmp_path, 'name = "joint"')
    data = trainer.data
    n = data.split_size("train")
    rows, held = torch.arange(0, n - 50), torch.arange(n - 50, n)
    results = []
    for _ in range(2):
        rng = capture_rng()
        model = copy.deepcopy(trainer.model)
        method = METHODS.get("joint")(trainer.method.cfg, trainer.method.ctx)
        res = trainer.method.ctx.train_nested(model, method, data.subset(rows, held), 2, seed=11)
        after = capture_rng()
        assert torch.equal(rng["torch"], after["torch"]) and rng["numpy"] == after["numpy"]
        results.append(res)
    assert results[0].after == results[1].after
    assert results[0].after["train/loss/fused"] < results[0].before["train/loss/fused"]
    assert "val/acc/fused" in results[0].after
