"""PMR (prototypical modal rebalance): prototypes are the class means of the training features, the
slower modality's prototypical cross-entropy and the dominant one's entropy get the ratio-rule weights,
and those terms reach only their own encoder."""

import math

import pytest
import torch
import torch.nn.functional as F

from engine.methods.pmr import class_sums, entropy, prototype_logits, ratio_factor

from methodkit import THREE, Kit


def train_features(kit: Kit) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every training row's features (eval mode) and labels."""
    kit.model.eval()
    n = kit.data.split_size("train")
    x, y = kit.batch(n)
    with torch.no_grad():
        z = kit.model.encode(x)
    kit.model.train()
    return z, y


# -- the pieces on hand-made numbers -----------------------------------------------------------------
def test_class_sums_distances_and_absent_classes():
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    y = torch.tensor([0, 2, 0])
    assert class_sums(z, y, 3).tolist() == [[6.0, 8.0], [0.0, 0.0], [3.0, 4.0]]
    prototypes = torch.tensor([[0.0, 0.0], [9.0, 9.0], [3.0, 0.0]])
    present = torch.tensor([True, False, True])
    logits = prototype_logits(z[:1], prototypes, present)
    assert logits[0, 0].item() == pytest.approx(-math.sqrt(5.0))
    assert logits[0, 2].item() == pytest.approx(-math.sqrt(8.0))
    p = F.softmax(logits, dim=-1)
    assert p[0, 1].item() == 0.0   # a class without training rows has no prototype
    assert p[0, 0].item() == pytest.approx(1.0 / (1.0 + math.exp(math.sqrt(5.0) - math.sqrt(8.0))))
    # entropy of [1/2, 1/2] and of a one-hot row; gradients stay finite with an absent class
    logp = torch.log(torch.tensor([[[0.5, 0.5], [1.0, 1e-30]]]))
    assert entropy(logp).item() == pytest.approx(math.log(2) / 2, rel=1e-6)
    zz = z[:1].clone().requires_grad_()
    entropy(F.log_softmax(prototype_logits(zz, prototypes, present), dim=-1).unsqueeze(0)).sum().backward()
    assert torch.isfinite(zz.grad).all() and zz.grad.abs().sum() > 0


def test_ratio_factor_clipped_and_step():
    r = torch.tensor([0.5, 1.0, 1.25, 1.5, 3.0, math.inf])
    assert ratio_factor(r, "clipped").tolist() == [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
    assert ratio_factor(r, "step").tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def test_coefficients_window_and_entropy_stage():
    kit = Kit.build("pmr", {"alpha": 2.0, "mu": 0.1, "entropy_epochs": 2, "modulation_start": 1,
                            "modulation_end": 4}, modalities=THREE)
    rho = torch.tensor([0.4, 1.0, 1.25])   # e.g. scores 0.2, 0.4, 0.6 against the mean of the others
    beta, per = kit.method.coefficients(rho, epoch=1)
    assert beta.tolist() == pytest.approx([2.0, 0.0, 0.0])     # alpha * clip(1 / 0.4 - 1, 0, 1)
    assert per.tolist() == pytest.approx([0.0, 0.0, 0.025])    # mu * clip(1.25 - 1, 0, 1)
    beta, per = kit.method.coefficients(rho, epoch=2)          # the entropy stage is over
    assert beta.tolist() == pytest.approx([2.0, 0.0, 0.0]) and per.tolist() == [0.0, 0.0, 0.0]
    for outside in (0, 4):
        beta, per = kit.method.coefficients(rho, epoch=outside)
        assert beta.tolist() == [0.0, 0.0, 0.0] and per.tolist() == [0.0, 0.0, 0.0]


# -- prototypes --------------------------------------------------------------------------------------
def test_prototypes_are_the_class_means_of_the_training_features_and_move_with_momentum():
    kit = Kit.build("pmr", {"momentum": 0.25}, dropout=0.2)
    kit.method.on_epoch_start(0, kit.model)
    assert kit.model.training   # the pass runs in eval mode and restores the mode
    z, y = train_features(kit)
    first = {}
    for m in kit.modalities:
        means = torch.stack([z[m][y == k].mean(0) for k in range(kit.data.n_classes)])
        torch.testing.assert_close(kit.method.prototypes[m], means)
        first[m] = means
    kit.step()
    kit.method.on_epoch_start(1, kit.model)
    z, y = train_features(kit)
    for m in kit.modalities:
        means = torch.stack([z[m][y == k].mean(0) for k in range(kit.data.n_classes)])
        torch.testing.assert_close(kit.method.prototypes[m], 0.75 * means + 0.25 * first[m])
    # a run stopped right after an epoch's start hook runs it again on resume: the average moves only once
    saved = {m: p.clone() for m, p in kit.method.prototypes.items()}
    _, resumed = kit.loaded({"model": kit.model.state_dict(), "method": kit.method.state_dict()})
    kit.step()
    resumed.on_epoch_start(1, kit.model)
    for m in kit.modalities:
        assert torch.equal(resumed.prototypes[m], saved[m])


# -- the loss ------------------------------------------------------------------------------------------
def hand_loss(kit: Kit, out, y, alpha: float, mu: float) -> torch.Tensor:
    """CE + beta PCE of the slower modality - mu f(rho) E of the faster one, for two modalities, by hand."""
    mods = kit.modalities
    logp, s = {}, {}
    for m in mods:
        c = kit.method.prototypes[m]
        d = ((out.features[m][:, None, :] - c[None]) ** 2).sum(-1).sqrt()
        logp[m] = F.log_softmax(-d, dim=-1)
        s[m] = logp[m].exp()[torch.arange(len(y)), y].sum()
    slow, fast = sorted(mods, key=lambda m: s[m].item())
    r = (s[fast] / s[slow]).item()
    f = min(max(r - 1.0, 0.0), 1.0)
    pce = F.nll_loss(logp[slow], y)
    ent = -(logp[fast].exp() * logp[fast]).sum(-1).mean()
    return F.cross_entropy(out.fused, y) + alpha * f * pce - mu * f * ent


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_loss_is_fused_ce_plus_weighted_pce_minus_weighted_entropy(fusion):
    kit = Kit.build("pmr", {"alpha": 1.5, "mu": 0.3}, fusion=fusion, dropout=0.0)
    kit.method.on_epoch_start(0, kit.model)
    x, y = kit.batch(24)
    out = kit.model(x)
    expected = hand_loss(kit, out, y, alpha=1.5, mu=0.3)
    loss, live = kit.method.loss(out, y, kit.trainer._step_context(0))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    coefs = [live[f"coef/{m}"].item() for m in kit.modalities]
    pers = [live[f"method/per_{m}"].item() for m in kit.modalities]
    assert sorted(coefs)[0] == 0.0 and sorted(pers)[0] == 0.0
    assert coefs.index(0.0) == 1 - pers.index(0.0)   # PCE for the slower one, PER for the other
    ratio = live["method/ratio/a"].item()
    assert live["method/ratio/b"].item() == pytest.approx(1.0 / ratio, rel=1e-6)
    result = kit.step(x, y)
    assert ("method/head_ce" in result.live) == (fusion == "gated")


def test_the_prototype_terms_reach_only_the_slower_modalitys_encoder():
    kit = Kit.build("pmr", {"alpha": 1.0, "mu": 0.0, "ratio_rule": "step"}, dropout=0.0)
    kit.method.on_epoch_start(0, kit.model)
    x, y = kit.batch(24)
    out = kit.model(x)
    loss, live = kit.method.loss(out, y, kit.trainer._step_context(0))
    slow = next(m for m in kit.modalities if live[f"coef/{m}"].item() == 1.0)
    fast = next(m for m in kit.modalities if m != slow)
    extra = loss - F.cross_entropy(out.fused, y)
    parts = {p: list(kit.params(p).values()) for p in (slow, fast, "fusion")}
    grads = torch.autograd.grad(extra, [q for ps in parts.values() for q in ps], allow_unused=True)
    by_part, i = {}, 0
    for p, ps in parts.items():
        by_part[p] = [g for g in grads[i:i + len(ps)] if g is not None]
        i += len(ps)
    assert all(torch.count_nonzero(g) == 0 for g in by_part[fast] + by_part["fusion"])
    assert sum(g.abs().sum() for g in by_part[slow]) > 0


def test_outside_the_window_the_loss_is_the_fused_cross_entropy():
    kit = Kit.build("pmr", {"modulation_start": 1}, dropout=0.0)
    kit.method.on_epoch_start(0, kit.model)
    x, y = kit.batch(24)
    out = kit.model(x)
    loss, live = kit.method.loss(out, y, kit.trainer._step_context(0))
    assert loss.item() == F.cross_entropy(out.fused, y).item()
    assert live["score/a"].item() > 0 and live["coef/a"].item() == 0.0


# -- whole runs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mods", [("a", "b"), THREE])
def test_runs_recompute_prototypes_each_epoch_and_report_finite_values(mods):
    kit = Kit.build("pmr", {"entropy_epochs": 1}, modalities=mods, epochs=2)
    calls = []
    update = kit.method.update_prototypes
    kit.method.update_prototypes = lambda model: (calls.append(1), update(model))
    kit.fit()
    assert len(calls) == 2
    assert all(torch.isfinite(v) for live in kit.lives for v in live.values())
    per_epoch = len(kit.lives) // 2
    first, second = kit.lives[:per_epoch], kit.lives[per_epoch:]
    assert any(live[f"method/per_{m}"].item() > 0 for live in first for m in mods)
    assert all(live[f"method/per_{m}"].item() == 0 for live in second for m in mods)
    assert set(kit.method.state_dict()["prototypes"]) == set(mods)
