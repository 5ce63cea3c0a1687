"""``mikd`` (Xie & Sanguinetti, arXiv 2511.00987, as reconstructed in :mod:`engine.methods.mikd`): its
pieces on known values, its stages and hooks on a tiny model, and a full run with exact resume."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from engine.data.dataset import TensorData
from engine.methods import METHODS, MethodContext
from engine.methods import mikd as mikd_module
from engine.methods.mikd import (MikdConfig, calibration_weights, choose_teacher, distillation_loss, kd_gate,
                                 redundancy, stage_bounds)
from engine.methods import mikd_mi
from engine.methods.mikd_mi import ami, pairwise_ami
from engine.models import ModalitySpec, ModelSpec, build_model
from engine.models.encoders.mlp import MLPConfig
from engine.run import resume_run
from engine.schema import build
from engine.store import read_metrics

from methodkit import hand_step
from runtools import (InterruptAt, assert_extension_is_the_planned_run, extension_preset, last_checkpoint,
                      metric_rows, planned_and_extended, straight_and_cut, tiny_preset)

C = 3


# -- helpers ---------------------------------------------------------------------------------------
def tiny_data(dims: dict[str, int], n: int = 90) -> TensorData:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % C
    x = {m: torch.randn(n, d, generator=g) + y[:, None].float() for m, d in dims.items()}
    splits = {"train": torch.arange(0, 60), "val": torch.arange(60, 75), "test": torch.arange(75, n)}
    return TensorData(x=x, y=y, present={m: torch.ones(n, dtype=torch.bool) for m in dims}, splits=splits,
                      classes=[str(c) for c in range(C)], modalities={}, name="tiny", source="test", stats={})


def make(fusion="concat", dims=None, epochs=6, **options):
    dims = dims or {"a": 5, "b": 3}
    torch.manual_seed(0)
    spec = ModelSpec(tuple(ModalitySpec(m, "mlp", MLPConfig(hidden=[8], dim=4)) for m in dims), fusion)
    model = build_model(spec, {m: (d,) for m, d in dims.items()}, C)
    ctx = MethodContext(modalities=list(dims), n_classes=C, epochs=epochs, steps_per_epoch=1,
                        device=torch.device("cpu"), data=tiny_data(dims), eval_batch_size=7)
    method = METHODS.get("mikd")(MikdConfig(**options), ctx)
    method.setup(model)
    opt = torch.optim.SGD(method.parameter_groups(model), lr=0.1)

    def step(epoch):
        return hand_step(model, opt, epoch)
    x, y = ctx.data.batch(ctx.data.splits["train"][:12])
    return model, method, step, x, y


def val_f1(**f1):
    return {f"val/f1/{m}": v for m, v in f1.items()}


def host(live):
    return {k: round(v.item(), 6) for k, v in live.items()}


# -- the MI estimator ------------------------------------------------------------------------------
def reference_ami(a, b):
    """Adjusted mutual information written out with counters and exact binomials (Vinh et al. 2010),
    independent of the tensor code; clipped to [0, 1] as the estimator is."""
    n = len(a)
    ca, cb, cab = Counter(a), Counter(b), Counter(zip(a, b))

    def h(counts):
        return -sum(v / n * math.log(v / n) for v in counts.values())
    mi = h(ca) + h(cb) - h(cab)
    emi = 0.0
    for ai in ca.values():
        for bj in cb.values():
            for k in range(max(1, ai + bj - n), min(ai, bj) + 1):
                p = math.comb(ai, k) * math.comb(n - ai, bj - k) / math.comb(n, bj)
                emi += k / n * math.log(n * k / (ai * bj)) * p
    return min(max((mi - emi) / ((h(ca) + h(cb)) / 2 - emi), 0.0), 1.0)


def plug_in_nmi(a, b, c):
    joint = torch.bincount(a * c + b, minlength=c * c).double().reshape(c, c) / a.numel()
    pa, pb = joint.sum(1), joint.sum(0)
    ha, hb = -torch.special.xlogy(pa, pa).sum(), -torch.special.xlogy(pb, pb).sum()
    return ((ha + hb + torch.special.xlogy(joint, joint).sum()) / ((ha + hb) / 2)).item()


def test_ami_is_one_for_identical_or_relabelled_predictions_and_zero_for_a_constant_one():
    a = torch.tensor([0, 1, 2, 2, 1, 0, 0, 2, 1, 1])
    assert ami(a, a, 3).item() == pytest.approx(1.0, abs=1e-12)
    assert ami(a, (a + 1) % 3, 3).item() == pytest.approx(1.0, abs=1e-12)  # a renaming of the labels
    assert ami(a, torch.zeros_like(a), 3).item() == 0.0
    assert ami(torch.zeros_like(a), torch.ones_like(a), 3).item() == 1.0  # scikit-learn's convention


def test_ami_matches_a_hand_written_reference():
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        a = torch.randint(0, 4, (40,), generator=g)
        b = torch.where(torch.rand(40, generator=g) < 0.5, a, torch.randint(0, 4, (40,), generator=g))
        got = ami(a, b, 4).item()
        assert got == pytest.approx(reference_ami(a.tolist(), b.tolist()), abs=1e-12)
        assert 0.1 < got < 0.9


def test_ami_of_independent_predictions_is_near_zero_where_the_plain_nmi_is_not():
    g = torch.Generator().manual_seed(1)
    big = torch.randint(0, 10, (2, 20000), generator=g)
    assert ami(big[0], big[1], 10).item() < 0.002
    small = torch.randint(0, 10, (50, 2, 120), generator=g)  # a cub10-sized validation split, 50 draws
    adjusted = [ami(s[0], s[1], 10).item() for s in small]
    plain = [plug_in_nmi(s[0], s[1], 10) for s in small]
    assert sum(plain) / 50 > 0.12 and min(plain) > 0.1  # the chance level the adjustment removes
    assert sum(adjusted) / 50 < 0.02 and max(adjusted) < 0.1  # below the default gate every time


def test_pairwise_ami_is_symmetric_with_unit_diagonal_and_matches_each_pair():
    g = torch.Generator().manual_seed(2)
    preds = torch.randint(0, 4, (4, 200), generator=g)
    preds[1] = preds[0]
    preds[2] = torch.where(torch.rand(200, generator=g) < 0.7, preds[0], preds[2])
    mat = pairwise_ami(preds, 4)
    assert torch.equal(mat, mat.T) and torch.equal(mat.diagonal(), torch.ones(4, dtype=torch.float64))
    for i in range(4):
        for j in range(i + 1, 4):
            assert mat[i, j].item() == pytest.approx(reference_ami(preds[i].tolist(), preds[j].tolist()), abs=1e-12)
    assert mat[0, 1].item() == pytest.approx(1.0) and mat[0, 2] > 0.3 > mat[0, 3]


# -- teacher, gate, distillation loss, weights ----------------------------------------------------
def test_teacher_is_the_modality_with_the_best_val_f1_first_on_ties():
    assert choose_teacher([0.4, 0.9, 0.7]) == 1
    assert choose_teacher([0.8, 0.8, 0.3]) == 0
    model, method, step, x, y = make(dims={"a": 5, "b": 3, "c": 4}, stage1_epochs=1, kd_epochs=1)
    events = method.on_epoch_end(0, model, val_f1(a=0.4, b=0.35, c=0.81))
    assert method.teacher == 2
    teacher = next(e for e in events if e["name"] == "teacher")
    assert teacher["modality"] == "c" and teacher["f1"] == {"a": 0.4, "b": 0.35, "c": 0.81}
    assert method.epoch_values()["method/teacher"] == 2.0


def test_gate_compares_the_teacher_row_of_the_mi_with_the_threshold():
    assert kd_gate([1.0, 0.25, 0.1, 0.0999], teacher=0, threshold=0.1) == [False, True, True, False]


@pytest.mark.parametrize("value, distilled", [(0.05, False), (0.1, True), (0.6, True)])
def test_gate_decision_in_the_method_from_a_given_mi(value, distilled, monkeypatch):
    monkeypatch.setattr(mikd_module, "pairwise_ami",
                        lambda preds, c: torch.tensor([[1.0, value], [value, 1.0]], dtype=torch.float64))
    model, method, step, x, y = make(stage1_epochs=1, kd_epochs=1, kd_threshold=0.1)
    events = method.on_epoch_end(0, model, val_f1(a=0.9, b=0.5))
    gate = next(e for e in events if e["name"] == "kd_gate")
    assert gate["teacher"] == "a" and gate["ami"] == {"b": value}
    assert gate["distil"] == (["b"] if distilled else [])
    assert method.epoch_values()["method/kd_b"] == float(distilled)
    assert (method.teacher_encoder is not None) == distilled  # a snapshot only when someone learns from it


def test_distillation_loss_is_the_hinton_objective_on_hand_made_logits():
    s = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])
    t = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    y = torch.tensor([1, 2])
    alpha, tau = 0.3, 2.0

    def softmax(row):
        e = [math.exp(v / tau) for v in row]
        return [v / sum(e) for v in e]
    kl = 0.0
    for srow, trow in zip(s.tolist(), t.tolist()):
        ps, pt = softmax(srow), softmax(trow)
        kl += sum(q * math.log(q / p) for q, p in zip(pt, ps))
    kl = kl / 2 * tau ** 2
    ce = sum(-math.log(math.exp(r[c]) / sum(math.exp(v) for v in r)) for r, c in zip(s.tolist(), y.tolist())) / 2
    loss, term = distillation_loss(s, t, y, alpha, tau)
    assert term.item() == pytest.approx(kl, rel=1e-6)
    assert loss.item() == pytest.approx((1 - alpha) * ce + alpha * kl, rel=1e-6)


def test_stage2_weights_follow_the_f1_deficit_and_redundancy_formula():
    f1 = torch.tensor([0.9, 0.6, 0.75], dtype=torch.float64)
    mi = torch.tensor([[1.0, 0.2, 0.6], [0.2, 1.0, 0.4], [0.6, 0.4, 1.0]], dtype=torch.float64)
    gamma, eta = 5.0, 0.5
    r = [(0.2 + 0.6) / 2, (0.2 + 0.4) / 2, (0.6 + 0.4) / 2]
    omega = [math.exp(gamma * (0.9 - f)) * (1 - eta * ri) for f, ri in zip([0.9, 0.6, 0.75], r)]
    expected = [3 * o / sum(omega) for o in omega]
    assert redundancy(mi).tolist() == pytest.approx(r)
    w = calibration_weights(f1, mi, gamma, eta)
    assert w.tolist() == pytest.approx(expected, rel=1e-12)
    assert w.sum().item() == pytest.approx(3.0)
    # two modalities: the common redundancy cancels, only the deficit matters
    two = calibration_weights(torch.tensor([0.9, 0.7]), torch.tensor([[1.0, 0.8], [0.8, 1.0]]), gamma, eta)
    e = math.exp(gamma * 0.2)
    assert two.tolist() == pytest.approx([2 / (1 + e), 2 * e / (1 + e)], rel=1e-6)


# -- schedule --------------------------------------------------------------------------------------
@pytest.mark.parametrize("s1, kd, bounds", [(None, None, (3, 6)), (3, 0, (3, 3)), (0, None, (0, 0)),
                                            (4, 5, (4, 9)), (1, None, (1, 4))])
def test_stage_bounds_are_absolute_epochs_whatever_the_run_length(s1, kd, bounds):
    options = {k: v for k, v in (("stage1_epochs", s1), ("kd_epochs", kd)) if v is not None}
    assert stage_bounds(MikdConfig(**options)) == bounds
    for epochs in (2, 40):   # not a fraction of train.epochs: a run extended later keeps its past
        _, method, *_ = make(epochs=epochs, **options)
        assert (method.stage1_end, method.kd_end) == bounds


def test_schedule_errors_name_the_keys():
    problems: list[str] = []
    assert build(MikdConfig, {"stage1_epochs": 0, "kd_epochs": 2, "grad_min": 3.0}, "method", problems) is None
    assert len(problems) == 1 and "grad_min (3.0) must not exceed grad_max" in problems[0]
    problems = []
    build(MikdConfig, {"stage1_epochs": 0, "kd_epochs": 2}, "method", problems)
    assert "kd_epochs > 0 needs stage1_epochs >= 1" in problems[0]
    problems = []
    build(MikdConfig, {"eta": 1.0, "calibrate": "grad"}, "method", problems)
    assert len(problems) == 2


def test_stages_switch_at_the_configured_epochs_with_one_event_each():
    model, method, step, x, y = make(epochs=7, stage1_epochs=2, kd_epochs=3)
    stages = [method.stage_of(e) for e in range(7)]
    assert stages == ["unimodal"] * 2 + ["kd"] * 3 + ["multitask"] * 2
    method.teacher, method.distil = 0, [False, True]
    events = {e: method.on_epoch_start(e, model) for e in range(7)}
    assert [e for e, ev in events.items() if ev] == [0, 2, 5]
    assert events[0][0] == {"name": "stage", "stage": "unimodal", "index": 0, "epochs": 2}
    assert events[2][0] == {"name": "stage", "stage": "kd", "index": 1, "epochs": 3, "teacher": "a",
                            "students": ["b"], "not_distilled": []}
    assert events[5][0]["stage"] == "multitask" and events[5][0]["calibrate"] == "loss"


# -- the steps of each stage -----------------------------------------------------------------------
def test_unimodal_stage_trains_each_modality_on_its_own_cross_entropy():
    model, method, step, x, y = make(stage1_epochs=1, kd_epochs=1)
    out = model(x)
    expected = F.cross_entropy(out.logits["a"], y) + F.cross_entropy(out.logits["b"], y)
    result = method.train_step(x, y, step(0))
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert host(result.live) == {"coef/a": 1.0, "coef/b": 1.0}


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated"])
def test_kd_stage_distils_into_the_student_from_a_frozen_teacher_snapshot(fusion, monkeypatch):
    monkeypatch.setattr(mikd_module, "pairwise_ami", lambda preds, c: torch.ones(3, 3, dtype=torch.float64))
    model, method, step, x, y = make(fusion, dims={"a": 5, "b": 3, "c": 4}, stage1_epochs=1, kd_epochs=2,
                                     kd_alpha=0.4, temperature=3.0)
    method.on_epoch_end(0, model, val_f1(a=0.5, b=0.9, c=0.6))  # teacher b; both students pass the gate
    teacher_params = {k: v.clone() for k, v in model.encoders["b"].state_dict().items()}
    for _ in range(2):
        out = model(x)
        snap = method.teacher_logits(x, out)
        loss_a, kl_a = distillation_loss(out.logits["a"], snap, y, 0.4, 3.0)
        loss_c, kl_c = distillation_loss(out.logits["c"], snap, y, 0.4, 3.0)
        result = method.train_step(x, y, step(1))
        assert result.loss.item() == pytest.approx((loss_a + loss_c).item(), rel=1e-5)
        assert host(result.live) == pytest.approx({"coef/a": 1.0, "coef/b": 0.0, "coef/c": 1.0,
                                                   "method/kd": round(((kl_a + kl_c) / 2).item(), 6)}, abs=1e-5)
    assert torch.equal(snap, method.teacher_logits(x, model(x)))  # the snapshot does not move
    for k, v in model.encoders["b"].state_dict().items():
        assert torch.equal(v, teacher_params[k]), k  # the teacher's encoder gets no update
    method.on_epoch_end(2, model, val_f1(a=0.6, b=0.9, c=0.7))
    assert method.teacher_encoder is None  # dropped once distillation is over


def test_multitask_stage_weights_the_unimodal_losses():
    model, method, step, x, y = make(epochs=3, stage1_epochs=1, kd_epochs=1)
    method.weights = torch.tensor([0.5, 1.5])
    out = model(x)
    expected = (F.cross_entropy(out.fused, y) + 0.5 * F.cross_entropy(out.logits["a"], y)
                + 1.5 * F.cross_entropy(out.logits["b"], y))
    result = method.train_step(x, y, step(2))
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert host(result.live) == {"coef/a": 0.5, "coef/b": 1.5}


def test_gradient_variant_scales_each_encoder_gradient_by_the_clipped_weight():
    model, method, step, x, y = make(epochs=3, stage1_epochs=1, kd_epochs=1, calibrate="gradient")
    method.weights = torch.tensor([3.0, 0.2])  # -> k = clip(w, 0.5, 2) = [2, 0.5]
    out = model(x)
    loss = F.cross_entropy(out.fused, y) + F.cross_entropy(out.logits["a"], y) + F.cross_entropy(out.logits["b"], y)
    loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    out = model(x)
    loss2, live = method.stage_loss("multitask", out, y, None)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6)
    assert host(live) == {"coef/a": 2.0, "coef/b": 0.5}
    loss2.backward()
    method.after_backward(model, out, y, step(2))
    for n, p in model.named_parameters():
        factor = 2.0 if n.startswith("encoders.a") else 0.5 if n.startswith("encoders.b") else 1.0
        assert torch.allclose(p.grad, factor * plain[n], rtol=1e-5, atol=1e-7), n


def test_weights_are_recomputed_from_val_f1_and_mi_when_the_next_epoch_is_a_reweighting_one(monkeypatch):
    mi = torch.tensor([[1.0, 0.3], [0.3, 1.0]], dtype=torch.float64)
    monkeypatch.setattr(mikd_module, "pairwise_ami", lambda preds, c: mi)
    model, method, step, x, y = make(epochs=8, stage1_epochs=1, kd_epochs=1, reweight_every=2)
    expected = calibration_weights(torch.tensor([0.8, 0.6], dtype=torch.float64), mi, 5.0, 0.5).float()
    method.on_epoch_end(0, model, val_f1(a=0.8, b=0.6))  # next: kd, weights untouched
    assert method.weights.tolist() == [1.0, 1.0] and "coef/a" not in method.epoch_values()
    method.on_epoch_end(1, model, val_f1(a=0.8, b=0.6))  # next epoch 2 starts stage 2: compute
    assert torch.equal(method.weights, expected)
    values = method.epoch_values()
    assert values["coef/b"].item() == pytest.approx(expected[1].item()) and values["method/stage"] == 1.0
    assert values["score/a"].item() == 0.8 and values["method/ami_a;b"].item() == 0.3
    method.on_epoch_end(2, model, val_f1(a=0.5, b=0.9))  # next epoch 3: not a reweighting epoch (every 2)
    assert torch.equal(method.weights, expected)
    method.on_epoch_end(3, model, val_f1(a=0.5, b=0.9))
    assert method.weights[0] > method.weights[1]


def test_own_f1_is_used_when_there_is_no_validation_split():
    model, method, step, x, y = make(stage1_epochs=1, kd_epochs=1)
    method.ctx.data.splits["val"] = torch.arange(0)
    preds, labels = method.predictions(model)
    assert preds.shape == (2, 60) and torch.equal(labels, method.ctx.data.y[:60])
    f1 = method.scores({}, preds, labels)
    assert f1.shape == (2,) and bool(((f1 >= 0) & (f1 <= 1)).all())


# -- a run, end to end, with exact resume ------------------------------------------------------------
PRESET = tiny_preset('name = "mikd"\nstage1_epochs = 2\nkd_epochs = 2\nkd_threshold = 0.0', name="mikd", seed=5,
                     epochs=6, optimizer="adam", lr=0.01)


def test_run_through_all_stages_and_resume_exactly_from_the_kd_and_multitask_stages(tmp_path):
    runs = tmp_path / "runs"
    straight, cut = straight_and_cut(tmp_path, PRESET, 17)  # cut in epoch 2 (kd), batch 3
    assert straight.state == "finished"
    log = read_metrics(straight.run_dir / "metrics.jsonl")
    stages = [(e["epoch"], e["stage"]) for e in log.events() if e["name"] == "stage"]
    assert stages == [(0, "unimodal"), (2, "kd"), (4, "multitask")]  # 7 steps per epoch
    teacher = next(e for e in log.events() if e["name"] == "teacher")
    assert teacher["epoch"] == 1 and teacher["modality"] == "a"
    val = [r["m"] for r in log.metric_rows() if r["split"] == "val"]
    assert [v["method/stage"] for v in val] == [0, 0, 1, 1, 2, 2]
    assert val[1]["method/teacher"] == 0 and val[1]["method/kd_b"] == 1.0
    for row in val[3:]:  # each logged weight is the formula on the same row's scores and AMI
        f1 = torch.tensor([row["score/a"], row["score/b"]], dtype=torch.float64)
        assert f1.tolist() == [row["val/f1/a"], row["val/f1/b"]]
        mi = torch.tensor([[1.0, row["method/ami_a;b"]], [row["method/ami_a;b"], 1.0]], dtype=torch.float64)
        assert [row["coef/a"], row["coef/b"]] == pytest.approx(calibration_weights(f1, mi, 5.0, 0.5).tolist())
    train = [r for r in log.metric_rows() if r["split"] == "train"]
    assert all("method/kd" in r["m"] for r in train if 14 < r["step"] <= 28)
    assert [r["m"]["coef/a"] for r in train if 14 < r["step"] <= 28] == [0.0] * 6  # steps 15, 18, 21, 24, 27, 28

    state = last_checkpoint(cut.run_dir)
    assert state["position"] == {"epoch": 2, "batch": 3, "step": 17}
    assert state["method"]["teacher_encoder"] is not None and state["method"]["distil"] == [False, True]
    again = resume_run(cut.run_id, runs_dir=runs, reporter=InterruptAt(31))  # epoch 4 (multitask), batch 3
    assert again.state == "interrupted"
    state = last_checkpoint(cut.run_dir)
    assert state["position"]["epoch"] == 4 and state["method"]["teacher_encoder"] is None
    assert resume_run(cut.run_id, runs_dir=runs).state == "finished"

    a, b = last_checkpoint(straight.run_dir), last_checkpoint(cut.run_dir)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["method"]["weights"], b["method"]["weights"])
    assert metric_rows(straight.run_dir) == metric_rows(cut.run_dir)


def test_expected_mi_is_the_same_when_computed_in_small_chunks(monkeypatch):
    g = torch.Generator().manual_seed(3)
    preds = torch.randint(0, 6, (3, 300), generator=g)
    whole = pairwise_ami(preds, 6)
    monkeypatch.setattr(mikd_mi, "CHUNK_ELEMENTS", 50)
    assert torch.allclose(pairwise_ami(preds, 6), whole, rtol=0, atol=1e-15)


# -- a finished run trained longer is the run planned that long -------------------------------------
@pytest.mark.parametrize("mods, fusion, table", [
    (("a", "b"), "concat", ""),                                          # default lengths: 3 unimodal epochs
    (("a", "b", "c"), "gated", "stage1_epochs = 1\nkd_epochs = 1"),       # every stage, two after the resume
])
def test_a_run_extended_to_n_epochs_is_bitwise_the_run_planned_for_n(mods, fusion, table, tmp_path):
    """1 epoch extended to 3 equals 3 planned. With stage lengths of 20% of train.epochs the 1-epoch run was
    multitask-only and the 3-epoch one 1 + 1 + 1."""
    method_table = f'name = "mikd"\nkd_threshold = 0.0\n{table}'
    planned, extended = planned_and_extended(tmp_path,
                                             lambda epochs: extension_preset(mods, fusion, 8, method_table, epochs))
    assert planned.state == extended.state == "finished"
    assert_extension_is_the_planned_run(planned.run_dir, extended.run_dir)
    stages = [e["stage"] for e in read_metrics(extended.run_dir / "metrics.jsonl").events() if e["name"] == "stage"]
    assert stages == (["unimodal"] if not table else ["unimodal", "kd", "multitask"])
