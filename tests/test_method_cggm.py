"""CGGM (classifier-guided gradient modulation): the balance terms, the magnitude coefficients, the direction
loss and the step it makes on the feature gradients, which parameters each loss reaches, the state carried
between steps, how the coefficient acts per optimiser, 2 and 3 modalities."""

import contextlib

import pytest
import torch
import torch.nn.functional as F

from engine.config import resolve
from engine.errors import PresetError
from engine.methods import METHODS, MethodContext, StepContext
from engine.methods.cggm import (balance_terms, cosines, direction_loss, direction_steps, gradient_sums,
                                 magnitude_coefficients)
from engine.models import ModalitySpec, ModelSpec, build_model
from engine.models.encoders.mlp import MLPConfig

from methodkit import THREE, Kit, preset

DIMS = {"a": (5,), "b": (3,), "c": (4,)}


# -- the pieces on hand-made numbers -----------------------------------------------------------------
def test_balance_terms_follow_the_other_modalities_share_of_the_accuracy_change():
    assert balance_terms(torch.tensor([0.1, 0.3])).tolist() == pytest.approx([0.75, 0.25])
    three = balance_terms(torch.tensor([0.1, 0.2, 0.1]))
    assert three.tolist() == pytest.approx([0.75, 0.5, 0.75]) and three.sum().item() == pytest.approx(2.0)
    assert balance_terms(torch.tensor([0.2, -0.1])).tolist() == pytest.approx([-1.0, 2.0])   # m rose, the other fell
    # no net change (the release's sum + 1e-8 would give about -+1e7 for the cancelling pair): no modulation
    assert balance_terms(torch.tensor([0.0, 0.0])).tolist() == [1.0, 1.0]
    assert balance_terms(torch.tensor([1 / 64, -1 / 64])).tolist() == [1.0, 1.0]


def test_magnitude_coefficients_scale_by_rho_and_clamp_only_when_asked():
    b = torch.tensor([-1.0, 2.0])
    assert magnitude_coefficients(b, 1.3).tolist() == pytest.approx([-1.3, 2.6])
    assert magnitude_coefficients(b, 1.3, max_coef=2.0).tolist() == pytest.approx([-1.3, 2.0])


def test_cosines_and_direction_loss_on_known_sums():
    sums = torch.tensor([[2.0, 4.0, 1.0],      # <a, u> = 2, |a| = 2, |u| = 1: cos 1
                         [-1.0, 1.0, 4.0],     # cos -0.5
                         [0.0, 0.0, 3.0]])     # a zero gradient: cos 0, not nan
    cos = cosines(sums)
    assert cos.tolist() == pytest.approx([1.0, -0.5, 0.0])
    b = torch.tensor([0.75, -0.5, 0.25])
    assert direction_loss(b, cos).item() == pytest.approx(1.5 - (0.75 + 0.25))


# -- a step on a model ---------------------------------------------------------------------------------
def make(mods=("a", "b"), fusion="concat", **options):
    """A model with CGGM, a batch, and a step context whose backward is plain, whose optimiser step does
    nothing and whose ``scale_lr`` calls are recorded."""
    torch.manual_seed(0)
    spec = ModelSpec(tuple(ModalitySpec(m, "mlp", MLPConfig(hidden=[8], dim=4)) for m in mods), fusion)
    model = build_model(spec, {m: DIMS[m] for m in mods}, 3)
    ctx = MethodContext(modalities=list(mods), n_classes=3, epochs=2, steps_per_epoch=1,
                        device=torch.device("cpu"), seed=0)
    entry = METHODS.entry("cggm")
    method = entry.builder(entry.config(**{"classifier_hidden": 6, **options}), ctx)
    method.setup(model)
    method.by_lr = options.get("modulate") == "lr"
    scaled = []
    step = StepContext(model=model, optimizer=None, epoch=0, step=0, batch_in_epoch=0,
                       autocast=contextlib.nullcontext, backward=lambda loss: loss.backward(),
                       step_optimizer=lambda: None, scale_lr=lambda group, k: scaled.append((group, k)))
    gen = torch.Generator().manual_seed(1)
    x = {m: torch.randn(12, *DIMS[m], generator=gen) for m in mods}
    y = torch.arange(12) % 3
    return model, method, step, x, y, scaled


def reference(model, method, x, y, lam, previous):
    """CGGM's quantities and the gradients it should apply, computed directly: one classifier at a time,
    torch's cosine_similarity on the flattened feature gradients, the steered gradient d_m backpropagated
    into each encoder, the task loss's gradient for the head."""
    mods = list(x)
    out = model(x)
    features = [out.features[m] for m in mods]
    task = F.cross_entropy(out.fused, y)
    acc, g_uni = [], []
    for m, z in zip(mods, features):
        z = z.detach().requires_grad_(True)
        logits = method.modules["classifiers"][m](z)
        acc.append((logits.argmax(-1) == y).float().mean())
        g_uni.append(torch.autograd.grad(F.cross_entropy(logits, y), z)[0])
    if hasattr(model.fusion, "weight_of"):   # concat: dL/dz_m = (softmax - onehot) / B @ W_m, by hand
        residual = (out.fused.softmax(-1) - F.one_hot(y, 3)) / len(y)
        g_mul = [residual.detach() @ model.fusion.weight_of(m).detach() for m in mods]
    else:
        g_mul = list(torch.autograd.grad(task, features, retain_graph=True))
    cos = torch.stack([F.cosine_similarity(a.flatten(), u.flatten(), dim=0) for a, u in zip(g_mul, g_uni)])
    delta = torch.stack(acc) - previous
    b = (delta.sum() - delta) / delta.sum()
    steered = [a + lam * b[i] * a.norm() * (u / u.norm() - cos[i] * a / a.norm())
               for i, (a, u) in enumerate(zip(g_mul, g_uni))]
    grads = {}
    for m, z, d in zip(mods, features, steered):
        params = dict(model.encoders[m].named_parameters())
        found = torch.autograd.grad(z, list(params.values()), grad_outputs=d, retain_graph=True)
        grads.update({f"encoders.{m}.{n}": g for n, g in zip(params, found)})
    head = {f"fusion.{n}": p for n, p in model.fusion.named_parameters()}
    found = torch.autograd.grad(task, list(head.values()), allow_unused=True)
    grads.update({n: g for n, g in zip(head, found) if g is not None})
    gm = b.abs().sum() - (b * cos).sum()
    return {"acc": torch.stack(acc), "delta": delta, "b": b, "cos": cos, "gm": gm, "task": task, "grads": grads}


def grads_of(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_sgd_step_applies_the_steered_gradient_to_each_encoder_times_rho_b(fusion):
    model, method, step, x, y, scaled = make(fusion=fusion, rho=1.3, lambda_gm=0.4, modulate="gradient")
    ref = reference(model, method, x, y, 0.4, torch.zeros(2))
    result = method.train_step(x, y, step)
    live = result.live
    k = 1.3 * ref["b"]
    for i, m in enumerate(("a", "b")):
        assert live[f"score/{m}"].item() == pytest.approx(ref["acc"][i].item())
        assert live[f"method/delta_{m}"].item() == pytest.approx(ref["acc"][i].item())   # previous accuracy: 0
        assert live[f"coef/{m}"].item() == pytest.approx(k[i].item(), rel=1e-6)
        assert live[f"method/cos_{m}"].item() == pytest.approx(ref["cos"][i].item(), abs=1e-6)
    assert live["method/gm"].item() == pytest.approx(ref["gm"].item(), rel=1e-5)
    assert result.loss.item() == pytest.approx((ref["task"] + 0.4 * ref["gm"]).item(), rel=1e-5)
    got = grads_of(model)
    for name, want in ref["grads"].items():
        factor = k[0] if name.startswith("encoders.a.") else k[1] if name.startswith("encoders.b.") else 1.0
        if name.startswith("fusion.heads."):   # gated's per-modality heads: trained on detached features only
            continue
        torch.testing.assert_close(got[name], want * factor, rtol=1e-4, atol=1e-6, msg=name)
    assert scaled == [("classifiers", 0.5)]   # SGD: gradients scaled, no encoder learning rate touched
    assert ("method/head_ce" in live) == (fusion == "gated")


def test_the_direction_step_turns_the_feature_gradient_and_leaves_the_head_and_classifiers_alone():
    with_gm, without = make(lambda_gm=1.0, modulate="gradient"), make(lambda_gm=0.0, modulate="gradient")
    for model, method, step, x, y, _ in (with_gm, without):
        method.train_step(x, y, step)
    g1, g0 = grads_of(with_gm[0]), grads_of(without[0])
    assert not torch.allclose(g1["encoders.a.net.0.weight"], g0["encoders.a.net.0.weight"])
    assert torch.equal(g1["fusion.linear.weight"], g0["fusion.linear.weight"])
    c1 = {n: p.grad for n, p in with_gm[1].modules.named_parameters()}
    c0 = {n: p.grad for n, p in without[1].modules.named_parameters()}
    assert all(torch.equal(c1[n], c0[n]) for n in c1)   # the classifiers' gradient is their cross-entropy's


def test_the_step_keeps_the_component_along_the_multimodal_gradient_and_turns_by_atan_lambda_b_sin():
    a, u = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]])      # 45 degrees apart, |a| = 2
    sums = gradient_sums([a], [u])
    steer = direction_steps([a], [u], sums, torch.tensor([0.5]), 0.4)[0]
    d = a + steer
    assert d[0].tolist() == pytest.approx([2.0, 0.4 * 0.5 * 2 * 2 ** -0.5])   # along a kept; across: lam B |a| sin
    angle = torch.atan2(d[0, 1], d[0, 0]).item()
    assert angle == pytest.approx(torch.atan(torch.tensor(0.4 * 0.5 * 2 ** -0.5)).item())
    away = a + direction_steps([a], [u], sums, torch.tensor([-0.5]), 0.4)[0]
    assert away[0, 1].item() < 0   # B < 0: turned away from the unimodal gradient


def test_the_classifiers_learn_from_their_own_loss_on_detached_features_only():
    model, method, step, x, y, _ = make(lambda_gm=0.0, rho=1.0, modulate="gradient")
    features = model.encode(x)
    expected = {}
    for m in ("a", "b"):
        head = method.modules["classifiers"][m]
        loss = F.cross_entropy(head(features[m].detach()), y)
        expected.update({f"classifiers.{m}.{n}": g for (n, _), g in
                         zip(head.named_parameters(), torch.autograd.grad(loss, list(head.parameters())))})
    method.train_step(x, y, step)
    got = {n: p.grad for n, p in method.modules.named_parameters()}
    assert got.keys() == expected.keys()
    for n in got:
        torch.testing.assert_close(got[n], expected[n])


def test_under_adam_the_coefficient_scales_the_encoder_learning_rate_not_its_gradient():
    model, method, step, x, y, scaled = make(rho=1.3, lambda_gm=0.0, modulate="lr")
    ref = reference(model, method, x, y, 0.0, torch.zeros(2))
    method.train_step(x, y, step)
    lrs = dict(scaled)
    assert lrs["classifiers"] == 0.5
    for i, m in enumerate(("a", "b")):
        assert lrs[m].item() == pytest.approx(1.3 * ref["b"][i].item(), rel=1e-6)
    got = grads_of(model)
    for name, want in ref["grads"].items():
        torch.testing.assert_close(got[name], want, rtol=1e-5, atol=1e-7)


def test_the_accuracy_change_is_taken_from_the_previous_step_and_saved():
    model, method, step, x, y, _ = make(lambda_gm=0.0)
    method.train_step(x, y, step)
    first = method.previous.clone()
    state = method.state_dict()
    x2 = {m: v.flip(0) * 0.5 for m, v in x.items()}
    ref = reference(model, method, x2, y, 0.0, first)
    live = method.train_step(x2, y, step).live
    assert [live[f"method/delta_{m}"].item() for m in "ab"] == pytest.approx(ref["delta"].tolist())
    other = make(lambda_gm=0.0)[1]
    other.load_state_dict(state)
    assert torch.equal(other.previous, first)


@pytest.mark.parametrize("optimizer, by_lr", [("adam", True), ("sgd", False)])
def test_auto_modulation_scales_the_learning_rate_under_adam_and_the_gradient_under_sgd(optimizer, by_lr):
    assert Kit.build("cggm", optimizer=optimizer).method.by_lr is by_lr


def test_presets_that_cannot_work_are_refused():
    with pytest.raises(PresetError, match="modulate"):
        resolve(preset("cggm", {"modulate": "gradient"}, optimizer="adam"), source="t", base_dir=".")
    with pytest.raises(PresetError, match="compile"):   # the head's backward is taken twice (retain_graph)
        resolve(preset("cggm", train={"compile": True}), source="t", base_dir=".")
    ctx = MethodContext(modalities=["a"], n_classes=3, epochs=1, steps_per_epoch=1, device=torch.device("cpu"))
    with pytest.raises(PresetError, match="at least two"):
        METHODS.get("cggm")(METHODS.entry("cggm").config(), ctx)


# -- whole runs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mods", [("a", "b"), THREE])
def test_runs_with_two_and_three_modalities_apply_the_balance_rule(mods):
    kit = Kit.build("cggm", modalities=mods, epochs=2)
    test = kit.fit()
    M = len(mods)
    for live in kit.lives:
        k = torch.stack([live[f"coef/{m}"] for m in mods])
        assert torch.isfinite(k).all() and torch.isfinite(live["method/gm"])
        b = k / 1.3   # the balance terms sum to M - 1, or are all 1 where the accuracies did not move in total
        assert b.sum().item() == pytest.approx(M - 1, abs=1e-4) or torch.equal(b, torch.ones(M))
        assert all(-1 <= live[f"method/cos_{m}"].item() <= 1 for m in mods)
    assert test["test/acc/fused"] > 1 / 3 + 0.1
