"""MMCosine: the logits are s * cos(z_m, w_m,c) summed over the modalities (features and class weights
normalised), invariant to the features' norm; the cosine head replaces the model's fusion head (which is
not optimised), the live scores are the mean true-class cosine logits, with 2 and 3 modalities."""

import math

import pytest
import torch
import torch.nn.functional as F

from engine.methods.mmcosine import CosineHead

from methodkit import THREE, Kit


def hand_head(scale=10.0):
    head = CosineHead({"a": 2, "b": 3}, n_classes=2, scale=scale, seed=0)
    with torch.no_grad():
        head.weight["a"].copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))            # rows: (1, 0), (0, 1) normalised
        head.weight["b"].copy_(torch.tensor([[0.0, 0.0, 5.0], [3.0, 4.0, 0.0]]))  # (0, 0, 1), (0.6, 0.8, 0)
    return head


def test_the_logits_are_the_scaled_cosines_of_normalised_features_and_class_weights():
    head = hand_head()
    z = {"a": torch.tensor([[3.0, 4.0]]), "b": torch.tensor([[0.0, 2.0, 2.0]])}   # |z_a| = 5, |z_b| = 2 sqrt 2
    fused, logits = head(z)
    assert logits["a"][0].tolist() == pytest.approx([10 * 0.6, 10 * 0.8])
    r = 1 / math.sqrt(2)                                                          # z_b / |z_b| = (0, r, r)
    assert logits["b"][0].tolist() == pytest.approx([10 * r, 10 * 0.8 * r])
    assert fused[0].tolist() == pytest.approx([6 + 10 * r, 8 + 8 * r])
    _, half = hand_head(scale=5.0)(z)                                             # linear in s
    assert half["b"][0].tolist() == pytest.approx([5 * r, 4 * r])


def test_the_logits_do_not_depend_on_the_norm_of_the_features_or_of_the_weights():
    head = hand_head()
    z = {"a": torch.randn(4, 2), "b": torch.randn(4, 3)}
    fused, logits = head(z)
    for c in (1e-3, 0.5, 7.0, 1e4):
        scaled_fused, scaled = head({m: c * v for m, v in z.items()})
        torch.testing.assert_close(scaled_fused, fused)
        torch.testing.assert_close(scaled["a"], logits["a"])
    with torch.no_grad():
        head.weight["a"].mul_(30.0)
    torch.testing.assert_close(head(z)[0], fused)
    assert fused.abs().max() <= 2 * 10 + 1e-5                                     # each modality within [-s, s]
    # any leading shape (the monitors stack permuted copies of the batch)
    stacked, _ = head({m: torch.stack([v, 2 * v]) for m, v in z.items()})
    torch.testing.assert_close(stacked, torch.stack([fused, fused]))


def test_a_step_with_three_modalities_trains_the_cosine_head_and_the_encoders_not_the_fusion_head():
    kit = Kit.build("mmcosine", {"scale": 12.0}, modalities=THREE, dropout=0.0)
    x, y = kit.batch(20)
    features = kit.model.encode(x)
    weights = {m: w.detach().clone() for m, w in kit.method.modules["cosine"].weight.items()}
    cos = {m: F.normalize(features[m], dim=-1) @ F.normalize(weights[m], dim=-1).T for m in THREE}
    expected = F.cross_entropy(12.0 * sum(cos.values()), y)
    before = kit.snapshot()
    result, grads = kit.step_grads(x, y)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for m in THREE:
        assert result.live[f"score/{m}"].item() == pytest.approx((12.0 * cos[m]).gather(1, y[:, None]).mean().item(),
                                                                  rel=1e-5)
        assert result.live[f"coef/{m}"].item() == 12.0
        assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith(f"encoders.{m}."))
        assert grads[f"method.cosine.weight.{m}"].abs().sum() > 0
    changed = kit.changed(before)
    assert not any(n.startswith("fusion.") for n in changed), "the model's fusion head is not MMCosine's"
    assert {f"method.cosine.weight.{m}" for m in THREE} <= changed
    optimised = {id(p) for g in kit.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in optimised for p in kit.params("fusion").values())
    # evaluation predicts with the cosine head: fused = the sum of the per-modality cosine logits
    out = kit.method.predict(kit.model, x)
    torch.testing.assert_close(out.fused, sum(out.logits.values()))
    assert out.fused.abs().max() <= 3 * 12.0 + 1e-4


@pytest.mark.parametrize("fusion", ["sum", "gated"])
def test_any_fusion_trains_the_same_cosine_head(fusion):
    kit = Kit.build("mmcosine", fusion=fusion, dropout=0.0)
    x, y = kit.batch(12)
    out = kit.method.forward(kit.model, x)
    head = kit.method.modules["cosine"]
    torch.testing.assert_close(out.fused, head(kit.model.encode(x))[0])
    result = kit.step(x, y)
    assert "method/head_ce" not in result.live
