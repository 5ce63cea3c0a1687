"""AMCo: the sine schedule of the mask ratio at known steps, which feature units the method's generator
masks, the dependence rule (share of the joint softmax mass over sigma) on hand-made logits, the masked
forward and its losses with 3 modalities (a fully masked dependent modality's encoder gets no gradient),
flags decided by one step and applied in the next, and the state a resume needs."""

import math

import pytest
import torch
import torch.nn.functional as F

from engine.methods.amco import dependence_flags, dependence_shares, keep_units, mask_ratio, masked_count

from methodkit import THREE, Kit


# -- the pieces on hand-made numbers -----------------------------------------------------------------
def test_the_mask_ratio_rises_on_a_sine_until_eps_then_stays_at_one():
    assert mask_ratio(0.0, 0.3) == 0.0
    assert mask_ratio(0.1, 0.3) == pytest.approx(0.5)                   # sin(pi/2 * 1/3) = sin(pi/6)
    assert mask_ratio(0.05, 0.3) == pytest.approx(math.sin(math.pi / 12))
    assert mask_ratio(0.15, 0.3) == pytest.approx(math.sqrt(0.5))      # sin(pi/4)
    assert mask_ratio(0.3, 0.3) == 1.0 and mask_ratio(0.9, 0.3) == 1.0
    assert masked_count(0.5, 7) == 3 and masked_count(1.0, 7) == 7 and masked_count(0.0, 7) == 0


def test_the_schedule_at_known_steps_of_a_run():
    """horizon T = 10 epochs, eps = 0.3: l_t = (epoch + batch / 7) / 10 (7 steps per epoch)."""
    kit = Kit.build("amco", {"horizon_epochs": 10.0, "eps": 0.3}, dropout=0.0)
    x, y = kit.batch(16)
    assert kit.step(x, y, epoch=0).live["method/mask_ratio"].item() == 0.0                   # step 0
    assert kit.step(x, y).live["method/mask_ratio"].item() == pytest.approx(math.sin(math.pi / 2 / 21))  # batch 1
    kit.trainer.pos.batch = 0
    assert kit.step(x, y, epoch=1).live["method/mask_ratio"].item() == pytest.approx(0.5)     # l = 0.1: sin(pi/6)
    kit.trainer.pos.batch = 0
    assert kit.step(x, y, epoch=3).live["method/mask_ratio"].item() == 1.0                    # l = eps
    kit.trainer.pos.batch = 0
    assert kit.step(x, y, epoch=7).live["method/mask_ratio"].item() == 1.0


def test_the_masked_units_are_those_with_the_smallest_keys_of_the_methods_generator():
    kit = Kit.build("amco", dropout=0.0)
    method = kit.method
    assert method.widths == [8, 8]
    method.generator.manual_seed(1234)
    masks, counts = method.draw_masks(0.5)                      # N = 4 of 8 per modality, the rest times 2
    keys = torch.rand(16, generator=torch.Generator().manual_seed(1234))
    assert counts == [4, 4]
    for mask, k in zip(masks, keys.split(8)):
        zeroed = set(k.argsort()[:4].tolist())
        assert {i for i, v in enumerate(mask.tolist()) if v == 0.0} == zeroed
        assert all(v == 2.0 for i, v in enumerate(mask.tolist()) if i not in zeroed)
    assert keep_units(torch.tensor([0.9, 0.1, 0.5, 0.3]), 2).tolist() == [True, False, True, False]
    masks, _ = method.draw_masks(0.95)                          # 1 / (1 - p) = 20 is capped at max_scale 10
    assert max(max(m.tolist()) for m in masks) == 10.0
    # the state travels with the method: the same state draws the same masks
    state = method.state_dict()
    first, _ = method.draw_masks(0.3)
    method.load_state_dict(state)
    again, _ = method.draw_masks(0.3)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_dependence_is_a_share_of_the_joint_softmax_mass_over_sigma():
    e = math.e ** 2
    a = torch.tensor([[2.0, 0.0], [0.0, 0.0]])       # sample 1: a holds (e^2 + 1) / (e^2 + 3); sample 2: 1/2
    b = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    sums = dependence_shares([a, b])
    assert sums.tolist() == pytest.approx([(e + 1) / (e + 3) + 0.5, 2 / (e + 3) + 0.5])
    shares = sums / 2
    assert shares.sum().item() == pytest.approx(1.0)
    assert (shares > 0.5).tolist() == [True, False]
    c = torch.zeros(2, 2)                             # three modalities: a's share drops to about 0.505
    three = dependence_shares([a, b, c]) / 2
    assert three.tolist() == pytest.approx([((e + 1) / (e + 5) + 1 / 3) / 2, (2 / (e + 5) + 1 / 3) / 2,
                                            (2 / (e + 5) + 1 / 3) / 2])
    assert (three > 0.5).tolist() == [True, False, False] and not (three > 0.51).any()


def test_the_ratio_rule_compares_each_share_with_the_mean_of_the_others():
    two = torch.tensor([0.6, 0.4])
    for sigma in (0.3, 0.5, 0.55, 0.7):                                 # M = 2: the same as s_m > sigma
        assert dependence_flags(two, sigma, "ratio").tolist() == dependence_flags(two, sigma, "share").tolist()
    six = torch.tensor([0.30, 0.28, 0.16, 0.10, 0.10, 0.06])          # nobody holds half of the mass
    assert not dependence_flags(six, 0.5, "share").any()
    # sigma = 0.5: s_m over the others' mean share > 1; 0.16 / (0.84 / 5) = 0.95
    assert dependence_flags(six, 0.5, "ratio").tolist() == [True, True, False, False, False, False]
    # sigma = 0.7: ratio > 7 / 3; 0.30 / (0.70 / 5) = 2.14, so nobody
    assert not dependence_flags(six, 0.7, "ratio").any()
    assert dependence_flags(six, 0.6, "ratio").tolist() == [True, True, False, False, False, False]  # > 1.5


# -- a training step ----------------------------------------------------------------------------------
def test_three_modalities_a_fully_masked_dependent_modality_learns_nothing_and_the_flags_move_on():
    kit = Kit.build("amco", {"horizon_epochs": 1.0, "eps": 0.3}, modalities=THREE, dropout=0.0)
    x, y = kit.batch(24)
    kit.method.dependent = torch.tensor([True, False, False])   # a was found dependent in the previous step
    out = kit.model(x)
    masked = {"a": out.features["a"] * 0, "b": out.features["b"], "c": out.features["c"]}
    fused, logits = kit.model.head(masked)
    expected = F.cross_entropy(fused, y) + sum(F.cross_entropy(logits[m], y) for m in THREE)
    shares = dependence_shares([logits[m] for m in THREE]) / 24
    result, grads = kit.step_grads(x, y, epoch=1)      # l = 1 >= eps: p = 1, all of a's units masked
    assert result.live["method/mask_ratio"].item() == 1.0
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert result.live["method/dependent_a"].item() == 1.0 and result.live["method/dependent_b"].item() == 0.0
    assert result.live["coef/a"].item() == 0.0 and result.live["coef/b"].item() == 1.0
    assert all(g.abs().sum() == 0 for n, g in grads.items() if n.startswith("encoders.a."))
    for m in "bc":
        assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith(f"encoders.{m}."))
    for i, m in enumerate(THREE):
        assert result.live[f"score/{m}"].item() == pytest.approx(shares[i].item(), rel=1e-5)
    assert kit.method.dependent.tolist() == (shares > 0.5).tolist()   # the next step's flags


def test_a_partial_mask_rescales_the_kept_units_of_the_dependent_modality_only():
    kit = Kit.build("amco", {"horizon_epochs": 10.0, "eps": 0.3}, dropout=0.0)
    x, y = kit.batch(16)
    kit.method.dependent = torch.tensor([False, True])
    kit.method.generator.manual_seed(99)
    masks, _ = kit.method.draw_masks(0.5)                      # what the step at l = 0.1 (p = 0.5) will draw
    kit.method.generator.manual_seed(99)
    out = kit.model(x)
    fused, logits = kit.model.head({"a": out.features["a"], "b": out.features["b"] * masks[1]})
    expected = F.cross_entropy(fused, y) + F.cross_entropy(logits["a"], y) + F.cross_entropy(logits["b"], y)
    result = kit.step(x, y, epoch=1)
    assert result.live["method/mask_ratio"].item() == pytest.approx(0.5)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert result.live["coef/b"].item() == 0.5 and result.live["coef/a"].item() == 1.0


def test_no_modality_is_masked_before_a_dependence_is_found():
    kit = Kit.build("amco", {"horizon_epochs": 1.0}, dropout=0.0)
    x, y = kit.batch(16)
    out = kit.model(x)
    expected = F.cross_entropy(out.fused, y) + sum(F.cross_entropy(out.logits[m], y) for m in "ab")
    result = kit.step(x, y, epoch=2)                            # p = 1, but nothing flagged yet
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert result.live["coef/a"].item() == result.live["coef/b"].item() == 1.0
    assert set(kit.method.state_dict()) >= {"dependent", "generator"}
