"""MMPareto: the min-norm weight and the integrated gradient on hand-made vectors (with and without
conflict), the magnitude boost, the NaN guard, and that a real training step writes exactly the
integrated gradient into every encoder's ``.grad`` (and L_mm + L_u's into the heads), with 2 and 3
modalities."""

import math

import pytest
import torch
import torch.nn.functional as F

from engine.methods.mmpareto import combine, gram, pareto_weights

from methodkit import THREE, TWO, Kit

T = torch.tensor


def rows(*vectors):
    return torch.tensor(vectors, dtype=torch.float32)


# -- the rule on hand-made 2-D vectors -----------------------------------------------------------------
def test_no_conflict_gives_the_plain_sum_times_gamma():
    out, rule = combine(rows([1.0, 0.0]), rows([1.0, 1.0]), gamma=1.5)
    assert rule["cos"].item() == pytest.approx(1 / math.sqrt(2))
    assert rule["conflict"].item() == 0 and rule["lam"].item() == 0.5
    assert rule["boost"].item() == pytest.approx(1.5)
    torch.testing.assert_close(out, rows([3.0, 1.5]))      # 1.5 x (g_mm + g_u)


def test_conflict_takes_the_min_norm_weight_and_rescales_to_the_sum():
    g_mm, g_u = rows([1.0, 0.0]), rows([-1.0, 1.0])
    out, rule = combine(g_mm, g_u, gamma=1.5)
    # lambda = ((g_u - g_mm) . g_u) / |g_mm - g_u|^2 = ((-2, 1) . (-1, 1)) / 5 = 3/5
    assert rule["cos"].item() == pytest.approx(-1 / math.sqrt(2)) and rule["conflict"].item() == 1
    assert rule["lam"].item() == pytest.approx(0.6)
    # min-norm point 0.6 (1, 0) + 0.4 (-1, 1) = (0.2, 0.4); g_hat = (0.4, 0.8), |g_hat| = sqrt(0.8)
    # < |g_mm + g_u| = |(0, 1)| = 1: rescaled to norm 1, then times gamma
    expected = 1.5 * torch.tensor([0.4, 0.8]) / math.sqrt(0.8)
    torch.testing.assert_close(out[0], expected)
    assert rule["boost"].item() == pytest.approx(1.5 / math.sqrt(0.8))
    assert rule["a"].item() == pytest.approx(1.5 / math.sqrt(0.8) * 1.2)
    assert rule["b"].item() == pytest.approx(1.5 / math.sqrt(0.8) * 0.8)
    # a common descent direction: equal, positive directional derivatives for both losses
    assert (out[0] @ g_mm[0]).item() == pytest.approx((out[0] @ g_u[0]).item()) and (out[0] @ g_mm[0]).item() > 0


def test_the_integrated_gradient_always_has_gamma_times_the_norm_of_the_sum():
    # the min-norm point is never longer than the segment's midpoint (g_mm + g_u) / 2, so |g_hat| <= |g_mm + g_u|
    # and the rescaling always applies (equality without conflict): |final| = gamma |g_mm + g_u|
    torch.manual_seed(1)
    g_mm, g_u = torch.randn(64, 9, dtype=torch.float64), torch.randn(64, 9, dtype=torch.float64)
    out, rule = combine(g_mm, g_u, gamma=1.5)
    torch.testing.assert_close(out.norm(dim=1), 1.5 * (g_mm + g_u).norm(dim=1))
    assert (rule["boost"] >= 1.5 - 1e-12).all()
    lam = rule["lam"][:, None]
    g_hat = 2 * (lam * g_mm + (1 - lam) * g_u)
    assert (g_hat.norm(dim=1) <= (g_mm + g_u).norm(dim=1) + 1e-12).all()
    cosines = F.cosine_similarity(out, g_hat, dim=1)   # the direction is g_hat's
    torch.testing.assert_close(cosines, torch.ones_like(cosines))


def test_the_min_norm_weight_is_the_minimiser_over_the_segment():
    torch.manual_seed(0)
    g_mm, g_u = torch.randn(40, 7), torch.randn(40, 7)
    rule = pareto_weights(gram(g_mm, g_u))
    grid = torch.linspace(0, 1, 20001)
    for i in range(40):
        if rule["conflict"][i] == 0:
            assert rule["lam"][i].item() == 0.5
            continue
        norms = (grid[:, None] * g_mm[i] + (1 - grid[:, None]) * g_u[i]).norm(dim=1)
        assert rule["lam"][i].item() == pytest.approx(grid[norms.argmin()].item(), abs=1e-3)
    assert 0 < rule["conflict"].sum() < 40


def test_gamma_one_and_the_boost_value():
    g_mm, g_u = rows([2.0, 1.0], [1.0, 0.0]), rows([1.0, 3.0], [-1.0, 1.0])
    plain, _ = combine(g_mm, g_u, gamma=1.0)
    boosted, rule = combine(g_mm, g_u, gamma=1.5)
    torch.testing.assert_close(boosted, 1.5 * plain)
    torch.testing.assert_close(plain[0], g_mm[0] + g_u[0])
    assert plain[1].norm().item() == pytest.approx((g_mm[1] + g_u[1]).norm().item())   # rescaled to |sum|
    assert rule["boost"].tolist() == pytest.approx([1.5, 1.5 / math.sqrt(0.8)])


# -- the NaN guard --------------------------------------------------------------------------------------
def test_identical_gradients_zero_difference_no_nan():
    g = rows([0.3, -0.4])
    out, rule = combine(g, g.clone(), gamma=1.5)
    assert rule["cos"].item() == pytest.approx(1.0) and rule["lam"].item() == 0.5
    torch.testing.assert_close(out, 3.0 * g)
    assert rule["guarded"].item() == 0


@pytest.mark.parametrize("g_mm, g_u", [([0.0, 0.0], [0.0, 0.0]), ([0.0, 0.0], [1.0, 2.0]), ([1.0, 2.0], [0.0, 0.0])])
def test_zero_gradients_give_the_plain_sum_not_nan(g_mm, g_u):
    out, rule = combine(rows(g_mm), rows(g_u), gamma=1.5)
    assert all(torch.isfinite(v).all() for v in rule.values()) and torch.isfinite(out).all()
    assert rule["cos"].item() == 0 and rule["conflict"].item() == 0 and rule["guarded"].item() == 1
    torch.testing.assert_close(out, 1.5 * (rows(g_mm) + rows(g_u)))


@pytest.mark.parametrize("k", [1.0, 2.0])
def test_exactly_opposite_gradients_pareto_stationary_no_nan(k):
    # g_u = -k g_mm: the min-norm point is 0 (lambda = k / (1 + k)); the release divides by its norm
    g = rows([0.6, 0.8])
    out, rule = combine(g, -k * g, gamma=1.5)
    assert rule["conflict"].item() == 1 and rule["lam"].item() == pytest.approx(k / (1 + k))
    assert rule["guarded"].item() == 1 and rule["boost"].item() == 1.5
    assert torch.isfinite(out).all() and out.abs().max().item() < 1e-6


def test_a_batch_of_encoders_mixes_the_cases_without_host_values():
    out, rule = combine(rows([1.0, 0.0], [0.0, 0.0], [1.0, 0.0]), rows([1.0, 1.0], [0.0, 0.0], [-1.0, 1.0]), 1.5)
    assert rule["conflict"].tolist() == [0, 0, 1] and rule["guarded"].tolist() == [0, 1, 0]
    assert rule["lam"].tolist() == pytest.approx([0.5, 0.5, 0.6])
    torch.testing.assert_close(out[1], T([0.0, 0.0]))


# -- a real step -------------------------------------------------------------------------------------------
def expected_encoder_grad(kit, m, out, y, gamma=1.5):
    """The paper's rule by hand, in float64, with modality m's own unimodal loss."""
    params = [p for p in kit.model.encoder_parameters(m)]
    g_mm = torch.autograd.grad(F.cross_entropy(out.fused, y), params, retain_graph=True)
    g_u = torch.autograd.grad(F.cross_entropy(out.logits[m], y), params, retain_graph=True)
    v1 = torch.cat([g.reshape(-1) for g in g_mm]).double()
    v2 = torch.cat([g.reshape(-1) for g in g_u]).double()
    cos = (v1 @ v2 / (v1.norm() * v2.norm())).item()
    lam = 0.5 if cos >= 0 else min(max(((v2 - v1) @ v2 / (v1 - v2).norm() ** 2).item(), 0.0), 1.0)
    hat = 2 * (lam * v1 + (1 - lam) * v2)
    if (v1 + v2).norm() > hat.norm():
        hat = hat * (v1 + v2).norm() / hat.norm()
    hat = gamma * hat
    shapes = [p.shape for p in params]
    return [h.view(s).float() for h, s in zip(hat.split([p.numel() for p in params]), shapes)], cos, lam


@pytest.mark.parametrize("mods, fusion", [(TWO, "concat"), (THREE, "gated"), (TWO, "film")])
def test_a_step_writes_exactly_the_integrated_gradient(mods, fusion):
    # under concat a modality's head is its slice of the fused one, and at the start both losses pull the
    # same way (cos near 1); the separate modality heads of gated / film give both signs from the start
    kit = Kit.build("mmpareto", modalities=mods, fusion=fusion, dropout=0.0)
    captured = {}
    original = kit.trainer._step_optimizer

    def capture():
        captured.update({id(p): p.grad.clone() for p in kit.model.parameters() if p.grad is not None})
        original()

    kit.trainer._step_optimizer = capture
    seen = set()
    both = fusion in ("gated", "film")
    for start in range(0, (8 if both else 2) * 16, 16):   # several batches, until both cases were checked
        x, y = kit.batch(16, start=start)
        out = kit.model(x)
        expected = {m: expected_encoder_grad(kit, m, out, y) for m in mods}
        loss = F.cross_entropy(out.fused, y) + sum(F.cross_entropy(out.logits[m], y) for m in mods)
        heads = [p for p in kit.model.parameters() if all(p is not q for m in mods
                                                           for q in kit.model.encoder_parameters(m))]
        head_grads = torch.autograd.grad(loss, heads, allow_unused=True)
        captured.clear()
        result = kit.step(x, y)
        for i, m in enumerate(mods):
            grads, cos, lam = expected[m]
            for p, g in zip(kit.model.encoder_parameters(m), grads):
                torch.testing.assert_close(captured[id(p)], g, rtol=1e-4, atol=1e-7)
            assert result.live[f"score/{m}"].item() == pytest.approx(cos, abs=1e-5)
            assert result.live[f"coef/{m}"].item() == pytest.approx(lam, abs=1e-4)
            assert result.live[f"method/conflict_{m}"].item() == float(cos < 0)
            seen.add(cos < 0)
        for p, g in zip(heads, head_grads):
            torch.testing.assert_close(captured[id(p)], torch.zeros_like(p) if g is None else g, rtol=1e-5, atol=1e-7)
        assert result.loss.item() == pytest.approx(loss.item(), rel=1e-5)
        if seen == {True, False}:
            break
    assert seen == {True, False} or not both, "no batch exercised both the conflicting and the non-conflicting case"


def test_three_modalities_report_every_live_value_and_train():
    kit = Kit.build("mmpareto", {"gamma": 1.0}, modalities=THREE, dropout=0.0)
    before = kit.snapshot()
    x, y = kit.batch(32)
    result = kit.step(x, y)
    for m in THREE:
        cos, lam = result.live[f"score/{m}"].item(), result.live[f"coef/{m}"].item()
        assert -1 <= cos <= 1 and 0 <= lam <= 1
        assert result.live[f"method/conflict_{m}"].item() == float(cos < 0)
        if cos >= 0:
            assert lam == 0.5
        assert result.live[f"method/boost_{m}"].item() >= 1.0
        assert result.live[f"method/boost_{m}"].device == kit.device
    assert result.live["method/guarded"].item() == 0
    changed = kit.changed(before)
    assert all(any(k.startswith(f"encoders.{m}.") for k in changed) for m in THREE)
    assert any(k.startswith("fusion.") for k in changed)


def test_the_guard_count_warns_at_the_epoch_end_and_resumes():
    kit = Kit.build("mmpareto", dropout=0.0)
    method = kit.method
    assert method.on_epoch_end(0, kit.model, {}) == []
    method.guarded = torch.tensor(3.0)
    state = method.state_dict()
    events = method.on_epoch_end(1, kit.model, {})
    assert events[0]["name"] == "warning" and "3 time(s) in epoch 1" in events[0]["message"]
    assert method.guarded.item() == 0
    method.load_state_dict(state)
    assert method.guarded.item() == 3
