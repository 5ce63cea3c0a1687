"""mbsd: per row and pair of modalities, the one surer of the label distils into the other with weight
w = |q_a - q_b| (0 where neither predicts the label); the teacher's side is detached, so the term's
gradient reaches the student only; every pair, averaged, for M > 2."""

import math

import pytest
import torch
import torch.nn.functional as F

from engine.methods.mbsd import pair_index, self_distillation, student_weights
from methodkit import THREE, Kit


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_weights_and_distillation_on_a_hand_case():
    # two modalities, two classes, three rows, labels 0, 1, 0
    a = [[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]]
    b = [[0.0, 0.0], [0.0, 3.0], [0.0, 1.0]]
    y = torch.tensor([0, 1, 0])
    logits = torch.tensor([a, b])
    first, second = pair_index(2)
    loss, w, q, student = self_distillation(logits, y, first, second)
    qa = [softmax(r)[c] for r, c in zip(a, [0, 1, 0])]
    qb = [softmax(r)[c] for r, c in zip(b, [0, 1, 0])]
    # row 0: a right (q 0.881) teaches b (0.5); row 1: both right, b (0.881) teaches a (0.731);
    # row 2: both wrong, weight 0
    expected_w = [qa[0] - qb[0], qb[1] - qa[1], 0.0]
    torch.testing.assert_close(w, torch.tensor([expected_w]))
    torch.testing.assert_close(q, torch.tensor([qa, qb]))
    assert student.tolist() == [[1, 0, 0]]   # b learns from a in row 0, a from b in row 1
    torch.testing.assert_close(student_weights(w, student, 2), torch.tensor([expected_w[1], expected_w[0]]))
    assert w[0, 0].item() == pytest.approx(1 / (1 + math.exp(-2)) - 0.5)

    def d(teacher, student):
        pt, ps = softmax(teacher), softmax(student)
        kl = sum(t * math.log(t / s) for t, s in zip(pt, ps))
        return kl + sum((s - t) ** 2 for s, t in zip(student, teacher)) / len(teacher)

    expected = (expected_w[0] * d(a[0], b[0]) + expected_w[1] * d(b[1], a[1])) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # row 0 by hand: KL(softmax(2, 0) || (1/2, 1/2)) + (4 + 0) / 2
    p = 1 / (1 + math.exp(-2))
    assert d(a[0], b[0]) == pytest.approx(p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p)) + 2.0)
    # without the gate the both-wrong row counts too (b teaches: q 0.269 for class 0 vs 0.047 in a)
    _, w_all, _, _ = self_distillation(logits, y, first, second, gate=False)
    assert w_all[0, 2].item() == pytest.approx(softmax(b[2])[0] - softmax(a[2])[0])


def test_the_distillation_gradient_reaches_only_the_student():
    a = torch.tensor([[2.0, 0.0, 0.5], [0.0, 0.2, 0.1]], requires_grad=True)
    b = torch.tensor([[0.1, 0.3, 0.0], [0.0, 2.5, 0.0]], requires_grad=True)
    y = torch.tensor([0, 1])   # row 0: a is surer (teacher), row 1: b is
    first, second = pair_index(2)
    loss, w, _, _ = self_distillation(torch.stack([a, b]), y, first, second)
    assert (w > 0).all()
    ga, gb = torch.autograd.grad(loss, [a, b])
    assert ga[0].abs().sum() == 0 and gb[1].abs().sum() == 0          # teachers get nothing
    assert ga[1].abs().sum() > 0 and gb[0].abs().sum() > 0            # students do


def test_in_the_model_the_term_moves_the_weaker_modalitys_encoder_and_head_only():
    kit = Kit.build("mbsd", fusion="sum", dropout=0.0)
    x, y = kit.batch(40)
    out = kit.model(x)
    logits = torch.stack([out.logits["a"], out.logits["b"]])
    q = logits.softmax(-1).gather(-1, y.expand(2, -1).unsqueeze(-1)).squeeze(-1)
    correct = (logits.argmax(-1) == y).any(0)
    row = int(torch.nonzero(correct & (q[0] - q[1]).abs().gt(0.05))[0])   # a row with something to teach
    student = "a" if q[0, row] < q[1, row] else "b"
    teacher = "b" if student == "a" else "a"
    x1, y1 = {m: v[row:row + 1] for m, v in x.items()}, y[row:row + 1]
    out = kit.model(x1)
    loss, *_ = self_distillation(torch.stack([out.logits["a"], out.logits["b"]]), y1, *pair_index(2))
    assert loss.item() > 0
    params = {name: p for part in ("a", "b", "fusion") for name, p in kit.params(part).items()}
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)))
    reached = {name for name, g in grads.items() if g is not None and g.abs().sum() > 0}
    assert reached and all(name.startswith((f"encoders.{student}.", f"fusion.heads.{student}.")) for name in reached)
    assert any(name.startswith(f"encoders.{student}.") for name in reached)
    assert not any(teacher in name.split(".")[1:3] for name in reached)


def test_three_modalities_loss_and_live_values():
    kit = Kit.build("mbsd", {"sd_weight": 0.5}, modalities=THREE, dropout=0.0)
    x, y = kit.batch(24)
    out = kit.model(x)
    logits = torch.stack([out.logits[m] for m in THREE])
    first, second = pair_index(3)
    assert first.tolist() == [0, 0, 1] and second.tolist() == [1, 2, 2]
    # the mean of the three pairwise terms, each computed on its own
    pairwise = [self_distillation(logits[[i, j]], y, *pair_index(2))[0] for i, j in [(0, 1), (0, 2), (1, 2)]]
    sd = torch.stack(pairwise).mean()
    expected = F.cross_entropy(out.fused, y) + sum(F.cross_entropy(out.logits[m], y) for m in THREE) + 0.5 * sd
    result = kit.step(x, y)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert result.live["method/sd"].item() == pytest.approx(sd.item(), rel=1e-5)
    _, w, q, student = self_distillation(logits, y, first, second)
    assert result.live["method/w"].item() == pytest.approx(w.mean().item(), rel=1e-5)
    received = student_weights(w, student, 3) / (24 * 2)
    for i, m in enumerate(THREE):
        assert result.live[f"coef/{m}"].item() == pytest.approx(received[i].item(), rel=1e-5, abs=1e-7)
        assert result.live[f"score/{m}"].item() == pytest.approx(q[i].mean().item(), rel=1e-5)
    assert "method/head_ce" not in result.live


def test_a_gated_fusion_trains_the_modality_heads_through_the_method_loss():
    kit = Kit.build("mbsd", fusion="gated", dropout=0.0)
    before = kit.snapshot()
    result = kit.step()
    assert "method/head_ce" not in result.live
    assert any(k.startswith("fusion.heads.a.") for k in kit.changed(before))
