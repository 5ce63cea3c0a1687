"""multiloss: the loss is the weighted sum of the fused and per-modality cross-entropies, and a
modality with weight 0 learns from the fused loss only."""

import pytest
import torch
import torch.nn.functional as F

from methodkit import Kit


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_loss_is_the_weighted_sum_of_the_cross_entropies(fusion):
    kit = Kit.build("multiloss", {"weights": [0.5, 2.0], "fused_weight": 1.5}, fusion=fusion, dropout=0.0)
    x, y = kit.batch(12)
    out = kit.model(x)
    expected = (1.5 * F.cross_entropy(out.fused, y) + 0.5 * F.cross_entropy(out.logits["a"], y)
                + 2.0 * F.cross_entropy(out.logits["b"], y))
    result = kit.step(x, y)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert result.live["coef/b"].item() == 2.0 and "method/head_ce" not in result.live


def test_a_modality_with_weight_zero_learns_from_the_fused_loss_only():
    kit = Kit.build("multiloss", {"weights": [1.0, 0.0]}, dropout=0.0)
    x, y = kit.batch(12)
    encoder_b = list(kit.params("b").values())
    out = kit.model(x)
    fused_only = torch.autograd.grad(F.cross_entropy(out.fused, y), encoder_b, retain_graph=True)
    with_own = torch.autograd.grad(F.cross_entropy(out.logits["b"], y), encoder_b, retain_graph=True)
    loss, _ = kit.method.loss(out, y, kit.trainer._step_context(0))
    grads = torch.autograd.grad(loss, encoder_b)
    for g, f, own in zip(grads, fused_only, with_own):
        torch.testing.assert_close(g, f)
        assert not torch.allclose(g, f + own)
