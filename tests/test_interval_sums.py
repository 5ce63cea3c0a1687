"""The interval's device-side sums: values by name, and batch accuracies from hit masks counted as integers."""

import torch

from engine.train.interval import RunningSums

KEYS = ("train/acc/fused", "train/acc/a")


def steps():
    g = torch.Generator().manual_seed(0)
    # batch sizes 8, 8, 8, 5 (a short last batch), two accuracy rows each
    return [torch.rand(2, b, generator=g) > 0.4 for b in (8, 8, 8, 5, 8, 5)]


def expected(masks):
    per_step = torch.stack([m.double().mean(1) for m in masks])   # each step's batch accuracy
    return per_step.mean(0)


def test_accuracies_are_the_mean_of_the_steps_batch_accuracies():
    sums = RunningSums(torch.device("cpu"))
    masks = steps()
    for m in masks:
        sums.add_vector(("train/loss/method",), torch.tensor([1.0]))
        sums.add_hits(KEYS, m)
    means = sums.means()
    assert torch.allclose(torch.stack([means[k] for k in KEYS]), expected(masks), rtol=0, atol=1e-12)
    assert means["train/loss/method"].item() == 1.0


def test_a_checkpoint_mid_interval_gives_the_same_means_bit_for_bit():
    masks = steps()
    whole = RunningSums(torch.device("cpu"))
    for m in masks:
        whole.add_hits(KEYS, m)
    first = RunningSums(torch.device("cpu"))
    for m in masks[:3]:
        first.add_hits(KEYS, m)
    resumed = RunningSums(torch.device("cpu"))
    resumed.load_state_dict(first.state_dict())
    for m in masks[3:]:
        resumed.add_hits(KEYS, m)
    a, b = whole.means(), resumed.means()
    assert all(torch.equal(a[k], b[k]) for k in KEYS)


def test_accuracy_sums_of_an_older_checkpoint_are_merged_by_name():
    masks = steps()
    old = RunningSums(torch.device("cpu"))   # the format before hit counts: accuracies summed as floats
    old.load_state_dict({"sums": {KEYS[0]: torch.tensor(1.5, dtype=torch.float64)}, "counts": {KEYS[0]: 2},
                         "count": 2})
    for m in masks:
        old.add_hits(KEYS, m)
    means = old.means()
    want = (1.5 + expected(masks)[0].item() * len(masks)) / (2 + len(masks))
    assert abs(means[KEYS[0]].item() - want) < 1e-12
    assert abs(means[KEYS[1]].item() - expected(masks)[1].item()) < 1e-12
