"""dimml (DI-MML): detached per-modality losses through a shared classifier, the dimension-decoupled
unidirectional contrastive loss, the fusion stage on frozen encoders and the certainty-weighted prediction."""

import math

import pytest
import torch
import torch.nn.functional as F

from engine.errors import PresetError
from engine.methods.dimml import (certainty_weights, duc_pair_losses, effective_dims, nearest_centroid_hits,
                                  ordered_pairs, transfer_masks)

from methodkit import FUSIONS, THREE, TWO, Kit, synthetic_table


def no_gradient(loss, params) -> bool:
    grads = torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)
    return all(g is None or not g.any() for g in grads)


# -- the pieces on hand-made values -------------------------------------------------------------------
def test_the_contrastive_loss_on_a_hand_made_case():
    # two modalities, two rows, two dimensions; dimension 0 is a's own, dimension 1 is b's own
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    features = torch.stack([a, b]).requires_grad_(True)
    pairs = ordered_pairs(2)
    assert pairs == [(0, 1), (1, 0)]
    masks = transfer_masks(torch.tensor([[True, False], [False, True]]), pairs)
    assert masks.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    losses = duc_pair_losses(features, masks, pairs, temperature=2.0)
    # a -> b on dim 0: student b = (2, 0), teacher a = (1, 0); row 0 logits (1, 0), row 1 logits (0, 0)
    ab = (-math.log(math.e / (math.e + 1)) + math.log(2)) / 2
    # b -> a on dim 1: student a = (0, 1), teacher b = (0, 3); row 0 logits (0, 0), row 1 logits (0, 1.5)
    ba = (math.log(2) - math.log(math.exp(1.5) / (1 + math.exp(1.5)))) / 2
    torch.testing.assert_close(losses, torch.tensor([ab, ba]))
    # unidirectional: L_ab moves only the student b, L_ba only the student a
    g_ab = torch.autograd.grad(losses[0], features, retain_graph=True)[0]
    assert not g_ab[0].any() and g_ab[1, :, 0].any() and not g_ab[1, :, 1].any()
    g_ba = torch.autograd.grad(losses[1], features)[0]
    assert not g_ba[1].any() and g_ba[0, :, 1].any() and not g_ba[0, :, 0].any()


def test_an_empty_transfer_set_gives_log_b_and_no_gradient():
    features = torch.randn(2, 4, 3, requires_grad=True)
    losses = duc_pair_losses(features, torch.zeros(2, 3), ordered_pairs(2), temperature=50.0)
    torch.testing.assert_close(losses, torch.full((2,), math.log(4)))
    assert not torch.autograd.grad(losses.sum(), features)[0].any()


def test_effective_dimensions_from_the_nearest_centroid_rule():
    # dimension 0 separates the classes, dimension 1 does not (equal distances: argmin takes class 0)
    z = torch.tensor([[0.0, 5.0], [0.0, -5.0], [2.0, 5.0], [2.0, -5.0]])
    y = torch.tensor([0, 0, 1, 1])
    centroids = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    hits = nearest_centroid_hits(z, y, centroids, torch.tensor([True, True]), chunk=4)  # 1 row per chunk
    assert hits.tolist() == [4, 2]
    # an absent class is never the nearest
    assert nearest_centroid_hits(z, y, centroids, torch.tensor([False, True])).tolist() == [2, 2]
    accuracy = torch.tensor([[1.0, 0.5, 0.9, 0.2], [0.3, 0.8, 0.9, 0.7]])
    effective = effective_dims(accuracy)   # means 0.65 and 0.675
    assert effective.tolist() == [[True, False, True, False], [False, True, True, True]]
    masks = transfer_masks(effective, ordered_pairs(2))
    assert masks.tolist() == [[1, 0, 0, 0], [0, 1, 0, 1]]   # a teaches b on dim 0; b teaches a on 1 and 3


def test_certainty_weights_are_a_softmax_of_the_confidences():
    members = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]])      # (K=2, B=1, C=2)
    conf = torch.tensor([math.exp(2) / (math.exp(2) + 1), 0.5])
    w = certainty_weights(members, temperature=0.5)
    torch.testing.assert_close(w[:, 0], (conf / 0.5).softmax(0))


# -- gradients in the model -----------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", FUSIONS)
def test_a_modalitys_losses_send_no_gradient_into_another_encoder(fusion):
    kit = Kit.build("dimml", fusion=fusion, dropout=0.0)
    method, model = kit.method, kit.model
    x, y = kit.batch(16)
    out = model(x)
    shared = method.shared_logits(out.features)
    ce = method.per_modality_ce(shared, y)
    own = method.per_modality_ce(torch.stack([out.logits[m] for m in kit.modalities]), y)
    for i, m in enumerate(kit.modalities):
        loss = ce[i] + own[i]
        for other in kit.modalities:
            assert no_gradient(loss, kit.params(other).values()) == (other != m), (m, other)
        # the shared classifier learns from every modality's loss alone
        assert not no_gradient(ce[i], kit.params("method").values())


def test_the_contrastive_loss_moves_only_the_student_encoder():
    kit = Kit.build("dimml", dropout=0.0)
    method, model = kit.method, kit.model
    x, _ = kit.batch(16)
    features = model(x).features
    d = features["a"].shape[1]
    method.masks = torch.stack([torch.ones(d), torch.zeros(d)])   # only a -> b transfers
    con = method.duc_loss(features)
    assert no_gradient(con, kit.params("a").values())
    assert not no_gradient(con, kit.params("b").values())
    pair = duc_pair_losses(torch.stack([features["a"], features["b"]]), method.masks, method.pairs, 50.0)
    torch.testing.assert_close(con, pair.sum())   # M = 2: the release's sum of the two directions
    assert pair[1].item() == pytest.approx(math.log(16))


def test_a_detached_step_is_the_sum_of_the_weighted_cross_entropies():
    kit = Kit.build("dimml", {"shared_weight": 0.5, "own_weight": 2.0}, dropout=0.0)
    x, y = kit.batch(16)
    out = kit.model(x)
    shared = kit.method.shared_logits(out.features)
    expected = sum(0.5 * F.cross_entropy(shared[i], y) + 2.0 * F.cross_entropy(out.logits[m], y)
                   for i, m in enumerate(kit.modalities))
    result = kit.step(x, y)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert result.live["method/ce_a"].item() == pytest.approx(F.cross_entropy(shared[0], y).item(), rel=1e-6)
    assert "method/contrastive" not in result.live    # duc_start 20


def test_the_fusion_stage_trains_only_the_fusion_head_on_frozen_encoders():
    kit = Kit.build("dimml", {"detached_epochs": 1}, fusion="gated")
    x, y = kit.batch(16)
    before = kit.snapshot()
    kit.step(x, y, epoch=0)
    assert any(k.startswith("encoders.") for k in kit.changed(before))
    before = kit.snapshot()
    features = kit.model.encode(x)   # train mode here; the step runs the encoders in eval mode
    kit.model.eval()
    frozen = kit.model.encode(x)
    result = kit.step(x, y, epoch=1)
    changed = kit.changed(before)
    assert changed and all(k.startswith("fusion.") for k in changed), changed
    assert set(result.live) >= {"method/ce_fused", "method/coef_fused"}
    torch.testing.assert_close(result.output.features["a"], frozen["a"])
    assert not torch.equal(features["a"], frozen["a"])   # dropout 0.2 in train mode


# -- the prediction -------------------------------------------------------------------------------------
@pytest.mark.parametrize("inference", ["certainty", "sum"])
def test_the_prediction_combines_the_shared_classifier_logits_then_the_fusion_head(inference):
    kit = Kit.build("dimml", {"detached_epochs": 2, "inference": inference, "certainty_temperature": 0.5},
                    modalities=THREE, fusion="concat", dropout=0.0)
    method, model = kit.method, kit.model
    x, _ = kit.batch(8)
    with torch.no_grad():
        features = model.encode(x)
        w, c = method.modules["shared"].weight, method.modules["shared"].bias
        s = torch.stack([features[m] @ w.T + c for m in THREE])
        fused_head, _ = model.head(features)

        def expected(members):
            if inference == "sum":
                return members.sum(0)
            conf = members.softmax(-1).amax(-1)
            weights = (conf / 0.5).softmax(0)
            return (weights.unsqueeze(-1) * members).sum(0)

        for epoch, members in ((1, s), (2, torch.cat([s, fused_head.unsqueeze(0)]))):
            method.on_epoch_start(epoch, model)
            fused, logits = method.head(model, features)
            torch.testing.assert_close(fused, expected(members))
            torch.testing.assert_close(logits["c"], s[2])
            out = method.predict(model, x)
            torch.testing.assert_close(out.fused, fused)


# -- stages, selection, three modalities, resume --------------------------------------------------------
def test_a_run_selects_the_dimensions_then_contrasts_then_fuses():
    kit = Kit.build("dimml", {"detached_epochs": 2, "duc_start": 1}, epochs=3, data=synthetic_table(TWO, 120))
    kit.fit()
    events = [(name, fields["epoch"], fields.get("stage")) for name, _, fields in kit.recorder.events
              if name in ("stage", "duc_dims")]
    assert events == [("stage", 0, "detached"), ("duc_dims", 1, None), ("stage", 2, "fusion")]
    steps = 3   # 84 training rows in batches of 32
    assert not any("method/contrastive" in live for live in kit.lives[:steps])
    assert all("method/contrastive" in live for live in kit.lives[steps:2 * steps])
    assert all(set(live) == {"method/ce_fused", "method/coef_fused", "score/a", "score/b", "coef/a", "coef/b"}
               for live in kit.lives[2 * steps:])
    counts = kit.method.effective.sum(1).tolist()
    values = kit.epoch_values[-1]
    assert [values["method/effective_a"], values["method/effective_b"]] == counts
    e = kit.method.effective
    assert values["method/transfer_a;b"] == (e[0] & ~e[1]).sum().item()
    assert values["method/transfer_b;a"] == (e[1] & ~e[0]).sum().item()


def test_three_modalities_contrast_every_ordered_pair_averaged_over_teachers():
    kit = Kit.build("dimml", {"detached_epochs": 3, "duc_start": 0, "temperature": 0.5}, modalities=THREE,
                    dropout=0.0)
    method, model = kit.method, kit.model
    x, y = kit.batch(16)
    method.on_epoch_start(0, model)
    assert method.pairs == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    assert method.masks.shape == (6, 8)
    features = model(x).features
    stacked = torch.stack([features[m] for m in THREE])
    pair = duc_pair_losses(stacked, method.masks, method.pairs, 0.5)
    torch.testing.assert_close(method.duc_loss(features), pair.sum() / 2)
    # the student c learns only from its own pairs
    con = pair[1] + pair[3]   # a -> c and b -> c
    assert no_gradient(con, kit.params("a").values()) and no_gradient(con, kit.params("b").values())
    result = kit.step(x, y, epoch=0)
    assert {f"method/ce_{m}" for m in THREE} | {"method/contrastive"} <= set(result.live)
    assert sum(result.live[f"coef/{m}"].item() for m in THREE) == pytest.approx(1.0)


def test_the_state_restores_the_selection_and_the_stage():
    kit = Kit.build("dimml", {"detached_epochs": 1, "duc_start": 0}, epochs=2, data=synthetic_table(TWO, 120))
    kit.fit()
    state = kit.method.state_dict()
    model, method = kit.loaded({"model": kit.model.state_dict(), "method": state})
    assert method.epoch == 1 and method.selected_at == 0
    assert torch.equal(method.effective, kit.method.effective) and torch.equal(method.masks, kit.method.masks)
    x, _ = kit.batch(8)
    model.eval(), kit.model.eval()
    torch.testing.assert_close(method.predict(model, x).fused, kit.method.predict(kit.model, x).fused)


def test_features_of_different_sizes_are_refused():
    encoders = {"a": {"encoder": "mlp", "hidden": [16], "dim": 8}, "b": {"encoder": "mlp", "hidden": [16], "dim": 6}}
    with pytest.raises(PresetError, match="same size"):
        Kit.build("dimml", encoders=encoders)
