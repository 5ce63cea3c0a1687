"""``ume`` (Du et al., ICML 2023, :mod:`engine.methods.ume`): the ensemble formula on known values and as
the method's prediction, the loss as the sum of the uni-modal cross-entropies with each encoder taught by its
own term only, and the live values, with 3 modalities."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.methods.unimodal_teachers import ensemble

from methodkit import THREE, Kit, hand_step


def test_ensemble_on_known_values():
    logits = {"a": torch.tensor([[0.0, 0.0]]), "b": torch.tensor([[2.0, 0.0]])}
    assert ensemble(logits, ["a", "b"], "logits").tolist() == [[1.0, 0.0]]
    p = math.exp(2) / (math.exp(2) + 1)
    want = [math.log((0.5 + p) / 2), math.log((0.5 + 1 - p) / 2)]
    assert ensemble(logits, ["a", "b"], "probs")[0].tolist() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("combine", ["logits", "probs"])
def test_prediction_is_the_ensemble_of_the_unimodal_models(combine):
    kit = Kit.build("ume", {"combine": combine}, modalities=THREE, fusion="gated", dropout=0.0)
    model = kit.model.eval()
    x, _ = kit.batch(10, split="val")
    with torch.no_grad():
        out = kit.method.predict(model, x)
        _, logits = model.head({m: model.encoders[m](x[m]) for m in THREE})
    members = torch.stack([logits[m] for m in THREE])
    want = members.mean(0) if combine == "logits" else members.softmax(-1).mean(0).log()
    torch.testing.assert_close(out.fused, want)
    for m in THREE:
        torch.testing.assert_close(out.logits[m], logits[m])
    # the monitors' hook (head on given features) gives the same ensemble
    fused, _ = kit.method.head(model, out.features)
    torch.testing.assert_close(fused, out.fused)
    # and evaluation scores it: val/acc/fused is the ensemble's accuracy
    xs, ys = zip(*kit.data.eval_batches("val", 1024))
    with torch.no_grad():
        pred = torch.cat([kit.method.predict(model, xb).fused.argmax(1) for xb in xs])
    assert kit.evaluate("val")["val/acc/fused"] == pytest.approx((pred == torch.cat(ys)).double().mean().item())


def test_loss_is_the_sum_of_unimodal_cross_entropies_each_reaching_its_own_encoder_only():
    kit = Kit.build("ume", modalities=THREE, dropout=0.0)
    model, method = kit.model.train(), kit.method
    x, y = kit.batch(16)
    out = method.forward(model, x)
    loss, live = method.loss(out, y, hand_step(model, epoch=0))
    ces = {m: F.cross_entropy(out.logits[m], y) for m in THREE}
    assert loss.item() == pytest.approx(sum(c.item() for c in ces.values()), rel=1e-6)
    for m in THREE:
        assert live[f"method/ce_{m}"].item() == pytest.approx(ces[m].item(), rel=1e-6)
        assert live[f"coef/{m}"].item() == pytest.approx(1 / 3)
        params = list(model.encoders[m].parameters())
        total = torch.autograd.grad(loss, params, retain_graph=True)
        own = torch.autograd.grad(ces[m], params, retain_graph=True)
        for g, h in zip(total, own):
            torch.testing.assert_close(g, h)
        others = [c for k, c in ces.items() if k != m]
        assert all(g is None for g in torch.autograd.grad(sum(others), params, retain_graph=True, allow_unused=True))


def test_a_run_trains_every_member_and_scores_the_ensemble():
    kit = Kit.build("ume", modalities=THREE, epochs=3, optimizer="adam")
    first = kit.evaluate("val")
    kit.fit()
    last = kit.recorder.split("val")[-1]
    for m in THREE:
        assert last[f"val/loss/{m}"] < first[f"val/loss/{m}"]
    assert last["val/loss/fused"] < first["val/loss/fused"]
    assert {k for live in kit.lives for k in live} == {f"{p}{m}" for p in ("coef/", "method/ce_") for m in THREE}
