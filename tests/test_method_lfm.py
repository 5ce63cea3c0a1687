"""lfm: the loss is 2 (alpha1 CE(fused) + alpha2 JS(modality predictions)); JS is the Jensen-Shannon divergence
(generalised to M distributions around their mean, or the mean over pairs); the heuristic trade-off follows the
release's fitted polynomial; the learned one moves alpha2 by a hypergradient (one double backward) in the
direction that lowers the validation loss after a step, clipped to [0.05, 0.95]."""

import math

import pytest
import torch
import torch.nn.functional as F

from engine.methods import lfm
from engine.methods.lfm import heuristic_alpha1, js_divergence

from methodkit import THREE, Kit


def logp(*rows) -> torch.Tensor:
    """(M, 1, C) log-probabilities of hand-made distributions (log 0 = -inf)."""
    return torch.tensor([[r] for r in rows], dtype=torch.float64).log()


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


# -- the Jensen-Shannon divergence ----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["generalised", "pairwise"])
def test_js_is_zero_for_identical_and_log2_for_disjoint_two_point_distributions(mode):
    assert js_divergence(logp([0.3, 0.7], [0.3, 0.7]), mode).item() == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(logp([1.0, 0.0], [0.0, 1.0]), mode).item() == pytest.approx(math.log(2))
    p, q = [0.2, 0.5, 0.3], [0.6, 0.1, 0.3]
    m = [(a + b) / 2 for a, b in zip(p, q)]
    assert js_divergence(logp(p, q), mode).item() == pytest.approx(0.5 * kl(p, m) + 0.5 * kl(q, m))


def test_js_of_three_distributions_generalised_around_their_mean_and_pairwise():
    # one-hot on three different classes: generalised = log 3 (its maximum), each pair log 2
    disjoint = logp([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0])
    assert js_divergence(disjoint).item() == pytest.approx(math.log(3))
    assert js_divergence(disjoint, "pairwise").item() == pytest.approx(math.log(2))
    # [1,0], [0,1], [1,0]: mean [2/3, 1/3], so generalised = H(mean) - 0; pairs: log 2, 0, log 2
    mixed = logp([1.0, 0.0], [0.0, 1.0], [1.0, 0.0])
    assert js_divergence(mixed).item() == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert js_divergence(mixed, "pairwise").item() == pytest.approx(2 * math.log(2) / 3)


def test_js_is_averaged_over_rows_and_finite_in_float32_for_confident_logits():
    logits = torch.tensor([[[200.0, -200.0], [0.0, 0.0]], [[-200.0, 200.0], [0.0, 0.0]]], requires_grad=True)
    value = js_divergence(F.log_softmax(logits, -1))
    value.backward()
    assert value.item() == pytest.approx(math.log(2) / 2)   # row 1 disjoint, row 2 identical
    assert torch.isfinite(logits.grad).all()


# -- the loss ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_the_step_loss_is_twice_alpha1_ce_plus_alpha2_js(fusion):
    kit = Kit.build("lfm", {"alpha2_init": 0.7}, fusion=fusion, dropout=0.0)
    x, y = kit.batch(12)
    out = kit.model(x)
    ce = F.cross_entropy(out.fused, y)
    js = js_divergence(torch.stack([F.log_softmax(out.logits[m], -1) for m in kit.modalities]))
    result = kit.step(x, y)
    assert result.loss.item() == pytest.approx(2 * (0.3 * ce.item() + 0.7 * js.item()), rel=1e-5)
    assert result.live["method/alpha1"].item() == pytest.approx(0.3)
    assert result.live["coef/b"].item() == pytest.approx(0.7)
    assert result.live["method/js"].item() == pytest.approx(js.item(), rel=1e-5)
    assert result.live["method/ce"].item() == pytest.approx(ce.item(), rel=1e-5)


def test_three_modalities_align_around_the_mean_of_three_predictions():
    kit = Kit.build("lfm", {"tradeoff": "heuristic"}, modalities=THREE, fusion="sum", dropout=0.0)
    kit.method.on_epoch_start(0, kit.model)
    x, y = kit.batch(12)
    out = kit.model(x)
    p = torch.stack([F.softmax(out.logits[m], -1) for m in THREE])          # (3, B, C)
    mean = p.mean(0)
    by_hand = ((p * (p / mean).log()).sum(-1).mean(0)).mean()             # (1/3) sum_m KL(p_m || mean)
    a1 = heuristic_alpha1(0)
    result = kit.step(x, y)
    assert result.live["method/js"].item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert result.loss.item() == pytest.approx(
        2 * (a1 * F.cross_entropy(out.fused, y).item() + (1 - a1) * by_hand.item()), rel=1e-5)
    # every encoder gets the alignment's gradient
    before = kit.snapshot()
    kit.step(x, y)
    assert all(any(k.startswith(f"encoders.{m}.") for k in kit.changed(before)) for m in THREE)


# -- the heuristic trade-off -------------------------------------------------------------------------------
def test_the_heuristic_schedule_is_the_release_polynomial_clipped_and_stretched_over_the_span():
    assert heuristic_alpha1(0) == pytest.approx(0.204623704)
    # sum_i c_i 100^i of the release's coefficients
    assert heuristic_alpha1(100) == pytest.approx(0.5391551960, abs=1e-9)
    assert heuristic_alpha1(50) == pytest.approx(0.4366806967, abs=1e-9)
    assert heuristic_alpha1(180) == 0.95                      # the raw polynomial is 1.0077 there
    assert heuristic_alpha1(200) == pytest.approx(0.9020757580, abs=1e-9)
    assert heuristic_alpha1(500) == heuristic_alpha1(200)    # held after the span
    assert heuristic_alpha1(15, span=30) == heuristic_alpha1(100)   # 15 of 30 epochs = 100 of 200


def test_the_heuristic_sets_alpha_at_each_epoch_start_and_resumes_it():
    kit = Kit.build("lfm", {"tradeoff": "heuristic", "heuristic_span": 4})
    method = kit.method
    for epoch in range(4):
        method.on_epoch_start(epoch, kit.model)
        assert method.alpha2.item() == pytest.approx(1 - heuristic_alpha1(epoch * 50), rel=1e-6)
    assert method.epoch_values()["method/hypergrad"].item() == 0.0
    other = Kit.build("lfm", {"tradeoff": "heuristic", "heuristic_span": 4}).method
    other.load_state_dict(method.state_dict())
    assert torch.equal(other.alpha2, method.alpha2)


# -- the learned trade-off ---------------------------------------------------------------------------------
def flat_grads(loss, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, allow_unused=False)])


def test_the_hypergradient_is_the_validation_gradient_times_the_alignment_minus_classification_gradient():
    kit = Kit.build("lfm", {"alpha2_init": 0.4}, dropout=0.0)
    method, model = kit.method, kit.model
    train, val = kit.batch(24), kit.batch(20, split="val")
    model.train()
    h = method.hypergradient(model, train, val)
    assert model.training   # the mode is restored
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    v = flat_grads(F.cross_entropy(model(val[0]).fused, val[1]), params)
    ce, _ = method.terms(model(train[0]), train[1])
    g_ce = flat_grads(ce, params)
    g_js = flat_grads(method.terms(model(train[0]), train[1])[1], params)
    assert h.item() == pytest.approx((2 * v @ (g_js - g_ce)).item(), rel=1e-4)


def test_alpha2_moves_the_way_the_one_step_unrolled_validation_loss_says():
    """A finite difference of L_val(theta - eta * grad L_train(alpha2)) in alpha2 has the sign of -h: the update
    alpha2 + lr * h lowers the validation loss after a step, and raising alpha2 the other way raises it."""
    kit = Kit.build("lfm", {"alpha2_init": 0.5}, dropout=0.0)
    method, model = kit.method, kit.model
    train, val = kit.batch(48), kit.batch(40, split="val")
    h = method.hypergradient(model, train, val).item()
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    base = [p.detach().clone() for p in params]

    def val_after_step(alpha2, eta=1e-3):
        ce, js = method.terms(model(train[0]), train[1])
        grads = torch.autograd.grad(2 * ((1 - alpha2) * ce + alpha2 * js), params)
        with torch.no_grad():
            for p, b, g in zip(params, base, grads):
                p.copy_(b - eta * g)
            loss = F.cross_entropy(model(val[0]).fused, val[1]).item()
            for p, b in zip(params, base):
                p.copy_(b)
        return loss

    delta, eta = 0.1, 1e-3
    slope = (val_after_step(0.5 + delta) - val_after_step(0.5 - delta)) / (2 * delta)
    assert abs(h) > 1e-3
    assert slope == pytest.approx(-eta * h, rel=0.05)
    moved = 0.5 + 0.05 * math.copysign(1, h)
    assert val_after_step(moved) < val_after_step(0.5) < val_after_step(1.0 - moved)


def test_the_learned_update_steps_clips_and_halves_the_rate(monkeypatch):
    kit = Kit.build("lfm", {"lr_alpha": 0.01, "lr_alpha_halve_every": 2, "alpha2_init": 0.5})
    method = kit.method
    hs = iter([3.0, 3.0, -1.0, 1000.0, -1000.0])
    monkeypatch.setattr(method, "hypergradient", lambda model, t, v: torch.tensor(next(hs)))
    expected = 0.5
    for epoch, (h, lr) in enumerate([(3.0, 0.01), (3.0, 0.01), (-1.0, 0.005)]):
        method.on_epoch_start(epoch, kit.model)
        expected += lr * h
        assert method.alpha2.item() == pytest.approx(expected)
        assert method.epoch_values()["method/hypergrad"].item() == h
    method.on_epoch_start(3, kit.model)
    assert method.alpha2.item() == pytest.approx(0.95)
    method.on_epoch_start(4, kit.model)
    assert method.alpha2.item() == pytest.approx(0.05)
    assert method.epoch_values()["method/alpha1"].item() == pytest.approx(0.95)


def test_the_hypergradient_rows_are_spread_over_the_validation_split_and_fixed():
    kit = Kit.build("lfm", {"hyper_rows": 10})
    x, y = kit.method._val_rows()
    n_val = kit.data.split_size("val")
    wanted = kit.data.splits["val"][torch.tensor([i * n_val // 10 for i in range(10)])]
    torch.testing.assert_close(y, kit.data.y[wanted])
    torch.testing.assert_close(x["a"], kit.data.x["a"][wanted])
    tx, ty = kit.method._train_rows(1)
    assert ty.shape == (10,) and torch.equal(ty, kit.method._train_rows(1)[1])


def test_a_fit_updates_alpha_every_epoch_and_keeps_it_in_the_state():
    kit = Kit.build("lfm", {"lr_alpha": 0.05}, modalities=THREE, epochs=2)
    kit.fit()
    alphas = [v["method/alpha2"] for v in kit.epoch_values]
    assert len(alphas) == 2 and alphas[0] != 0.95 and alphas[1] != alphas[0]
    assert all(0.05 <= a <= 0.95 for a in alphas)
    state = kit.method.state_dict()
    assert state["alpha2"].item() == pytest.approx(alphas[-1])
    steps = [live["method/alpha2"].item() for live in kit.lives]
    assert steps[0] == pytest.approx(alphas[0]) and steps[-1] == pytest.approx(alphas[1])


def test_learned_tradeoff_refuses_compile():
    cfg = lfm.LFMConfig()
    train = type("T", (), {"compile": True})()
    assert lfm.LFM.check_preset(cfg, train) and not lfm.LFM.check_preset(lfm.LFMConfig(tradeoff="heuristic"), train)
