"""agm: the mono-modal responses are the Shapley decomposition of zero-masked forwards (the release's
formulas for two and three modalities), the coefficient is exp(alpha * min(r* - r, cap)) against the
running-mean reference, and it scales exactly encoder m's update, under SGD and under Adam."""

import math

import pytest
import torch

from engine.config import resolve
from engine.errors import PresetError
from engine.methods.agm import coefficients, mono_modal_responses, ratios, score_sums
from methodkit import THREE, Kit, preset


def zeroed(x, *absent):
    return {m: torch.zeros_like(v) if m in absent else v for m, v in x.items()}


@torch.no_grad()
def eval_fused(model, x):
    model.eval()
    try:
        return model(x).fused
    finally:
        model.train()


@pytest.mark.parametrize("model", [{}, {"mid_fusion": "mmtm"}], ids=["features", "mid_fusion"])
def test_two_modality_responses_are_the_releases_half_sums_of_eval_mode_padded_forwards(model):
    """Without mid-fusion the coalitions reuse each encoder's features of the batch and of a zero row; with
    it the masked inputs go through the whole model: both are the zero-padded forwards of the release."""
    kit = Kit.build("agm", dropout=0.3, fusion_options=model)   # dropout on: the coalitions run in eval mode
    x, y = kit.batch(10)
    partial = kit.method.coalition_logits(kit.model, x)
    only_a, only_b = eval_fused(kit.model, zeroed(x, "b")), eval_fused(kit.model, zeroed(x, "a"))
    torch.testing.assert_close(partial, torch.stack([only_a, only_b]))
    assert kit.model.training
    full = torch.randn(10, 3)
    o = mono_modal_responses(kit.method.matrix, partial, full)
    torch.testing.assert_close(o[0], 0.5 * (full - only_b + only_a))
    torch.testing.assert_close(o[1], 0.5 * (full - only_a + only_b))


def test_three_modality_responses_are_shapley_values_without_the_empty_coalition():
    kit = Kit.build("agm", modalities=THREE, dropout=0.0)
    x, y = kit.batch(8)
    partial = kit.method.coalition_logits(kit.model, x)
    full = eval_fused(kit.model, x)
    o = mono_modal_responses(kit.method.matrix, partial, full)
    pad = {absent: eval_fused(kit.model, zeroed(x, *absent)) for absent in
           [("a",), ("b",), ("c",), ("b", "c"), ("a", "c"), ("a", "b")]}
    # UR-Funny's Modality_Text of the release, written for a: padding b and c leaves a alone, etc.
    expected_a = ((full - pad[("a",)] + pad[("b", "c")]) / 3
                  + (pad[("b",)] - pad[("a", "c")] + pad[("c",)] - pad[("a", "b")]) / 6)
    torch.testing.assert_close(o[0], expected_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(o.sum(0), full, rtol=1e-5, atol=1e-5)   # efficiency with V(empty) = 0


def test_scores_ratios_and_coefficients_on_known_values():
    responses = torch.tensor([[[0.0, 0.0]], [[0.0, -100.0]]])   # (M=2, B=1, C=2), label 1
    s = score_sums(responses, torch.tensor([1]))
    torch.testing.assert_close(s, torch.tensor([math.log(2.0), -math.log(1e-8)]))   # the second one floored
    s = torch.tensor([1.0, 2.0])
    r = ratios(s)
    torch.testing.assert_close(r, torch.tensor([math.e, 1 / math.e]))
    torch.testing.assert_close(ratios(torch.tensor([1.0, 2.0, 4.0])),
                               torch.exp(torch.tensor([2.0, 0.5, -2.5])))   # mean of the others minus s_m
    c = coefficients(torch.ones(2), r, alpha=0.5, cap=0.25)
    torch.testing.assert_close(c, torch.tensor([math.exp(0.5 * (1 - math.e)), math.exp(0.5 * 0.25)]))


def test_the_first_step_compares_with_a_balanced_reference_then_with_running_means():
    kit = Kit.build("agm", {"alpha": 0.7}, dropout=0.0)
    lives = [kit.step().live for _ in range(3)]
    scores = torch.stack([torch.stack([lv["score/a"], lv["score/b"]]) for lv in lives])
    assert lives[0]["method/ref_ratio/a"].item() == 1.0
    torch.testing.assert_close(torch.stack([lives[2]["method/ref_score/a"], lives[2]["method/ref_score/b"]]),
                               scores[:2].mean(0))
    torch.testing.assert_close(kit.method.ref_scores, scores.mean(0))
    for lv in lives:
        r = torch.stack([lv["method/ratio/a"], lv["method/ratio/b"]])
        ref = torch.stack([lv["method/ref_ratio/a"], lv["method/ref_ratio/b"]])
        torch.testing.assert_close(torch.stack([lv["coef/a"], lv["coef/b"]]), torch.exp(0.7 * (ref - r)))
    assert lives[1]["coef/a"] > 1 > lives[1]["coef/b"] or lives[1]["coef/a"] < 1 < lives[1]["coef/b"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_coefficient_scales_exactly_the_encoders_update(optimizer):
    """One step from the same weights with the window on and off: encoder m moves c_m times as far (SGD: its
    gradient scaled; Adam: its learning rate), the fusion head the same."""
    on = Kit.build("agm", {"alpha": 20.0, "cap": 2.0}, optimizer=optimizer, dropout=0.0)
    off = Kit.build("agm", {"alpha": 20.0, "cap": 2.0, "modulation_start": 1}, optimizer=optimizer,
                    dropout=0.0)
    x, y = on.batch(16)
    before = on.snapshot()
    torch.testing.assert_close(off.snapshot(), before)
    live, live_off = on.step(x, y).live, off.step(x, y).live
    assert live_off["coef/a"].item() == 1.0 and live_off["score/a"] == live["score/a"]
    assert abs(live["coef/a"].item() - 1) > 0.01 and abs(live["coef/b"].item() - 1) > 0.01
    after_on, after_off = on.snapshot(), off.snapshot()
    for part, k in [("a", live["coef/a"]), ("b", live["coef/b"]), ("fusion", torch.tensor(1.0))]:
        for name in on.params(part):
            torch.testing.assert_close(after_on[name] - before[name], k * (after_off[name] - before[name]),
                                       rtol=1e-4, atol=1e-7)


def test_outside_the_window_nothing_is_scaled_but_the_reference_still_runs():
    kit = Kit.build("agm", {"modulation_start": 1, "modulation_end": 2})
    first = kit.step(epoch=0).live
    assert first["coef/a"].item() == first["coef/b"].item() == 1.0
    inside = kit.step(epoch=1).live
    assert inside["method/ref_score/a"].item() == pytest.approx(first["score/a"].item())
    assert inside["coef/a"].item() != 1.0
    assert kit.step(epoch=2).live["coef/b"].item() == 1.0


def test_gradient_modulation_under_adam_an_overflowing_coefficient_and_one_modality_are_refused():
    with pytest.raises(PresetError, match="modulate"):
        resolve(preset("agm", {"modulate": "gradient"}, optimizer="adam"), source="t", base_dir=".",
                default_name="t")
    with pytest.raises(PresetError, match="alpha \\* cap"):
        resolve(preset("agm", {"alpha": 9.0}), source="t", base_dir=".", default_name="t")
    with pytest.raises(PresetError, match="at least two"):
        Kit.build("agm", modalities=("a",))


@pytest.mark.parametrize("mods", [("a", "b"), THREE], ids=["2mod", "3mod"])
def test_a_run_keeps_the_reference_as_the_mean_of_every_steps_scores(mods):
    kit = Kit.build("agm", {"alpha": 1.5}, modalities=mods, epochs=3)
    test = kit.fit()
    scores = torch.stack([torch.stack([lv[f"score/{m}"] for m in mods]) for lv in kit.lives])
    torch.testing.assert_close(kit.method.ref_scores, scores.mean(0), rtol=1e-5, atol=1e-6)
    coefs = torch.stack([torch.stack([lv[f"coef/{m}"] for m in mods]) for lv in kit.lives])
    assert coefs.isfinite().all() and (coefs > 1).any() and (coefs < 1).any()   # both ways
    assert test["test/acc/fused"] > 0.5   # joint training: 0.53 (two), 0.56 (three)
    for m in mods:
        assert test[f"test/acc/{m}"] > 1 / 3
