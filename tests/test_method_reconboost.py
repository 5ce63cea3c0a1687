"""reconboost: the boosting loss on hand-computed values, which parameters a boosting stage moves (and that the
frozen learners do not drift), the stage schedule, the ensemble prediction, the GA term's gradient, and three
modalities (the others' ensemble, the previous stage's learner)."""

import math

import pytest
import torch
import torch.nn.functional as F

from engine.errors import PresetError
from engine.methods.reconboost import ReconBoostConfig, boosting_loss, ga_loss, phase_of
from methodkit import THREE, Kit

SHORT = {"epochs_per_stage": 1, "correct_epoch": 1}   # epoch 0 boost a, 1 rectify, 2 boost b, 3 rectify, ...
BN = {m: {"encoder": "mlp", "hidden": [16], "dim": 8, "dropout": 0.2, "norm": "batchnorm"} for m in THREE}


def learner_logits(kit, x, m):
    """Learner m's logits o_m as the method computes them for a frozen learner (encoder in eval mode)."""
    enc = kit.model.encoders[m]
    was = enc.training
    enc.eval()
    with torch.no_grad():
        out = kit.method.modules["heads"][m](enc(x[m]))
    enc.train(was)
    return out


def names_of(kit, m):
    return {k for k in kit.snapshot() if k.startswith((f"encoders.{m}.", f"method.heads.{m}."))}


# -- the pieces on known values -------------------------------------------------------------------------
def test_boosting_loss_on_a_hand_computed_case():
    # row 0: p_m = (1/4, 3/4), label 1, the others' ensemble uniform: p_ens,y = 1/2
    # row 1: p_m = (4/5, 1/5), label 0, the others' p_ens,y = 9/10
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(4.0), 0.0]], requires_grad=True)
    others = torch.tensor([[0.0, 0.0], [math.log(9.0), 0.0]])
    y = torch.tensor([1, 0])
    loss, kl = boosting_loss(logits, others, y, w1=5.0, w2=1.0)
    # the mean over the rows of 1.294569 and 0.914889, over C = 2 classes (the release's scale)
    want = (-(5 - 0.5) * math.log(0.75) - (5 - 0.9) * math.log(0.8)) / 2 / 2
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert loss.item() == pytest.approx(0.5523644, rel=1e-5)
    want_kl = (0.5 * (math.log(0.5) - math.log(0.75)) + 0.9 * (math.log(0.9) - math.log(0.8))) / 2
    assert kl.item() == pytest.approx(want_kl, rel=1e-6)
    # it is the cross-entropy weighted by w1 - w2 p_ens,y per sample, and the ensemble gets no gradient
    weighted = (torch.tensor([4.5, 4.1]) * F.cross_entropy(logits, y, reduction="none")).mean() / 2
    torch.testing.assert_close(loss, weighted)
    (grad,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(grad[0], torch.tensor([4.5 * 0.25, -4.5 * 0.25]) / 2 / 2)


def test_w1_equal_w2_fits_the_residual_at_the_label():
    logits = torch.tensor([[0.3, -0.2, 1.0]])
    others = torch.tensor([[2.0, 0.0, 0.0]])
    y = torch.tensor([0])
    loss, _ = boosting_loss(logits, others, y, w1=3.0, w2=3.0)
    residual = 1 - torch.softmax(others, 1)[0, 0]
    assert loss.item() == pytest.approx((residual * F.cross_entropy(logits, y)).item(), rel=1e-6)   # 3 / C = 1


def test_ga_loss_is_the_mse_of_the_probabilities():
    # softmax(0, 0) = (1/2, 1/2), softmax(0, ln 3) = (1/4, 3/4): MSE = (1/16 + 1/16) / 2
    assert ga_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3.0)]])).item() == pytest.approx(0.0625)


def test_w2_above_w1_is_refused():
    with pytest.raises(ValueError, match="w2"):
        ReconBoostConfig(w1=1.0, w2=2.0)


def test_one_modality_is_refused():
    with pytest.raises(PresetError, match="at least two"):
        Kit.build("reconboost", modalities=("a",))


# -- the schedule ---------------------------------------------------------------------------------------
def test_the_stage_schedule_goes_round_the_modalities_in_absolute_epochs():
    # M = 3, one pretraining epoch, stages of 2 boosting + 1 rectification epochs
    got = [(p.kind, p.stage, p.learner, p.start, p.index) for p in (phase_of(e, 3, 2, 1, 1) for e in range(11))]
    assert got == [("pretrain", -1, -1, 0, 0),
                   ("boost", 0, 0, 1, 1), ("boost", 0, 0, 1, 1), ("rectify", 0, 0, 3, 2),
                   ("boost", 1, 1, 4, 3), ("boost", 1, 1, 4, 3), ("rectify", 1, 1, 6, 4),
                   ("boost", 2, 2, 7, 5), ("boost", 2, 2, 7, 5), ("rectify", 2, 2, 9, 6),
                   ("boost", 3, 0, 10, 7)]
    # without rectification the stages follow each other; the defaults give 4 + 4 epochs per stage
    assert [(p.kind, p.learner, p.index) for p in (phase_of(e, 2, 1, 0) for e in range(3))] == \
        [("boost", 0, 0), ("boost", 1, 1), ("boost", 0, 2)]
    assert [phase_of(e, 2, 4, 4).kind for e in (3, 4, 7, 8)] == ["boost", "rectify", "rectify", "boost"]
    assert phase_of(8, 2, 4, 4).learner == 1


def test_a_run_announces_each_phase_and_reports_the_active_learner():
    kit = Kit.build("reconboost", SHORT, epochs=4)
    kit.fit()
    events = [(f["epoch"], f["stage"], f.get("modality")) for name, _, f in kit.recorder.events if name == "stage"]
    assert events == [(0, "boost", "a"), (1, "rectify", None), (2, "boost", "b"), (3, "rectify", None)]
    per_epoch = len(kit.lives) // 4
    for epoch, want in enumerate([(1, 0, 1), (1, 1, 2), (0, 1, 1), (1, 1, 2)]):
        live = kit.lives[epoch * per_epoch]
        assert (live["coef/a"].item(), live["coef/b"].item(), live["method/phase"].item()) == want
        assert live["method/stage"].item() == epoch // 2
        assert ("method/boost_loss" in live) == (want[2] == 1) and ("method/ce" in live) == (want[2] == 2)
        assert ("method/ga" in live) == (epoch == 2)   # from the second stage on


# -- a boosting step -------------------------------------------------------------------------------------
def test_a_boosting_step_moves_only_the_boosted_learner_without_drift():
    """Weight decay and momentum buffers from a rectification step: the frozen learner, beta and the unused
    fusion head stay bitwise unchanged, BatchNorm statistics included, and so do their momentum buffers."""
    kit = Kit.build("reconboost", SHORT, encoders={m: BN[m] for m in ("a", "b")}, train={"weight_decay": 0.01})
    x, y = kit.batch(16)
    before = kit.snapshot()
    kit.step(x, y, epoch=1)                                           # rectification: everything but the fusion
    assert kit.changed(before) == set(before) - {"fusion.linear.weight", "fusion.linear.bias"}
    before = kit.snapshot()
    frozen = [p for p in kit.method.learner_parameters(kit.model, "a")] + [kit.method.rate]
    buffers = [kit.optimizer.state[p]["momentum_buffer"].clone() for p in frozen]
    assert all(b.abs().sum() > 0 for b in buffers)
    result = kit.step(x, y, epoch=2)                                  # boosting b
    assert kit.changed(before) == names_of(kit, "b")
    for p, b in zip(frozen, buffers):
        assert torch.equal(kit.optimizer.state[p]["momentum_buffer"], b)
    assert result.live["coef/b"].item() == 1 and result.live["coef/a"].item() == 0


def test_the_boosting_step_loss_is_against_the_others_ensemble_and_the_previous_learner():
    kit = Kit.build("reconboost", SHORT, dropout=0.0)
    x, y = kit.batch(16)
    with torch.no_grad():
        kit.method.rate.fill_(0.8)
        own = kit.method.modules["heads"]["b"](kit.model.encoders["b"](x["b"]))
    other = learner_logits(kit, x, "a")
    want, kl = boosting_loss(own, 0.8 * other, y, 5.0, 1.0)
    ga = ga_loss(own, other)
    result = kit.step(x, y, epoch=2)
    assert result.live["method/boost_loss"].item() == pytest.approx(want.item(), rel=1e-6)
    assert result.live["method/kl"].item() == pytest.approx(kl.item(), rel=1e-6, abs=1e-7)
    assert result.live["method/ga"].item() == pytest.approx(ga.item(), rel=1e-6)
    assert result.loss.item() == pytest.approx(want.item() + 0.5 * ga.item(), rel=1e-6)


def test_the_ga_term_reaches_the_boosted_learner():
    """The paper's term acts (the release detaches both sides, so its GA term changes nothing)."""
    heads = {}
    for alpha in (0.0, 0.5):
        kit = Kit.build("reconboost", {**SHORT, "alpha": alpha}, dropout=0.0)
        x, y = kit.batch(16)
        kit.step(x, y, epoch=2)
        heads[alpha] = kit.method.modules["heads"]["b"].weight.detach().clone()
    assert not torch.equal(heads[0.0], heads[0.5])


def test_rectification_trains_every_learner_and_beta_on_the_ensemble():
    kit = Kit.build("reconboost", SHORT, dropout=0.0)
    x, y = kit.batch(16)
    fused, _ = kit.method.head(kit.model, kit.model.encode(x))
    result = kit.step(x, y, epoch=1)
    assert result.live["method/ce"].item() == pytest.approx(F.cross_entropy(fused, y).item(), rel=1e-6)
    assert result.loss.item() == pytest.approx(F.cross_entropy(fused, y).item(), rel=1e-6)
    assert kit.method.rate.item() != 1.0


def test_pretraining_trains_each_learner_on_its_own_cross_entropy_and_leaves_beta():
    kit = Kit.build("reconboost", {**SHORT, "pretrain_epochs": 1}, dropout=0.0)
    x, y = kit.batch(16)
    _, logits = kit.method.head(kit.model, kit.model.encode(x))
    result = kit.step(x, y, epoch=0)
    want = F.cross_entropy(logits["a"], y) + F.cross_entropy(logits["b"], y)
    assert result.loss.item() == pytest.approx(want.item(), rel=1e-6)
    assert kit.method.rate.item() == 1.0 and result.live["method/phase"].item() == 0


# -- the ensemble is the prediction ----------------------------------------------------------------------
def test_the_prediction_is_the_weighted_sum_of_the_learners_logits():
    kit = Kit.build("reconboost", SHORT, modalities=THREE, fusion="gated", dropout=0.0)
    x, y = kit.batch(20, split="val")
    with torch.no_grad():
        kit.method.rate.fill_(0.7)
        kit.model.eval()
        out = kit.method.predict(kit.model, x)
        o = {m: kit.method.modules["heads"][m](kit.model.encoders[m](x[m])) for m in THREE}
    for m in THREE:
        torch.testing.assert_close(out.logits[m], o[m])
    torch.testing.assert_close(out.fused, 0.7 * (o["a"] + o["b"] + o["c"]))
    val = kit.evaluate("val")
    n = kit.data.split_size("val")
    xs, ys = kit.batch(n, split="val")
    with torch.no_grad():
        acc = (kit.method.predict(kit.model, xs).fused.argmax(1) == ys).double().mean().item()
    assert val["val/acc/fused"] == pytest.approx(acc)


# -- three modalities ------------------------------------------------------------------------------------
def test_three_modalities_boost_in_turn_against_the_other_two():
    kit = Kit.build("reconboost", SHORT, modalities=THREE, encoders={m: {**BN[m], "dropout": 0.0} for m in THREE})
    x, y = kit.batch(16)
    # stage 2 (epoch 4) boosts c; the others' ensemble is beta (o_a + o_b), the GA target the learner of stage 1, b
    with torch.no_grad():
        kit.method.rate.fill_(1.3)
    o_a, o_b = learner_logits(kit, x, "a"), learner_logits(kit, x, "b")
    enc_c = kit.model.encoders["c"]
    saved = {k: v.clone() for k, v in enc_c.state_dict().items()}
    enc_c.train()
    with torch.no_grad():   # the boosted learner in train mode: batch statistics
        own = kit.method.modules["heads"]["c"](enc_c(x["c"]))
    enc_c.load_state_dict(saved)
    want, _ = boosting_loss(own, 1.3 * (o_a + o_b), y, 5.0, 1.0)
    ga = ga_loss(own, o_b)
    before = kit.snapshot()
    result = kit.step(x, y, epoch=4)
    assert result.live["method/ga"].item() == pytest.approx(ga.item(), rel=1e-5)
    assert result.live["method/boost_loss"].item() == pytest.approx(want.item(), rel=1e-5)
    changed = kit.changed(before)
    # only c moves (a's and b's BatchNorm statistics too stay: eval mode); the linear bias before c's BatchNorm
    # has a zero gradient (the normalisation removes it) and, without weight decay, stays as well
    assert changed == names_of(kit, "c") - {"encoders.c.net.0.bias"}
    assert {k for k in changed if "running_mean" in k}, "the boosted learner trains in train mode"
    assert [result.live[f"coef/{m}"].item() for m in THREE] == [0, 0, 1]


def test_three_modalities_fit_through_every_stage():
    kit = Kit.build("reconboost", SHORT, modalities=THREE, epochs=6)
    kit.fit()
    boosted = [f["modality"] for name, _, f in kit.recorder.events if name == "stage" and f["stage"] == "boost"]
    assert boosted == ["a", "b", "c"]
    val = kit.evaluate("val")
    assert val["val/acc/fused"] > 0.5   # 3 classes


def test_with_mid_fusion_the_gradients_that_reach_the_frozen_learners_are_dropped():
    """With MMTM the boosted learner's features depend on the other encoders, so its loss reaches them and
    the exchange module; a boosting step still moves only the boosted learner (MMTM's gate statistics aside)."""
    kit = Kit.build("reconboost", SHORT, dropout=0.0,
                    fusion_options={"mid_fusion": "mmtm", "mid_fusion_options": {"stages": [-1]}})
    x, y = kit.batch(16)
    kit.step(x, y, epoch=1)                       # rectification trains the MMTM too
    before = kit.snapshot()
    kit.step(x, y, epoch=2)
    changed = {k for k in kit.changed(before) if not k.startswith("mid_fusions.0.") or "gate" not in k}
    assert changed == names_of(kit, "b")
