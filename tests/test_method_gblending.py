"""gblending: the weights are G / O^2 of each branch's copy, normalised; the copies train on the training rows
that are not held out and are measured on the held-out ones; the main run never trains on the held-out rows
and is the same whether the copies really train or their results are replayed."""

import pytest
import torch
import torch.nn.functional as F

from engine.train.nested import NestedResult
from methodkit import THREE, Kit

# (train loss, held-out loss) of each branch's copy before and after its training, and its G and O
HAND = {"a": ((1.0, 1.2), (0.6, 1.0), 0.2, 0.2),       # w ~ 0.2 / 0.2^2 = 5
        "b": ((1.0, 1.1), (0.8, 1.0), 0.1, 0.1),       # w ~ 0.1 / 0.1^2 = 10
        "c": ((1.0, 1.3), (1.0, 1.4), -0.1, 0.1),      # held-out loss rose: w = 0
        "fused": ((1.0, 1.2), (0.4, 1.1), 0.1, 0.5)}   # w ~ 0.1 / 0.5^2 = 0.4


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def test_gain_and_overfit_of_a_branch_and_the_weights_on_hand_made_losses():
    from engine.methods.gblending import blend_weights, gain_and_overfit
    for before, after, g, o in HAND.values():
        assert gain_and_overfit(before, after) == pytest.approx((g, o))
    weights = blend_weights([0.2, 0.1, -0.1, 0.1], [0.2, 0.1, 0.1, 0.5], 1e-4)
    assert weights == pytest.approx([5 / 15.4, 10 / 15.4, 0.0, 0.4 / 15.4])
    assert blend_weights([0.1, 0.1], [0.0, 1e-5], 1e-3) == pytest.approx([0.5, 0.5])   # |O| floored alike
    assert blend_weights([0.1, float("nan")], [0.1, 0.1], 1e-4) == pytest.approx([1.0, 0.0])
    assert blend_weights([-0.1, 0.0], [0.1, 0.1], 1e-4) is None   # nothing generalised: keep the weights
    # O's sampling variance adds to O^2: 0.2 / (0.2^2 + 0) = 5 and 0.1 / (0^2 + 0.01) = 10
    assert blend_weights([0.2, 0.1], [0.2, 0.0], 1e-4, [0.0, 0.01]) == pytest.approx([1 / 3, 2 / 3])


def test_the_sampling_variance_of_o_is_that_of_the_mean_loss_change_on_the_held_out_rows():
    from engine.methods.gblending import difference_variance
    before, after = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1.0, 2.0, 3.0])   # changes 0, 1, 2: var 1
    assert difference_variance(before, after) == pytest.approx(1 / 3)
    assert difference_variance(before[:1], after[:1]) == 0.0


def fake_nested(seen, table=HAND):
    def run(model, method, data, epochs, seed):
        seen.append({"branch": method.branch, "model": model, "data": data, "epochs": epochs, "seed": seed})
        (t0, v0), (t1, v1), _, _ = table[method.branch]
        b = method.branch
        return NestedResult({f"train/loss/{b}": t0, f"val/loss/{b}": v0}, {f"train/loss/{b}": t1, f"val/loss/{b}": v1})
    return run


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_an_estimate_with_three_modalities_trains_a_copy_per_branch_and_weighs_the_loss(monkeypatch, fusion):
    kit = Kit.build("gblending", {"super_epoch": 4, "estimate_epochs": 2}, modalities=THREE, fusion=fusion,
                    dropout=0.0)
    seen = []
    monkeypatch.setattr(kit.method.ctx, "train_nested", fake_nested(seen))
    events = kit.method.on_epoch_start(0, kit.model)
    assert [s["branch"] for s in seen] == ["a", "b", "c", "fused"]
    assert all(s["epochs"] == 2 and s["model"] is not kit.model for s in seen)
    assert len({s["seed"] for s in seen}) == 1   # the copies see the same batches
    expected = [5 / 15.4, 10 / 15.4, 0.0, 0.4 / 15.4]
    assert kit.method.weights == pytest.approx(expected)
    event = events[0]
    assert event["name"] == "gblend_estimate" and event["weights"] == pytest.approx(dict(zip(HAND, expected)))
    assert event["gain"]["c"] == pytest.approx(-0.1) and event["held_out"] == round(0.08 * 210)
    values = kit.method.epoch_values()
    assert values["method/overfit_fused"] == pytest.approx(0.5) and values["method/est_val_loss_b"] == 1.0

    x, y = kit.batch(12)
    out = kit.model(x)
    ce = [F.cross_entropy(out.logits[m], y) for m in THREE] + [F.cross_entropy(out.fused, y)]
    result = kit.step(x, y)
    assert result.loss.item() == pytest.approx(sum(w * c.item() for w, c in zip(expected, ce)), rel=1e-5)
    assert result.live["coef/b"].item() == pytest.approx(expected[1])
    assert result.live["method/w_fused"].item() == pytest.approx(expected[3])
    assert ("method/head_ce" in result.live) == (fusion == "gated")   # non-additive heads: detached CE too


def test_estimates_come_every_super_epoch_online_and_once_offline(monkeypatch):
    for mode, due in (("online", [0, 2, 4]), ("offline", [0])):
        kit = Kit.build("gblending", {"super_epoch": 2, "mode": mode})
        monkeypatch.setattr(kit.method.ctx, "train_nested", fake_nested([], {b: HAND[b] for b in ("a", "b", "fused")}))
        found = [e for e in range(5) if kit.method.on_epoch_start(e, kit.model)]
        assert found == due, mode


def test_the_held_out_rows_train_neither_the_main_run_nor_the_copies():
    kit = Kit.build("gblending", {"super_epoch": 2, "estimate_epochs": 1}, epochs=2)
    method, real = kit.method, kit.method.ctx.train_nested
    held = set(method.held.tolist())
    assert len(held) == round(0.08 * 210)
    train_ids = kit.data.splits["train"]
    subsets = []

    def recording(model, m, data, epochs, seed):
        subsets.append((set(data.splits["train"].tolist()), set(data.splits["val"].tolist())))
        return real(model, m, data, epochs, seed)

    step_ids = []
    train_step = method.train_step

    def recording_step(x, y, step):
        step_ids.append((step.epoch, step.ids.tolist()))
        return train_step(x, y, step)

    method.ctx.train_nested, method.train_step = recording, recording_step
    kit.fit()
    held_global = {int(train_ids[i]) for i in held}
    kept_global = set(train_ids.tolist()) - held_global
    assert len(subsets) == 3   # one estimate (epoch 0) of a, b and fused
    assert all(tr == kept_global and val == held_global for tr, val in subsets)
    for epoch in (0, 1):
        seen = [i for e, ids in step_ids if e == epoch for i in ids]
        assert sorted(seen) == sorted(set(range(210)) - held)   # each other row once, no held-out row


def test_the_main_run_is_the_same_whether_the_copies_train_or_their_results_are_replayed():
    options = {"super_epoch": 1, "estimate_epochs": 1}
    real_kit = Kit.build("gblending", options, epochs=2)   # dropout 0.2: the run's RNG stream matters
    real, results = real_kit.method.ctx.train_nested, []

    def recording(model, *args):
        result = real(model, *args)
        results.append((result, {k: v.clone() for k, v in model.state_dict().items()}))
        return result

    def replaying(model, *args):   # the trained copy's weights and metrics, without training or RNG draws
        result, weights = results.pop(0)
        model.load_state_dict(weights)
        return result

    real_kit.method.ctx.train_nested = recording
    real_kit.fit()
    assert len(results) == 6 and real_kit.method.estimates == 2
    replay_kit = Kit.build("gblending", options, epochs=2)
    replay_kit.method.ctx.train_nested = replaying
    replay_kit.fit()
    assert not results
    a, b = real_kit.snapshot(), replay_kit.snapshot()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert real_kit.recorder.split("val") == replay_kit.recorder.split("val")
    assert real_kit.method.weights == replay_kit.method.weights


def test_the_state_restores_weights_held_out_rows_and_schedule(monkeypatch):
    kit = Kit.build("gblending", {"super_epoch": 3}, modalities=THREE)
    monkeypatch.setattr(kit.method.ctx, "train_nested", fake_nested([]))
    kit.method.on_epoch_start(0, kit.model)
    state = kit.method.state_dict()
    other = type(kit.method)(kit.method.cfg, kit.method.ctx)
    other.held = torch.arange(3)
    other.load_state_dict(state)
    assert other.weights == kit.method.weights and torch.equal(other.held, kit.method.held)
    assert other.next_estimate == 3 and other.estimates == 1 and other.epoch_values() == kit.method.epoch_values()
    assert other.blend.weights.tolist() == pytest.approx(kit.method.weights[:3])
    assert not other.due(2) and other.due(3)
