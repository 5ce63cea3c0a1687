"""Device-side metrics against hand-computed values, and the learning-rate schedules."""

import math

import pytest
import torch

from engine.train.config import TrainConfig
from engine.classification import confusion, macro_f1
from engine.train.metrics import SplitScorer
from engine.train.optim import lr_factor


def test_confusion_and_macro_f1_match_hand_computation():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    conf = confusion(pred, y, 4)
    assert conf.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    # per class F1: c0 = 2*1/(2+1+1) = .5 ; c1 = 2*2/(4+1+0) = .8 ; c2 = 2/(2+0+1) = 2/3 ; c3 absent -> excluded
    assert macro_f1(conf).item() == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_split_scorer_accumulates_batches():
    scorer = SplitScorer(["fused"], 2, torch.device("cpu"))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    scorer.add({"fused": logits[:2]}, y[:2])
    scorer.add({"fused": logits[2:]}, y[2:])
    out = {k: v.item() for k, v in scorer.tensors("val").items()}
    assert out["val/acc/fused"] == pytest.approx(1 / 3)
    expected_loss = torch.nn.functional.cross_entropy(logits, y).item()
    assert out["val/loss/fused"] == pytest.approx(expected_loss, rel=1e-6)


def test_schedules():
    step = TrainConfig(epochs=10, scheduler="step", step_size=3, gamma=0.5)
    assert [lr_factor(step, e * 10, 10) for e in (0, 2, 3, 6, 9)] == [1, 1, 0.5, 0.25, 0.125]
    cos = TrainConfig(epochs=10, scheduler="cosine", warmup_epochs=2, min_lr_ratio=0.1)
    assert lr_factor(cos, 0, 10) == pytest.approx(0.05)       # first step of warm-up: (0 + 1/10) / 2
    assert lr_factor(cos, 19, 10) == pytest.approx(1.0)      # last warm-up step
    assert lr_factor(cos, 20, 10) == pytest.approx(1.0)      # cosine starts at the peak
    assert lr_factor(cos, 60, 10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(cos, 100, 10) == pytest.approx(0.1)
    assert lr_factor(TrainConfig(), 123, 10) == 1.0


def test_sgd_momentum_for_a_parameter_that_starts_training_late():
    """Fused SGD needs every momentum buffer to exist; a late starter gets buf = grad, as lazily."""
    from engine.train.optim import build_optimizer
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = build_optimizer(TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9), [{"params": [a, b]}], torch.device("cpu"))
    a.grad = torch.ones(2)
    opt.step()
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    opt.step()
    assert a.tolist() == pytest.approx([1 - 0.1 - 0.1 * 1.9] * 2)
    assert b.tolist() == pytest.approx([0.9, 0.9])
