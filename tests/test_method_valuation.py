"""valuation: per-sample modality Shapley values (value |S| * correct) from one stacked coalition pass, and
the epoch plan that duplicates samples with the other modalities dropped where a modality contributes little."""

import math
from itertools import product

import pytest
import torch
from torch import nn

from engine.methods.valuation import (ValuationConfig, coalition_values, copies_per_modality,
                                      modality_level_extra, nonempty_coalitions, sample_level_extra,
                                      sample_shapley, valuation_matrix)
from methodkit import THREE, TWO, Kit


def shapley_by_definition(value, mods):
    """phi_m = sum_{S not containing m} |S|! (M - |S| - 1)! / M! (v(S + m) - v(S)), ``value(frozenset)``."""
    n = len(mods)
    phi = []
    for m in mods:
        others = [o for o in mods if o != m]
        total = 0.0
        for bits in product([0, 1], repeat=n - 1):
            s = frozenset(o for o, b in zip(others, bits) if b)
            w = math.factorial(len(s)) * math.factorial(n - len(s) - 1) / math.factorial(n)
            total += w * (value(s | {m}) - value(s))
        phi.append(total)
    return phi


# -- the Shapley values ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 4])
def test_additive_values_give_each_modality_its_own_part(n):
    torch.manual_seed(0)
    own = torch.randn(5, n)                                   # (B, M): each modality's own part of the value
    keep = nonempty_coalitions(n)
    values = keep.float() @ own.t()                           # v(S) = sum of the parts in S, (K, B)
    phi = sample_shapley(valuation_matrix(n), values)
    torch.testing.assert_close(phi, own)


def test_two_modalities_give_the_release_formula():
    keep = nonempty_coalitions(2)                             # {a}, {b}, {a, b}
    for a_ok, b_ok, all_ok in product([False, True], repeat=3):
        correct = torch.tensor([[a_ok], [b_ok], [all_ok]])
        phi = sample_shapley(valuation_matrix(2), coalition_values(correct, keep))[0]
        v_a, v_v, v_all = float(a_ok), float(b_ok), 2.0 * all_ok
        assert phi.tolist() == [(v_a + v_all - v_v) / 2, (v_v + v_all - v_a) / 2]


class AdditiveModel(nn.Module):
    """Identity encoders and a head summing the features: logits = sum of the present modalities' inputs."""
    mid_fusion_stages = []

    def encode(self, x):
        return dict(x)

    def head(self, features):
        return sum(features.values()), dict(features)


def test_phi_of_a_hand_built_model_with_three_modalities():
    kit = Kit.build("valuation", modalities=THREE)
    # sample 0 (class 1): a alone right, b and c alone wrong; ab, ac, abc right, bc wrong
    # sample 1 (class 1): a alone and ac right; b, c, ab, bc, abc wrong (the full model is wrong)
    x = {"a": torch.tensor([[0., 2., 0.], [0., 1., 0.]]), "b": torch.tensor([[0., 0., 1.], [0., 0., 2.]]),
         "c": torch.tensor([[0., 0., .5], [0., 0., 0.]])}
    y = torch.tensor([1, 1])
    phi = kit.method.coalition_phi(AdditiveModel(), x, y)
    # sample 0: v = a 1, b 0, c 0, ab 2, ac 2, bc 0, abc 3 -> phi_a = 1/3 + 2/6 + 2/6 + 3/3, phi_b = 1/6 + 1/3
    # sample 1: v = a 1, ac 2, others 0 -> phi_a = 1/3 + 2/6, phi_b = -1/6 - 2/3, phi_c = 1/6 (sum: v_all = 0)
    torch.testing.assert_close(phi, torch.tensor([[2.0, 0.5, 0.5], [2 / 3, -5 / 6, 1 / 6]]))


@pytest.mark.parametrize("mods, fusion", [(TWO, "concat"), (THREE, "concat"), (TWO, "gated"), (THREE, "sum")])
def test_valuation_equals_zero_masked_forwards_of_the_real_model(mods, fusion):
    kit = Kit.build("valuation", modalities=mods, fusion=fusion)
    kit.model.train()
    phi = kit.method.valuate(kit.model)
    assert kit.model.training                                      # the mode is restored
    n = kit.data.split_size("train")
    x, y = kit.batch(n)
    kit.model.eval()
    correct = {}
    with torch.no_grad():
        for bits in product([0, 1], repeat=len(mods)):
            s = frozenset(m for m, b in zip(mods, bits) if b)
            masked = {m: x[m] if m in s else torch.zeros_like(x[m]) for m in mods}
            correct[s] = kit.model(masked).fused.argmax(-1) == y
    want = torch.tensor([shapley_by_definition(lambda s: len(s) * float(correct[s][i]), mods) for i in range(n)])
    torch.testing.assert_close(phi, want.float())
    torch.testing.assert_close(phi.sum(1), len(mods) * correct[frozenset(mods)].float())   # efficiency


# -- the plan ---------------------------------------------------------------------------------------------
def test_copies_follow_the_release_thresholds():
    phi = torch.tensor([[1.5, 1.0, 0.9, 0.5, 0.4, 0.0, -0.1, -0.5]])
    assert copies_per_modality(phi, [0.9, 0.4, -0.1]).tolist() == [[0, 0, 0, 1, 1, 2, 2, 3]]


def plan_of(kit, phi, epoch):
    """The method's plan for ``epoch`` when the valuation gives ``phi``."""
    kit.method.valuate = lambda model: phi
    return kit.method.epoch_plan(epoch, kit.model)


def test_sample_level_plan_on_known_values():
    kit = Kit.build("valuation", {"warmup_epochs": 2})
    n = kit.data.split_size("train")
    phi = torch.ones(n, 2)                                     # fair share: no copies
    phi[0] = torch.tensor([1.5, 0.5])                          # b low: one copy keeping b
    phi[1] = torch.tensor([0.0, 0.0])                          # both wrong alone, all wrong: two copies each
    phi[2] = torch.tensor([-0.5, 1.5])                         # a low: three copies keeping a
    assert plan_of(kit, phi, 1) is None                        # warm-up: the ordinary epoch
    live = kit.method.loss(kit.model(kit.batch(4)[0]), kit.batch(4)[1], None)[1]
    assert live["method/duplicated"].item() == 0 and live["coef/b"].item() == 1.0
    torch.testing.assert_close(live["score/a"], phi[:, 0].mean())
    plan = plan_of(kit, phi, 2)
    extra_rows = [0, 1, 1, 1, 1, 2, 2, 2]
    extra_keep = [[False, True], [True, False], [True, False], [False, True], [False, True]] + [[True, False]] * 3
    assert plan.rows.tolist() == list(range(n)) + extra_rows and plan.shuffle
    assert plan.masks.tolist() == [[True, True]] * n + extra_keep
    live = kit.method.loss(kit.model(kit.batch(4)[0]), kit.batch(4)[1], None)[1]
    assert [live[k].item() for k in ("method/duplicated", "method/duplicated_a", "method/duplicated_b")] == [8, 5, 3]
    torch.testing.assert_close(live["coef/a"], torch.tensor((n + 5) / n))   # rows in which a is present, over N


def test_three_modalities_keep_only_the_low_modality_in_each_copy():
    kit = Kit.build("valuation", {"warmup_epochs": 0}, modalities=THREE)
    n = kit.data.split_size("train")
    phi = torch.ones(n, 3)
    phi[4] = torch.tensor([2.0, 0.5, 0.5])                     # b and c low: one copy each, alone
    phi[7] = torch.tensor([2 / 3, -5 / 6, 1 / 6])              # a: 1 copy, b: 3, c: 2
    plan = plan_of(kit, phi, 0)
    assert plan.rows[n:].tolist() == [4, 4, 7, 7, 7, 7, 7, 7]
    assert plan.masks[n:].tolist() == [[False, True, False], [False, False, True], [True, False, False]] \
        + [[False, True, False]] * 3 + [[False, False, True]] * 2
    assert plan.masks[n:].sum(1).eq(1).all()                   # every copy keeps exactly one modality


def test_modality_level_duplicates_random_rows_for_the_weakest_modality():
    phi = torch.tensor([[1.5, 0.5]]).repeat(300, 1)            # gaps -0.5 and 0.5: p = 2/3 * 1.0
    rows, keep = modality_level_extra(phi, 0.2, 1.0, torch.Generator().manual_seed(0))
    assert rows.numel() == int(2 / 3 * 300) and keep.tolist() == [[False, True]] * 200
    assert rows.min() >= 0 and rows.max() < 300 and rows.unique().numel() > 100
    rows3, keep3 = modality_level_extra(torch.tensor([[1.0, 1.2, 0.8]]).repeat(30, 1), 0.5, 3.0,
                                        torch.Generator().manual_seed(0))
    assert rows3.numel() == int(3.0 * 2 / 3 * 0.4 * 30) and keep3.tolist() == [[False, False, True]] * rows3.numel()
    # in a run the draws are a function of (seed, epoch)
    kit = Kit.build("valuation", {"warmup_epochs": 0, "level": "modality", "part_ratio": 0.5})
    n = kit.data.split_size("train")
    phi = torch.rand(n, 2, generator=torch.Generator().manual_seed(1)) + torch.tensor([0.5, 0.0])
    first, again, other = plan_of(kit, phi, 3), plan_of(kit, phi, 3), plan_of(kit, phi, 4)
    assert torch.equal(first.rows, again.rows) and not torch.equal(first.rows, other.rows)
    assert first.masks[n:].tolist() == [[False, True]] * (first.rows.numel() - n) and first.rows.numel() > n


def test_thresholds_must_decrease():
    with pytest.raises(ValueError, match="strictly decreasing"):
        ValuationConfig(thresholds=[0.4, 0.9])


# -- the run ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mods", [TWO, THREE])
def test_a_run_trains_on_the_plan_with_the_dropped_inputs_zeroed(mods):
    kit = Kit.build("valuation", {"warmup_epochs": 1}, modalities=mods, epochs=2)
    n = kit.data.split_size("train")
    seen = []
    original = kit.method.train_step

    def spy(x, y, step):
        seen.append((step.epoch, {m: t.clone() for m, t in x.items()}, step.ids, step.masks))
        return original(x, y, step)

    kit.method.train_step = spy
    kit.fit()
    warm = [s for s in seen if s[0] == 0]
    assert sum(s[2].numel() for s in warm) == n and all(s[3] is None for s in warm)
    planned = [s for s in seen if s[0] == 1]
    added = kit.method.added
    rows = torch.cat([s[2] for s in planned])
    assert rows.numel() == n + int(added[0]) > n                          # the epoch is longer by the copies
    assert torch.equal(rows.bincount(minlength=n)[:n] >= 1, torch.ones(n, dtype=torch.bool))
    masks = {m: torch.cat([s[3][m] for s in planned]) for m in mods}
    only = torch.stack([masks[m] for m in mods], 1)
    assert (only.sum(1) == 1).sum() == int(added[0])                      # each copy keeps one modality
    for i, m in enumerate(mods):
        assert int(added[i + 1]) == int((only.sum(1) == 1).logical_and(only[:, i]).sum())
        x_m = torch.cat([s[1][m] for s in planned])
        dropped = ~masks[m]
        assert int(dropped.sum()) == int(added[0] - added[i + 1])            # the copies keeping another
        assert x_m[dropped].abs().sum() == 0                              # a dropped input is zero in the step
        kept = x_m[masks[m]]
        assert kept.abs().sum(tuple(range(1, kept.dim()))).gt(0).all()   # a kept one is the data
    # live values: the mean phi of the valuation and the copies, as 0-d device tensors
    last = kit.lives[-1]
    assert last["method/duplicated"].item() == added[0].item() and last["score/a"].dim() == 0


def test_state_dict_round_trip_keeps_the_live_values():
    kit = Kit.build("valuation", {"warmup_epochs": 0})
    phi = torch.full((kit.data.split_size("train"), 2), 0.25)
    plan_of(kit, phi, 0)
    state = kit.method.state_dict()
    fresh = type(kit.method)(kit.method.cfg, kit.method.ctx)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.scores, kit.method.scores) and torch.equal(fresh.added, kit.method.added)
    assert fresh.added[0].item() == 2 * 2 * phi.shape[0]
