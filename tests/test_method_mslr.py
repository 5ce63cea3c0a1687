"""mslr (modality-specific learning rates): each encoder's update is its own rate, the unimodal stage trains
every branch on its own cross-entropy, the search picks each modality's best factor, and the keep / smooth /
dynamic strategies give the factors computed by hand."""

import copy

import pytest
import torch
import torch.nn.functional as F

from engine.errors import PresetError
from engine.methods.mslr import choose_factor, dynamic_update, strategy_factors
from engine.train.nested import NestedResult

from methodkit import THREE, Kit

SGD_PLAIN = {"momentum": 0.0}   # so one step moves each parameter by exactly -lr_m * grad


# -- the rules on known values --------------------------------------------------------------------------
def test_the_search_keeps_the_best_accuracy_then_the_lowest_loss_then_the_factor_closest_to_one():
    grid = [0.3, 1.0, 3.0]
    assert choose_factor(grid, [0.5, 0.7, 0.6], [1.0, 1.0, 1.0]) == 1.0
    assert choose_factor(grid, [0.7, 0.6, 0.7], [0.9, 0.1, 0.8]) == 3.0
    assert choose_factor(grid, [0.7, 0.7, 0.7], [0.5, 0.5, 0.5]) == 1.0
    assert choose_factor([0.25, 4.0], [0.6, 0.6], [0.5, 0.5]) == 0.25  # equally far from 1: the first


def test_the_strategies_factors():
    base, ratio = [0.25, 4.0], [1.2, 0.5]
    assert strategy_factors("keep", base, ratio, 0.5) == [0.25, 4.0]
    assert strategy_factors("smooth", base, ratio, 0.5) == pytest.approx([0.5, 2.0])   # geometric mean with 1
    assert strategy_factors("smooth", base, ratio, 1.0) == [1.0, 1.0]
    assert strategy_factors("dynamic", base, ratio, 0.5) == pytest.approx([0.3, 2.0])


def test_the_dynamic_ratio_compares_with_the_mean_of_the_last_epochs():
    memory, ratios = [], []
    for acc in (0.4, 0.6, 0.6, 0.3):
        memory, r = dynamic_update(memory, acc, 2)
        ratios.append(r)
    assert ratios == pytest.approx([1.0, 1.0, 0.6 / 0.5, 0.3 / 0.6])
    assert memory == [0.6, 0.3]
    assert dynamic_update([0.0, 0.0], 0.5, 2) == ([0.0, 0.5], 1.0)   # a mean of 0 changes nothing


# -- the step ---------------------------------------------------------------------------------------------
def fused_grads(kit, x, y):
    out = kit.model(x)
    params = {k: p for k, p in kit.params().items() if not k.startswith("method.")}
    grads = torch.autograd.grad(F.cross_entropy(out.fused, y), list(params.values()))
    return dict(zip(params, grads))


def test_each_encoder_moves_by_its_own_learning_rate_under_sgd():
    kit = Kit.build("mslr", {"lr_factors": [0.5, 2.0], "unimodal_epochs": 0}, optimizer="sgd", lr=0.1,
                    dropout=0.0, train=SGD_PLAIN)
    x, y = kit.batch(16)
    before, grads = kit.snapshot(), fused_grads(kit, x, y)
    result = kit.step(x, y)
    rate = {"encoders.a.": 0.05, "encoders.b.": 0.2, "fusion.": 0.1}
    for name, g in grads.items():
        lr = next(v for prefix, v in rate.items() if name.startswith(prefix))
        torch.testing.assert_close(kit.snapshot()[name], before[name] - lr * g, rtol=1e-5, atol=1e-7)
    assert result.live["coef/a"].item() == 0.5 and result.live["method/lr_b"].item() == pytest.approx(0.2)
    again = kit.step(x, y)   # scaled for one step at a time: the rates do not compound
    assert again.live["method/lr_a"].item() == pytest.approx(0.05) and kit.optimizer.param_groups[0]["lr"] == 0.05


def test_the_rates_act_under_adam_where_a_gradient_factor_would_not():
    kit = Kit.build("mslr", {"lr_factors": [0.25, 1.0], "unimodal_epochs": 0}, optimizer="adam", lr=0.01,
                    dropout=0.0)
    x, y = kit.batch(16)
    before = kit.snapshot()
    kit.step(x, y)
    after = kit.snapshot()
    step = {m: max((after[k] - before[k]).abs().max().item() for k in kit.params(m)) for m in ("a", "b")}
    assert step["a"] / step["b"] == pytest.approx(0.25, rel=1e-3)   # Adam's first step: lr * sign(grad)


@pytest.mark.parametrize("fusion", ["concat", "film"])
def test_the_unimodal_stage_trains_each_branch_on_its_own_cross_entropy_then_the_fusion_stage_on_the_fused(fusion):
    kit = Kit.build("mslr", {"lr_factors": [1.0, 1.0], "unimodal_epochs": 1}, fusion=fusion, dropout=0.0)
    x, y = kit.batch(16)
    out = kit.model(x)
    unimodal = sum(F.cross_entropy(out.logits[m], y) for m in ("a", "b"))
    before = kit.snapshot()
    result = kit.step(x, y, epoch=0)
    assert result.loss.item() == pytest.approx(unimodal.item(), rel=1e-6)
    assert "method/head_ce" not in result.live
    if fusion == "film":   # FiLM's fused path is outside every modality's logits: no update in stage 1
        fused_only = {k for k in kit.params("fusion") if not k.startswith("fusion.heads.")}
        assert fused_only and not (kit.changed(before) & fused_only)
    out = kit.model(x)
    fused = F.cross_entropy(out.fused, y)
    result = kit.step(x, y, epoch=1)
    assert result.loss.item() == pytest.approx(fused.item(), rel=1e-6)
    assert ("method/head_ce" in result.live) == (fusion == "film")


# -- the search --------------------------------------------------------------------------------------------
def test_the_search_gives_each_modality_the_factor_its_copy_scored_best_with(monkeypatch):
    kit = Kit.build("mslr", {"lr_grid": [0.5, 1.0, 2.0], "search_epochs": 3}, dropout=0.0)
    scores = {0.5: (0.6, 0.5), 1.0: (0.7, 0.5), 2.0: (0.5, 0.4)}   # factor -> (val acc a, val acc b)
    seen = []

    def fake_nested(model, method, data, epochs, seed):
        c = method.base[0]
        seen.append((c, method.base, [method.stage_of(e) for e in range(epochs)], epochs, model is kit.model))
        acc_a, acc_b = scores[c]
        return NestedResult({}, {"val/acc/a": acc_a, "val/loss/a": 1.0, "val/acc/b": acc_b, "val/loss/b": c})

    monkeypatch.setattr(kit.method.ctx, "train_nested", fake_nested)
    events = kit.method.on_epoch_start(0, kit.model)
    assert [s[0] for s in seen] == [0.5, 1.0, 2.0]
    assert all(base == [c, c] and stages == ["unimodal"] * 3 and epochs == 3 and not same
               for c, base, stages, epochs, same in seen)
    assert kit.method.base == [1.0, 0.5]        # b: 0.5 and 1.0 tie on accuracy, 0.5 has the lower loss
    search = events[0]
    assert search["name"] == "lr_search" and search["factors"] == {"a": 1.0, "b": 0.5}
    assert events[1] == {"name": "stage", "stage": "unimodal", "index": 0}


def test_a_real_search_leaves_the_runs_model_as_it_was():
    kit = Kit.build("mslr", {"lr_grid": [0.5, 2.0], "search_epochs": 1})
    before = kit.snapshot()
    kit.method.on_epoch_start(0, kit.model)
    assert not kit.changed(before)
    assert all(c in (0.5, 2.0) for c in kit.method.base)


# -- the dynamic rule over epochs ---------------------------------------------------------------------------
def test_the_dynamic_rate_follows_the_validation_accuracy_of_the_fusion_epochs():
    kit = Kit.build("mslr", {"strategy": "dynamic", "lr_factors": [2.0, 1.0], "unimodal_epochs": 1, "memory": 2})
    method = kit.method
    val = [{"val/acc/a": a, "val/acc/b": b} for a, b in ((0.9, 0.9), (0.4, 0.5), (0.6, 0.5), (0.6, 0.25))]
    for epoch, v in enumerate(val):
        method.on_epoch_end(epoch, kit.model, v)   # epoch 0 is unimodal: not remembered
    assert method.memory == [[0.6, 0.6], [0.5, 0.25]]
    assert method.ratio == pytest.approx([0.6 / 0.5, 0.25 / 0.5])
    assert method.factors(0) == [2.0, 1.0]                         # the unimodal stage keeps c_m
    assert method.factors(4) == pytest.approx([2.4, 0.5])
    values = method.epoch_values()
    assert values["score/b"] == 0.25 and values["method/stage"] == 1.0
    restored = type(method)(method.cfg, method.ctx)
    restored.load_state_dict(copy.deepcopy(method.state_dict()))
    assert restored.factors(4) == method.factors(4) and restored._coef == pytest.approx([2.4, 0.5])


# -- whole runs with two and three modalities ---------------------------------------------------------------
@pytest.mark.parametrize("mods", [("a", "b"), THREE])
def test_runs_with_two_and_three_modalities_apply_one_rate_per_modality(mods):
    kit = Kit.build("mslr", {"strategy": "smooth", "lr_grid": [0.5, 2.0], "search_epochs": 1, "unimodal_epochs": 1},
                    modalities=mods, epochs=2)
    kit.fit()
    base = kit.method.base
    assert len(base) == len(mods) and all(c in (0.5, 2.0) for c in base)
    first, last = kit.lives[0], kit.lives[-1]
    for i, m in enumerate(mods):
        assert first[f"coef/{m}"].item() == base[i]                          # unimodal stage: c_m
        assert last[f"coef/{m}"].item() == pytest.approx(base[i] ** 0.5)     # fusion stage, smoothed
    names = [e[0] for e in kit.recorder.events]
    assert names[:3] == ["lr_search", "stage", "stage"]


def test_factors_for_another_number_of_modalities_are_refused():
    with pytest.raises(PresetError, match="lr_factors"):
        Kit.build("mslr", {"lr_factors": [1.0, 2.0]}, modalities=THREE)
