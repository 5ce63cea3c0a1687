"""The monitors on small models trained on the synthetic generator: noise, redundant and unique modalities."""

import pytest
import torch
import torch.nn.functional as F

from engine.data import DataConfig, SynthConfig, generate, to_tensors
from engine.models import ModalitySpec, ModelSpec, build_model
from engine.monitor import MonitorConfig, Monitors

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def train_and_monitor(unique, shared, copy_a_into_b=False, epochs=6, **monitor):
    """Joint training (concat head, fused CE) with the monitors observing every step; val estimates."""
    raw = generate(SynthConfig(n_samples=3000, unique=unique, shared=shared, noise=[0.1, 0.1], label_noise=0.2))
    if copy_a_into_b:
        raw.features["b"] = raw.features["a"].copy()
    data = to_tensors(raw, DataConfig(source="synthetic"), 0, CPU)
    torch.manual_seed(0)
    mlp = {"hidden": [64], "dim": 32}
    model = build_model(ModelSpec((ModalitySpec("a", "mlp", mlp), ModalitySpec("b", "mlp", mlp))),
                        data.shapes, data.n_classes)
    train = data.splits["train"]
    prior = torch.bincount(data.y[train], minlength=data.n_classes).double()
    mon = Monitors(MonitorConfig(update_every=1, max_overhead=0.0, **monitor), ["a", "b"], {"a": 32, "b": 32}, data.n_classes,
                   prior / prior.sum(), CPU)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    step = 0
    for _ in range(epochs):
        order = train[torch.randperm(len(train), generator=g)]
        for i in range(0, len(order), 64):
            x, y = data.batch(order[i:i + 64])
            out = model(x)
            loss = F.cross_entropy(out.fused, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.observe_step(out, y, step)
            step += 1
    model.eval()
    with torch.no_grad():
        x, y = data.batch(data.splits["val"])
        out = model(x)
        values = mon.evaluate(model.head, out.features, out.logits, out.fused, y)
    return {k: v.item() for k, v in values.items()}, {k: v.item() for k, v in mon.interval_values().items()}


@pytest.fixture(scope="module")
def noise_b():
    """Modality a carries all the label information, b is pure noise for the label."""
    return train_and_monitor(unique=[1.5, 0.0], shared=0.0)


def test_a_pure_noise_modality_gets_no_task_information_and_no_contribution(noise_b):
    val, train = noise_b
    assert val["mi/b"] < 0.05 and train["mi/b"] < 0.05
    assert val["mi/a"] > 0.5 and train["mi/a"] > 0.5
    assert abs(val["shapley/b"]) < 0.05
    assert val["shapley/a"] > 0.4
    assert val["imbalance"] == pytest.approx(val["shapley/a"] - val["shapley/b"])
    assert abs(val["cmi/b"]) < 0.05
    assert val["cmi/a"] > 0.5


def test_redundant_copy_has_task_information_but_no_unique_information():
    val, _ = train_and_monitor(unique=[1.5, 0.0], shared=0.0, copy_a_into_b=True)
    plain, _ = train_and_monitor(unique=[1.5, 0.0], shared=0.0, copy_a_into_b=True, cmi_conditional=False,
                                 mi=False, pairwise=False, shapley=False)
    assert val["mi/a"] > 0.5 and val["mi/b"] > 0.5
    for m in "ab":
        assert abs(val[f"cmi/{m}"]) < 0.15            # neighbours in 32-d features are not exact: a small bias
        assert plain[f"cmi/{m}"] > 2 * val[f"cmi/{m}"]  # MCR's plain permutation counts the copy as unique
    assert val["mi/a;b"] > 2.0                          # the two feature sets are near copies of each other


def test_two_modalities_with_unique_information_both_get_clearly_positive_values():
    val, _ = train_and_monitor(unique=[1.5, 1.5], shared=0.0)
    for m in "ab":
        assert val[f"cmi/{m}"] > 0.4
        assert val[f"shapley/{m}"] > 0.15
        assert val[f"mi/{m}"] > 0.1
    assert val["imbalance"] < 0.1
    # chain rule: I(Y; A, B) = I(Y; A) + I(Y; B | A) = I(Y; B) + I(Y; A | B), estimated two ways
    assert val["mi/a"] + val["cmi/b"] == pytest.approx(val["mi/b"] + val["cmi/a"], abs=0.1)
