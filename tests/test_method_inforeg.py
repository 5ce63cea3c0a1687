"""inforeg (Information Acquisition Regulation): the proximal strength on known scores, the pull on the
leading encoder only, the Fisher trace of the loss gradients, the prime learning window from the trace
history, and 2- and 3-modality runs."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from engine.errors import PresetError
from engine.methods.inforeg import proximal_strengths, score_gaps, window_changes

from methodkit import THREE, Kit


# -- the pieces on hand-made numbers -----------------------------------------------------------------
def test_gaps_compare_each_modality_with_the_mean_of_the_others():
    torch.testing.assert_close(score_gaps(torch.tensor([5.0, 3.0])), torch.tensor([2.0, -2.0]))
    torch.testing.assert_close(score_gaps(torch.tensor([6.0, 3.0, 1.0])), torch.tensor([4.0, -0.5, -3.5]))


def test_only_a_leading_modality_in_its_window_gets_a_proximal_strength():
    c = torch.tensor([0.95, 0.1, 0.5])
    gap = torch.tensor([0.5, -0.25, 0.2])
    beta = proximal_strengths(gap, c, torch.tensor([True, True, False]))
    torch.testing.assert_close(beta, torch.tensor([0.95 * math.exp(math.tanh(0.5)), 0.0, 0.0]))
    tie = proximal_strengths(torch.zeros(2), c[:2], torch.ones(2, dtype=torch.bool))
    assert tie.tolist() == [0.0, 0.0]


def test_the_window_change_is_the_relative_change_of_the_moving_average():
    # W = 3; the release pads the history with W zeros: after one epoch of trace 2, k = (2 - 0) / 2 = 1
    history = torch.tensor([[0.0, 0.0, 0.0, 2.0],     # k = (2 - 0) / 2
                            [0.0, 2.0, 2.0, 4.0],     # k = (4 - 0) / 8
                            [2.0, 2.0, 2.0, 2.0],     # a flat trace: 0
                            [4.0, 2.0, 2.0, 2.0],     # falling: (2 - 4) / 6
                            [0.0, 0.0, 0.0, 0.0]])    # no information: 0
    torch.testing.assert_close(window_changes(history, 3), torch.tensor([1.0, 0.5, 0.0, -1 / 3, 0.0]))


# -- one step of the method ---------------------------------------------------------------------------
def capture_step(kit, x, y):
    """One ``train_step`` whose optimiser step records the gradients instead of applying them."""
    seen = {}

    def record():
        seen.update({n: p.grad.clone() for n, p in kit.model.named_parameters() if p.grad is not None})
        kit.optimizer.zero_grad(set_to_none=True)

    step = dataclasses.replace(kit.trainer._step_context(0), step_optimizer=record)
    return kit.method.train_step(x, y, step), seen


def loss_grads(kit, x, y):
    """Gradients of CE(fused) + sum_m CE(l_m) with respect to every model parameter, by name."""
    out = kit.model(x)
    loss = F.cross_entropy(out.fused, y) + sum(F.cross_entropy(out.logits[m], y) for m in kit.modalities)
    named = dict(kit.model.named_parameters())
    return dict(zip(named, torch.autograd.grad(loss, list(named.values()), allow_unused=True))), out


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_the_leading_encoder_is_pulled_towards_its_epoch_start_weights(fusion):
    kit = Kit.build("inforeg", {"strength": [0.95, 0.4]}, fusion=fusion, dropout=0.0)
    method = kit.method
    method.on_epoch_start(0, kit.model)
    method.anchors = {m: [p.detach() - 0.5 for p in kit.model.encoder_parameters(m)] for m in kit.modalities}
    x, y = kit.batch(24)
    expected, out = loss_grads(kit, x, y)
    s = {m: F.softmax(out.logits[m].detach(), -1).gather(1, y[:, None]).sum().item() for m in kit.modalities}
    lead, other = sorted(kit.modalities, key=s.get, reverse=True)
    c = {"a": 0.95, "b": 0.4}[lead]
    beta = c * math.exp(math.tanh(s[lead] - s[other]))

    result, seen = capture_step(kit, x, y)

    assert result.live[f"coef/{lead}"].item() == pytest.approx(beta, rel=1e-5)
    assert result.live[f"coef/{other}"].item() == 0.0
    assert result.live[f"score/{lead}"].item() == pytest.approx(s[lead] / 24, rel=1e-5)
    for name, g in seen.items():
        pull = 0.5 * beta if name.startswith(f"encoders.{lead}.") else 0.0   # theta - theta_start = 0.5
        torch.testing.assert_close(g, expected[name] + pull, rtol=1e-5, atol=1e-6)


def test_the_fisher_trace_sums_the_squared_loss_gradients_without_the_pull():
    kit = Kit.build("inforeg", dropout=0.0)
    method = kit.method
    method.on_epoch_start(0, kit.model)
    method.anchors = {m: [p.detach() - 1.0 for p in kit.model.encoder_parameters(m)] for m in kit.modalities}
    x, y = kit.batch(16)
    expected, _ = loss_grads(kit, x, y)
    capture_step(kit, x, y)
    for i, m in enumerate(kit.modalities):
        trace = sum(g.square().sum() for n, g in expected.items() if n.startswith(f"encoders.{m}."))
        assert method.fim_sum[i].item() == pytest.approx(trace.item(), rel=1e-5)
    method.on_epoch_end(0, kit.model, {})
    assert method.history[:, -1].tolist() == pytest.approx(method.fim_sum.tolist(), rel=1e-6)   # one step


def test_a_closed_window_leaves_the_gradients_alone():
    kit = Kit.build("inforeg", dropout=0.0)
    method = kit.method
    method.epochs_seen = 3
    method.history = torch.full_like(method.history, 2.0)     # a flat trace: k = 0 <= 0.05
    method.on_epoch_start(3, kit.model)
    method.anchors = {m: [p.detach() - 1.0 for p in kit.model.encoder_parameters(m)] for m in kit.modalities}
    assert method.window.tolist() == [False, False] and not method.any_open
    x, y = kit.batch(16)
    expected, _ = loss_grads(kit, x, y)
    result, seen = capture_step(kit, x, y)
    assert [result.live[f"coef/{m}"].item() for m in kit.modalities] == [0.0, 0.0]
    assert [result.live[f"method/window_{m}"].item() for m in kit.modalities] == [0.0, 0.0]
    for name, g in seen.items():
        torch.testing.assert_close(g, expected[name], rtol=1e-5, atol=1e-6)


def test_a_strength_per_modality_must_match_the_modalities():
    with pytest.raises(PresetError, match="method.strength"):
        Kit.build("inforeg", {"strength": [0.95, 0.1, 0.3]})


# -- runs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mods", [("a", "b"), THREE], ids=["2mod", "3mod"])
def test_each_epochs_window_follows_the_traces_of_the_epochs_before(mods):
    """With W = 1 the window of epoch e is open while (T_{e-1} - T_{e-2}) / T_{e-1} > threshold (T_{-1} = 0)."""
    kit = Kit.build("inforeg", {"window_epochs": 1, "window_threshold": 0.1}, modalities=mods, epochs=4)
    kit.fit()
    traces = [[float(v[f"method/fim_trace_{m}"]) for m in mods] for v in kit.epoch_values]
    changes = [[float(v[f"method/fim_change_{m}"]) for m in mods] for v in kit.epoch_values]
    assert all(t > 0 for row in traces for t in row)
    assert changes[0] == [1.0] * len(mods) and changes[1] == [1.0] * len(mods)
    for e in (2, 3):
        want = [(traces[e - 1][i] - traces[e - 2][i]) / traces[e - 1][i] for i in range(len(mods))]
        assert changes[e] == pytest.approx(want, rel=1e-5)
    # the steps' window flags are the epochs' decisions; beta > 0 only where the window is open
    steps = len(kit.lives) // 4
    for e in range(4):
        for live in kit.lives[e * steps:(e + 1) * steps]:
            for i, m in enumerate(mods):
                assert live[f"method/window_{m}"].item() == float(changes[e][i] > 0.1)
                assert live[f"coef/{m}"].item() == 0.0 or changes[e][i] > 0.1
    assert any(live[f"coef/{m}"].item() > 0 for live in kit.lives for m in mods)
