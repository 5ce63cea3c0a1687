"""AUG (sustained boosting + adaptive classifier assignment) on known values, and its exact resume."""

import io
import math

import pytest
import torch
import torch.nn.functional as F

from engine.errors import PresetError
from engine.methods import METHODS, MethodContext
from engine.methods.aug import assign_head, boosting_loss, confidence_ratios, is_check_epoch
from engine.models import ModalitySpec, ModelSpec, build_model
from engine.models.encoders.mlp import MLPConfig
from engine.models.fusion.concat import ConcatConfig
from engine.run import resume_run
from engine.store import read_metrics
from engine.train.config import TrainConfig
from engine.train.optim import build_optimizer

from methodkit import hand_step
from runtools import last_checkpoint, metric_rows, same_tensors, straight_and_cut, tiny_preset

DIMS = {"a": (5,), "b": (3,), "c": (4,)}


def make(mods=("a", "b"), epochs=10, **options):
    """A two- or three-modality MLP model with AUG, bound to an SGD optimiser built as the trainer does."""
    torch.manual_seed(0)
    spec = ModelSpec(tuple(ModalitySpec(m, "mlp", MLPConfig(hidden=[8], dim=4)) for m in mods), "concat",
                     ConcatConfig())
    model = build_model(spec, {m: DIMS[m] for m in mods}, 3)
    ctx = MethodContext(modalities=list(mods), n_classes=3, epochs=epochs, steps_per_epoch=1,
                        device=torch.device("cpu"), seed=0)
    entry = METHODS.entry("aug")
    method = entry.builder(entry.config(**{"hidden": 6, **options}), ctx)
    method.setup(model)
    opt = build_optimizer(TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9), method.parameter_groups(model),
                          torch.device("cpu"))
    method.bind_optimizer(opt)
    step = hand_step(model, opt)
    gen = torch.Generator().manual_seed(1)
    x = {m: torch.randn(6, *DIMS[m], generator=gen) for m in mods}
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return model, method, opt, step, x, y


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# -- the loss ---------------------------------------------------------------------------------------
def test_boosting_loss_on_hand_made_logits():
    # f_prev = [0, 0] (p_prev(y) = 1/2), f_new = [ln 3, 0], y = 0, lambda_r = 0.5: residual weight 0.75
    logits = torch.tensor([[[0.0, 0.0]], [[math.log(3), 0.0]]])
    loss, weight = boosting_loss(logits, torch.tensor([0]), 0.5)
    ce_all = ce_new = math.log(4 / 3)  # f_all = f_new here
    assert loss.item() == pytest.approx(ce_all + math.log(2) + ce_new - 0.5 * 0.5 * ce_new, rel=1e-6)
    assert weight.item() == pytest.approx(0.75)
    single, weight1 = boosting_loss(logits[:1], torch.tensor([1]), 0.5)
    assert single.item() == pytest.approx(math.log(2)) and weight1.item() == 1.0


def test_boosting_loss_equals_the_spec_formula_with_its_gradients():
    torch.manual_seed(3)
    logits = torch.randn(3, 5, 4, requires_grad=True)
    y = torch.tensor([0, 3, 1, 2, 3])
    lam = 0.3
    f_all, f_prev, f_new = logits.sum(0), logits[:2].sum(0), logits[2]
    soft_target = F.one_hot(y, 4).float() * F.softmax(f_prev, -1).detach()
    expected = (F.cross_entropy(f_all, y) + F.cross_entropy(f_prev, y) + F.cross_entropy(f_new, y)
                - lam * F.cross_entropy(f_new, soft_target))
    (g_expected,) = torch.autograd.grad(expected, logits)
    loss, weight = boosting_loss(logits, y, lam)
    (g_loss,) = torch.autograd.grad(loss, logits)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(g_loss, g_expected, atol=1e-6)
    p_prev_y = F.softmax(f_prev, -1)[torch.arange(5), y]
    assert weight.item() == pytest.approx((1 - lam * p_prev_y).mean().item(), rel=1e-6)


# -- adaptive classifier assignment -----------------------------------------------------------------
def test_ratios_and_assignment_rule_for_three_modalities():
    scores = {"a": 0.9, "b": 0.6, "c": 0.3}
    r = confidence_ratios(scores)
    assert r["c"] == pytest.approx(0.3 / 0.75) and r["a"] == pytest.approx(0.9 / 0.45)
    assert assign_head(scores, 1.0, 0.01) == "c"
    assert assign_head({"a": 0.5, "b": 0.5, "c": 0.496}, 1.0, 0.01) is None   # ratio 0.992 inside the band
    assert assign_head({"a": 0.5, "b": 0.5, "c": 0.49}, 1.0, 0.01) == "c"     # ratio 0.98 below 0.99
    assert assign_head(scores, 0.35, 0.01) is None
    assert [e for e in range(10) if is_check_epoch(e, 3)] == [0, 2, 5, 8]


def set_scores(method, scores, n=10):
    method.conf_sum = torch.tensor([scores[m] * n for m in method.ctx.modalities], dtype=torch.float64)
    method.count = n


def test_a_classifier_goes_to_the_weakest_modality_at_check_epochs_only():
    model, method, opt, step, x, y = make(("a", "b", "c"), check_every=3, max_heads=3)
    added = []
    for epoch in range(12):
        weakest_b = epoch >= 9
        set_scores(method, {"a": 0.9, "b": 0.2 if weakest_b else 0.6, "c": 0.6 if weakest_b else 0.3})
        if epoch == 8:
            set_scores(method, {"a": 0.5, "b": 0.5, "c": 0.497})  # balanced within the band: no classifier
        for ev in method.on_epoch_end(epoch, model, {}):
            added.append((epoch, ev["modality"], ev["heads"]))
            assert ev["name"] == "head_added"
        assert method.count == 0 and method.conf_sum.abs().sum() == 0  # the epoch's scores are reset
    # checks after epochs 0, 2, 5, 8, 11; c reaches its cap of 3 added classifiers at epoch 5
    assert added == [(0, "c", 2), (2, "c", 3), (5, "c", 4), (11, "b", 2)]
    assert method.history == ["c", "c", "c", "b"]
    values = method.epoch_values()
    assert values["method/heads_a"] == 1 and values["method/heads_b"] == 2 and values["method/heads_c"] == 4
    assert values["score/b"] == pytest.approx(0.2) and values["method/ratio_b"] == pytest.approx(0.2 / 0.75)


def test_check_every_defaults_to_a_tenth_of_the_epochs():
    assert make(epochs=200)[1].check_every == 20
    assert make(epochs=5)[1].check_every == 1
    assert make(epochs=200, check_every=7)[1].check_every == 7


# -- classifiers and the optimiser ------------------------------------------------------------------
def test_an_added_classifier_is_optimised_and_changes_after_a_step():
    model, method, opt, step, x, y = make()
    assert method.add_head("b") == 2
    head = method.modules["added"]["b"][0]
    group = opt.param_groups[-1]
    assert group["name"] == "aug/b/1" and [id(p) for p in group["params"]] == [id(p) for p in head.parameters()]
    assert group["base_lr"] == 0.1 and group["momentum"] == 0.9
    before = snapshot(head)
    method.train_step(x, y, step)
    assert not torch.equal(before["weight"], head.weight) and not torch.equal(before["bias"], head.bias)


def test_release_mode_leaves_added_classifiers_at_their_initialisation():
    model, method, opt, step, x, y = make(train_new_heads=False)
    n_groups = len(opt.param_groups)
    method.add_head("b")
    head = method.modules["added"]["b"][0]
    assert len(opt.param_groups) == n_groups and not any(p.requires_grad for p in head.parameters())
    before, fc, enc = snapshot(head), snapshot(method.modules["fc_out"]), snapshot(model.encoders["b"])
    method.train_step(x, y, step)
    assert same_tensors(before, snapshot(head))
    assert not same_tensors(fc, snapshot(method.modules["fc_out"]))
    assert not same_tensors(enc, snapshot(model.encoders["b"]))


def test_alternating_updates_touch_one_modality_at_a_time():
    model, method, opt, step, x, y = make()
    method.add_head("a")
    seen = []
    inner = step.step_optimizer

    def record():
        grads = {name: p.grad is not None for name, p in model.named_parameters()}
        inner()
        with torch.no_grad():  # modality b's loss, with fc_out as it is after a's update
            loss_b = boosting_loss(method.head_logits("b", model.encoders["b"](x["b"])), y, 0.5)[0]
        seen.append((grads, snapshot(model), snapshot(method.modules), loss_b))

    step.step_optimizer = record
    start, start_heads = snapshot(model), snapshot(method.modules)
    result = method.train_step(x, y, step)
    (grads_a, after_a, heads_a, loss_b), (grads_b, after_b, heads_b, _) = seen

    def changed(before, after, prefix):
        return {k for k in after if k.startswith(prefix) and not torch.equal(before[k], after[k])}

    assert changed(start, after_a, "encoders.a") and not changed(start, after_a, "encoders.b")
    assert not any(v for k, v in grads_a.items() if k.startswith("encoders.b"))
    assert changed(start_heads, heads_a, "base.a") and changed(start_heads, heads_a, "added.a")
    assert changed(start_heads, heads_a, "fc_out") and not changed(start_heads, heads_a, "base.b")
    assert changed(after_a, after_b, "encoders.b") and not changed(after_a, after_b, "encoders.a")
    assert not any(v for k, v in grads_b.items() if k.startswith("encoders.a"))
    assert not changed(start, after_b, "fusion")  # the model's own fusion head is not used
    assert result.live["method/loss_b"].item() == pytest.approx(loss_b.item(), rel=1e-6)
    assert result.loss.item() == pytest.approx(result.live["method/loss_a"].item() + loss_b.item(), rel=1e-6)
    assert result.live["coef/a"].item() == 0.5 and result.live["method/residual_weight_b"].item() == 1.0


def test_inference_is_the_weighted_sum_of_the_modality_ensembles():
    model, method, opt, step, x, y = make(fusion_weights=[1.0, 3.0])
    method.add_head("a")
    method.add_head("a")
    out = method.predict(model, x)
    fc = method.modules["fc_out"]
    z = model.encode(x)
    ensemble_a = sum(fc(F.relu(layer(z["a"])))
                     for layer in [method.modules["base"]["a"], *method.modules["added"]["a"]])
    ensemble_b = fc(F.relu(method.modules["base"]["b"](z["b"])))
    assert torch.allclose(out.logits["a"], ensemble_a, atol=1e-6)
    assert torch.allclose(out.logits["b"], ensemble_b, atol=1e-6)
    assert torch.allclose(out.fused, 0.25 * ensemble_a + 0.75 * ensemble_b, atol=1e-6)
    stacked = {m: torch.stack([z[m], z[m]]) for m in z}  # monitors call head() on stacked copies
    fused, _ = method.head(model, stacked)
    assert fused.shape == (2, 6, 3) and torch.allclose(fused[1], out.fused, atol=1e-6)


def test_fusion_weights_must_match_the_modalities():
    with pytest.raises(PresetError, match="method.fusion_weights: 3 weights for 2 modalities"):
        make(fusion_weights=[1.0, 1.0, 1.0])
    with pytest.raises(PresetError, match="sum to 0"):
        make(fusion_weights=[0.0, 0.0])


# -- resume -----------------------------------------------------------------------------------------
def test_state_dict_round_trip_rebuilds_classifiers_and_optimiser_groups():
    model, method, opt, step, x, y = make()
    for m in ("a", "b", "a"):
        method.add_head(m)
        method.train_step(x, y, step)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "method": method.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model2, method2, opt2, step2, _, _ = make()
    model2.load_state_dict(saved["model"])
    method2.load_state_dict(saved["method"])
    opt2.load_state_dict(saved["opt"])
    assert method2.history == ["a", "b", "a"] and method2.n_heads("a") == 3 and method2.n_heads("b") == 2
    assert [g["name"] for g in opt2.param_groups] == [g["name"] for g in opt.param_groups]
    assert same_tensors(snapshot(method.modules), snapshot(method2.modules))
    assert torch.equal(method2.conf_sum, method.conf_sum) and method2.count == method.count == 18
    method.train_step(x, y, step)
    method2.train_step(x, y, step2)
    assert same_tensors(snapshot(model), snapshot(model2))
    assert same_tensors(snapshot(method.modules), snapshot(method2.modules))


PRESET = tiny_preset('name = "aug"\ncheck_every = 1\nhidden = 16', name="aug-resume", seed=3,
                     data={"synthetic": {"unique": [1.0, 0.2], "noise": [0.5, 1.0]}})


def test_run_adds_classifiers_and_resumes_mid_epoch_bitwise(tmp_path):
    runs = tmp_path / "runs"
    straight, cut = straight_and_cut(tmp_path, PRESET, 10)  # cut in epoch 1, batch 3: after a classifier
    log = read_metrics(straight.run_dir / "metrics.jsonl")
    added = log.events("head_added")
    assert added and added[0]["step"] == 7 and added[0]["epoch"] == 0  # checked after epoch 0 (7 steps)
    assert all(e["ratio"] < 0.99 for e in added)
    val = [r["m"] for r in log.metric_rows() if r["split"] == "val"]
    for m in ("a", "b"):
        assert [v[f"method/heads_{m}"] for v in val] == [
            1 + sum(e["step"] <= s for e in added if e["modality"] == m) for s in (7, 14, 21)]
    train = [r["m"] for r in log.metric_rows() if r["split"] == "train"]
    assert {"coef/a", "score/b", "method/loss_b", "method/residual_weight_b"} <= set(train[0])
    assert train[0]["method/residual_weight_b"] == 1.0 and train[-1]["method/residual_weight_b"] < 1.0

    state = last_checkpoint(cut.run_dir)
    assert state["position"] == {"epoch": 1, "batch": 3, "step": 10}
    assert state["method"]["history"] == [added[0]["modality"]] and state["method"]["count"] == 96
    assert resume_run(cut.run_id, runs_dir=runs).state == "finished"
    a, b = last_checkpoint(straight.run_dir), last_checkpoint(cut.run_dir)
    assert same_tensors(a["model"], b["model"]) and same_tensors(a["method"]["modules"], b["method"]["modules"])
    assert a["method"]["history"] == b["method"]["history"]
    names = [g["name"] for g in a["optimizer"]["param_groups"]]
    assert names == [g["name"] for g in b["optimizer"]["param_groups"]] and len(names) == 3 + len(added)
    assert metric_rows(straight.run_dir, ("train", "val")) == metric_rows(cut.run_dir, ("train", "val"))
