"""arm: the histogram NMI / CNMI on hand-made discrete cases, the contributions and feature weights from
given values, and the training step: the features that reach the fusion head are the encoder's times
exactly coef_m, computed from an unscaled pass; evaluation uses the epoch's mean coefficient."""

import math

import numpy as np
import pytest
import torch

from engine.methods.arm import (arm_estimates, contributions, feature_weights, histogram_ncmi, histogram_nmi,
                                joint_counts, quantise)
from methodkit import THREE, Kit


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def entropy_of(probabilities):
    return -sum(p * math.log(p) for p in probabilities if p > 0)


# -- the estimators -------------------------------------------------------------------------------------------
def test_nmi_is_0_for_independent_and_1_for_identical_variables():
    x = t([[0, 0, 1, 1], [0, 0, 1, 1], [3.0, -1.0, 2.5, 7.0]])
    y = t([[0, 1, 0, 1], [0, 0, 1, 1], [3.0, -1.0, 2.5, 7.0]])
    assert histogram_nmi(x, y, bins=2).tolist() == pytest.approx([0.0, 1.0, 1.0], abs=1e-12)
    assert histogram_nmi(x[2:], y[2:], bins=30).item() == pytest.approx(1.0)


def test_nmi_of_a_partly_dependent_pair_is_the_hand_computed_value():
    # joint: (0,0) x2, (0,1), (1,1) -> H(X) = H(3/4, 1/4), H(Y) = log 2, H(X,Y) = H(1/2, 1/4, 1/4)
    hx, hy, hxy = entropy_of([0.75, 0.25]), math.log(2), entropy_of([0.5, 0.25, 0.25])
    expected = 2 * (hx + hy - hxy) / (hx + hy)
    assert expected == pytest.approx(0.3438, abs=1e-4)
    got = histogram_nmi(t([[0, 0, 0, 1]]), t([[0, 0, 1, 1]]), bins=2)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_cnmi_conditions_on_the_third_variable():
    x, z = t([[0, 0, 1, 1]]), t([[0, 1, 0, 1]])
    xor = (x != z).double()
    # y = x XOR z: independent of x alone, determined by x given z
    assert histogram_nmi(x, xor, 2).item() == pytest.approx(0.0, abs=1e-12)
    assert histogram_ncmi(x, xor, z, 2).item() == pytest.approx(1.0)
    # x = y = z: fully dependent, but nothing is left once z is known
    assert histogram_nmi(x, x, 2).item() == pytest.approx(1.0)
    assert histogram_ncmi(x, x, x, 2).item() == 0.0
    # z independent of the pair: the conditional value is the unconditional one
    x8, y8, z8 = t([[0, 0, 0, 1] * 2]), t([[0, 0, 1, 1] * 2]), t([[0] * 4 + [1] * 4])
    assert histogram_ncmi(x8, y8, z8, 2).item() == pytest.approx(histogram_nmi(x8, y8, 2).item(), rel=1e-12)


def test_the_rows_of_one_call_are_independent_estimates():
    g = torch.Generator().manual_seed(0)
    x, y, z = (torch.randn(3, 200, generator=g) for _ in range(3))
    y = y + x
    together = histogram_ncmi(x, y, z, 3)
    alone = torch.cat([histogram_ncmi(x[k:k + 1], y[k:k + 1], z[k:k + 1], 3) for k in range(3)])
    torch.testing.assert_close(together, alone, rtol=0, atol=0)
    assert ((together > 0) & (together < 1)).all()


def test_the_bins_are_numpys_histogram_bins():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=500), rng.normal(size=500) ** 3
    counts = joint_counts([quantise(torch.tensor(x)[None], 30), quantise(torch.tensor(y)[None], 30)], 30)[0]
    expected, _, _ = np.histogram2d(x, y, bins=30)
    assert np.array_equal(counts.numpy(), expected)
    assert quantise(t([[5.0, 5.0, 5.0]]), 30).tolist() == [[0, 0, 0]]   # a constant variable: one bin


# -- contributions and weights ------------------------------------------------------------------------------
def test_contribution_is_confidence_weighted_nmi_and_unique_information():
    pcmi = contributions(t([0.5, 0.2]), t([0.1, 0.3]), torch.tensor(0.8, dtype=torch.float64), t([0.6, 0.4]))
    assert pcmi.tolist() == pytest.approx([0.8 * 0.5 + 0.6 * 0.4, 0.8 * 0.2 + 0.4 * (-0.1)])


def test_weights_are_the_others_mean_contribution_over_the_own():
    assert feature_weights(t([0.2, 0.4]), 1e-3, 10.0).tolist() == pytest.approx([2.0, 0.5])
    assert feature_weights(t([0.2, 0.4, 0.6]), 1e-3, 10.0).tolist() == pytest.approx([2.5, 1.0, 0.5])
    # a non-positive contribution is floored, and the weights stay in [1/max_coef, max_coef]
    assert feature_weights(t([-0.1, 0.5]), 1e-3, 10.0).tolist() == pytest.approx([10.0, 0.1])
    assert feature_weights(t([0.3, 0.3, 0.3]), 1e-3, 10.0).tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_estimates_from_logits():
    # two modalities, C = 2, two rows; fused = a + b; labels 0, 1
    a = t([[2.0, 0.0], [0.0, 1.0]])
    b = t([[1.0, 0.0], [0.0, 3.0]])
    stacked = torch.stack([a + b, a, b], dim=1)
    est = arm_estimates(stacked, torch.tensor([0, 1]), ARMDefaults())
    flat = stacked.transpose(0, 1).reshape(3, -1)
    nmi = histogram_nmi(flat[1:], flat[:1].expand(2, -1), 30)
    cnmi = histogram_ncmi(flat[1:], flat[:1].expand(2, -1), flat[[2, 1]], 2)
    p = torch.softmax(stacked, -1)[torch.arange(2), :, torch.tensor([0, 1])].mean(0)
    pcmi = p[0] * nmi + p[1:] * (nmi - cnmi)
    torch.testing.assert_close(est.nmi, nmi)
    torch.testing.assert_close(est.cnmi, cnmi)
    torch.testing.assert_close(est.pcmi, pcmi.double())
    ratio = (pcmi[1] / pcmi[0]).item()
    assert est.coef.tolist() == pytest.approx([ratio, 1 / ratio], rel=1e-6)


class ARMDefaults:
    bins, cmi_bins, min_contribution, max_coef = 30, 2, 1e-3, 10.0


# -- the training step (3 modalities) ------------------------------------------------------------------------
def capture_fusion_inputs(kit):
    calls = []
    handle = kit.model.fusion.register_forward_pre_hook(
        lambda module, args: calls.append({m: z.detach().clone() for m, z in args[0].items()}))
    return calls, handle


def test_the_features_reaching_the_fusion_are_scaled_by_exactly_coef():
    kit = Kit.build("arm", modalities=THREE, dropout=0.0)
    x, y = kit.batch(24)
    with torch.no_grad():
        z = kit.model.encode(x)
        fused, logits = kit.model.head(z)
    expected = arm_estimates(torch.stack([fused, *(logits[m] for m in THREE)], dim=1), y, kit.method.cfg)
    calls, handle = capture_fusion_inputs(kit)
    result = kit.step(x, y)
    handle.remove()
    assert len(calls) == 2   # the unscaled estimation pass, then the scaled training pass
    coef = torch.stack([result.live[f"coef/{m}"] for m in THREE])
    torch.testing.assert_close(coef, expected.coef)
    assert not torch.allclose(coef, torch.ones(3))
    for i, m in enumerate(THREE):
        assert torch.equal(calls[0][m], z[m])
        assert torch.equal(calls[1][m], z[m] * coef[i])
        assert result.live[f"score/{m}"].item() == pytest.approx(expected.nmi[i].item())
        assert result.live[f"method/cnmi_{m}"].item() == pytest.approx(expected.cnmi[i].item())
    assert torch.equal(result.output.features["a"], z["a"])   # the output keeps the encoder's features


def test_evaluation_uses_the_epochs_mean_coefficient():
    kit = Kit.build("arm", modalities=THREE, dropout=0.0)
    method = kit.method
    assert torch.equal(method.evaluation_weights(), torch.ones(3))   # before any training
    coefs = []
    for start in (0, 16, 32):
        x, y = kit.batch(16, start=start)
        live = kit.step(x, y).live
        coefs.append(torch.stack([live[f"coef/{m}"] for m in THREE]))
    mean = torch.stack(coefs).double().mean(0).float()
    torch.testing.assert_close(method.evaluation_weights(), mean)
    x, _ = kit.batch(8, split="val")
    kit.model.eval()
    with torch.no_grad():
        out = method.predict(kit.model, x)
        z = kit.model.encode(x)
        fused, _ = kit.model.head({m: z[m] * mean[i] for i, m in enumerate(THREE)})
    torch.testing.assert_close(out.fused, fused)
    # a new epoch starts from the last epoch's mean until its first step
    method.on_epoch_start(1, kit.model)
    torch.testing.assert_close(method.evaluation_weights(), mean)
    state = method.state_dict()
    assert state["coef_count"].item() == 0 and torch.allclose(state["coef_previous"].float(), mean)


def test_state_round_trip():
    kit = Kit.build("arm", dropout=0.0)
    kit.step(*kit.batch(16))
    other = Kit.build("arm", dropout=0.0)
    other.method.load_state_dict(kit.method.state_dict())
    torch.testing.assert_close(other.method.evaluation_weights(), kit.method.evaluation_weights())


def test_one_modality_is_refused():
    with pytest.raises(Exception, match="at least two"):
        Kit.build("arm", modalities=("a",))


def test_non_finite_logits_give_no_reweighting_instead_of_a_crash():
    stacked = torch.randn(8, 3, 4)
    stacked[0, 1, 2] = float("nan")
    stacked[1, 2, 0] = float("inf")
    est = arm_estimates(stacked, torch.zeros(8, dtype=torch.long), ARMDefaults())
    assert torch.isfinite(est.coef).all()
    assert feature_weights(t([float("nan"), 0.5]), 1e-3, 10.0).tolist() == [1.0, 1.0]
