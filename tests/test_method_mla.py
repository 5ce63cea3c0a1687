"""mla: the OWM projector's recursive update and its orthogonality, which parameters each alternating
step moves, the entropy-weighted test-time fusion, live values and state, with two and three modalities."""

import math

import pytest
import torch
import torch.nn.functional as F

from engine.errors import PresetError
from engine.methods.mla import alpha_at, entropy, entropy_weights, owm_update, project
from methodkit import THREE, Kit, hand_step

PLAIN_SGD = {"momentum": 0.0, "weight_decay": 0.0}   # an update is then exactly -lr * (projected) gradient


# -- the projector ----------------------------------------------------------------------------------------
def test_owm_update_on_a_hand_case():
    """P = I, h = (1, 1, 0), alpha = 0.5: k = h, h^T k = 2, P = I - h h^T / 2.5."""
    P = owm_update(torch.eye(3, dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), 0.5)
    want = torch.tensor([[0.6, -0.4, 0.0], [-0.4, 0.6, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(P, want)
    # the latest input keeps only alpha / (alpha + h^T h) of itself: P h = 0.2 h
    torch.testing.assert_close(P @ torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64),
                               torch.tensor([0.2, 0.2, 0.0], dtype=torch.float64))


def test_recursive_updates_equal_the_least_squares_closed_form():
    """P_0 = I and the recursion give P = alpha (alpha I + sum_t h_t h_t^T)^-1, symmetric."""
    gen = torch.Generator().manual_seed(0)
    hs = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    alpha, P = 0.3, torch.eye(4, dtype=torch.float64)
    for h in hs:
        P = owm_update(P, h, alpha)
    want = alpha * torch.linalg.inv(alpha * torch.eye(4, dtype=torch.float64) + hs.T @ hs)
    torch.testing.assert_close(P, want)
    assert torch.equal(P, P.T)


def test_the_projected_gradient_is_orthogonal_to_the_stored_inputs():
    """After updates with h_1, h_2 (small alpha), the projected update G P leaves the outputs on h_1, h_2
    unchanged and acts fully on a direction orthogonal to both."""
    h1 = torch.tensor([1.0, 2.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    h2 = torch.tensor([0.0, 1.0, -1.0, 0.0, 0.0], dtype=torch.float64)
    P = owm_update(owm_update(torch.eye(5, dtype=torch.float64), h1, 1e-9), h2, 1e-9)
    G = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    projected = project(G, P)
    assert (projected @ h1).abs().max() < 1e-7 * G.norm() * h1.norm()
    assert (projected @ h2).abs().max() < 1e-7 * G.norm() * h2.norm()
    free = torch.linalg.svd(torch.stack([h1, h2]))[2][2:]  # an orthonormal basis of span{h1, h2}'s complement
    torch.testing.assert_close(projected @ free.T, G @ free.T)
    assert (G @ h1).abs().max() > 0.1    # the unprojected gradient does change the output on h1


def test_alpha_follows_the_release_schedule_over_an_epoch():
    assert alpha_at(0.1, True, 0, 10) == pytest.approx(0.1)
    assert alpha_at(0.1, True, 5, 10) == pytest.approx(0.1 ** 1.5)
    assert alpha_at(0.1, True, 10, 10) == pytest.approx(0.01)
    assert alpha_at(0.1, False, 7, 10) == 0.1


# -- the alternating steps --------------------------------------------------------------------------------
def recording_step(kit, record):
    """A hand step context over the kit's optimiser whose step_optimizer calls ``record()`` after each step."""
    ctx = hand_step(kit.model, kit.optimizer)
    inner = ctx.step_optimizer

    def step_optimizer():
        inner()
        record()
    ctx.step_optimizer = step_optimizer
    return ctx


def test_each_modality_step_moves_only_its_encoder_and_the_shared_head():
    kit = Kit.build("mla", modalities=THREE, dropout=0.0)
    x, y = kit.batch(16)
    snaps = [kit.snapshot()]
    kit.model.train()
    kit.method.train_step(x, y, recording_step(kit, lambda: snaps.append(kit.snapshot())))
    assert len(snaps) == 1 + 3   # one optimiser step per modality
    head = {"method.head.weight", "method.head.bias"}
    for i, m in enumerate(THREE):
        moved = {k for k in snaps[i + 1] if not torch.equal(snaps[i][k], snaps[i + 1][k])}
        assert head <= moved and set(kit.params(m)) <= moved, (m, sorted(moved))
        assert all(k in head or k.startswith(f"encoders.{m}.") for k in moved), (m, sorted(moved))
    assert not any(k.startswith("fusion.") for k in kit.changed(snaps[0])), "the model's fusion head is not used"


def test_each_modality_step_is_its_own_cross_entropy_through_the_shared_head():
    kit = Kit.build("mla", modalities=THREE, dropout=0.0)
    x, y = kit.batch(16)
    with torch.no_grad():
        ce_a = F.cross_entropy(kit.method.shared_logits("a", kit.model.encoders["a"](x["a"])), y)
    result = kit.step(x, y)
    assert result.live["method/ce_a"].item() == pytest.approx(ce_a.item(), rel=1e-6)
    total = sum(result.live[f"method/ce_{m}"] for m in THREE)
    assert result.loss.item() == pytest.approx(total.item(), rel=1e-6)


def test_the_next_modality_update_leaves_the_head_output_on_the_previous_modality_mean_feature():
    """SGD without momentum or decay: the head's update in modality b's step is -lr G_b P, with P updated from
    a's mean feature h_a (tiny alpha), so it does not change the head's output on h_a; without OWM it does.
    P after the batch is the closed form of the two means."""
    outputs = {}
    for owm in (True, False):
        kit = Kit.build("mla", {"owm": owm, "alpha": 1e-6, "alpha_decay": False}, dropout=0.0, train=PLAIN_SGD)
        x, y = kit.batch(16)
        weight = kit.method.modules["head"].weight
        weights = [weight.detach().clone()]
        kit.model.train()
        result = kit.method.train_step(x, y, recording_step(kit, lambda: weights.append(weight.detach().clone())))
        h_a, h_b = (result.output.features[m].mean(0).double() for m in ("a", "b"))
        delta_b = (weights[2] - weights[1]).double()
        outputs[owm] = (delta_b @ h_a).abs().max() / (delta_b.norm() * h_a.norm())
        if owm:
            P = kit.method.P.double()
            hs = torch.stack([h_a, h_b])
            want = 1e-6 * torch.linalg.inv(1e-6 * torch.eye(P.shape[0], dtype=torch.float64) + hs.T @ hs)
            torch.testing.assert_close(P, want, atol=1e-4, rtol=1e-3)
            assert result.live["method/owm_trace"].item() == pytest.approx(torch.diagonal(P).mean().item(), rel=1e-5)
    assert outputs[True] < 1e-4, outputs
    assert outputs[False] > 1e-2, outputs


def test_without_owm_the_projector_stays_the_identity():
    kit = Kit.build("mla", {"owm": False}, dropout=0.0)
    x, y = kit.batch(16)
    result = kit.step(x, y)
    assert torch.equal(kit.method.P, torch.eye(kit.method.width))
    assert result.live["method/owm_trace"].item() == 1.0


# -- the test-time fusion ---------------------------------------------------------------------------------
def test_entropy_weights_on_a_hand_case():
    """o_a: p = (0.5, 0.5), H = ln 2; o_b: p = (0.9, 0.1), H = 0.3251; w_m = exp(max H - H_m) / sum."""
    stacked = torch.log(torch.tensor([[[0.5, 0.5]], [[0.9, 0.1]]]))   # (M=2, B=1, C=2)
    h_b = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    torch.testing.assert_close(entropy(stacked), torch.tensor([[math.log(2)], [h_b]]))
    raw = [math.exp(math.log(2) - math.log(2)), math.exp(math.log(2) - h_b)]
    torch.testing.assert_close(entropy_weights(stacked), torch.tensor([[raw[0] / sum(raw)], [raw[1] / sum(raw)]]))


def test_predict_fuses_the_shared_head_logits_per_sample_by_entropy_three_modalities():
    kit = Kit.build("mla", modalities=THREE, dropout=0.0)
    kit.fit()   # trained a little, so the modalities' entropies differ
    x, y = kit.batch(20, split="val")
    kit.model.eval()
    with torch.no_grad():
        out = kit.method.predict(kit.model, x)
        logits = {m: kit.method.modules["head"](kit.model.encoders[m](x[m])) for m in THREE}
    H = torch.stack([-(F.softmax(logits[m], -1) * F.log_softmax(logits[m], -1)).sum(-1) for m in THREE])  # (3, B)
    raw = torch.exp(H.max(0).values - H)
    w = raw / raw.sum(0)
    torch.testing.assert_close(out.fused, sum(w[i, :, None] * logits[m] for i, m in enumerate(THREE)))
    for m in THREE:
        torch.testing.assert_close(out.logits[m], logits[m])
    assert (w.max(0).values - w.min(0).values).max() > 1e-3   # the weights are not all equal


def test_fixed_fusion_uses_the_normalised_weights():
    kit = Kit.build("mla", {"fusion": "fixed", "fusion_weights": [1.0, 3.0]}, dropout=0.0)
    x, y = kit.batch(8, split="val")
    kit.model.eval()
    with torch.no_grad():
        out = kit.method.predict(kit.model, x)
    torch.testing.assert_close(out.fused, 0.25 * out.logits["a"] + 0.75 * out.logits["b"])
    result = kit.step(*kit.batch(8))
    assert (result.live["coef/a"].item(), result.live["coef/b"].item()) == (0.25, 0.75)


def test_fusion_weights_must_match_the_modalities():
    with pytest.raises(PresetError, match="fusion_weights"):
        Kit.build("mla", {"fusion": "fixed", "fusion_weights": [1.0, 2.0, 3.0]})


# -- live values and state --------------------------------------------------------------------------------
def test_live_gate_weights_are_the_batch_mean_entropy_weights():
    kit = Kit.build("mla", modalities=THREE, dropout=0.0)
    x, y = kit.batch(16)
    result = kit.step(x, y)
    stacked = torch.stack([result.output.logits[m] for m in THREE])
    w = entropy_weights(stacked).mean(1)
    H = entropy(stacked).mean(1)
    for i, m in enumerate(THREE):
        assert result.live[f"coef/{m}"].item() == pytest.approx(w[i].item(), rel=1e-6)
        assert result.live[f"score/{m}"].item() == pytest.approx(H[i].item(), rel=1e-6)
    assert sum(result.live[f"coef/{m}"].item() for m in THREE) == pytest.approx(1.0, abs=1e-6)


def test_the_projector_is_saved_and_restored():
    kit = Kit.build("mla", dropout=0.0)
    kit.step(*kit.batch(16))
    state = kit.method.state_dict()
    assert not torch.equal(state["P"], torch.eye(kit.method.width))
    _, method = kit.loaded({"model": kit.model.state_dict(), "method": state})
    assert torch.equal(method.P, kit.method.P)
    assert all(torch.equal(a, b) for a, b in zip(method.modules.state_dict().values(),
                                                  kit.method.modules.state_dict().values()))


def test_encoders_of_different_widths_share_the_head_zero_padded():
    encoders = {"a": {"encoder": "mlp", "hidden": [16], "dim": 8}, "b": {"encoder": "mlp", "hidden": [16], "dim": 5}}
    kit = Kit.build("mla", encoders=encoders)
    assert kit.method.modules["head"].in_features == 8 and kit.method.P.shape == (8, 8)
    result = kit.step(*kit.batch(16))
    assert torch.isfinite(result.loss)


def test_mid_fusion_is_refused():
    with pytest.raises(PresetError, match="mid_fusion"):
        Kit.build("mla", fusion_options={"mid_fusion": "mmtm"})
