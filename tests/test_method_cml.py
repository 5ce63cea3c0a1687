"""cml: along each row's random removal chain (all modalities, then one fewer at a time), the penalty is
the batch mean of ReLU(conf without - conf with) per removal, zero when the confidence drops; the partial
outputs of a late-fusion head come from the per-modality logits and equal real forwards of the reduced
input; the loss is the mean cross-entropy over the levels plus lam times the penalty."""

import pytest
import torch
import torch.nn.functional as F

from engine.methods import cml
from engine.methods.cml import additive_levels, calibration_penalty, confidence, removal_levels
from methodkit import THREE, Kit


EVERY_ORDER = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])   # rank per modality


def zeroed(x, present_row):
    """The batch with the inputs of the modalities absent in ``present_row`` ((B, M) bool) replaced by zeros."""
    return {m: torch.where(present_row[:, i, None], v, torch.zeros_like(v)) for i, (m, v) in enumerate(x.items())}


def test_the_penalty_is_zero_when_the_confidence_drops_and_exact_when_it_rises():
    falling = torch.tensor([[0.9, 0.8], [0.7, 0.6], [0.5, 0.55]])   # levels x rows, never rising
    penalty, rate = calibration_penalty(falling)
    assert penalty.item() == 0.0 and rate.item() == 0.0
    conf = torch.tensor([[0.9, 0.6], [0.7, 0.8], [0.75, 0.5]])
    penalty, rate = calibration_penalty(conf)
    # removal 1: rises -0.2, +0.2 -> mean ReLU 0.1; removal 2: +0.05, -0.3 -> 0.025
    assert penalty.item() == pytest.approx(0.125)
    assert rate.item() == 0.5   # 2 of the 4 comparisons rose
    conf = torch.tensor([[0.5, 0.6]], requires_grad=True)
    more = torch.tensor([[0.7, 0.4]], requires_grad=True)
    penalty, _ = calibration_penalty(torch.cat([conf, more]))
    g_with, g_without = torch.autograd.grad(penalty, [conf, more])
    torch.testing.assert_close(g_without, torch.tensor([[0.5, 0.0]]))   # only the violating row, 1 / B
    torch.testing.assert_close(g_with, torch.tensor([[-0.5, 0.0]]))


def test_removal_levels_follow_each_rows_order():
    rank = torch.tensor([[2, 0, 1], [0, 1, 2]])   # row 0 removes b, then c; row 1 removes a, then b
    levels = removal_levels(rank)
    assert levels.tolist() == [[[True, False, True], [False, True, True]],
                               [[True, False, False], [False, False, True]]]
    ranks = cml.random_ranks(500, 3, "cpu")
    assert (ranks.sort(1).values == torch.arange(3)).all()   # a permutation per row
    first_removed = (ranks == 0).float().mean(0)
    assert (first_removed - 1 / 3).abs().max() < 0.08           # each modality first about a third of the time


def test_row_orders_depend_on_seed_step_and_row_id_only():
    ids = torch.arange(3000)
    ranks = cml.row_ranks(ids, step=7, seed=0, n_modalities=3)
    assert (ranks.sort(1).values == torch.arange(3)).all()
    # the same rows in another batch (another shard, another order) get the same orders
    perm = torch.randperm(3000)[:50]
    assert torch.equal(cml.row_ranks(ids[perm], step=7, seed=0, n_modalities=3), ranks[perm])
    assert not torch.equal(cml.row_ranks(ids, step=8, seed=0, n_modalities=3), ranks)
    assert not torch.equal(cml.row_ranks(ids, step=7, seed=1, n_modalities=3), ranks)
    # the 6 orders about equally often
    codes = ranks[:, 0] * 3 + ranks[:, 1]
    counts = torch.bincount(codes, minlength=9)[[1, 2, 3, 5, 6, 7]].float()
    assert (counts / 3000 - 1 / 6).abs().max() < 0.03


def test_a_training_step_with_row_ids_uses_their_orders(monkeypatch):
    seen = []
    original = cml.removal_levels
    monkeypatch.setattr(cml, "removal_levels", lambda rank: seen.append(rank) or original(rank))
    kit = Kit.build("cml", modalities=THREE, dropout=0.0)
    x, y, ids = kit.batch(8, with_ids=True)
    kit.trainer.pos.step = 5
    kit.model.train()
    kit.trainer.train_one(x, y, ids)
    assert torch.equal(seen[0], cml.row_ranks(ids, 5, kit.cfg.seed, 3))


def test_additive_levels_on_known_values():
    logits = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]], [[3.0, 3.0]]])   # M=3, B=1, C=2
    absent = torch.tensor([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]])
    present = torch.tensor([[[True, False, True]], [[False, False, True]]])
    out = additive_levels(logits, absent, present)
    torch.testing.assert_close(out, torch.tensor([[[4.2, 3.2]], [[3.3, 3.3]]]))


@pytest.mark.parametrize("fusion,removal", [("concat", "features"), ("concat", "input"), ("sum", "features"),
                                            ("gated", "input"), ("gated", "features")])
def test_partial_outputs_are_forwards_of_the_reduced_input(fusion, removal):
    kit = Kit.build("cml", {"removal": removal}, modalities=THREE, fusion=fusion, dropout=0.0)
    x, y = kit.batch(6)
    present = removal_levels(EVERY_ORDER)
    out = kit.model(x)
    partial = kit.method.partial_logits(kit.model, x, out, present)
    for k in range(2):
        if removal == "input":
            expected = kit.model(zeroed(x, present[k])).fused
        else:
            features = {m: torch.where(present[k, :, i, None], z, 0.0) for i, (m, z) in enumerate(out.features.items())}
            expected = kit.model.head(features)[0]
        torch.testing.assert_close(partial[k], expected, rtol=1e-5, atol=1e-5)
    if fusion == "concat" and removal == "features":   # the published formula: fused - logits_m + b / M
        share = kit.model.fusion.linear.bias / 3
        b_first = EVERY_ORDER[:, 1] == 0   # rows 2 and 4
        torch.testing.assert_close(partial[0][b_first], (out.fused - out.logits["b"] + share)[b_first])


def test_mid_fusion_levels_are_whole_forwards_of_zero_masked_inputs():
    kit = Kit.build("cml", modalities=THREE, dropout=0.0, fusion_options={"mid_fusion": "mmtm"})
    x, y = kit.batch(5)
    present = removal_levels(EVERY_ORDER[:5])
    out = kit.model(x)
    partial = kit.method.partial_logits(kit.model, x, out, present)
    for k in range(2):
        torch.testing.assert_close(partial[k], kit.model(zeroed(x, present[k])).fused, rtol=1e-5, atol=1e-5)


def test_three_modality_step_loss_and_live_values(monkeypatch):
    rank = torch.tensor([[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]] * 3)
    monkeypatch.setattr(cml, "random_ranks", lambda n, m, device: rank[:n].to(device))
    kit = Kit.build("cml", {"lam": 0.5, "removal": "input"}, modalities=THREE, dropout=0.0)
    x, y = kit.batch(12)
    present = removal_levels(rank)
    levels = [kit.model(x).fused] + [kit.model(zeroed(x, present[k])).fused for k in range(2)]
    conf = torch.stack([confidence(v) for v in levels])
    rise = conf[1:] - conf[:-1]
    penalty = rise.clamp_min(0).mean(1).sum()
    ce = torch.stack([F.cross_entropy(v, y) for v in levels])
    expected = ce.mean() + 0.5 * penalty
    result = kit.step(x, y)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert result.live["method/penalty"].item() == pytest.approx(penalty.item(), rel=1e-5, abs=1e-7)
    assert result.live["method/violation_rate"].item() == pytest.approx((rise > 0).float().mean().item())
    assert result.live["method/ce_partial"].item() == pytest.approx(ce[1:].mean().item(), rel=1e-5)


@pytest.mark.parametrize("lam", [0.0, 2.0])
def test_two_modalities_loss_is_the_mean_ce_plus_lam_times_the_penalty(monkeypatch, lam):
    rank = torch.tensor([[0, 1], [1, 0]] * 8)   # alternate rows keep b, then a
    monkeypatch.setattr(cml, "random_ranks", lambda n, m, device: rank[:n].to(device))
    kit = Kit.build("cml", {"lam": lam}, dropout=0.0)
    x, y = kit.batch(16)
    out = kit.model(x)
    bias = kit.model.fusion.linear.bias / 2
    keep_b = torch.arange(16) % 2 == 0
    partial = torch.where(keep_b[:, None], out.logits["b"] + bias, out.logits["a"] + bias)
    conf_full, conf_one = confidence(out.fused), confidence(partial)
    penalty = (conf_one - conf_full).clamp_min(0).mean()
    assert penalty.item() > 0   # the untrained model breaks the principle on some rows
    expected = (F.cross_entropy(out.fused, y) + F.cross_entropy(partial, y)) / 2 + lam * penalty
    result = kit.step(x, y)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert result.live["method/violation_rate"].item() == pytest.approx((conf_one > conf_full).float().mean().item())
